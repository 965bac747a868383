"""``gradeclip coverage``: which open_clip architectures gradeclip explains (see :mod:`gradeclip.coverage`)."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    from ..coverage import add_arguments

    p = sub.add_parser("coverage", help="build every open_clip architecture with random weights and report what gradeclip explains")
    add_arguments(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..coverage import main_args

    return main_args(args)
