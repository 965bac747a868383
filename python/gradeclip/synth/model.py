"""The tiny CLIP of the synthetic world: its configuration, and saving/loading its weights.

The model is a plain ``open_clip.CLIP`` (a class-token ViT image tower and a causal text tower with
open_clip's BPE tokenizer), so everything that works on open_clip ViTs works on it.

Weights are stored as safetensors with one economy: the world uses a few dozen of the tokenizer's
49,408 tokens, so only the token-embedding rows of tokens the world's captions use are stored
(``text.token_embedding.rows`` holds their ids); the other rows load as zeros. Every other tensor is
stored whole, in float32.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor, nn

from ..errors import InputError, ModelLoadError
from ..files import write_bytes, write_json
from .world import COLOURS, REGIONS, SHAPES, SIZES

MODEL_NAME = "gradeclip-synth"
PAD_ID = 0  # open_clip pads with id 0
EMBEDDING_KEY = "token_embedding.weight"
ROWS_KEY = "text.token_embedding.rows"
VALUES_KEY = "text.token_embedding.values"

#: the default architecture (open_clip ``CLIP`` keyword arguments) and preprocessing
DEFAULT_CONFIG: dict[str, Any] = {
    "embed_dim": 128,
    "vision_stem": "conv",
    "vision_cfg": {"image_size": 64, "patch_size": 8, "width": 128, "layers": 4, "head_width": 32, "mlp_ratio": 4.0},
    "text_cfg": {"context_length": 48, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 3, "mlp_ratio": 4.0},
    "preprocess_cfg": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25]},
}


def shipped_weights() -> Path:
    """The weights shipped inside the package: ``gradeclip/assets/gradeclip-synth.safetensors``
    (its config and training record beside it, ``.json``)."""
    return Path(__file__).resolve().parent.parent / "assets" / f"{MODEL_NAME}.safetensors"


class ConvStem(nn.Module):
    """Early convolutions (Xiao et al. 2021, "Early Convolutions Help Transformers See Better") in
    place of a ViT's linear patch embedding: log2(patch) 3×3 stride-2 convolutions with ReLU, then
    a 1×1 projection to the width. ``[B, 3, H, W]`` → ``[B, width, H / patch, W / patch]``, the
    shape the linear patch embedding gives, so the rest of the ViT (class token, positional
    embedding, blocks) is unchanged. Receptive field of a token: 8·2 − 1 = 15 px for patch 8.
    """

    def __init__(self, width: int, patch_size: int, channels: tuple[int, ...] = (32, 64, 128)):
        super().__init__()
        n = patch_size.bit_length() - 1
        if patch_size != 2**n or n != len(channels):
            raise InputError(f"the conv stem needs patch_size = 2**{len(channels)}, got {patch_size}")
        layers: list[nn.Module] = []
        previous = 3
        for c in channels:
            layers += [nn.Conv2d(previous, c, 3, stride=2, padding=1), nn.ReLU()]
            previous = c
        self.convs = nn.Sequential(*layers)
        self.proj = nn.Conv2d(previous, width, 1)

    @property
    def weight(self) -> Tensor:
        """The projection's weight (callers read ``conv1.weight.dtype`` for the input dtype)."""
        return self.proj.weight

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(self.convs(x))


def build_model(config: dict[str, Any]) -> nn.Module:
    """A randomly initialised ``open_clip.CLIP`` from ``config`` (see :data:`DEFAULT_CONFIG`); with
    ``config["vision_stem"] == "conv"`` its patch embedding is a :class:`ConvStem`. The model
    declares its preprocessing (``config["preprocess_cfg"]``, what training normalises with) the
    way open_clip models do, so every reader of the model's mean and std sees the trained ones."""
    import open_clip

    model = open_clip.CLIP(embed_dim=config["embed_dim"], vision_cfg=dict(config["vision_cfg"]), text_cfg=dict(config["text_cfg"]))
    size = config["vision_cfg"]["image_size"]
    pre = config["preprocess_cfg"]
    open_clip.set_model_preprocess_cfg(
        model, {"size": (size, size), "mean": tuple(pre["mean"]), "std": tuple(pre["std"]), "interpolation": "bicubic", "resize_mode": "shortest"}
    )
    stem = config.get("vision_stem", "linear")
    if stem == "conv":
        vision = config["vision_cfg"]
        model.visual.conv1 = ConvStem(vision["width"], vision["patch_size"])
    elif stem != "linear":
        raise InputError(f"vision_stem must be 'linear' or 'conv', got {stem!r}")
    return model


def build_tokenizer(config: dict[str, Any]) -> Callable[[list[str]], Tensor]:
    """open_clip's BPE tokenizer with the model's context length: list of strings → ids ``[T, L]`` long."""
    import open_clip

    return open_clip.tokenizer.SimpleTokenizer(context_length=config["text_cfg"]["context_length"])


def build_preprocess(config: dict[str, Any]) -> Callable[[Any], Tensor]:
    """The evaluation transform: PIL image → float tensor ``[3, S, S]`` (resize, centre crop, normalise)."""
    import open_clip

    pre = config["preprocess_cfg"]
    return open_clip.image_transform(config["vision_cfg"]["image_size"], is_train=False, mean=tuple(pre["mean"]), std=tuple(pre["std"]))


