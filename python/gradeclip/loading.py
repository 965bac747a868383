"""Load a model, its preprocessing and its tokenizer: open_clip tags, local checkpoints, or random weights.

Nothing here ever waits on an unreachable network: an open_clip tag is only fetched after a quick
check that the Hugging Face hub answers (or with ``HF_HUB_OFFLINE=1``, from the local cache only).
"""

from __future__ import annotations

import difflib
import os
import socket
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .errors import InputError, ModelLoadError

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
CHECKPOINT_SUFFIXES = (".bin", ".pt", ".pth", ".safetensors")
HUB_HOST = ("huggingface.co", 443)
HUB_TIMEOUT_S = 3.0
SYNTH_MODEL = "gradeclip-synth"


def _hub_reachable() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def _check_name(name: str) -> None:
    import open_clip

    if name.startswith(("hf-hub:", "local-dir:")) or name in open_clip.list_models():
        return
    close = difflib.get_close_matches(name, [SYNTH_MODEL, *open_clip.list_models()], n=5)
    hint = f" Did you mean {', '.join(close)}?" if close else " See open_clip.list_models()."
    raise ModelLoadError(f"unknown model architecture {name!r}.{hint}")


def _is_local(pretrained: str) -> bool:
    return Path(pretrained).suffix in CHECKPOINT_SUFFIXES or os.sep in pretrained or Path(pretrained).exists()


def load(
    name: str,
    pretrained: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    *,
    allow_pickle: bool = False,
    cache_dir: str | None = None,
) -> tuple[nn.Module, Callable[[Any], Tensor], Callable[[list[str]], Tensor]]:
    """Build an open_clip model with its evaluation preprocessing and tokenizer.

    Args:
        name: an open_clip architecture (``open_clip.list_models()``), e.g. ``"ViT-B-16"``;
            ``"gradeclip-synth"``, the tiny CLIP trained on gradeclip's synthetic world and shipped
            inside the package (no download; see ``docs/model-card-gradeclip-synth.md``); or a
            Hugging Face ``CLIPModel`` / BLIP retrieval model as a hub id (``"openai/clip-vit-base-patch32"``,
            from the local cache when the hub is unreachable or ``HF_HUB_OFFLINE=1``) or a
            ``save_pretrained`` folder with its tokenizer and image processor (:mod:`gradeclip.hf_loading`).
        pretrained: ``None`` for random weights (tests) — for ``"gradeclip-synth"``, its shipped
            weights, and a path loads weights written by ``gradeclip synth train``; an open_clip pretrained tag (e.g.
            ``"openai"``, ``"laion2b_s34b_b88k"``), fetched from the Hugging Face hub or its local
            cache; or a local checkpoint file (``.bin``/``.pt``/``.pth``/``.safetensors``).
        device: where the model lives.
        precision: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (all weights cast).
        allow_pickle: allow checkpoints that need arbitrary pickle code to load (only for files
            you trust). Off by default: tensors-only loading.
        cache_dir: open_clip's download cache directory.

    Returns:
        ``(model, preprocess, tokenizer)``: the model in eval mode; ``preprocess`` maps a PIL image
        to a float tensor ``[3, S, S]``; ``tokenizer`` maps a list of strings to ids ``[T, L]``
        (for a Hugging Face model, the model's own image processor and tokenizer, wrapped).

    Raises:
        ModelLoadError: unknown architecture or tag, hub unreachable, unreadable or mismatched file.
        InputError: an unknown precision.
    """
    import open_clip

    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if name == SYNTH_MODEL:
        from .synth.model import load_synth

        return load_synth(pretrained, device=device, dtype=PRECISIONS[precision])
    from .hf_loading import check_no_pretrained, is_hf_name, load_hf

    if is_hf_name(name):
        check_no_pretrained(name, pretrained)
        local_only = Path(name).is_dir() or not _hub_reachable()
        return load_hf(name, device=device, dtype=PRECISIONS[precision], local_only=local_only, cache_dir=cache_dir)
    _check_name(name)
    weights: str | None = None
    if pretrained is not None:
        pretrained = os.fspath(pretrained)
        if _is_local(pretrained):
            if not Path(pretrained).is_file():
                raise ModelLoadError(f"checkpoint file {pretrained!r} does not exist")
            weights = pretrained
        else:
            tags = open_clip.list_pretrained_tags_by_model(name)
            if pretrained not in tags:
                raise ModelLoadError(
                    f"{name!r} has no pretrained tag {pretrained!r}; its tags: {', '.join(tags) or 'none'}. "
                    "A local checkpoint file path works too."
                )
            if not _hub_reachable() and not os.environ.get("HF_HUB_OFFLINE"):
                raise ModelLoadError(
                    f"cannot fetch {name} / {pretrained}: the Hugging Face hub is unreachable from here. "
                    "Download the checkpoint on a machine with internet (open_clip_pytorch_model.bin or "
                    f"open_clip_model.safetensors) and pass its path: gradeclip.load({name!r}, pretrained='/path/to/file'). "
                    "If it is already in the local Hugging Face cache, set HF_HUB_OFFLINE=1."
                )
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(
            name,
            pretrained=None if weights is not None else pretrained,
            cache_dir=cache_dir,
        )
        if weights is not None:
            open_clip.load_checkpoint(model, weights, strict=True, weights_only=not allow_pickle)
    except ModelLoadError:
        raise
    except Exception as exc:  # open_clip, torch and the hub raise many types; keep the cause attached
        what = weights or pretrained
        hint = ""
        if weights is not None and not allow_pickle and "weights_only" in str(exc):
            hint = " The file needs pickle code to load; pass allow_pickle=True only if you trust it."
        raise ModelLoadError(f"could not load {name} weights from {what!r}: {exc}{hint}") from exc
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:
        raise ModelLoadError(f"could not build the tokenizer of {name}: {exc}") from exc
    model = model.to(device=device, dtype=PRECISIONS[precision]).eval()
    return model, preprocess, tokenizer
