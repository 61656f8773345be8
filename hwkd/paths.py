"""Where hwkd keeps what it builds: $HWKD_HOME (default ~/.cache/hwkd)."""

from __future__ import annotations

import os
from pathlib import Path


def hwkd_home() -> Path:
    return Path(os.environ.get("HWKD_HOME", Path.home() / ".cache" / "hwkd")).expanduser()


def default_corpus_dir() -> Path:
    return hwkd_home() / "corpus" / "default"
