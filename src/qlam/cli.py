"""The `qlam` command line: each subsystem registers its own subcommands.

A module listed in COMMANDS exposes ``register(subparsers)``, which adds one or more
subparsers and sets ``func`` (called with the parsed namespace; returns an exit code). No
command module imports this one.
"""

from __future__ import annotations

import argparse
import sys

from qlam import export_cli, sweep, train_cli
from qlam.bench import cli as bench_cli
from qlam.data import cli as data_cli

COMMANDS = [data_cli, train_cli, sweep, export_cli, bench_cli]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qlam", description="Quantum Long-Attention Memory")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in COMMANDS:
        module.register(sub)
    return parser


# commands that train or evaluate: they keep freed memory for the next step (qlam.allocator)
KEEP_MEMORY = {"train", "eval", "demo", "sweep", "robustness"}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command in KEEP_MEMORY:
        from qlam.allocator import keep_freed_memory

        keep_freed_memory()
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, RuntimeError) as exc:
        if getattr(args, "debug", False):
            raise
        print(f"qlam {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
