"""``gradeclip coverage``: which open_clip architectures gradeclip explains. The flags, the printed
table and the exit status; the walk itself is :mod:`gradeclip.coverage`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``coverage`` and its options."""
    p = sub.add_parser("coverage", help="build every open_clip architecture with random weights and report what gradeclip explains")
    p.add_argument("--models", nargs="*", default=None, help="architectures to cover (default: all of open_clip.list_models())")
    p.add_argument("--out", type=Path, default=None, help="also write the Markdown table here (atomically)")
    p.add_argument("--resume", type=Path, default=None, help="JSON-lines file of finished rows: appended to, reused on a rerun")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    """Run the coverage walk and print its table; 1 if anything crashed, 2 on an unknown architecture."""
    import open_clip
    import torch

    from ..coverage import markdown, run_coverage
    from ..files import write_text

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.threads:
        torch.set_num_threads(args.threads)
    names = args.models or open_clip.list_models()
    unknown = sorted(set(names) - set(open_clip.list_models()))
    if unknown:
        print(f"unknown architectures: {', '.join(unknown)}", file=sys.stderr)
        return 2
    rows = run_coverage(names, args.resume)
    command = " ".join(
        ["gradeclip coverage"]
        + (["--models", *args.models] if args.models else [])
        + ([f"--threads {args.threads}"] if args.threads else [])
        + ([f"--resume {args.resume}"] if args.resume else [])
        + ([f"--out {args.out}"] if args.out else [])
    )
    table = markdown(rows, command)
    print(table)
    if args.out is not None:
        write_text(args.out, table)
    return 1 if any(r.crashed for r in rows) else 0
