import contextlib
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
import soundfile as sf


def full_mask(net):
    """The mask layer at PyTorch's default init instead of the identity start, so that parity tests compare a mask
    the whole network shapes (the identity start makes it ~constant, which would hide differences)."""
    net.dec2.reset_parameters()
    return net


def tone(n, sr=16000, f=440.0, ch=1, seed=0, amp=0.1):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / sr
    x = amp * np.sin(2 * np.pi * f * t) + 0.01 * rng.standard_normal(n)
    return np.stack([x * (1 - 0.1 * c) for c in range(ch)], axis=1) if ch > 1 else x


def write(path: Path, x, sr=16000):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), x, sr, subtype="PCM_16")
    return path


def run_cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "hwkd", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)


@pytest.fixture
def paired(tmp_path):
    """A generic paired folder with 3 good mono pairs of 1 s."""
    root = tmp_path / "paired"
    for i in range(3):
        write(root / "noisy" / f"u{i}.wav", tone(16000, seed=i))
        write(root / "clean" / f"u{i}.wav", tone(16000, seed=10 + i))
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """The embedded corpus's mono set at tiny scale: 40 / 4 / 4 clips of 1 s, and 2 out-of-domain ones."""
    from hwkd.data.synth import CorpusSpec, build_corpus
    root = tmp_path_factory.mktemp("corpus")
    build_corpus(root, CorpusSpec(clip_s=1.0, sizes={"mono": (40, 4, 4, 2), "foa": (0, 0, 0)}), progress=False)
    return root / "mono"


@pytest.fixture(scope="session")
def tiny_foa(tmp_path_factory):
    """The embedded corpus's Ambisonics set at tiny scale: 8 / 2 / 2 clips of 1 s."""
    from hwkd.data.synth import CorpusSpec, build_corpus
    root = tmp_path_factory.mktemp("corpus-foa")
    build_corpus(root, CorpusSpec(clip_s=1.0, sizes={"mono": (0, 0, 0), "foa": (8, 2, 2)}), progress=False)
    return root / "foa"


@pytest.fixture
def small_grid(monkeypatch, tmp_path):
    """The latency predictor on a reduced grid (and a private HWKD_HOME for its calibration files)."""
    import hwkd.hw.predict as pr
    monkeypatch.setattr(pr, "GRID_C", (8, 16))
    monkeypatch.setattr(pr, "GRID_H", (8, 16))
    monkeypatch.setattr(pr, "GRID_D", (1, 2))
    monkeypatch.setattr(pr, "GRID_HEADS", (0, 2))
    monkeypatch.setattr(pr, "GRID_M", (1,))
    monkeypatch.setattr(pr, "ANCHORS", ((8, 1, 1, 0, 8, True, 1), (16, 2, 2, 2, 16, False, 1),
                                        (16, 1, 1, 2, 8, True, 1), (8, 2, 2, 0, 16, False, 1),
                                        (16, 2, 1, 0, 16, True, 1), (8, 1, 2, 2, 8, False, 1)))
    monkeypatch.setenv("HWKD_HOME", str(tmp_path / "home"))
    return pr


# markers by the servers a test needs (a test using these fixtures, or a whole module of server tests); `slow` is
# set on the test itself. The fast selection for development: python -m pytest -q -m "not slow"
_NEEDS = {"sshd": "needs_sshd", "postgres": "needs_postgres", "postgres_with_password": "needs_postgres"}
_MODULE_NEEDS = {"test_servers.py": ("needs_sshd", "needs_postgres")}


def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, mark in _NEEDS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(mark)
        for mark in _MODULE_NEEDS.get(item.path.name, ()):
            item.add_marker(mark)
        src = _source(item)                 # a test that starts a server itself
        if "start_sshd(" in src:
            item.add_marker("needs_sshd")
        if "start_postgres(" in src:
            item.add_marker("needs_postgres")


def _source(item) -> str:
    import inspect
    try:
        return inspect.getsource(item.function)
    except (OSError, TypeError, AttributeError):
        return ""


@contextlib.contextmanager
def postgres_server(password: str | None = None):
    """A PostgreSQL server on 127.0.0.1 (tests/servers.py: loopback only, SCRAM password, dies with the test run)
    with superuser hwkd and `password` (generated when None). Yields (URL without the password, URL with it)."""
    from servers import start_postgres, stop_postgres
    pg = start_postgres(password)
    bare = f"postgresql+psycopg://hwkd@127.0.0.1:{pg['port']}/postgres"
    with_pw = bare.replace("hwkd@", "hwkd:" + quote(pg["password"], safe="") + "@")
    try:
        yield bare, with_pw
    finally:
        stop_postgres(pg)


@pytest.fixture
def postgres():
    """The URL (with its password) of a fresh test server."""
    with postgres_server() as (_, url):
        yield url
