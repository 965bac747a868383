"""What the compiler makes of the fused map kernel on a Hopper GPU (sm_90), without a GPU.

For the ViT-B/16 benchmark shapes (N = 196, D = 768, one head and 12, T ∈ {1, 16, 1000}, fp32 and
bf16) it compiles the launch the package would make, then reports registers per thread, spilled
bytes (stack), shared memory, the CTAs that fit one SM, and the instruction families in the PTX
(16-byte ``cp.async`` copies = pipelined loads, ``wgmma``/``mma.sync`` tensor-core products). These
are static facts, not timings: they screen launch parameters before a GPU measures them.

    PYTHONPATH=python python benches/kernel_static.py [--sweep] [--out FILE.md]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "python"))

from gradeclip.kernels import maps_triton  # noqa: E402
from gradeclip.kernels.maps_triton import (  # noqa: E402
    KernelConfig,
    compile_ahead,
    default_config,
    neighbour_configs,
    plan_launches,
)

SM_REGISTERS, SM_SHARED, SM_MAX_THREADS = 65536, 227 * 1024, 2048  # Hopper, per SM
INSTRUCTIONS = {
    "cp.async 16B": r"cp\.async\.cg\.shared\.global",
    "cp.async 4-8B": r"cp\.async\.ca\.shared\.global",
    "ld.global.v4": r"ld\.global(?:\.\w+)*\.v4",
    "wgmma": r"wgmma\.mma_async",
    "mma.sync": r"mma\.sync\.aligned",
}


def resources(compiled) -> dict[str, int]:
    """Registers per thread and stack bytes (spills) from the cubin, via triton's bundled cuobjdump."""
    import triton

    tool = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / "cuobjdump"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "kernel.cubin"
        path.write_bytes(compiled.asm["cubin"])
        text = subprocess.run([str(tool), "-res-usage", str(path)], capture_output=True, text=True, check=True).stdout
    found = dict(re.findall(r"(REG|STACK):(\d+)", text))
    return {"registers": int(found.get("REG", -1)), "stack": int(found.get("STACK", -1))}


def analyse(dtype: torch.dtype, t: int, heads: int, config: KernelConfig | None) -> dict[str, object]:
    b, n, d = 2, 196, 768  # strides, and so the compiled code, do not depend on B
    q, k, v = torch.zeros(b, d, dtype=dtype), torch.zeros(b, n, d, dtype=dtype), torch.zeros(b, n, d, dtype=dtype)
    g, out = torch.zeros(b, t, d), torch.empty(b, t, n)
    [launch] = plan_launches(q, k, v, g, out, spatial="loosened", heads=heads, probs=None, key_mask=None, config=config)
    compiled = compile_ahead(launch, capability=90)
    row: dict[str, object] = dict(resources(compiled), shared=compiled.metadata.shared)
    threads = 32 * launch.options["num_warps"]
    by_registers = SM_REGISTERS // max(1, row["registers"] * threads)
    by_shared = SM_SHARED // max(1, row["shared"])
    row["ctas_per_sm"] = min(by_registers, by_shared, SM_MAX_THREADS // threads)
    ptx = compiled.asm["ptx"]
    row["instructions"] = ", ".join(name for name, pattern in INSTRUCTIONS.items() if re.search(pattern, ptx))
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="also compile the launch parameters gpu_check --sweep times")
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    args = parser.parse_args()
    if maps_triton.interpreting():
        parser.error("unset TRITON_INTERPRET: this compiles the kernel")
    header = "| dtype | heads | T | config (block_t, block_n, block_d, warps, stages) | registers | stack (spills) | shared KiB | CTAs / SM | instructions |"
    lines = [header, "|---|---|---|---|---|---|---|---|---|"]
    print(header, flush=True)
    for label, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for heads in (1, 12):
            for t in (1, 16, 1000):
                base = default_config(196, t, 768 // heads, heads)
                configs = [base]
                if args.sweep:
                    configs += neighbour_configs(base)
                for cfg in configs:
                    mark = "" if cfg == base else " (sweep)"
                    try:
                        row = analyse(dtype, t, heads, cfg)
                        line = (f"| {label} | {heads} | {t} | {tuple(asdict(cfg).values())}{mark} | {row['registers']} | {row['stack']} | "
                                f"{row['shared'] / 1024:.0f} | {row['ctas_per_sm']} | {row['instructions']} |")
                    except Exception as exc:  # a configuration the compiler rejects is a finding
                        line = f"| {label} | {heads} | {t} | {tuple(asdict(cfg).values())}{mark} | error: {type(exc).__name__}: {str(exc)[:120]} |||||"
                    lines.append(line)
                    print(line, flush=True)
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
