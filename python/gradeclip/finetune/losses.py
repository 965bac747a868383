"""The two losses of Grad-ECLIP fine-tuning (SPEC §10).

- Global: CLIP's symmetric contrastive loss ``½ (CE(S·s, I) + CE(Sᵀ·s, I))`` over the batch, with
  ``S_ij = cos(e_I_i, e_T_j)`` and ``s = exp(logit_scale)`` the model's learnable inverse temperature.
- Local: the sigmoid focal loss (Lin et al. 2017, α = 0.25, γ = 2) of every region–phrase pair of
  the batch, logits ``cos(r_bk, p_j) / τ_l``; the phrases j are the batch's distinct phrase texts,
  the target is 1 where phrase j is the text of region (b, k); the sum over pairs is divided by
  the number of positives (one per region).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

FOCAL_ALPHA = 0.25
FOCAL_GAMMA = 2.0
LOCAL_TEMPERATURE = 0.07


def global_loss(image: Tensor, text: Tensor, scale: Tensor) -> Tensor:
    """The contrastive loss (scalar) of paired ``image`` and ``text`` embeddings ``[B, E]`` (any norm;
    cosines are taken) at inverse temperature ``scale`` (``logit_scale.exp()``)."""
    logits = scale * F.normalize(image.float(), dim=-1) @ F.normalize(text.float(), dim=-1).T
    labels = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels))


def local_loss(
    regions: Tensor,
    phrases: Tensor,
    region_phrase: Tensor,
    temperature: float = LOCAL_TEMPERATURE,
    alpha: float = FOCAL_ALPHA,
    gamma: float = FOCAL_GAMMA,
) -> Tensor:
    """The focal region–phrase loss (scalar).

    Args:
        regions: ``[R, E]`` the batch's region embeddings (one per (image, phrase) slot in use).
        phrases: ``[P, E]`` the embeddings of the batch's distinct phrase texts.
        region_phrase: ``[R]`` long, the index into ``phrases`` of each region's own phrase.

    Returns:
        ``Σ_{r, j} focal(cos(r, p_j) / τ, [j = region_phrase[r]]) / R``; zero (in the graph) when R = 0.
    """
    from torchvision.ops import sigmoid_focal_loss

    logits = F.normalize(regions.float(), dim=-1) @ F.normalize(phrases.float(), dim=-1).T / temperature
    targets = torch.zeros_like(logits)
    targets[torch.arange(regions.shape[0], device=logits.device), region_phrase] = 1.0
    total = sigmoid_focal_loss(logits, targets, alpha=alpha, gamma=gamma, reduction="sum")
    return total / max(1, regions.shape[0])
