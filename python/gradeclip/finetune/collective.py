"""What data-parallel fine-tuning needs from the ranks of a torchrun job.

Every rank computes the loss of the WHOLE global batch: the other ranks' rows are gathered without
gradient and this rank's own rows are put back in the graph (:func:`gather_rows`). The loss is then
the same number on every rank, each rank's backward gives the gradient through its own rows, and
the sum of the ranks' gradients (:func:`sum_gradients`) is the gradient one process with the
whole batch would get. Terms every rank shares (the temperature) take their gradient on rank 0
only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..distributed import Ranks


def gather_rows(x: Tensor, ranks: Ranks) -> Tensor:
    """Every rank's ``x`` ``[n_r, ...]`` (n_r may differ per rank) concatenated in rank order; this
    rank's rows keep their gradient, the others' carry none."""
    if not ranks.distributed:
        return x
    import torch.distributed as dist

    sizes = [torch.zeros(1, dtype=torch.long, device=x.device) for _ in range(ranks.world)]
    dist.all_gather(sizes, torch.tensor([x.shape[0]], dtype=torch.long, device=x.device))
    counts = [int(s) for s in sizes]
    longest = max(counts)
    padded = torch.zeros(longest, *x.shape[1:], dtype=x.dtype, device=x.device)
    padded[: x.shape[0]] = x.detach()
    parts = [torch.empty_like(padded) for _ in range(ranks.world)]
    dist.all_gather(parts, padded)
    pieces = [x if r == ranks.rank else parts[r][: counts[r]] for r in range(ranks.world)]
    return torch.cat(pieces)


def sum_gradients(model: nn.Module, ranks: Ranks) -> None:
    """Replace every parameter's gradient by its sum over the ranks (one flat all-reduce)."""
    if not ranks.distributed:
        return
    import torch.distributed as dist

    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:  # a parameter without gradient on this rank (the temperature off rank 0) adds zeros
        if p.grad is None:
            p.grad = torch.zeros_like(p)
    flat = torch.cat([p.grad.reshape(-1) for p in params])  # type: ignore[union-attr]
    dist.all_reduce(flat)
    offset = 0
    for p in params:
        assert p.grad is not None
        p.grad.copy_(flat[offset : offset + p.grad.numel()].view_as(p.grad))
        offset += p.grad.numel()
