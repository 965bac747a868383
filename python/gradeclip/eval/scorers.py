"""Scorers: how a perturbed input is judged against clean references (SPEC §7).

- :class:`ZeroShotClassifier`: top-1 / top-5 of zero-shot classification (paper Table I).
- :class:`RetrievalScorer`: image–text retrieval with a perturbed image (paper Table II).
- :class:`TextRetrievalScorer`: retrieval with a perturbed caption (paper Table III).

Every scorer works on unit-norm float32 embeddings on the CPU and returns float64 hit arrays;
a competitor beats the right answer only with a strictly higher similarity (ties count as hits).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..explainer import Explainer
from .report import settings_key


def template_text(template: Callable[[str], str] | str) -> str:
    """A prompt template as text with ``{}`` where the class name goes (open_clip's templates are callables)."""
    return template if isinstance(template, str) else template("{}")


class ZeroShotClassifier:
    """Zero-shot classification by prompt ensembling (open_clip's recipe, built by
    :func:`gradeclip.zeroshot.classifier`): each class's weight is the normalised mean of its
    normalised prompt embeddings.

    Args:
        model, tokenizer: the model and its tokenizer.
        class_names: names in label order (default ``open_clip.IMAGENET_CLASSNAMES``).
        templates: callables or strings with ``{}`` for the name (default ``open_clip.OPENAI_IMAGENET_TEMPLATES``).
    """

    metrics = ("top1", "top5")

    def __init__(
        self,
        model: nn.Module,
        tokenizer: Callable[[list[str]], Tensor],
        class_names: Sequence[str] | None = None,
        templates: Sequence[Callable[[str], str] | str] | None = None,
        progress: bool = False,
    ):
        import open_clip

        from ..zeroshot import classifier

        self.class_names = list(open_clip.IMAGENET_CLASSNAMES if class_names is None else class_names)
        self.templates = [template_text(t) for t in (open_clip.OPENAI_IMAGENET_TEMPLATES if templates is None else templates)]
        self.weights = classifier(Explainer(model, tokenizer), self.class_names, self.templates, progress=progress).float().cpu()

    def describe(self) -> dict[str, Any]:
        return {
            "scorer": "classification",
            "classes": len(self.class_names),
            "class_names_sha1": settings_key({"names": self.class_names}),
            "templates": self.templates,
        }

    def text_embeddings(self, targets: Sequence[int]) -> Tensor:
        """The classifier weights of ``targets`` ``[B, E]``: the texts each image is explained for."""
        return self.weights[torch.as_tensor(list(targets))]

    def predict(self, embeddings: Tensor) -> list[int]:
        """The top-1 class of each unit image embedding."""
        return (embeddings @ self.weights.T).argmax(dim=1).tolist()

    def hits(self, embeddings: Tensor, targets: Sequence[int]) -> np.ndarray:
        """float64 ``[N, 2]``: top-1 and top-5 correctness. A class beats the target only with a
        strictly higher logit (ties count as correct)."""
        logits = embeddings @ self.weights.T
        own = logits[torch.arange(len(targets)), torch.as_tensor(list(targets))]
        above = (logits > own[:, None]).sum(dim=1)
        return torch.stack([above < 1, above < 5], dim=1).double().numpy()


class _CaptionGallery:
    """Clean caption embeddings ``[C, E]``, image embeddings ``[I, E]`` and each caption's image
    index, which the retrieval scorers rank a perturbed input against."""

    metrics = ("ir@1", "ir@5", "tr@1", "tr@5")
    name = ""

    def __init__(self, captions: Tensor, images: Tensor, image_of: Sequence[int]):
        self.captions = captions
        self.images = images
        self.image_of = torch.as_tensor(list(image_of))

    def describe(self) -> dict[str, Any]:
        return {"scorer": self.name, "captions": int(self.captions.shape[0]), "images": int(self.images.shape[0])}

    @staticmethod
    def at_k(ir_above: Tensor, tr_above: Tensor) -> np.ndarray:
        """float64 ``[N, 4]``: IR@1, IR@5, TR@1, TR@5 from how many competitors rank above the right answer."""
        return torch.stack([ir_above < 1, ir_above < 5, tr_above < 1, tr_above < 5], dim=1).double().numpy()


class RetrievalScorer(_CaptionGallery):
    """Image–text retrieval against a caption table with the perturbed image in place of the clean one.

    For a row (image ``i``, caption ``c``) and a perturbed image embedding ``e'``:
    IR@k: fewer than ``k`` other (clean) images are closer to ``c`` than ``e'``;
    TR@k: fewer than ``k`` captions are closer to ``e'`` than the closest caption of image ``i``.
    """

    name = "retrieval"

    def text_embeddings(self, rows: Sequence[int]) -> Tensor:
        return self.captions[torch.as_tensor(list(rows))]

    def hits(self, embeddings: Tensor, rows: Sequence[int]) -> np.ndarray:
        """float64 ``[N, 4]``: IR@1, IR@5, TR@1, TR@5 of each perturbed image embedding."""
        rows_t = torch.as_tensor(list(rows))
        own_image = self.image_of[rows_t]
        queries = self.captions[rows_t]
        to_images = queries @ self.images.T
        to_images[torch.arange(len(rows_t)), own_image] = -torch.inf
        own = (queries * embeddings).sum(dim=1)
        ir_above = (to_images > own[:, None]).sum(dim=1)
        to_captions = embeddings @ self.captions.T
        mine = self.image_of[None, :] == own_image[:, None]
        best = torch.where(mine, to_captions, torch.full_like(to_captions, -torch.inf)).max(dim=1).values
        tr_above = (to_captions > best[:, None]).sum(dim=1)
        return self.at_k(ir_above, tr_above)


class TextRetrievalScorer(_CaptionGallery):
    """Retrieval with a perturbed caption in place of the clean one (paper Table III).

    For a row (image ``i``, caption ``c``) and the perturbed caption's embedding ``t'``:
    IR@k: fewer than ``k`` other images are closer to ``t'`` than image ``i``;
    TR@k: for image ``i`` as the query, fewer than ``k`` captions of other images are closer than
    ``t'`` (the image's other, untouched captions neither help nor compete).
    """

    name = "text retrieval"

    def hits(self, texts: Tensor, rows: Sequence[int]) -> np.ndarray:
        """float64 ``[N, 4]``: IR@1, IR@5, TR@1, TR@5 of each perturbed caption embedding."""
        own_image = self.image_of[torch.as_tensor(list(rows))]
        n = torch.arange(len(own_image))
        to_images = texts @ self.images.T
        own = to_images[n, own_image].clone()
        to_images[n, own_image] = -torch.inf
        ir_above = (to_images > own[:, None]).sum(dim=1)
        queries = self.images[own_image]
        to_captions = queries @ self.captions.T
        to_captions[self.image_of[None, :] == own_image[:, None]] = -torch.inf
        own_t = (queries * texts).sum(dim=1)
        tr_above = (to_captions > own_t[:, None]).sum(dim=1)
        return self.at_k(ir_above, tr_above)
