"""What every command group shares: argparse types that refuse impossible values at parse time (one line, naming
the flag), the help formatter, the one-line argument error, and the embedded corpus on first use."""

from __future__ import annotations

import argparse
import logging
import math
import sys
from pathlib import Path

from hwkd.errors import HwkdError

log = logging.getLogger("hwkd")


def sizes(text: str) -> tuple[int, ...]:
    try:
        parts = tuple(int(x) for x in text.split(","))
    except ValueError:
        parts = ()
    if len(parts) not in (3, 4) or min(parts) < 0:
        raise argparse.ArgumentTypeError(f"expected TRAIN,VAL,TEST[,OOD] clip counts such as 600,100,100,100, "
                                         f"got {text!r}")
    return parts


def positive(kind=int, what: str = "a positive number"):
    """argparse type: a finite number > 0 (a 0 or negative count, size or limit is refused at parse time)."""
    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            v = None
        if v is None or not math.isfinite(v) or v <= 0:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v
    return parse


POS_INT = positive(int, "a whole number of 1 or more")
POS_FLOAT = positive(float, "a number above 0")


def nonneg_float(text: str) -> float:
    """argparse type: a finite number >= 0 (a KD weight)."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"expected a number of 0 or more, got {text!r}")
    return v


def nonneg_int(text: str) -> int:
    """argparse type: a whole number >= 0 (a channel index)."""
    try:
        v = int(text)
    except ValueError:
        v = -1
    if v < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number of 0 or more, got {text!r}")
    return v


def storage_url(text: str) -> str:
    """argparse type: a database URL SQLAlchemy can read (the error does not repeat it: it may hold a password)."""
    from hwkd.store import parse
    try:
        parse(text)
    except HwkdError as e:
        raise argparse.ArgumentTypeError(f"not a database URL; {e.fix}") from None
    return text


STORAGE_HELP = ("database URL shared by workers, e.g. postgresql+psycopg://user@host/db (default: $HWKD_STORAGE; "
                 "the password from PGPASSWORD or ~/.pgpass: a password in this flag is visible in ps)")


def formatter(prog):
    return argparse.RawDescriptionHelpFormatter(prog, width=120, max_help_position=24)


class Parser(argparse.ArgumentParser):
    """An argument error is one line, like every other bad input: the error and where the options are (argparse
    printed the whole usage block above it)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} — see {self.prog} --help\n")


def duration(text: str) -> float:
    t = text.strip().lower()
    try:
        for suffix, mult in (("h", 3600), ("min", 60), ("m", 60), ("s", 1)):
            if t.endswith(suffix):
                v = float(t[: -len(suffix)]) * mult
                break
        else:
            v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration; write e.g. 900, 15m or 1h") from None
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r}: a duration must be above 0; write e.g. 900, 15m or 1h")
    return v


def csv_list(text: str | None, kind=str) -> list | None:
    if not text:
        return None
    try:
        out = [kind(x.strip()) for x in text.split(",") if x.strip()]
    except ValueError:
        raise HwkdError(f"cannot read {text!r} as a comma-separated list", "e.g. --threads 1,2") from None
    if kind is int and any(v < 1 for v in out):
        raise HwkdError(f"--threads {text}: thread counts start at 1", "e.g. --threads 1,2")
    return out


def given_storage(args) -> tuple[str | None, str]:
    """The store URL from --storage or $HWKD_STORAGE, and which; a password on the command line is warned about."""
    from hwkd import store
    if args.storage and store.has_password(args.storage):
        print(f"hwkd: warning: the password in --storage is visible to every user of this machine (ps) while hwkd "
              f"runs; pass the URL in ${store.STORAGE_ENV}, or the password by PGPASSWORD or ~/.pgpass",
              file=sys.stderr)
    return store.given_storage(args.storage)


def default_dataset(in_channels: int, jobs: int | None = None, progress: bool = True) -> Path:
    """The embedded corpus's mono or Ambisonics set, built first if needed (hwkd.data.synth)."""
    from hwkd.data.synth import default_dataset as build
    return build(in_channels, jobs=jobs, progress=progress)
