"""Map kernels: the fused Triton kernel (GPU) and its PyTorch reference, behind one dispatcher."""

from .dispatch import compute_maps, select_backend

__all__ = ["compute_maps", "select_backend"]
