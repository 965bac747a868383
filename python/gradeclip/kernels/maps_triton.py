"""The Triton path of the map step (SPEC §2 steps 3–4): launches the fused kernel.

This module imports without triton. The kernel (:mod:`.maps_triton_jit`) is loaded on first use;
its PyTorch reference and fallback is :mod:`.maps_torch`. Design and costs: ``docs/kernels.md``.
"""

from __future__ import annotations

import functools
import importlib
import os
from dataclasses import dataclass, replace
from types import ModuleType
from typing import Any

import torch
from torch import Tensor

from ..errors import BackendUnavailableError, InputError

SPATIAL_CODES = {"loosened": 0, "softmax": 1, "none": 2}  # the kernel's SPATIAL constants
DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_ONE_TILE_KEYS = 1024  # keys held in registers at once (k and v then read once)
MAX_HEAD_TILE = 8192  # elements of a [heads (padded), keys] register tile
MAX_CHUNK = 8192  # elements of a [keys, channels] chunk of k or v
MAX_ACCUMULATOR = 16384  # elements of the [texts, keys] fp32 accumulator of the GEMM branch
MAX_GRID_B = 65535  # CUDA's limit on the grid's second axis: larger batches launch in slices


@dataclass(frozen=True)
class KernelConfig:
    """Launch parameters of the fused kernel.

    ``block_t`` texts per program: 1 selects the GEMV branch (FMA), a power of two ≥ 16 the GEMM
    branch (``tl.dot``). ``block_n`` keys per tile and ``block_d`` channels per chunk: powers of two
    ≥ 16. All keys in one tile (``block_n ≥ N``) means k and v are each read once.
    """

    block_t: int
    block_n: int
    block_d: int
    num_warps: int
    num_stages: int

    def check(self) -> None:
        """Raise :class:`InputError` for block sizes the kernel (or a real GPU's ``tl.dot``) rejects."""
        if not (self.block_t == 1 or (self.block_t >= 16 and _is_pow2(self.block_t))):
            raise InputError(f"block_t must be 1 or a power of two >= 16, got {self.block_t}")
        for name in ("block_n", "block_d"):
            value = getattr(self, name)
            if value < 16 or not _is_pow2(value):
                raise InputError(f"{name} must be a power of two >= 16, got {value}")
        if self.num_warps not in (1, 2, 4, 8, 16) or self.num_stages < 1:
            raise InputError(f"num_warps must be 1, 2, 4, 8 or 16 and num_stages >= 1, got {self.num_warps}, {self.num_stages}")


def _is_pow2(x: int) -> bool:
    return x > 0 and x & (x - 1) == 0


def _next_pow2(x: int) -> int:
    return 1 << max(0, x - 1).bit_length()


