"""The fused Grad-ECLIP map kernel (SPEC §2 steps 3–4) in Triton. Imports triton at the top.

:mod:`gradeclip.kernels.maps_triton` imports this module on first use and owns the launch
(``plan_launches``). Design, bytes and FLOPs: ``docs/kernels.md``.

One program handles one image ``b`` and a tile of ``BLOCK_T`` texts and writes
``out[b, t, i] = ReLU( Σ_h λ[h, i] · Σ_{c ∈ head h} G[b, t, c] · v[b, i, c] )`` for every key ``i``.
Channels are visited as one flat loop over "chunks" of ``BLOCK_D`` channels that never straddle a
head (head ``h`` owns ``CPH = ceil(DH / BLOCK_D)`` chunks, the last one masked), so any head width
works and the loop stays a single pipelinable ``for``. Per-head quantities live as rows of
``[H_P, BLOCK_N]`` register tiles (``H_P`` = heads padded to a power of two).

When every key fits in one ``BLOCK_N`` tile (``N_TILES == 1``), k and v are each read once: the
cosines, their min/max and λ all stay in registers. Otherwise a first pass over the key tiles
finds each head's min/max and the main pass recomputes the cosines per tile (k is read twice).

Trip counts (``N_TILES``, ``CPH``, ``N_CHUNKS``) are compile-time constants: Triton 3.6's interpreter
cannot take a runtime loop bound under numpy ≥ 2.4 (triton-lang/triton#9171). Loops that feed only
FMAs use ``tl.range(..., num_stages=LOAD_STAGES)``, since the kernel-level ``num_stages`` pipelines
only the loads that feed ``tl.dot``.
"""

from __future__ import annotations

import triton
import triton.language as tl

LOOSENED: tl.constexpr = tl.constexpr(0)
SOFTMAX: tl.constexpr = tl.constexpr(1)
NONE: tl.constexpr = tl.constexpr(2)
EPS: tl.constexpr = tl.constexpr(1e-12)  # torch.nn.functional.cosine_similarity's default


@triton.jit
def _chunk(j, CPH, DH, BLOCK_D: tl.constexpr):
    """Flat chunk ``j`` → (its head, channel offsets ``[BLOCK_D]``, mask of the channels inside the head)."""
    h = j // CPH
    c = (j - h * CPH) * BLOCK_D + tl.arange(0, BLOCK_D)
    return h, h * DH + c, c < DH


@triton.jit
def _add_to_row(acc, heads, h, part):
    """``acc[h, :] += part`` for an ``[H_P, BLOCK_N]`` tile and a ``[BLOCK_N]`` vector."""
    return acc + tl.where((heads == h)[:, None], part[None, :], 0.0)


@triton.jit
def _valid_keys(M, b, offs_n, N, stride_mb, HAS_MASK: tl.constexpr):
    """``[BLOCK_N]`` bool: the key exists (``< N``) and, with a key mask, counts for image ``b``."""
    valid = offs_n < N
    if HAS_MASK:
        valid = valid & (tl.load(M + b * stride_mb + offs_n, mask=valid, other=0) != 0)
    return valid


@triton.jit
def _load_chunk(X, b, stride_b, stride_n, offs_n, nmask, offs_d, dmask):
    """Rows ``offs_n`` and channels ``offs_d`` of image ``b`` of a ``[B, N, D]`` tensor: ``[BLOCK_N, BLOCK_D]`` fp32."""
    ptrs = X + b * stride_b + offs_n[:, None] * stride_n + offs_d[None, :]
    return tl.load(ptrs, mask=nmask[:, None] & dmask[None, :], other=0.0).to(tl.float32)


@triton.jit
def _given_weights(P, b, heads, H, offs_n, nmask, stride_pb, stride_ph):
    """λ passed in (SOFTMAX): ``P[b, h, offs_n]`` as an ``[H_P, BLOCK_N]`` tile (zero in padded rows)."""
    ptrs = P + b * stride_pb + heads[:, None] * stride_ph + offs_n[None, :]
    return tl.load(ptrs, mask=(heads < H)[:, None] & nmask[None, :], other=0.0)


