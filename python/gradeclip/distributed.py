"""The processes of a torchrun job: which rank this is, its device, and the collectives a
dataset run needs (rank 0's word to everyone; everyone's word to everyone; wait for everyone)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from .loading import check_device


@dataclass(frozen=True)
class Ranks:
    """This process's place in a torchrun job (rank 0 of 1 without one) and its device."""

    rank: int
    world: int
    device: torch.device

    @property
    def distributed(self) -> bool:
        return self.world > 1


def resolve_device(spec: str, local_rank: int) -> torch.device:
    """``auto``: ``cuda:<local_rank>`` when CUDA is available, else the CPU; ``cuda`` means the
    local rank's GPU; anything else is used as given. :class:`InputError` (see
    :func:`gradeclip.loading.check_device`) for a device this machine does not have."""
    if spec == "auto":
        spec = "cuda" if torch.cuda.is_available() else "cpu"
    if spec == "cuda":
        spec = f"cuda:{local_rank}"
    return check_device(spec)


def init_ranks(device: str, timeout_min: float) -> Ranks:
    """Join the torchrun job described by ``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` (nccl on GPUs,
    gloo on the CPU), or run alone when there is none."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    resolved = resolve_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    if world > 1 and not dist.is_initialized():
        if resolved.type == "cuda":
            torch.cuda.set_device(resolved)
        backend = "nccl" if resolved.type == "cuda" else "gloo"
        dist.init_process_group(backend, timeout=timedelta(minutes=timeout_min))
    return Ranks(rank=rank, world=world, device=resolved)


def broadcast(ranks: Ranks, value: Any) -> Any:
    """Rank 0's ``value`` on every rank."""
    if not ranks.distributed:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(ranks: Ranks, value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank."""
    if not ranks.distributed:
        return [value]
    import torch.distributed as dist

    box: list[Any] = [None] * ranks.world
    dist.all_gather_object(box, value)
    return box


def barrier(ranks: Ranks) -> None:
    if ranks.distributed:
        import torch.distributed as dist

        dist.barrier(device_ids=[ranks.device.index] if ranks.device.type == "cuda" else None)