def _cdiv(a: int, b: int) -> int:
    return -(-a // b)


def default_config(n: int, t: int, head_width: int, heads: int) -> KernelConfig:
    """The launch parameters used unless a caller passes its own, from the problem's shape.

    ``n`` keys, ``t`` texts, ``heads`` λ heads of ``head_width`` channels.
    """
    h_p = _next_pow2(heads)
    n_p = max(16, _next_pow2(n))
    if n_p <= MAX_ONE_TILE_KEYS and h_p * n_p <= MAX_HEAD_TILE:
        block_n = n_p
    else:
        block_n = max(16, min(256, MAX_HEAD_TILE // 2 // h_p))
    if t == 1:
        block_t = 1
    else:  # larger text tiles re-read k and v (from L2) fewer times; the accumulator bounds them
        block_t = min(max(16, _next_pow2(t)), max(16, min(64, MAX_ACCUMULATOR // block_n)))
    chunk = MAX_CHUNK if block_t < 64 else MAX_CHUNK // 2  # a large accumulator needs the registers
    block_d = min(max(16, min(64, chunk // block_n)), max(16, _next_pow2(head_width)))
    largest_tile = block_n * max(block_t, h_p, block_d)  # fp32 elements of the largest register tile
    num_warps = 8 if largest_tile >= 8192 else 4
    return KernelConfig(block_t, block_n, block_d, num_warps, num_stages=3)


def neighbour_configs(base: KernelConfig) -> list[KernelConfig]:
    """Launch parameters one change away from ``base`` (``block_t`` too in the GEMM branch): the
    candidates ``benches/gpu_check.py --sweep`` times and ``benches/kernel_static.py --sweep`` compiles."""
    options: list[KernelConfig] = []
    if base.block_t > 1:
        options += [replace(base, block_t=bt) for bt in (16, 32, 64, 128)]
    options += [replace(base, block_d=bd) for bd in (16, 32, 64, 128)]
    options += [replace(base, num_warps=w) for w in (2, 4, 8, 16)]
    options += [replace(base, num_stages=s) for s in (1, 2, 3, 4)]
    unique: list[KernelConfig] = []
    for cfg in options:
        if cfg != base and cfg not in unique:
            unique.append(cfg)
    return unique


@functools.cache
def triton_import_error() -> str | None:
    """None when triton imports here, else the import error's message."""
    try:
        importlib.import_module("triton")
    except ImportError as exc:  # triton is optional: the PyTorch path runs without it
        return str(exc) or type(exc).__name__
    return None


def interpreting() -> bool:
    """Whether ``TRITON_INTERPRET`` asks for Triton's CPU interpreter. It must be set before triton
    is first imported: triton's own library functions pick compiled or interpreted at import."""
    try:
        from triton import knobs
    except ImportError:  # triton < 3.3 has no knobs and reads the variable as "1"
        return os.environ.get("TRITON_INTERPRET", "0") == "1"
    return bool(knobs.runtime.interpret)


def unavailable_reason(device: torch.device) -> str | None:
    """Why the kernel cannot run on tensors on ``device`` here, or None when it can."""
    error = triton_import_error()
    if error is not None:
        return f"triton cannot be imported ({error})"
    if device.type == "cuda" or interpreting():
        return None
    return f"the tensors are on {device.type!r}; the Triton kernel needs CUDA tensors (or TRITON_INTERPRET=1 for Triton's CPU interpreter)"


def _kernel_module() -> ModuleType:
    """:mod:`.maps_triton_jit`, imported on first use (it imports triton)."""
    return importlib.import_module(f"{__package__}.maps_triton_jit")


def dot_precision(dtype: torch.dtype) -> str:
    """``tl.dot`` input precision for inputs of ``dtype`` (the kernel computes in fp32).

    fp32 inputs follow ``torch.get_float32_matmul_precision()``: ``"highest"`` (PyTorch's default)
    gives ``"tf32x3"`` (about fp32 accuracy), otherwise ``"tf32"``. 16-bit inputs always use
    ``"tf32"``: its rounding (2⁻¹¹) is no coarser than the rounding already in fp16/bf16 values.
    """
    if dtype == torch.float32 and torch.get_float32_matmul_precision() == "highest":
        return "tf32x3"
    return "tf32"


def check_inputs(
    q: Tensor, k: Tensor, v: Tensor, g: Tensor, spatial: str, heads: int, probs: Tensor | None, key_mask: Tensor | None
) -> None:
    """Raise :class:`InputError` naming the first input whose shape, dtype or device is wrong."""
    if spatial not in SPATIAL_CODES:
        raise InputError(f"spatial={spatial!r} is not one of {', '.join(map(repr, SPATIAL_CODES))}")
    if k.ndim != 3 or v.shape != k.shape:
        raise InputError(f"k and v must both be [B, N, D], got {tuple(k.shape)} and {tuple(v.shape)}")
    batch, _, width = k.shape
    if q.shape != (batch, width):
        raise InputError(f"q must be [B, D] = {(batch, width)}, got {tuple(q.shape)}")
    if g.ndim != 3 or g.shape[0] != batch or g.shape[2] != width:
        raise InputError(f"g must be [B, T, D] with B = {batch}, D = {width}, got {tuple(g.shape)}")
    if isinstance(heads, bool) or not isinstance(heads, int) or heads < 1 or width % heads:
        raise InputError(f"heads must be a positive integer dividing D = {width}, got {heads!r}")
    if not (q.dtype == k.dtype == v.dtype) or k.dtype not in DTYPES:
        raise InputError(f"q, k, v must share one dtype of float32/float16/bfloat16, got {q.dtype}, {k.dtype}, {v.dtype}")
    if not g.is_floating_point():
        raise InputError(f"g must be floating point, got {g.dtype}")
    if spatial == "softmax" and (probs is None or probs.shape != (batch, heads, k.shape[1])):
        raise InputError(f"spatial='softmax' needs probs [B, H, N] = {(batch, heads, k.shape[1])}, got {None if probs is None else tuple(probs.shape)}")
    if key_mask is not None and (key_mask.shape != k.shape[:2] or key_mask.dtype != torch.bool):
        raise InputError(f"key_mask must be bool [B, N] = {tuple(k.shape[:2])}, got {key_mask.dtype} {tuple(key_mask.shape)}")
    tensors = [x for x in (q, k, v, g, probs, key_mask) if x is not None]
    if len({x.device for x in tensors}) != 1:
        raise InputError(f"all inputs must be on one device, got {sorted({str(x.device) for x in tensors})}")


def _rows(x: Tensor) -> Tensor:
    """``x`` itself when its last axis is contiguous (any other strides are passed to the kernel)."""
    return x if x.stride(-1) == 1 else x.contiguous()


def maps_triton(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    *,
    spatial: str,
    heads: int,
    probs: Tensor | None = None,
    key_mask: Tensor | None = None,
    config: KernelConfig | None = None,
) -> Tensor:
    """Grad-ECLIP maps by the fused Triton kernel; the contract of :func:`~.dispatch.compute_maps`.

    ``q`` ``[B, D]``, ``k``/``v`` ``[B, N, D]`` (one dtype of fp32/fp16/bf16), ``g`` ``[B, T, D]``,
    ``probs`` ``[B, H, N]`` (``spatial="softmax"``), ``key_mask`` ``[B, N]`` bool. ``config``
    overrides :func:`default_config`. Returns ``[B, T, N]`` float32. Raises
    :class:`BackendUnavailableError` when triton cannot run on these tensors.
    """
    check_inputs(q, k, v, g, spatial, heads, probs, key_mask)
    if config is not None:
        config.check()
    reason = unavailable_reason(k.device)
    if reason is not None:
        raise BackendUnavailableError(f"the Triton map kernel cannot run: {reason}")
    out = torch.empty(k.shape[0], g.shape[1], k.shape[1], dtype=torch.float32, device=k.device)
    if out.numel() == 0:
        return out
    kernel = _kernel_module().grad_eclip_maps_kernel
    for launch in plan_launches(q, k, v, g, out, spatial=spatial, heads=heads, probs=probs, key_mask=key_mask, config=config):
        kernel[launch.grid](*launch.args, **launch.constants, **launch.options)
    return out


@dataclass
class Launch:
    """One launch of the kernel: ``grid``, positional ``args`` (tensors and ints, in the kernel's
    order), compile-time ``constants`` and launch ``options`` (``num_warps``, ``num_stages``)."""

    grid: tuple[int, int]
    args: list[Any]
    constants: dict[str, Any]
    options: dict[str, int]


def plan_launches(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    out: Tensor,
    *,
    spatial: str,
    heads: int,
    probs: Tensor | None,
    key_mask: Tensor | None,
    config: KernelConfig | None,
) -> list[Launch]:
    """The launches that fill ``out`` ``[B, T, N]`` (inputs already checked): one, or one per slice of
    65 535 images. Also used by the tests to compile the kernel for a GPU on a machine without one."""
    batch, n, width = k.shape
    t = g.shape[1]
    if spatial == "none":  # λ = 1: the heads' sums add up to one sum over all channels
        heads = 1
    head_width = width // heads
    cfg = config or default_config(n, t, head_width, heads)
    chunks_per_head = _cdiv(head_width, cfg.block_d)
    q, k, v, g = _rows(q), _rows(k), _rows(v), _rows(g)
    p = _rows(probs.float()) if spatial == "softmax" and probs is not None else out  # out: an unread placeholder
    m = key_mask.to(torch.uint8) if key_mask is not None else out
    constants = dict(
        SPATIAL=SPATIAL_CODES[spatial],
        HAS_MASK=key_mask is not None,
        N_TILES=_cdiv(n, cfg.block_n),
        CPH=chunks_per_head,
        N_CHUNKS=heads * chunks_per_head,
        BLOCK_T=cfg.block_t,
        BLOCK_N=cfg.block_n,
        BLOCK_D=cfg.block_d,
        H_P=_next_pow2(heads),
        PRECISION=dot_precision(k.dtype),
        LOAD_STAGES=cfg.num_stages,
    )
    options = dict(num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    strides = [q.stride(0), k.stride(0), k.stride(1), v.stride(0), v.stride(1), g.stride(0), g.stride(1),
               p.stride(0), p.stride(1), m.stride(0), out.stride(0), out.stride(1)]
    launches = []
    for b0 in range(0, batch, MAX_GRID_B):
        b1 = min(batch, b0 + MAX_GRID_B)
        tensors = [x[b0:b1] for x in (q, k, v, g, p, m, out)]
        launches.append(Launch((_cdiv(t, cfg.block_t), b1 - b0), [*tensors, n, t, heads, head_width, *strides], constants, options))
    return launches


POINTER_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.uint8: "u8"}


def compile_ahead(launch: Launch, capability: int = 90) -> Any:
    """Compile one planned launch for an NVIDIA GPU of compute ``capability`` (90: H100/H200) without
    a GPU, specialising its arguments as the JIT does: 16-byte-aligned pointers, ints equal to 1 as
    constants, ints divisible by 16 marked. Returns triton's ``CompiledKernel`` (``.asm["ptx"]``,
    ``.asm["cubin"]``, ``.metadata.shared``). For tests and ``benches/kernel_static.py``."""
    import triton
    from triton.backends.compiler import GPUTarget

    kernel = _kernel_module().grad_eclip_maps_kernel
    signature, constants, attrs = {}, dict(launch.constants), {}
    for index, (name, value) in enumerate(zip(kernel.arg_names, launch.args)):
        if isinstance(value, Tensor):
            signature[name] = "*" + POINTER_TYPES[value.dtype]
            attrs[(index,)] = [["tt.divisibility", 16]]
        elif value == 1:
            signature[name], constants[name] = "constexpr", 1
        else:
            signature[name] = "i32"
            if value % 16 == 0:
                attrs[(index,)] = [["tt.divisibility", 16]]
    signature |= {name: "constexpr" for name in launch.constants}
    source = triton.compiler.ASTSource(
        fn=kernel, signature={name: signature[name] for name in kernel.arg_names}, constexprs=constants, attrs=attrs
    )
    return triton.compile(source, target=GPUTarget("cuda", capability, 32), options=launch.options)
