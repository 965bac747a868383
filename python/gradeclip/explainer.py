"""The Explainer: one object that explains a CLIP-style model's images and texts."""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Callable

import torch
from torch import Tensor, nn

from .compat import resolve
from .errors import InputError, UnsupportedModelError
from .image_inputs import ImageInput, is_image_like, prepare_images
from .methods import get_method
from .methods.gradeclip_text import grad_eclip_text
from .results import ImageExplanation, PairExplanation, TextExplanation
from .towers.base import ImageTower, TextTower
from .towers.registry import image_tower, text_tower
from .words import HFTokenizer, WordAlignment, tokenize_captions, warn_truncated

TEXT_BATCH = 256  # texts encoded per text-tower forward
TEXT_LAYERS = 8  # text blocks explained by default (the paper's choice for ViT-B), at most the tower's depth


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


def _outside_inference(x: Any) -> Any:
    """A normal copy of a tensor made under ``torch.inference_mode`` (those cannot enter autograd)."""
    return x.clone() if isinstance(x, Tensor) and x.is_inference() else x


def caption_list(texts: str | Sequence[str]) -> list[str]:
    """``texts`` (one string or a sequence of strings) as a list; :class:`InputError` when it is
    empty, holds a non-string, or a text is empty or whitespace only (naming its index)."""
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, Sequence) or not all(isinstance(t, str) for t in texts):
        raise InputError("texts must be a string or a list of strings (or, for explain_image, token ids [T, L] or embeddings [T, E])")
    texts = list(texts)
    if not texts:
        raise InputError("texts is empty: give at least one text")
    for i, text in enumerate(texts):
        if not text.strip():
            raise InputError(f"texts[{i}] is empty or whitespace only")
    return texts


def default_text_layers(tower: TextTower) -> int:
    """The text blocks explained when none are asked for: the paper's 8, or all of a shallower tower."""
    return min(TEXT_LAYERS, len(tower.blocks))


def check_option_names(method: str, fn: Callable[..., Any], options: dict[str, Any]) -> None:
    """Raise :class:`InputError` for an option ``method`` does not take, listing the ones it does."""
    valid = [p.name for p in inspect.signature(fn).parameters.values() if p.kind is p.KEYWORD_ONLY]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise InputError(f"method {method!r} has no option {', '.join(map(repr, unknown))}; its options: {', '.join(valid) or 'none'}")


