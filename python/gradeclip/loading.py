"""Load a model, its preprocessing and its tokenizer: open_clip tags, local checkpoints, or random
weights; and say which model it is (:class:`ModelIdentity`).

Nothing here ever waits on an unreachable network: an open_clip tag or ``hf-hub:`` name is only
fetched after a quick check that the Hugging Face hub answers; otherwise (and with
``HF_HUB_OFFLINE=1``) only the local cache is read.

Random weights are drawn from a generator seeded with ``seed`` (default 0), so every process and
every resumed run builds the same model; the caller's random state is left as it was.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import logging
import os
import socket
from collections.abc import Iterator
from dataclasses import asdict, dataclass
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
IDENTITY_ATTRIBUTE = "gradeclip_identity"  # where load() leaves a model's ModelIdentity (without its fingerprint)
OPEN_CLIP_RANDOM_NOTICE = "No pretrained weights loaded"  # open_clip's log line, replaced by ours


@dataclass(frozen=True)
class ModelIdentity:
    """Which model a run explained.

    Attributes:
        architecture: the name given to :func:`load` (``"ViT-B-16"``, ``"gradeclip-synth"``,
            ``"local-dir:/abs/folder"``, ``"hf-hub:org/name"``), or the class name of a model
            built elsewhere.
        weights: where the weights came from: ``"open_clip tag openai"``, ``"file /abs/path"``,
            ``"shipped"``, ``"random, seed 0"``, ``"folder"`` (a ``local-dir`` checkpoint),
            ``"hub"`` (``hf-hub:``), ``"transformers hub"`` / ``"transformers folder"`` (a Hugging
            Face model by hub id or ``save_pretrained`` folder) or ``"given in memory"``.
        file_sha256: SHA-256 of the weights file (``file``, ``folder`` and ``shipped`` weights), else None.
        precision: ``fp32``, ``fp16`` or ``bf16`` (None for a model built elsewhere).
        fingerprint: SHA-256 over the model's ``state_dict`` (names, dtypes, shapes, bytes, in
            name order) as it is now; None until :func:`model_identity` computes it.
    """

    architecture: str
    weights: str
    file_sha256: str | None = None
    precision: str | None = None
    fingerprint: str | None = None

    @property
    def random(self) -> bool:
        """Whether the weights are a random initialisation."""
        return self.weights.startswith("random")

    def describe(self) -> str:
        """One line: ``"ViT-B-32, random, seed 0 weights, parameters sha256:1a2b3c4d5e6f"``."""
        text = f"{self.architecture}, {self.weights} weights"
        if self.file_sha256:
            text += f" (file sha256:{self.file_sha256[:12]})"
        return text + (f", parameters sha256:{self.fingerprint[:12]}" if self.fingerprint else "")

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-able dict (what stores and results record)."""
        return asdict(self)


def parameters_sha256(model: nn.Module) -> str:
    """Hex SHA-256 over ``model.state_dict()``: each tensor's name, dtype, shape and bytes, in name
    order (about 0.5 s for ViT-B/16 on one CPU core)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(model.state_dict().items()):
        value = tensor.detach().to("cpu").contiguous()
        digest.update(f"{name}|{value.dtype}|{tuple(value.shape)}|".encode())
        digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes() if value.numel() else b"")
    return digest.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file's bytes (read in 8 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(8 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def model_identity(model: nn.Module) -> ModelIdentity:
    """The identity of ``model`` with the fingerprint of its parameters as they are now: what
    :func:`load` recorded about it, or, for a model built elsewhere, its class name and
    ``weights="given in memory"``."""
    known = getattr(model, IDENTITY_ATTRIBUTE, None)
    if not isinstance(known, ModelIdentity):
        known = ModelIdentity(architecture=type(model).__name__, weights="given in memory")
    return ModelIdentity(**{**known.as_dict(), "fingerprint": parameters_sha256(model)})


def random_weights_warning(identity: ModelIdentity, flag: str = "--pretrained") -> str | None:
    """The warning a command prints for a model with random weights (None when they are not)."""
    if not identity.random:
        return None
    return (
        f"warning: {identity.architecture} has random weights ({identity.weights}): no {flag} given, so the "
        "explanations describe an untrained model"
    )


def _hub_reachable() -> bool:
    if _offline_by_environment():
        return False
    try:
        with socket.create_connection(HUB_HOST, timeout=HUB_TIMEOUT_S):
            return True
    except OSError:
        return False


def _offline_by_environment() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


@contextlib.contextmanager
def _hub_offline() -> Iterator[None]:
    """huggingface_hub reads only its local cache inside (it read ``HF_HUB_OFFLINE`` when imported,
    so the flag it keeps is set here, and put back afterwards)."""
    from huggingface_hub import constants

    before = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = before


def _offline_help(name: str, tag: str | None) -> str:
    """Why ``name`` (with open_clip ``tag``, or an ``hf-hub:`` name) cannot be fetched, and what to do."""
    if tag is not None:
        what = f"{name} / {tag}"
        instead = (
            "Download the checkpoint on a machine with internet (open_clip_pytorch_model.bin or "
            f"open_clip_model.safetensors) and pass its path: gradeclip.load({name!r}, pretrained='/path/to/file')."
        )
    else:
        what = name
        instead = (
            "Download the repository's open_clip_config.json and weights on a machine with internet into a folder "
            "and pass its path: gradeclip.load('local-dir:/path/to/folder')."
        )
    return (
        f"cannot fetch {what}: the Hugging Face hub is unreachable from here and it is not in the local Hugging Face cache. "
        f"{instead} If it is already in the local Hugging Face cache, set HF_HUB_OFFLINE=1."
    )


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Draw random initialisations from ``torch.manual_seed(seed)``; the caller's CPU random state
    is restored afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


class _DropRandomNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(OPEN_CLIP_RANDOM_NOTICE)


@contextlib.contextmanager
def _without_random_notice() -> Iterator[None]:
    """Silence open_clip's "No pretrained weights loaded" where gradeclip loads the weights itself
    (or says itself that they are random)."""
    notice = _DropRandomNotice()
    root = logging.getLogger()
    root.addFilter(notice)
    try:
        yield
    finally:
        root.removeFilter(notice)


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``; :class:`InputError` for a name torch does not know or a
    device this machine does not have (naming it and what there is)."""
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(f"unknown device {device!r}: {exc}") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            built = "built without CUDA" if torch.version.cuda is None else f"built with CUDA {torch.version.cuda}, but no GPU is visible"
            raise InputError(f"device {str(device)!r} asked for, but CUDA is not available here (torch {torch.__version__} {built}); use device='cpu'")
        if resolved.index is not None and resolved.index >= torch.cuda.device_count():
            raise InputError(f"device {str(device)!r} asked for, but this machine has {torch.cuda.device_count()} GPU(s)")
    elif resolved.type == "mps" and not torch.backends.mps.is_available():
        raise InputError(f"device {str(device)!r} asked for, but MPS is not available here; use device='cpu'")
    return resolved


