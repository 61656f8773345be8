"""Where hwkd keeps what it builds: $HWKD_HOME (default ~/.cache/hwkd)."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import time
from pathlib import Path


def hwkd_home() -> Path:
    return Path(os.environ.get("HWKD_HOME", Path.home() / ".cache" / "hwkd")).expanduser()


def default_corpus_dir() -> Path:
    return hwkd_home() / "corpus" / "default"


def claim_folder(folder: Path):
    """An open file holding an exclusive flock on folder/claim.lock, or None if another process holds it.

    The lock lasts while the file is open and dies with its process (kill -9 included), so a dead holder
    leaves no stale claim; the file says who holds it. Used for KD-matrix cells and search candidates."""
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / "claim.lock", "a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        f.close()
        return None
    f.seek(0)
    f.truncate()
    f.write(json.dumps({"host": socket.gethostname(), "pid": os.getpid(), "since": time.time()}))
    f.flush()
    return f
