"""Load a Hugging Face ``transformers`` model by hub id or from a ``save_pretrained`` folder, with
the preprocessing and the tokenizer gradeclip uses for it.

Supported: ``CLIPModel`` (``model_type`` "clip"), BLIP's image–text retrieval model
(``BlipForImageTextRetrieval``, "blip") and ``SiglipModel`` ("siglip"; its tokenizer must be a fast
one, saved as ``tokenizer.json``); other model types are refused naming the type. Weights,
tokenizer and image processor come from the folder, or from the local Hugging Face cache when the
hub is unreachable or ``HF_HUB_OFFLINE=1`` (never a wait on the network: :func:`gradeclip.load`
checks the hub first).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .errors import ModelLoadError, UnsupportedModelError
from .words import HFTokenizer

#: ``config.model_type`` → the transformers class gradeclip explains
MODEL_CLASSES = {"clip": "CLIPModel", "blip": "BlipForImageTextRetrieval", "siglip": "SiglipModel"}
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[\w.-]+")


def is_hf_name(name: str) -> bool:
    """Whether ``name`` names a Hugging Face model: a folder holding ``config.json``, or a hub id
    ``"owner/name"`` that is not an existing path."""
    path = Path(name)
    if path.is_dir():
        return (path / "config.json").is_file()
    return _HUB_ID.fullmatch(name) is not None and not path.exists()


class HFPreprocess:
    """The model's own image processor as a callable: a PIL image → float32 ``[3, H, W]``.

    Attributes:
        processor: the ``transformers`` image processor.
    """

    def __init__(self, processor: Any):
        self.processor = processor

    def __repr__(self) -> str:
        return f"HFPreprocess({type(self.processor).__name__})"

    def __call__(self, image: Any) -> Tensor:
        pixels = self.processor(images=image.convert("RGB"), return_tensors="pt")["pixel_values"]
        return pixels[0].float()


def _offline_hint(name: str) -> str:
    return (
        f"Download it on a machine with internet (e.g. `hf download {name}`, or model.save_pretrained(folder) with its "
        "processor) and pass the folder: gradeclip.load('/path/to/folder'); a model already in the local Hugging Face "
        "cache loads with HF_HUB_OFFLINE=1."
    )


def _from_pretrained(what: str, loader: Any, name: str, local_only: bool, cache_dir: str | None) -> Any:
    try:
        return loader.from_pretrained(name, local_files_only=local_only, cache_dir=cache_dir)
    except Exception as exc:  # transformers and huggingface_hub raise OSError, ValueError, EnvironmentError, ...
        where = "the folder" if Path(name).is_dir() else ("the local Hugging Face cache" if local_only else "the hub")
        hint = " Save it into the folder with its save_pretrained(folder)." if Path(name).is_dir() else " " + _offline_hint(name)
        raise ModelLoadError(f"could not load the {what} of {name!r} from {where}: {str(exc).rstrip('. ')}.{hint}") from exc


def load_hf(
    name: str, *, device: str | torch.device, dtype: torch.dtype, local_only: bool, cache_dir: str | None = None
) -> tuple[nn.Module, HFPreprocess, HFTokenizer]:
    """Load ``name`` (a hub id or a ``save_pretrained`` folder; see :func:`is_hf_name`).

    Args:
        name: e.g. ``"openai/clip-vit-base-patch32"`` or ``"/models/my-clip"``.
        device, dtype: where the model lives and its weights' type.
        local_only: read only the folder / the local cache (the hub is unreachable or offline).
        cache_dir: the Hugging Face cache directory (default: its own).

    Returns:
        ``(model, preprocess, tokenizer)``: the model in eval mode, :class:`HFPreprocess` (PIL image →
        ``[3, H, W]``) and :class:`~gradeclip.words.HFTokenizer` (captions → ids ``[T, L]``, and words).

    Raises:
        ModelLoadError: not found locally (offline) or on the hub, an unreadable folder, no tokenizer.
        UnsupportedModelError: a model type gradeclip has no adapter for.
    """
    import transformers

    config = _from_pretrained("config", transformers.AutoConfig, name, local_only, cache_dir)
    kind = getattr(config, "model_type", "")
    if kind not in MODEL_CLASSES:
        raise UnsupportedModelError(
            f"{name!r} is a transformers {kind or type(config).__name__!r} model: gradeclip explains Hugging Face "
            f"{', '.join(f'{v} ({k!r})' for k, v in MODEL_CLASSES.items())}"
        )
    cls = getattr(transformers, MODEL_CLASSES[kind])
    model = _from_pretrained("weights", cls, name, local_only, cache_dir)
    tokenizer = _from_pretrained("tokenizer", transformers.AutoTokenizer, name, local_only, cache_dir)
    if len(tokenizer) <= len(tokenizer.all_special_tokens):  # transformers builds an empty one when the files are missing
        raise ModelLoadError(
            f"the tokenizer of {name!r} has no vocabulary (no tokenizer files were found); save the model's tokenizer "
            "with tokenizer.save_pretrained(folder)"
        )
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"the tokenizer of {name!r} ({type(tokenizer).__name__}) is not a fast tokenizer: words need its offsets")
    processor = _from_pretrained("image processor", transformers.AutoImageProcessor, name, local_only, cache_dir)
    text_config = config.text_config
    model = model.to(device=device, dtype=dtype).eval()
    return model, HFPreprocess(processor), HFTokenizer(tokenizer, text_config.max_position_embeddings)


def check_no_pretrained(name: str, pretrained: str | os.PathLike[str] | None) -> None:
    """Raise :class:`ModelLoadError` when ``pretrained`` is given for a Hugging Face model (its
    weights come with it)."""
    if pretrained is not None:
        raise ModelLoadError(
            f"{name!r} is a Hugging Face model: its weights come from its folder or the hub, so pretrained= "
            f"({os.fspath(pretrained)!r}) does not apply; pass the save_pretrained folder as the name"
        )