def _check_name(name: str) -> None:
    import open_clip

    if name.startswith(("hf-hub:", "local-dir:")) or name in open_clip.list_models():
        return
    close = difflib.get_close_matches(name, [SYNTH_MODEL, *open_clip.list_models()], n=5)
    hint = f" Did you mean {', '.join(close)}?" if close else " See open_clip.list_models()."
    raise ModelLoadError(f"unknown model architecture {name!r}.{hint}")


def _is_local(pretrained: str) -> bool:
    return Path(pretrained).suffix in CHECKPOINT_SUFFIXES or os.sep in pretrained or Path(pretrained).exists()


def _folder_checkpoint(name: str) -> Path | None:
    """The weights file open_clip loads from a ``local-dir:`` folder, or None when it has none."""
    from open_clip.factory import _find_checkpoint_in_dir

    found = _find_checkpoint_in_dir(Path(name.removeprefix("local-dir:")))
    return None if found is None else Path(found)


def weights_source(name: str, pretrained: str | os.PathLike[str] | None, seed: int = 0) -> ModelIdentity:
    """What :func:`load` would load, known without loading it: the identity's architecture,
    ``weights`` and ``file_sha256`` (no precision, no fingerprint). Raises :class:`ModelLoadError`
    for an unknown architecture or a checkpoint file that does not exist."""
    from .hf_loading import check_no_pretrained, is_hf_name

    if name != SYNTH_MODEL and is_hf_name(name):
        check_no_pretrained(name, pretrained)
        return ModelIdentity(name, "transformers folder" if Path(name).is_dir() else "transformers hub")
    if name != SYNTH_MODEL:
        _check_name(name)
    if name == SYNTH_MODEL:
        from .synth.model import shipped_weights

        path = shipped_weights() if pretrained is None else Path(pretrained).resolve()
        if not path.is_file():
            raise ModelLoadError(f"{SYNTH_MODEL} weights not found: {path} does not exist")
        return ModelIdentity(name, "shipped" if pretrained is None else f"file {path}", file_sha256(path))
    if name.startswith("hf-hub:"):
        return ModelIdentity(name, "hub")
    if name.startswith("local-dir:"):
        checkpoint = _folder_checkpoint(name)
        return ModelIdentity(name, f"random, seed {seed}") if checkpoint is None else ModelIdentity(name, "folder", file_sha256(checkpoint))
    if pretrained is None:
        return ModelIdentity(name, f"random, seed {seed}")
    pretrained = os.fspath(pretrained)
    if _is_local(pretrained):
        path = Path(pretrained)
        if not path.is_file():
            raise ModelLoadError(f"checkpoint file {pretrained!r} does not exist")
        return ModelIdentity(name, f"file {path.resolve()}", file_sha256(path))
    return ModelIdentity(name, f"open_clip tag {pretrained}")