@triton.jit
def _cosine_parts(Q, K, b, offs_n, nmask, offs_d, dmask, stride_qb, stride_kb, stride_kn):
    """One chunk's share of the cosines: ``(Σ q·k [BLOCK_N], Σ k·k [BLOCK_N], Σ q·q scalar)`` in fp32."""
    qc = tl.load(Q + b * stride_qb + offs_d, mask=dmask, other=0.0).to(tl.float32)
    kc = _load_chunk(K, b, stride_kb, stride_kn, offs_n, nmask, offs_d, dmask)
    return tl.sum(kc * qc[None, :], 1), tl.sum(kc * kc, 1), tl.sum(qc * qc, 0)


@triton.jit
def _cosines(qk, kk, qq):
    """Per-head cosines from the accumulated parts, as ``cosine_similarity`` (norms clamped at EPS)."""
    return qk / (tl.maximum(tl.sqrt(qq), EPS)[:, None] * tl.maximum(tl.sqrt(kk), EPS))


@triton.jit
def _head_cosines(Q, K, b, offs_n, nmask, stride_qb, stride_kb, stride_kn, DH, CPH: tl.constexpr,
                  N_CHUNKS: tl.constexpr, H_P: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                  LOAD_STAGES: tl.constexpr):
    """``cos(q_h, k_{i,h})`` for every head (rows, padded to ``H_P``) and the keys ``offs_n``: ``[H_P, BLOCK_N]``."""
    heads = tl.arange(0, H_P)
    qk = tl.zeros([H_P, BLOCK_N], tl.float32)
    kk = tl.zeros([H_P, BLOCK_N], tl.float32)
    qq = tl.zeros([H_P], tl.float32)
    for j in tl.range(0, N_CHUNKS, num_stages=LOAD_STAGES):
        h, offs_d, dmask = _chunk(j, CPH, DH, BLOCK_D)
        pqk, pkk, pqq = _cosine_parts(Q, K, b, offs_n, nmask, offs_d, dmask, stride_qb, stride_kb, stride_kn)
        qk = _add_to_row(qk, heads, h, pqk)
        kk = _add_to_row(kk, heads, h, pkk)
        qq += tl.where(heads == h, pqq, 0.0)
    return _cosines(qk, kk, qq)


@triton.jit
def _min_max(cos, valid):
    """Per-head (row) minimum and maximum over the valid keys: two ``[H_P]`` vectors."""
    lo = tl.min(tl.where(valid[None, :], cos, float("inf")), 1)
    hi = tl.max(tl.where(valid[None, :], cos, -float("inf")), 1)
    return lo, hi


@triton.jit
def _normalise(cos, lo, hi):
    """Min-max normalised cosines (SPEC §2 step 3); all ones for a head whose span is not positive."""
    span = hi - lo
    safe = tl.where(span > 0, span, 1.0)
    return tl.where((span > 0)[:, None], (cos - lo[:, None]) / safe[:, None], 1.0)


