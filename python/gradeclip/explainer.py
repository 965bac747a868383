"""The Explainer: one object that explains a CLIP-style model's images (and, later, texts)."""

from __future__ import annotations

import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .errors import InputError
from .methods import get_method
from .results import ImageExplanation
from .towers.base import TokenTower
from .towers.registry import image_tower

TEXT_BATCH = 256  # texts encoded per text-tower forward


@contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[None]:
    """Put every module of ``model`` in eval mode and restore each one's own flag afterwards,
    also when the body raises."""
    flags = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in flags:
            module.training = training


def check_option_names(method: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
    """Raise :class:`InputError` for an option ``method`` does not take, listing the ones it does."""
    valid = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputError(f"method {method!r} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(valid) or 'none'}")


class Explainer:
    """Explains a CLIP-style model (open_clip ``CLIP`` / ``CustomTextCLIP``).

    The explainer never registers hooks or modifies the model: towers are run module by module.
    Every call runs the model in eval mode and restores each module's training flag afterwards.

    Args:
        model: the model, e.g. from :func:`gradeclip.load`.
        tokenizer: turns a list of strings into token ids ``[T, context_length]``; needed when
            texts are given as strings (the tokenizer :func:`gradeclip.load` returns).
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], Tensor] | None = None):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.tokenizer = tokenizer
        self._image_tower: TokenTower | None = None

    @property
    def image_tower(self) -> TokenTower:
        """The image tower's adapter (raises :class:`UnsupportedModelError` if there is none)."""
        if self._image_tower is None:
            self._image_tower = image_tower(self.model)
        return self._image_tower

    def encode_texts(self, texts: str | Sequence[str] | Tensor) -> tuple[Tensor, list[str] | None]:
        """Unit-norm float32 text embeddings ``[T, E]`` on the model's device, and the texts.

        ``texts`` may be one string, a list of strings (tokenised with the tokenizer), token ids
        (integer tensor ``[T, context_length]``) or embeddings (float tensor ``[T, E]``).
        """
        device = self.image_tower.device
        if isinstance(texts, str):
            texts = [texts]
        if isinstance(texts, Tensor):
            if texts.ndim != 2 or texts.shape[0] == 0:
                raise InputError(f"texts as a tensor must be [T, E] embeddings or [T, L] token ids with T ≥ 1, got {tuple(texts.shape)}")
            if texts.is_floating_point():
                return self._check_embeddings(texts.to(device)), None
            return self._encode_tokens(texts.to(device)), None
        if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
            raise InputError("texts must be a string, a list of strings, token ids [T, L] or embeddings [T, E]")
        texts = list(texts)
        if not texts:
            raise InputError("texts is empty: give at least one text")
        for i, text in enumerate(texts):
            if not text.strip():
                raise InputError(f"texts[{i}] is empty or whitespace only")
        if self.tokenizer is None:
            raise InputError("texts were given as strings but the Explainer has no tokenizer; pass tokenizer=")
        return self._encode_tokens(self.tokenizer(texts).to(device)), texts

    def _encode_tokens(self, tokens: Tensor) -> Tensor:
        with torch.no_grad(), evaluation_mode(self.model):
            chunks = [self.model.encode_text(tokens[i : i + TEXT_BATCH]) for i in range(0, tokens.shape[0], TEXT_BATCH)]
        return self._check_embeddings(torch.cat(chunks))

    def _check_embeddings(self, emb: Tensor) -> Tensor:
        width = self.image_tower.embed_dim
        if emb.shape[-1] != width:
            raise InputError(f"text embeddings have width {emb.shape[-1]}, the image embedding has {width}")
        emb = emb.float()
        if not torch.isfinite(emb).all():
            raise InputError("text embeddings contain NaN or infinite values")
        norm = emb.norm(dim=-1, keepdim=True)
        if (norm == 0).any():
            raise InputError("a text embedding is all zeros")
        return emb / norm

    def explain_image(
        self,
        images: Tensor,
        texts: str | Sequence[str] | Tensor,
        *,
        method: str = "gradeclip",
        **options: Any,
    ) -> ImageExplanation:
        """Explain each image against every text.

        Args:
            images: float tensor ``[B, 3, H, W]``, already preprocessed (the model's preprocess, or
                :func:`gradeclip.native_preprocess` for ``resolution="native"``); H and W must be
                multiples of the patch size. Moved to the model's device and dtype.
            texts: a string, a list of strings, token ids ``[T, L]`` or embeddings ``[T, E]``.
            method: a registered method name (:func:`gradeclip.methods`; ``docs/methods.md``).
            **options: the method's options (its keyword-only parameters). Grad-ECLIP: ``heads``
                (``"single"`` | ``"model"``), ``spatial`` (``"loosened"`` | ``"softmax"`` |
                ``"none"``), ``qk_space`` (``"attention"`` | ``"out_proj"``), ``n_layers`` (≥ 1),
                ``per_head`` (bool). Options listed in the method's ``text_options`` (e.g. CLIP
                Surgery's ``redundant``) also take texts, which are encoded like ``texts``.

        Returns:
            :class:`ImageExplanation` with ``maps`` ``[B, T, h, w]`` float32 (token grid, or pixels
            for pixel-based methods such as RISE), ``scores`` / ``model_scores`` ``[B, T]`` float32,
            and ``text_specific`` False for methods whose map ignores the text.
        """
        info, fn = get_method(method)
        check_option_names(method, fn, options)
        tower = self.image_tower
        targets, text_list = self.encode_texts(texts)
        call_options = dict(options)
        for name, default in info.text_options:
            value = options.get(name, default if self.tokenizer is not None else None)
            if value is not None:
                call_options[name] = self._encode_option(name, value)
        with evaluation_mode(self.model):
            out = fn(tower, images, targets, **call_options)
        return ImageExplanation(
            maps=out.maps,
            scores=out.scores,
            model_scores=out.model_scores,
            texts=text_list,
            method=method,
            options=dict(options),
            image_size=(images.shape[-2], images.shape[-1]),
            resolution=out.resolution,
            extras=out.extras,
            text_specific=info.text_specific,
        )

    def _encode_option(self, name: str, value: Any) -> Tensor:
        """A text-valued option (a string, possibly empty, a list of strings, token ids or
        embeddings ``[E]`` / ``[n, E]``) → unit-norm float32 embeddings ``[n, E]``."""
        if isinstance(value, str):
            value = [value]
        if isinstance(value, Tensor):
            return self.encode_texts(value.unsqueeze(0) if value.ndim == 1 else value)[0]
        if not isinstance(value, Sequence) or not value or not all(isinstance(v, str) for v in value):
            raise InputError(f"option {name!r} takes a text, a list of texts, token ids or embeddings, got {type(value).__name__}")
        if self.tokenizer is None:
            raise InputError(f"option {name!r} was given as text but the Explainer has no tokenizer; pass tokenizer= or an embedding")
        return self._encode_tokens(self.tokenizer(list(value)).to(self.image_tower.device))
