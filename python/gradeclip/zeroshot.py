"""Zero-shot classification targets: class names, prompt templates, the text classifier, and
ground-truth labels matched to classes.

The classifier follows CLIP / open_clip: each class's embedding is the mean of its unit-norm
prompt embeddings (one prompt per template), normalised again.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from .errors import InputError
from .explainer import Explainer

#: built-in template sets: open_clip's 80 OpenAI ImageNet prompts, its 7 "simple" ones, or the bare name
TEMPLATE_SETS = ("openai", "simple", "none")
#: the set a zero-shot run uses when it is given none
DEFAULT_TEMPLATES = "openai"
PROMPTS_PER_CALL = 1024


def read_lines(path: str | os.PathLike[str]) -> list[str]:
    """The non-empty, stripped lines of a UTF-8 text file. Raises :class:`InputError` if unreadable or empty."""
    try:
        lines = [line.strip() for line in Path(path).read_text(encoding="utf-8").splitlines()]
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read {path}: {exc}") from exc
    lines = [line for line in lines if line]
    if not lines:
        raise InputError(f"{path} has no non-empty lines")
    return lines


def imagenet_classnames() -> list[str]:
    """open_clip's 1,000 ImageNet class names."""
    import open_clip

    return list(open_clip.IMAGENET_CLASSNAMES)


def templates(spec: str) -> list[str]:
    """Prompt templates with ``{}`` where the class name goes: a set name from
    :data:`TEMPLATE_SETS` or a file with one template per line."""
    import open_clip

    if spec == "openai":
        return [t("{}") for t in open_clip.OPENAI_IMAGENET_TEMPLATES]
    if spec == "simple":
        return [t("{}") for t in open_clip.SIMPLE_IMAGENET_TEMPLATES]
    if spec == "none":
        return ["{}"]
    if not Path(spec).is_file():
        raise InputError(f"templates must be one of {', '.join(TEMPLATE_SETS)} or a file, got {spec!r}")
    lines = read_lines(spec)
    missing = [t for t in lines if "{}" not in t]
    if missing:
        raise InputError(f"templates need a '{{}}' where the class name goes: {missing[:3]}")
    return lines


def classifier(explainer: Explainer, classnames: Sequence[str], prompt_templates: Sequence[str], *, progress: bool = False) -> Tensor:
    """The zero-shot classifier: unit-norm float32 ``[C, E]`` on the model's device, row c the
    normalised mean of class c's normalised prompt embeddings."""
    if not classnames or not prompt_templates:
        raise InputError("zero-shot needs at least one class name and one template")
    per_call = max(1, PROMPTS_PER_CALL // len(prompt_templates))
    rows = []
    for start in tqdm(range(0, len(classnames), per_call), desc="class embeddings", unit="batch", disable=not progress):
        names = classnames[start : start + per_call]
        prompts = [t.replace("{}", name) for name in names for t in prompt_templates]
        emb, _ = explainer.encode_texts(prompts)
        rows.append(emb.view(len(names), len(prompt_templates), -1).mean(dim=1))
    weights = torch.cat(rows)
    return weights / weights.norm(dim=-1, keepdim=True)


class LabelMatcher:
    """Maps a ground-truth label to a class index: an integer in ``0..C-1`` or a class name
    (case-insensitive, underscores read as spaces)."""

    def __init__(self, classnames: Sequence[str]):
        self.count = len(classnames)
        self.by_name = {self._norm(name): i for i, name in reversed(list(enumerate(classnames)))}

    @staticmethod
    def _norm(name: str) -> str:
        return " ".join(name.replace("_", " ").lower().split())

    def __call__(self, label: str) -> int | None:
        """The class index of ``label``, or None when it names no class."""
        text = label.strip()
        if text.lstrip("-").isdigit():
            index = int(text)
            return index if 0 <= index < self.count else None
        return self.by_name.get(self._norm(text))