def images_to_tensor(images: Tensor, config: dict[str, Any]) -> Tensor:
    """uint8 images ``[B, H, W, 3]`` (already at the model's size) → normalised float ``[B, 3, H, W]``.

    The same arithmetic as :func:`build_preprocess` for images that need no resizing, without PIL.
    """
    pre = config["preprocess_cfg"]
    mean = torch.tensor(pre["mean"], dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(pre["std"], dtype=torch.float32).view(1, 3, 1, 1)
    return (images.permute(0, 3, 1, 2).float() / 255.0 - mean) / std


def world_token_ids(config: dict[str, Any]) -> list[int]:
    """The token ids any caption of the world can use (words, punctuation, start/end), sorted."""
    import open_clip

    from .captions import PREFIXES

    tok = open_clip.tokenizer.SimpleTokenizer()
    words = [*COLOURS, *SHAPES, *SIZES, *(phrase for _, phrase in REGIONS), "a an and ,", *(p.format("") for p in PREFIXES)]
    ids = {PAD_ID, tok.sot_token_id, tok.eot_token_id}
    for text in words:
        ids.update(tok.encode(text))
    return sorted(ids)


def shrink_vocabulary(model: nn.Module, ids: list[int]) -> Tensor:
    """Swap ``model``'s token embedding for one with only the rows ``ids`` (sorted), for training.

    Returns the lookup table ``[vocab]`` long mapping a tokenizer id to its row (−1 when absent);
    feed ``lut[tokens]`` to the model. Sorting keeps the end-of-text id the largest, so open_clip's
    argmax pooling still finds it. :func:`grow_vocabulary` undoes the swap.
    """
    full = model.token_embedding
    rows = torch.tensor(ids, dtype=torch.long)
    small = nn.Embedding(len(ids), full.embedding_dim)
    with torch.no_grad():
        small.weight.copy_(full.weight[rows])
    model.token_embedding = small
    lut = torch.full((full.num_embeddings,), -1, dtype=torch.long)
    lut[rows] = torch.arange(len(ids))
    return lut


def grow_vocabulary(model: nn.Module, ids: list[int], vocab_size: int) -> None:
    """Undo :func:`shrink_vocabulary`: a full ``[vocab_size, width]`` embedding, zero except rows ``ids``."""
    small = model.token_embedding
    full = nn.Embedding(vocab_size, small.embedding_dim)
    with torch.no_grad():
        full.weight.zero_()
        full.weight[torch.tensor(ids, dtype=torch.long)] = small.weight
    model.token_embedding = full


def save_weights(model: nn.Module, config: dict[str, Any], path: str | os.PathLike[str], metadata: dict[str, Any]) -> None:
    """Write ``model``'s weights (compact token embedding) to ``path`` and its config + ``metadata``
    to ``path`` with suffix ``.json``; both written atomically (:mod:`gradeclip.files`)."""
    from safetensors.torch import save

    path = Path(path)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items()}
    table = state.pop(EMBEDDING_KEY)
    rows = torch.tensor(world_token_ids(config), dtype=torch.long)
    state[ROWS_KEY] = rows
    state[VALUES_KEY] = table[rows].contiguous()
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, save(state))
    write_json(path.with_suffix(".json"), {"config": config, **metadata})


def read_config(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The architecture config recorded beside weights written by :func:`save_weights`.

    Raises:
        ModelLoadError: the ``.json`` record is missing or unreadable.
    """
    meta_path = Path(path).with_suffix(".json")
    try:
        return json.loads(meta_path.read_text())["config"]
    except (OSError, KeyError, ValueError, TypeError) as exc:
        raise ModelLoadError(f"could not read the {MODEL_NAME} config {meta_path}: {exc}") from exc


def load_weights(path: str | os.PathLike[str]) -> tuple[nn.Module, dict[str, Any]]:
    """Read a model written by :func:`save_weights`: ``(model in eval mode, its JSON record)``.

    Raises:
        ModelLoadError: a missing or unreadable file, or tensors that do not fit the config.
    """
    from safetensors.torch import load_file

    path = Path(path)
    meta_path = path.with_suffix(".json")
    if not path.is_file() or not meta_path.is_file():
        raise ModelLoadError(f"{MODEL_NAME} weights not found: expected {path} and {meta_path}")
    try:
        record = json.loads(meta_path.read_text())
        config = record["config"]
        state = load_file(str(path))
        model = build_model(config)
        rows = state.pop(ROWS_KEY)
        values = state.pop(VALUES_KEY)
        table = torch.zeros_like(model.token_embedding.weight)
        table[rows] = values
        state[EMBEDDING_KEY] = table
        model.load_state_dict(state, strict=True)
    except (OSError, KeyError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(f"could not load {MODEL_NAME} weights from {path}: {exc}") from exc
    return model.eval(), record


def load_synth(
    path: str | os.PathLike[str] | None = None, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32
) -> tuple[nn.Module, Callable[[Any], Tensor], Callable[[list[str]], Tensor]]:
    """The world's tiny CLIP: ``(model, preprocess, tokenizer)`` as :func:`gradeclip.load` returns them.

    Args:
        path: weights written by ``gradeclip synth train``; None for the weights shipped in the package.
        device, dtype: where and in which precision the model lives.
    """
    model, record = load_weights(shipped_weights() if path is None else path)
    config = record["config"]
    return model.to(device=device, dtype=dtype).eval(), build_preprocess(config), build_tokenizer(config)
