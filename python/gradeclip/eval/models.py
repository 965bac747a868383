"""The evaluated model, seen only through the Explainer and its tower adapters, so an evaluation
runs for every model family the Explainer supports (open_clip ViT / ResNet / CoCa / timm towers,
transformers CLIP and BLIP): its geometry (:class:`gradeclip.preprocessing.Geometry`), clean
embeddings, and one method's maps brought to the perturbed images' size.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ..data import load_images
from ..errors import InputError
from ..explainer import Explainer
from ..preprocessing import Geometry, model_ready, native_preprocess
from ..render import upsample
from .runner import chunks, positive_int

RESOLUTIONS = ("model", "native")
UPSAMPLING = "bilinear, align_corners=False (gradeclip.render.upsample)"


class EvalModel:
    """A model under evaluation: the :class:`~gradeclip.Explainer` of ``model`` (with ``tokenizer``)
    and its :class:`~gradeclip.preprocessing.Geometry`.

    Raises:
        UnsupportedModelError: the model has no image tower adapter.
        InputError: its preprocessing is not the square bicubic resize + centre crop.
    """

    def __init__(self, model: nn.Module, tokenizer: Callable[[list[str]], Tensor] | None):
        self.model = model
        self.explainer = Explainer(model, tokenizer)
        self.geometry = Geometry.of(model)

    def model_ready(self, images: Sequence[np.ndarray]) -> Tensor:
        """uint8 images (any sizes) → the model's input float32 ``[B, 3, S, S]`` (Rust, Pillow-exact)."""
        g = self.geometry
        return torch.from_numpy(model_ready(list(images), g.size, g.mean, g.std))

    def encode_images(self, pixels: Tensor, batch_size: int) -> Tensor:
        """Unit-norm float32 embeddings ``[N, E]`` (CPU) of model inputs ``pixels`` ``[N, 3, S, S]``,
        ``batch_size`` per forward of the image tower."""
        tower = self.explainer.image_tower
        out = [
            self.explainer.encode_images(pixels[i : i + batch_size].to(device=tower.device, dtype=tower.dtype)).cpu()
            for i in range(0, pixels.shape[0], batch_size)
        ]
        return torch.cat(out)

    def embed_files(self, paths: Sequence[str | os.PathLike[str]], batch_size: int, progress: bool) -> Tensor:
        """Clean unit-norm embeddings ``[N, E]`` (CPU) of image files, ``batch_size`` at a time."""
        from tqdm.auto import tqdm

        parts = list(chunks(paths, batch_size))
        return torch.cat([self.encode_images(self.model_ready(load_images(part)), batch_size) for part in tqdm(parts, desc="gallery", disable=not progress, leave=False)])

    def encode_texts(self, texts: Sequence[str]) -> Tensor:
        """Unit-norm float32 text embeddings ``[T, E]`` (CPU). Unlike ``Explainer.encode_texts`` on
        strings it accepts the empty text, which word insertion starts from."""
        if self.explainer.tokenizer is None:
            raise InputError("the evaluation encodes texts: give the model's tokenizer (tokenizer=)")
        return self.explainer.encode_texts(self.explainer.tokenizer(list(texts)))[0].cpu()

    def describe(self, model_name: str | None) -> str:
        """How a result names the model: ``model_name``, else its class and image tower."""
        return model_name or f"{type(self.model).__name__}: {self.explainer.image_tower.description}"


def check_method(method: str, options: dict[str, Any] | None, resolution: str, explain_batch_size: int) -> dict[str, Any]:
    """Validate what explains the images; returns a copy of ``options``."""
    from ..methods import get_method

    get_method(method)  # raises UnknownMethodError listing the valid names
    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {', '.join(RESOLUTIONS)}, got {resolution!r}")
    positive_int("explain_batch_size", explain_batch_size)
    return dict(options or {})


class Maps:
    """One method's maps of images, explained in the model's geometry (batched) or at their native
    size (one by one), each upsampled to its image's size (SPEC §5, :func:`gradeclip.render.upsample`)."""

    def __init__(
        self,
        evaluated: EvalModel,
        method: str,
        options: dict[str, Any],
        resolution: str,
        max_short_side: int | None,
        batch: int,
        native_geometry: str = "gradeclip",
    ):
        # the explainer's tokenizer encodes methods' text options, e.g. CLIP Surgery's empty-prompt
        # redundant feature, which it needs whenever a batch holds one text
        self.evaluated = evaluated
        self.method = method
        self.options = options
        self.resolution = resolution
        self.max_short_side = max_short_side
        self.batch = batch
        #: the native-resolution geometry: ``"gradeclip"`` or ``"authors"`` (SPEC §12)
        self.native_geometry = native_geometry

    def __call__(self, images: list[np.ndarray], texts: Tensor, text_ids: Sequence[int]) -> list[np.ndarray]:
        """One float32 map per image at that image's size, explaining image ``b`` for ``texts[b]``.

        ``images`` are the images to perturb (already in the model's geometry when
        ``resolution="model"``); images that share a text id share one text in the explainer call.
        """
        explainer = self.evaluated.explainer
        grids: list[np.ndarray] = []
        if self.resolution == "native":
            for image, text in zip(images, texts):
                x = native_preprocess(image, self.evaluated.model, self.max_short_side, geometry=self.native_geometry)[None]
                res = explainer.explain_image(x, text[None], method=self.method, **self.options)
                grids.append(res.maps[0, 0].detach().float().cpu().numpy())
        else:
            for start in range(0, len(images), self.batch):
                ids = list(text_ids[start : start + self.batch])
                unique = list(dict.fromkeys(ids))
                first = [ids.index(u) for u in unique]
                x = self.evaluated.model_ready(images[start : start + self.batch])
                res = explainer.explain_image(x, texts[start : start + self.batch][first], method=self.method, **self.options)
                maps = res.maps.detach().float().cpu()
                grids.extend(maps[b, unique.index(text_id)].numpy() for b, text_id in enumerate(ids))
        return list(upsample(grids, [image.shape[:2] for image in images]))