@triton.jit
def grad_eclip_maps_kernel(
    Q, K, V, G, P, M, OUT,
    N, T, H, DH,
    stride_qb, stride_kb, stride_kn, stride_vb, stride_vn, stride_gb, stride_gt,
    stride_pb, stride_ph, stride_mb, stride_ob, stride_ot,
    SPATIAL: tl.constexpr, HAS_MASK: tl.constexpr, N_TILES: tl.constexpr, CPH: tl.constexpr,
    N_CHUNKS: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, H_P: tl.constexpr,
    PRECISION: tl.constexpr, LOAD_STAGES: tl.constexpr,
):
    """Grid ``(cdiv(T, BLOCK_T), B)``. ``Q [B, D]``, ``K``/``V`` ``[B, N, D]``, ``G [B, T, D]`` (last
    axes contiguous), ``P [B, H, N]`` fp32 (λ for SOFTMAX), ``M [B, N]`` uint8 (key mask),
    ``OUT [B, T, N]`` fp32. ``BLOCK_T == 1`` (one text per program) takes the FMA (GEMV) branch,
    ``BLOCK_T ≥ 16`` the ``tl.dot`` (GEMM) branch."""
    pid_t = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    offs_t = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    tmask = offs_t < T
    heads = tl.arange(0, H_P)

    if SPATIAL == LOOSENED:
        if N_TILES > 1:  # first pass: each head's min/max cosine over all key tiles
            lo = tl.full([H_P], float("inf"), tl.float32)
            hi = tl.full([H_P], -float("inf"), tl.float32)
            for m in range(0, N_TILES):
                offs_m = m * BLOCK_N + tl.arange(0, BLOCK_N)
                cos_m = _head_cosines(Q, K, b, offs_m, offs_m < N, stride_qb, stride_kb, stride_kn, DH, CPH,
                                      N_CHUNKS, H_P, BLOCK_N, BLOCK_D, LOAD_STAGES)
                tile_lo, tile_hi = _min_max(cos_m, _valid_keys(M, b, offs_m, N, stride_mb, HAS_MASK))
                lo = tl.minimum(lo, tile_lo)
                hi = tl.maximum(hi, tile_hi)

    for n in range(0, N_TILES):  # a single iteration when all keys fit one tile
        offs_n = n * BLOCK_N + tl.arange(0, BLOCK_N)
        nmask = offs_n < N
        valid = _valid_keys(M, b, offs_n, N, stride_mb, HAS_MASK)
        if BLOCK_T == 1:
            # GEMV: one loop reads k and v together; per-head partial sums s[h, i] stay in registers
            # and λ is applied at the end: out_i = ReLU(Σ_h λ[h, i] s[h, i]).
            s = tl.zeros([H_P, BLOCK_N], tl.float32)
            qk = tl.zeros([H_P, BLOCK_N], tl.float32)
            kk = tl.zeros([H_P, BLOCK_N], tl.float32)
            qq = tl.zeros([H_P], tl.float32)
            for j in tl.range(0, N_CHUNKS, num_stages=LOAD_STAGES):
                h, offs_d, dmask = _chunk(j, CPH, DH, BLOCK_D)
                vc = _load_chunk(V, b, stride_vb, stride_vn, offs_n, nmask, offs_d, dmask)
                gc = tl.load(G + b * stride_gb + pid_t * stride_gt + offs_d, mask=dmask, other=0.0).to(tl.float32)
                s = _add_to_row(s, heads, h, tl.sum(vc * gc[None, :], 1))
                if SPATIAL == LOOSENED:
                    pqk, pkk, pqq = _cosine_parts(Q, K, b, offs_n, nmask, offs_d, dmask, stride_qb, stride_kb, stride_kn)
                    qk = _add_to_row(qk, heads, h, pqk)
                    kk = _add_to_row(kk, heads, h, pkk)
                    qq += tl.where(heads == h, pqq, 0.0)
            if SPATIAL == LOOSENED:
                cos = _cosines(qk, kk, qq)
                if N_TILES == 1:
                    lo, hi = _min_max(cos, valid)
                s = s * _normalise(cos, lo, hi)
            elif SPATIAL == SOFTMAX:
                s = s * _given_weights(P, b, heads, H, offs_n, nmask, stride_pb, stride_ph)
            acc = tl.sum(s, 0)[None, :]
        else:
            # GEMM: λ first (k loop), then v loop with each chunk's values scaled by its head's λ
            # and one tl.dot per chunk into the [BLOCK_T, BLOCK_N] accumulator.
            if SPATIAL == LOOSENED:
                cos = _head_cosines(Q, K, b, offs_n, nmask, stride_qb, stride_kb, stride_kn, DH, CPH,
                                    N_CHUNKS, H_P, BLOCK_N, BLOCK_D, LOAD_STAGES)
                if N_TILES == 1:
                    lo, hi = _min_max(cos, valid)
                lam = _normalise(cos, lo, hi)
            elif SPATIAL == SOFTMAX:
                lam = _given_weights(P, b, heads, H, offs_n, nmask, stride_pb, stride_ph)
            acc = tl.zeros([BLOCK_T, BLOCK_N], tl.float32)
            for j in range(0, N_CHUNKS):
                h, offs_d, dmask = _chunk(j, CPH, DH, BLOCK_D)
                vc = _load_chunk(V, b, stride_vb, stride_vn, offs_n, nmask, offs_d, dmask)
                if SPATIAL != NONE:
                    lam_h = tl.sum(tl.where((heads == h)[:, None], lam, 0.0), 0)
                    vc = vc * lam_h[:, None]
                gc = tl.load(
                    G + b * stride_gb + offs_t[:, None] * stride_gt + offs_d[None, :],
                    mask=tmask[:, None] & dmask[None, :],
                    other=0.0,
                ).to(tl.float32)
                acc = tl.dot(gc, tl.trans(vc), acc, input_precision=PRECISION)
        out = tl.where(valid[None, :], tl.maximum(acc, 0.0), 0.0)
        tl.store(
            OUT + b * stride_ob + offs_t[:, None] * stride_ot + offs_n[None, :],
            out,
            mask=tmask[:, None] & nmask[None, :],
        )
