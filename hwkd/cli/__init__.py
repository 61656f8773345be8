"""The `hwkd` command: one module per command group (data, train, hw, search, supernet, compare), each registering its
commands and their handlers; a handler parses nothing and decides nothing the library could, it calls the
library and shows progress. Defaults in --help come from the config dataclasses (TrainConfig, SearchConfig,
CompareConfig, CorpusSpec), not retyped."""

from __future__ import annotations

import argparse
import logging
import sys

from hwkd.cli import compare, data, hw, search, supernet, train
from hwkd.cli.common import Parser, default_dataset, formatter
from hwkd.errors import HwkdError

__all__ = ["build_parser", "default_dataset", "main"]

GROUPS = (search, supernet, data, train, compare, hw)        # the order of `hwkd --help`


def build_parser() -> argparse.ArgumentParser:
    p = Parser(
        prog="hwkd",
        description="Hardware-aware knowledge distillation and NAS benchmarking for speech enhancement.",
        formatter_class=formatter,
        epilog="Run `hwkd COMMAND --help` for the options of a command.")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", title="commands")
    for group in GROUPS:
        group.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="hwkd: %(message)s", level=logging.INFO, stream=sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        return args.func(args)
    except HwkdError as exc:
        print(f"hwkd: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if args.command in ("enhance", "metrics"):                 # one-shot, written at the end: nothing to resume
            print("hwkd: interrupted; no partial output was written (an existing one is unchanged) — rerun the "
                  "same command", file=sys.stderr)
        elif args.command == "evaluate":
            print("hwkd: interrupted; no table was written (files already saved with --save are complete) — rerun "
                  "the same command", file=sys.stderr)
        else:
            print("hwkd: interrupted; finished work is kept — rerun the same command to resume", file=sys.stderr)
        return 130
