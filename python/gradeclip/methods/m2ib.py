"""M2IB: multi-modal information bottleneck attribution (Wang, Rudner & Wilson, NeurIPS 2023).

A bottleneck is placed on the tokens leaving block ``layer``: ``t = λ ⊙ h + (1 − λ) ⊙ ε`` with
``λ = sigmoid(α)`` per token and channel (α starts at 5), ``ε ~ N(0, 1)``. The later blocks and the
head turn ``t`` into the image embedding; α is fitted with Adam (learning rate ``lr``, ``steps``
steps, ``samples`` noise draws per step) to minimise ``β · mean(KL) − mean_samples cos(e_I(t), e_T)``,
with ``KL = −½(1 + log σ² − μ² − σ²)``, ``μ = λ ⊙ h``, ``σ = 1 − λ`` (the per-entry capacity against
``N(0, 1)``). The map is the capacity summed over channels at each key (nats), from the last
optimisation step's forward, as in the authors' code.

Published defaults (the authors' evaluation script, also used by the Grad-ECLIP authors): the output
of block 9 of ViT-B's 12 (here ``layer=-3``: the third block from the end, the same point on every
depth), ``beta=0.1``, ``steps=10``, ``lr=1``, ``samples=10``. Their ``var`` option is unused by the
published bottleneck (it standardises nothing), so it has no counterpart here. Each (image, text)
pair gets its own α and optimiser state; the pairs are fitted together (Adam acts per entry, and the
summed loss gives each pair its own gradient). The noise is drawn on the CPU from a generator seeded
with ``seed``: ``randn(samples, L, D)`` at each step, the same draws for every pair, so a pair's map
does not depend on what else is in the batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..towers.base import TokenTower, rows
from ..towers.blocks import BlockAdapter
from .base import MethodInfo, MethodOutput
from .common import check_float, check_int, check_layer_index, cosine_scores, keys_of

SEQUENCES_PER_CHUNK = 128  # noisy token sequences per forward (pairs × samples), bounds memory

INFO = MethodInfo(
    name="m2ib",
    text_specific=True,
    needs_gradients=True,
    forwards_per_image=(
        "per text ≈ steps × samples × 3 × (blocks after layer) / depth, plus 1 "
        "(≈ 51 for ViT-B/16 with the defaults: 10 steps × 10 samples through 2 of 12 blocks, forward and backward)"
    ),
    paper="Wang, Rudner & Wilson, Visual Explanations of Image-Text Representations via Multi-Modal Information Bottleneck Attribution, NeurIPS 2023",
    summary="per-token capacity of an information bottleneck fitted to keep the image-text cosine (Adam on the mask)",
)


def m2ib(
    tower: TokenTower,
    inputs: Any,
    targets: Tensor,
    *,
    layer: int = -3,
    beta: float = 0.1,
    steps: int = 10,
    lr: float = 1.0,
    samples: int = 10,
    seed: int = 0,
) -> MethodOutput:
    """M2IB maps of ``inputs`` against unit-norm ``targets`` ``[T, E]``.

    ``layer``: the block whose output is bottlenecked (negative counts from the end). Returns maps
    ``[B, T, *grid]`` float32 (capacity in nats, ≥ 0) and the model's cosine scores ``[B, T]``
    (``scores`` = ``model_scores``).
    """
    depth = len(tower.blocks)
    index = check_layer_index("layer", layer, depth)
    check_float("beta", beta, positive=False)
    check_int("steps", steps, 1)
    check_float("lr", lr)
    check_int("samples", samples, 1)
    check_int("seed", seed, 0)
    batch = tower.embed(inputs)
    after = tower.blocks[index + 1 :]
    with torch.no_grad():
        hidden = tower.run_blocks(batch.x, tower.blocks[: index + 1], batch.attn_mask)
        model_embedding = tower.head(rows(tower.run_blocks(hidden, after, batch.attn_mask), batch.query))
    model_scores = cosine_scores(model_embedding, targets)

    n_images, n_texts = model_scores.shape
    pairs = torch.cartesian_prod(torch.arange(n_images), torch.arange(n_texts)).to(hidden.device)  # [B·T, 2], image-major
    per_chunk = max(1, SEQUENCES_PER_CHUNK // samples)
    capacity = torch.cat(
        [
            _fit_bottleneck(tower, batch.attn_mask, after, hidden, batch.query, targets, chunk, beta, steps, lr, samples, seed)
            for chunk in pairs.split(per_chunk)
        ]
    )  # [B·T, L]
    maps = keys_of(capacity.reshape(n_images, n_texts, -1), batch)
    return MethodOutput(maps=maps.reshape(n_images, n_texts, *batch.grid), scores=model_scores, model_scores=model_scores)


def _fit_bottleneck(
    tower: TokenTower,
    attn_mask: Tensor | None,
    after: list[BlockAdapter],
    hidden: Tensor,
    query: Tensor,
    targets: Tensor,
    pairs: Tensor,
    beta: float,
    steps: int,
    lr: float,
    samples: int,
    seed: int,
) -> Tensor:
    """Fit one α per (image, text) pair of ``pairs`` ``[P, 2]``; returns the capacity summed over
    channels ``[P, L]`` float32 from the last step's forward."""
    h = hidden[pairs[:, 0]].float()  # [P, L, D]
    text = targets[pairs[:, 1]].repeat_interleave(samples, dim=0)  # [P·S, E]
    q = query[pairs[:, 0]].repeat_interleave(samples)  # [P·S]
    alpha = torch.full_like(h, 5.0, requires_grad=True)
    optimiser = torch.optim.Adam([alpha], lr=lr)
    generator = torch.Generator().manual_seed(seed)
    n_pairs, length, width = h.shape
    for _ in range(steps):
        noise = torch.randn(samples, length, width, generator=generator).to(h.device)
        with torch.enable_grad():
            lam = torch.sigmoid(alpha)
            mu = h * lam
            var = (1 - lam) ** 2
            capacity = -0.5 * (1 + torch.log(var) - mu**2 - var)  # [P, L, D]
            t = mu[:, None] + var.sqrt()[:, None] * noise  # [P, S, L, D]
            z = tower.run_blocks(t.flatten(0, 1).to(hidden.dtype), after, attn_mask)
            embedding = F.normalize(tower.head(rows(z, q)).float(), dim=-1)  # [P·S, E]
            fit = (embedding * text).sum(dim=-1).reshape(n_pairs, samples).mean(dim=1)
            loss = (beta * capacity.mean(dim=(1, 2)) - fit).sum()
            (grad,) = torch.autograd.grad(loss, [alpha])
        alpha.grad = grad
        optimiser.step()
    return capacity.detach().sum(dim=-1)
