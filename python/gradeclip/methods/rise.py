"""RISE: randomized input sampling for explanation (Petsiuk, Das & Saenko, BMVC 2018; SPEC §6).

``n_masks`` random binary ``cells × cells`` grids (each cell on with probability ``p``) are
upsampled bilinearly to ``(cells + 1)`` cell sizes and cropped at a random shift to the image size;
each masked image ``image · mask`` is scored by the model (``s = cos(e_I, e_T)``), and the saliency
is ``Σ_i s_i · mask_i / (n_masks · p)``. Maps are at the input's pixel resolution.

Draws, from a CPU ``torch.Generator`` seeded with ``seed`` (so every device gets the same masks):
``grid = rand(n_masks, cells, cells) < p``, then the row shifts ``randint(0, cell_h, (n_masks,))``,
then the column shifts ``randint(0, cell_w, (n_masks,))``, with ``cell_h = ceil(H / cells)`` and
``cell_w = ceil(W / cells)``. Upsampling is PyTorch's bilinear with ``align_corners=False`` (edge
values held at the border; Petsiuk et al.'s scikit-image call mirrors there instead, which only
touches the outer half cell). Every image of a batch uses the same masks.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..errors import InputError
from ..towers.base import TokenTower
from .base import MethodInfo, MethodOutput
from .common import check_float, check_int, cosine_scores

INFO = MethodInfo(
    name="rise",
    text_specific=True,
    needs_gradients=False,
    forwards_per_image="n_masks (default 2000) forwards of masked copies, no gradients; each serves all texts",
    paper="Petsiuk, Das & Saenko, RISE: Randomized Input Sampling for Explanation of Black-box Models, BMVC 2018",
    summary="score-weighted average of random bilinear-upsampled binary masks (pixel resolution)",
)


class RiseMasks:
    """The seeded random masks of one RISE run, materialised a chunk at a time.

    ``grid`` ``[n, cells, cells]`` float32 (0/1) and the shifts ``[n]`` live on the CPU; ``chunk``
    upsamples and crops masks ``start:stop`` to ``[stop - start, H, W]`` on ``device``.
    """

    def __init__(self, n_masks: int, cells: int, p: float, size: tuple[int, int], seed: int):
        generator = torch.Generator().manual_seed(seed)
        self.size = size
        self.cells = cells
        self.cell = (math.ceil(size[0] / cells), math.ceil(size[1] / cells))
        self.grid = (torch.rand(n_masks, cells, cells, generator=generator) < p).float()
        self.shift_y = torch.randint(0, self.cell[0], (n_masks,), generator=generator)
        self.shift_x = torch.randint(0, self.cell[1], (n_masks,), generator=generator)

    def chunk(self, start: int, stop: int, device: torch.device) -> Tensor:
        """Masks ``start:stop`` as ``[stop - start, H, W]`` float32 on ``device``."""
        up_size = ((self.cells + 1) * self.cell[0], (self.cells + 1) * self.cell[1])
        up = F.interpolate(self.grid[start:stop, None].to(device), size=up_size, mode="bilinear", align_corners=False)[:, 0]
        height, width = self.size
        n = stop - start
        ys = (self.shift_y[start:stop, None] + torch.arange(height)).to(device)  # [n, H]
        xs = (self.shift_x[start:stop, None] + torch.arange(width)).to(device)  # [n, W]
        index = torch.arange(n, device=device)[:, None, None]
        return up[index, ys[:, :, None], xs[:, None, :]]


def rise(
    tower: TokenTower,
    inputs: Any,
    targets: Tensor,
    *,
    n_masks: int = 2000,
    cells: int = 8,
    p: float = 0.5,
    seed: int = 0,
    batch_size: int = 250,
) -> MethodOutput:
    """RISE saliency of ``inputs`` (``[B, 3, H, W]`` preprocessed images) against unit-norm
    ``targets`` ``[T, E]``.

    Options: ``n_masks`` (N), ``cells`` (s, the grid is s×s), ``p`` (probability a cell is kept),
    ``seed`` (the masks' generator), ``batch_size`` (masked images per tower forward).

    Returns maps ``[B, T, H, W]`` float32 at pixel resolution (``resolution="pixels"``) and the
    model's cosine scores ``[B, T]`` of the unmasked images (``scores`` = ``model_scores``).
    """
    check_int("n_masks", n_masks, 1)
    check_int("cells", cells, 1)
    check_float("p", p, below_one=True)
    check_int("seed", seed, 0)
    check_int("batch_size", batch_size, 1)
    if not isinstance(inputs, Tensor) or inputs.ndim != 4:
        raise InputError("rise needs images as a tensor [B, 3, H, W]")
    device = tower.device
    images = inputs.to(device)
    with torch.no_grad():
        model_scores = cosine_scores(tower.encode(images), targets)
        n_images, height, width = images.shape[0], images.shape[-2], images.shape[-1]
        masks = RiseMasks(n_masks, cells, p, (height, width), seed)
        saliency = torch.zeros(n_images, targets.shape[0], height, width, device=device)
        per_chunk = max(1, batch_size // n_images)  # masks per chunk: every image × these masks
        for start in range(0, n_masks, per_chunk):
            stop = min(n_masks, start + per_chunk)
            chunk = masks.chunk(start, stop, device)  # [m, H, W]
            masked = (images[:, None] * chunk[None, :, None].to(images.dtype)).flatten(0, 1)  # [B·m, 3, H, W]
            embeddings = torch.cat([tower.encode(masked[i : i + batch_size]) for i in range(0, masked.shape[0], batch_size)])
            scores = cosine_scores(embeddings, targets).reshape(n_images, stop - start, -1)  # [B, m, T]
            saliency += torch.einsum("bmt,mhw->bthw", scores, chunk)
        saliency /= n_masks * p
    return MethodOutput(maps=saliency, scores=model_scores, model_scores=model_scores, resolution="pixels")
