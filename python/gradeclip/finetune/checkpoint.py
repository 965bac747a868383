"""Fine-tuning checkpoints: one safetensors file holding the model, the AdamW state and (as JSON
metadata) where the run stands, written atomically, read back tensors-only.

Written with :mod:`gradeclip.files` (atomic replace). A checkpoint names the architecture it was written for (every parameter's name and shape), so a
``--resume`` with another model is refused instead of half-loaded.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import InputError
from ..files import write_bytes

META_KEY = "gradeclip"


def architecture(model: nn.Module) -> str:
    """A digest of ``model``'s parameter and buffer names and shapes: equal digests, same architecture."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(f"{name}:{tuple(tensor.shape)}\n".encode())
    return digest.hexdigest()[:16]


def save_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """Write the model's weights, the optimizer's per-parameter state and ``state`` (JSON-able) to ``path``."""
    from safetensors.torch import save

    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    for i, param_state in optimizer.state_dict()["state"].items():
        for name, value in param_state.items():
            tensors[f"optim.{i}.{name}"] = torch.as_tensor(value).detach().contiguous().cpu()
    meta = {"architecture": architecture(model), **state}
    write_bytes(path, save(tensors, metadata={META_KEY: json.dumps(meta)}))


def load_checkpoint(path: Path, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` into ``model`` and ``optimizer``; returns its state.

    Raises:
        InputError: the file is unreadable or was written for another architecture (``--resume``).
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})[META_KEY])
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (OSError, KeyError, ValueError, json.JSONDecodeError, RuntimeError) as exc:
        raise InputError(f"--resume: cannot read checkpoint {path}: {exc}") from exc
    if meta["architecture"] != architecture(model):
        raise InputError(
            f"--resume: checkpoint {path} was written for another architecture (digest {meta['architecture']}, "
            f"this model {architecture(model)}); fine-tune the model it came from, or start without --resume"
        )
    device = next(model.parameters()).device
    model.load_state_dict({k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")})
    saved = optimizer.state_dict()
    per_param: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, index, name = key.split(".", 2)
            per_param.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
    optimizer.load_state_dict({"state": per_param, "param_groups": saved["param_groups"]})
    return meta