class Explainer:
    """Explains a CLIP-style model or an image classifier.

    Supported: open_clip ``CLIP`` / ``CustomTextCLIP`` / ``CoCa`` (ViT, ModifiedResNet, CoCa,
    timm-hosted SigLIP and EVA02 image towers), transformers ``CLIPModel`` and
    ``BlipForImageTextRetrieval`` (its contrastive head), and timm ViT/EVA image classifiers
    (:meth:`explain_classes`). See ``docs/models.md``.

    The explainer never registers hooks or modifies the model: towers are run module by module.
    Every call runs the model in eval mode and restores each module's training flag afterwards.

    Args:
        model: the model, e.g. from :func:`gradeclip.load`.
        tokenizer: turns a list of strings into token ids ``[T, context_length]``; needed when
            texts are given as strings (the tokenizer :func:`gradeclip.load` returns). A Hugging
            Face fast tokenizer or processor is wrapped in :class:`~gradeclip.words.HFTokenizer`
            (words from its offsets). Models whose tokenizer is not at hand (SigLIP's needs a hub
            download) take token ids ``[T, L]`` directly.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], Tensor] | None = None):
        if not isinstance(model, nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self._image_tower: ImageTower | None = None
        self._text_tower: TextTower | None = None
        if type(tokenizer).__module__.startswith("transformers."):  # a Hugging Face tokenizer or processor
            tokenizer = HFTokenizer(getattr(tokenizer, "tokenizer", tokenizer), self.text_tower.context_length)
        self.tokenizer = tokenizer

    @property
    def image_tower(self) -> ImageTower:
        """The image tower's adapter (raises :class:`UnsupportedModelError` if there is none)."""
        if self._image_tower is None:
            self._image_tower = image_tower(self.model)
        return self._image_tower

    @property
    def text_tower(self) -> TextTower:
        """The text tower's adapter (raises :class:`UnsupportedModelError` if there is none)."""
        if self._text_tower is None:
            self._text_tower = text_tower(self.model)
        return self._text_tower

    def encode_texts(self, texts: str | Sequence[str] | Tensor) -> tuple[Tensor, list[str] | None]:
        """Unit-norm float32 text embeddings ``[T, E]`` on the model's device, and the texts.

        ``texts`` may be one string, a list of strings (tokenised with the tokenizer), token ids
        (integer tensor ``[T, context_length]``) or embeddings (float tensor ``[T, E]``). Strings
        longer than the context length are truncated with a ``TruncationWarning`` naming them, as
        in :meth:`explain_text`.
        """
        device = self.image_tower.device
        if isinstance(texts, Tensor):
            if texts.ndim != 2 or texts.shape[0] == 0:
                raise InputError(f"texts as a tensor must be [T, E] embeddings or [T, L] token ids with T ≥ 1, got {tuple(texts.shape)}")
            if texts.is_floating_point():
                return self._check_embeddings(texts.to(device)), None
            return self._encode_tokens(texts.to(device)), None
        texts = caption_list(texts)
        if self.tokenizer is None:
            raise InputError(
                "texts were given as strings but the Explainer has no tokenizer; pass tokenizer=, or give token ids "
                "[T, L] directly (e.g. SigLIP, whose tokenizer needs a hub download)"
            )
        tokens = self.tokenizer(texts)
        warn_truncated(self.tokenizer, texts, tokens.shape[-1])
        return self._encode_tokens(tokens.to(device)), texts

    def _encode_tokens(self, tokens: Tensor) -> Tensor:
        encode = getattr(self.model, "encode_text", None)  # open_clip's own; other models through their text tower
        if encode is None:
            encode = self.text_tower.encode
        with torch.no_grad(), evaluation_mode(self.model):
            chunks = [encode(tokens[i : i + TEXT_BATCH]) for i in range(0, tokens.shape[0], TEXT_BATCH)]
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

    def images(
        self, images: Any, resolution: str = "model", max_short_side: int | None = None
    ) -> tuple[Tensor, list[ImageInput] | None]:
        """The model input ``[B, 3, H, W]`` for ``images`` and, for images given as PIL images,
        uint8 arrays or paths (one or a list), each one's :class:`~gradeclip.image_inputs.ImageInput`
        (preprocessed as the model's own preprocessing does, or at ``resolution="native"``, see
        :func:`gradeclip.image_inputs.prepare_images`). A float tensor is taken as already
        preprocessed (then there are no originals, and ``resolution`` must stay ``"model"``)."""
        if isinstance(images, Tensor):
            if resolution != "model" or max_short_side is not None:
                raise InputError(
                    "resolution= and max_short_side= apply to images given as PIL images, arrays or paths; a tensor is "
                    "explained as it is (make one with gradeclip.native_preprocess for native resolution)"
                )
            return images, None
        if not is_image_like(images):
            raise InputError(
                "images must be a preprocessed float torch.Tensor [B, 3, H, W], a PIL image, a uint8 array, a path, or a list of those; "
                f"got {type(images).__name__}"
            )
        return prepare_images(images, self.model, resolution, max_short_side)

    def explain_image(
        self,
        images: Any,
        texts: str | Sequence[str] | Tensor,
        *,
        method: str = "gradeclip",
        compat: str | None = None,
        resolution: str = "model",
        max_short_side: int | None = None,
        **options: Any,
    ) -> ImageExplanation:
        """Explain each image against every text.

        Args:
            images: PIL images, uint8 arrays ``[H, W, 3]`` or image paths (one or a list),
                preprocessed as the model's own preprocessing does (:meth:`images`; the result then
                draws overlays on them: :meth:`ImageExplanation.overlay`); or a float tensor
                ``[B, 3, H, W]`` already preprocessed (the model's preprocess, or
                :func:`gradeclip.native_preprocess`), H and W multiples of the patch size. Moved to
                the model's device and dtype.
            texts: a string, a list of strings, token ids ``[T, L]`` or embeddings ``[T, E]``.
            method: a registered method name (:func:`gradeclip.methods`; ``docs/methods.md``).
            resolution: for images not given as a tensor: ``"model"`` (the model's input size) or
                ``"native"`` (about each image's own size and aspect ratio, SPEC §4).
            max_short_side: with ``resolution="native"``, cap the shorter side at this many pixels.
            **options: the method's options (its keyword-only parameters). Grad-ECLIP: ``heads``
                (``"single"`` | ``"model"``), ``spatial`` (``"loosened"`` | ``"softmax"`` |
                ``"none"``), ``qk_space`` (``"attention"`` | ``"out_proj"``), ``n_layers`` (≥ 1),
                ``per_head`` (bool). Options listed in the method's ``text_options`` (e.g. CLIP
                Surgery's ``redundant``) also take texts, which are encoded like ``texts``.
            compat: ``"authors"``: Grad-ECLIP's options as the authors' evaluation scripts
                (``qk_space="out_proj"``; SPEC §12, :mod:`gradeclip.compat`); options given
                explicitly win. The native resolution they used is the images' preparation:
                ``gradeclip.native_preprocess(image, model, compat="authors")``.

        Returns:
            :class:`ImageExplanation` with ``maps`` ``[B, T, h, w]`` float32 (token grid, or pixels
            for pixel-based methods such as RISE), ``scores`` / ``model_scores`` ``[B, T]`` float32,
            and ``text_specific`` False for methods whose map ignores the text.
        """
        if self.image_tower.score == "logit":
            raise InputError(f"{self.image_tower.description} is an image classifier: explain its classes with explain_classes")
        if compat is not None:
            if method != "gradeclip":
                raise InputError(f"compat={compat!r} sets Grad-ECLIP's options; method {method!r} has none of them (use method='gradeclip')")
            options = resolve(compat, "image", options)
        pixels, inputs = self.images(images, resolution, max_short_side)
        targets, text_list = self.encode_texts(texts)
        return self._explain_targets(pixels, targets, method, options, texts=text_list, inputs=inputs)

    def explain_classes(
        self, images: Tensor, classes: int | Sequence[int], *, method: str = "gradeclip", **options: Any
    ) -> ImageExplanation:
        """Explain an image classifier's class logits (paper §4.1.4): each image against every class.

        The explained score is the class logit (not a cosine); the rest is as in :meth:`explain_image`.

        Args:
            images: float tensor ``[B, 3, H, W]`` at the classifier's input size, preprocessed.
            classes: a class index or a list of them (T classes), each in ``0..num_classes-1``.
            method: ``"gradeclip"`` (the baselines explain cosine scores, not logits).
            **options: Grad-ECLIP's options, as for :meth:`explain_image`.

        Returns:
            :class:`ImageExplanation` with ``maps`` ``[B, T, h, w]``, ``scores`` / ``model_scores``
            ``[B, T]`` the explained / the model's own logits, ``classes`` the class indices and
            ``texts`` None.
        """
        tower = self.image_tower
        if tower.score != "logit":
            raise InputError(f"explain_classes needs an image classifier; {tower.description} is explained against texts (explain_image)")
        if method != "gradeclip":  # the baselines score cosines; only Grad-ECLIP is wired to class logits
            raise InputError(f"explain_classes explains class logits with method='gradeclip' only, got {method!r}")
        labels = [classes] if isinstance(classes, int) else list(classes)
        if not labels or not all(isinstance(c, int) and not isinstance(c, bool) and 0 <= c < tower.embed_dim for c in labels):
            raise InputError(f"classes must be one or more class indices in 0..{tower.embed_dim - 1}, got {classes!r}")
        targets = torch.nn.functional.one_hot(torch.tensor(labels), tower.embed_dim).float().to(tower.device)
        return self._explain_targets(images, targets, method, options, classes=labels)

    def _explain_targets(
        self,
        images: Tensor,
        targets: Tensor,
        method: str,
        options: dict[str, Any],
        texts: list[str] | None = None,
        classes: list[int] | None = None,
        inputs: list[ImageInput] | None = None,
    ) -> ImageExplanation:
        info, fn = get_method(method)
        check_option_names(method, fn, options)
        tower = self.image_tower
        call_options = dict(options)
        for name, default in info.text_options:
            value = options.get(name, default if self.tokenizer is not None else None)
            if value is not None:
                call_options[name] = self._encode_option(name, value)
        with torch.inference_mode(False), evaluation_mode(self.model):
            images, targets = _outside_inference(images), _outside_inference(targets)
            out = fn(tower, images, targets, **call_options)
        return ImageExplanation(
            maps=out.maps,
            scores=out.scores,
            model_scores=out.model_scores,
            texts=texts,
            method=method,
            options=dict(options),
            image_size=(images.shape[-2], images.shape[-1]),
            resolution=out.resolution,
            extras=out.extras,
            classes=classes,
            text_specific=info.text_specific,
            inputs=inputs,
        )

    def encode_images(self, images: Tensor) -> Tensor:
        """Unit-norm float32 image embeddings ``[B, E]`` from the unmodified image tower (any input
        size the tower's adapter accepts, so native-resolution inputs work too). A model whose image
        tower has no adapter (e.g. ConvNeXt) is encoded with its own ``encode_image``, so its texts
        can still be explained."""
        with torch.no_grad(), evaluation_mode(self.model):
            try:
                encode = self.image_tower.encode
            except UnsupportedModelError:
                encode = getattr(self.model, "encode_image", None)
                if encode is None:
                    raise
            emb = encode(images).float()
        norm = emb.norm(dim=-1, keepdim=True)
        if not torch.isfinite(emb).all() or (norm == 0).any():
            raise InputError("an image embedding is all zeros or not finite")
        return emb / norm

    def explain_text(
        self,
        images: Any,
        texts: str | Sequence[str] | Tensor,
        *,
        n_layers: int | None = None,
        heads: str = "single",
        qk_space: str | None = None,
        lambda_keys: str | None = None,
        relu: str | None = None,
        compat: str | None = None,
        resolution: str = "model",
        max_short_side: int | None = None,
    ) -> TextExplanation:
        """Explain which tokens (and words) of each text made it match each image (SPEC §3).

        The images go through the unmodified image tower; the T texts go through the text tower in
        one forward with its last ``n_layers`` blocks explained (single-head with ``heads="single"``,
        the model's own heads with ``heads="model"``), and the channel weights of all B×T pairs come
        from one batched vector-Jacobian product (texts go in chunks of ``TEXT_BATCH`` to bound memory).

        Args:
            images: as for :meth:`explain_image` (PIL images, arrays, paths, or a preprocessed
                tensor; ``resolution`` and ``max_short_side`` as there).
            texts: a caption or a list of captions (strings; the Explainer's tokenizer must be
                open_clip's ``SimpleTokenizer`` or a Hugging Face fast tokenizer), or token ids ``[T, L]`` made by the model's own
                tokenizer (any model; then there are no words, only token positions). Captions
                longer than the context length are truncated with a ``TruncationWarning`` (a
                ``UserWarning``) naming them.
            n_layers: how many of the text tower's last blocks are explained (1..depth); None:
                ``min(8, depth)`` (:func:`default_text_layers`).
            heads: ``"single"`` or ``"model"``.
            qk_space: ``"attention"`` (default) or ``"out_proj"`` (q, k through the output projection).
            lambda_keys: ``"attended"`` (default: λ min-max over tokens 0..EOT, SPEC §3) or
                ``"context"`` (over every context position, padding included: SPEC §3 (a)).
            relu: ``"per_layer"`` (default, SPEC §3) or ``"after_sum"`` (once on the layer sum: §3 (b)).
            compat: ``"authors"``: the authors' released form (``lambda_keys="context"``,
                ``relu="after_sum"``; SPEC §12); options given explicitly win.

        Returns:
            :class:`TextExplanation` with ``importance`` ``[B, T, L]`` float32 (L = the context
            length, or the ids' length) and ``scores`` / ``model_scores`` ``[B, T]`` float32;
            ``words(b, t)`` gives the words (when texts were strings).

        Raises:
            InputError: empty or whitespace-only texts, malformed images, bad options, a tokenizer
                that cannot be mapped back to words.
            UnsupportedModelError: a text tower Grad-ECLIP cannot explain.
        """
        form = resolve(compat, "text", {"lambda_keys": lambda_keys, "relu": relu, "qk_space": qk_space})
        tower = self.text_tower
        if n_layers is None:
            n_layers = default_text_layers(tower)
        captions: list[str] | None = None
        alignments: list[WordAlignment] | None = None
        if isinstance(texts, Tensor):
            tokens = texts.to(tower.device)
            tower.reported(tokens)  # validates the ids
        else:
            captions = caption_list(texts)
            tokens, alignments = tokenize_captions(self.tokenizer, captions, tower.context_length)
            tokens = tokens.to(tower.device)
            positions = torch.arange(tokens.shape[1], device=tokens.device)
            content = torch.stack([(positions >= a.first) & (positions < a.eot) for a in alignments])
            if not torch.equal(tower.reported(tokens), content):
                raise UnsupportedModelError(
                    f"{tower.description}: the model pools a position other than the tokenizer's end-of-text token; "
                    "give the model's own token ids [T, L] instead of strings"
                )
        targets = self.encode_images(self.images(images, resolution, max_short_side)[0])
        if targets.shape[-1] != tower.embed_dim:
            raise UnsupportedModelError(f"image embeddings have width {targets.shape[-1]}, text embeddings {tower.embed_dim}")
        with evaluation_mode(self.model):  # up to TEXT_BATCH texts per forward, to bound memory
            outs = [
                grad_eclip_text(tower, tokens[i : i + TEXT_BATCH], targets, heads=heads, n_layers=n_layers, **form)
                for i in range(0, tokens.shape[0], TEXT_BATCH)
            ]
        return TextExplanation(
            importance=torch.cat([out.maps for out in outs], dim=1),
            scores=torch.cat([out.scores for out in outs], dim=1),
            model_scores=torch.cat([out.model_scores for out in outs], dim=1),
            texts=captions,
            alignments=alignments,
            options={"n_layers": n_layers, "heads": heads, **form},
        )

    def explain_pair(
        self,
        image: Any,
        text: str,
        *,
        heads: str = "single",
        n_layers: int = 1,
        n_text_layers: int | None = None,
        compat: str | None = None,
        resolution: str = "model",
        max_short_side: int | None = None,
    ) -> PairExplanation:
        """The visual map and the word importances of one (image, text) pair (the paper's Fig. 4).

        Args:
            image: a PIL image, uint8 array or path (``resolution`` and ``max_short_side`` as for
                :meth:`explain_image`; the visual side then draws overlays on it), or a float tensor
                ``[3, H, W]`` / ``[1, 3, H, W]``, preprocessed.
            text: the caption.
            heads: ``"single"`` or ``"model"``, for both sides.
            n_layers: image-tower blocks explained (SPEC §2; default 1).
            n_text_layers: text-tower blocks explained (SPEC §3; default ``min(8, depth)``).
            compat: ``"authors"``: both sides in the authors' released form (SPEC §12).

        Returns:
            :class:`PairExplanation`: ``.map`` ``[h, w]``, ``.words``, and both full explanations.
        """
        if not isinstance(text, str):
            raise InputError(f"text must be one string, got {type(text).__name__}")
        if isinstance(image, Tensor) and image.ndim == 3:
            image = image.unsqueeze(0)
        if isinstance(image, Tensor) and image.ndim == 4 and image.shape[0] != 1:
            raise InputError(f"explain_pair takes one image, got a batch of {image.shape[0]}; use explain_image / explain_text")
        if isinstance(image, (list, tuple)):
            raise InputError(f"explain_pair takes one image, got a list of {len(image)}; use explain_image / explain_text")
        pixels, inputs = self.images(image, resolution, max_short_side)
        textual = self.explain_text(pixels, [text], n_layers=n_text_layers, heads=heads, compat=compat)
        visual = self.explain_image(pixels, [text], method="gradeclip", compat=compat, heads=heads, n_layers=n_layers)
        visual = dataclasses.replace(visual, inputs=inputs)
        return PairExplanation(visual=visual, textual=textual)

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
