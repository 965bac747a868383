"""The ``gradeclip`` command line. Each subcommand lives in its own module under
``gradeclip.commands`` with ``add_parser(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import argparse
import importlib
import sys

COMMANDS = ["demo", "explain", "bench", "eval", "analyze", "coverage", "synth", "finetune"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    from ._version import __version__

    parser = argparse.ArgumentParser(prog="gradeclip", description="Explain CLIP-style models with Grad-ECLIP and its baselines.")
    parser.add_argument("--version", action="version", version=f"gradeclip {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        module = importlib.import_module(f"gradeclip.commands.{name}")
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.run(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