def skeleton(name: str, pretrained: str | os.PathLike[str] | None = None) -> nn.Module | None:
    """The architecture ``name`` on the meta device: its modules and shapes, no values, no memory,
    built in well under a second (a real ViT-B/16 takes seconds to initialise, a checkpoint longer
    to read), so that settings can be checked against it before the weights load. None for an
    ``hf-hub:`` name or a Hugging Face model, whose configuration lives on the hub, and for an
    architecture that cannot be built without the network or its weights. Raises
    :class:`ModelLoadError` for an unknown architecture."""
    import open_clip

    from .hf_loading import is_hf_name

    if name.startswith("hf-hub:") or (name != SYNTH_MODEL and is_hf_name(name)):
        return None
    if name == SYNTH_MODEL:
        from .synth.model import build_model, read_config, shipped_weights

        config = read_config(shipped_weights() if pretrained is None else pretrained)
        with torch.device("meta"):
            return build_model(config)
    _check_name(name)
    try:
        with torch.device("meta"), _without_random_notice(), _hub_offline():
            return open_clip.create_model(name, load_weights=False, device="meta")
    except Exception:  # e.g. a Hugging Face text tower whose config is not cached: loading will tell
        return None


def load(
    name: str,
    pretrained: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    *,
    seed: int = 0,
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
        seed: random weights are drawn from ``torch.manual_seed(seed)`` (the caller's random state
            is left untouched), so the same ``seed`` gives the same model in every process.
        allow_pickle: allow checkpoints that need arbitrary pickle code to load (only for files
            you trust). Off by default: tensors-only loading.
        cache_dir: open_clip's download cache directory.

    Returns:
        ``(model, preprocess, tokenizer)``: the model in eval mode; ``preprocess`` maps a PIL image
        to a float tensor ``[3, S, S]``; ``tokenizer`` maps a list of strings to ids ``[T, L]``
        (for a Hugging Face model, the model's own image processor and tokenizer, wrapped).
        :func:`model_identity` of the model says what was loaded.

    Raises:
        ModelLoadError: unknown architecture or tag, hub unreachable, unreadable or mismatched file.
        InputError: an unknown precision, or a device this machine does not have.
    """
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise InputError(f"seed must be an integer, got {seed!r}")
    target = check_device(device)
    source = weights_source(name, pretrained, seed)
    preprocess: Callable[[Any], Tensor]
    tokenizer: Callable[[list[str]], Tensor]
    if source.weights.startswith("transformers"):
        from .hf_loading import load_hf

        local_only = Path(name).is_dir() or not _hub_reachable()
        model, preprocess, tokenizer = load_hf(name, device=target, dtype=PRECISIONS[precision], local_only=local_only, cache_dir=cache_dir)
    else:
        with _seeded(seed), _without_random_notice():
            model, preprocess, tokenizer = _build(name, pretrained, allow_pickle, cache_dir)
        try:
            model = model.to(device=target, dtype=PRECISIONS[precision]).eval()
        except RuntimeError as exc:  # e.g. out of GPU memory
            raise ModelLoadError(f"could not move {name} to {target} in {precision}: {exc}") from exc
    setattr(model, IDENTITY_ATTRIBUTE, ModelIdentity(source.architecture, source.weights, source.file_sha256, precision))
    return model, preprocess, tokenizer


def _build(
    name: str, pretrained: str | os.PathLike[str] | None, allow_pickle: bool, cache_dir: str | None
) -> tuple[nn.Module, Callable[[Any], Tensor], Callable[[list[str]], Tensor]]:
    """The model on the CPU in float32, its preprocessing and tokenizer (see :func:`load`)."""
    import open_clip

    if name == SYNTH_MODEL:
        from .synth.model import load_synth

        return load_synth(pretrained)
    weights = tag = None
    if pretrained is not None:
        pretrained = os.fspath(pretrained)
        weights, tag = (pretrained, None) if _is_local(pretrained) else (None, pretrained)
    if tag is not None:
        tags = open_clip.list_pretrained_tags_by_model(name)
        if tag not in tags:
            raise ModelLoadError(
                f"{name!r} has no pretrained tag {tag!r}; its tags: {', '.join(tags) or 'none'}. A local checkpoint file path works too."
            )
    offline = (tag is not None or name.startswith("hf-hub:")) and not _hub_reachable()
    try:
        with _hub_offline() if offline else contextlib.nullcontext():
            model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=tag, cache_dir=cache_dir)
        if weights is not None:
            open_clip.load_checkpoint(model, weights, strict=True, weights_only=not allow_pickle)
    except Exception as exc:  # open_clip, torch and the hub raise many types; keep the cause attached
        if offline:
            raise ModelLoadError(_offline_help(name, tag)) from exc
        hint = ""
        if weights is not None and not allow_pickle and "weights_only" in str(exc):
            hint = " The file needs pickle code to load; pass allow_pickle=True only if you trust it."
        raise ModelLoadError(f"could not load {name} weights from {weights or tag or name!r}: {exc}{hint}") from exc
    try:
        tokenizer = open_clip.get_tokenizer(name)
    except Exception as exc:
        raise ModelLoadError(f"could not build the tokenizer of {name}: {exc}") from exc
    return model, preprocess, tokenizer
