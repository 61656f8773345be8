"""Enhancement of long files in bounded memory: chunked causal enhancement equals the whole-file output, the
non-causal overlap-add windows, block reading with resampling, and the peak memory of `hwkd enhance`."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

import hwkd.models.enhancer as E
from hwkd.audio.io import read_audio, read_blocks
from hwkd.errors import HwkdError
from hwkd.models import create_model

from conftest import full_mask, write

TINY = dict(channels=8, layers=2, depth=3, heads=2, gru_hidden=8)


def _blocks(x, size):
    return (x[:, a:a + size] for a in range(0, x.shape[1], size))


@pytest.mark.parametrize("extra", [dict(time_attention="none"), dict(time_attention="causal", hop=160),
                                   dict(time_attention="none", causal_norm="frame", in_channels=4, hop=128)])
@pytest.mark.slow
def test_causal_chunks_carry_the_state_exactly(extra, monkeypatch):
    """DPDCRN.step on chunks of frames, and the chunked file path, equal the whole-file forward (the cumulative
    norms' running sums, the dense caches, the GRU states and the attention inputs cross each chunk boundary)."""
    torch.manual_seed(0)
    net = full_mask(create_model(dict(TINY, causal=True, **extra))).eval()
    x = torch.randn(1, 2 * net.cfg.in_channels, 41, 257)
    with torch.no_grad():
        whole = net(x)
        state, outs = net.init_state(1), []
        for a, b in ((0, 1), (1, 9), (9, 10), (10, 33), (33, 41)):
            m, state = net.step(x[:, :, a:b], state)
            outs.append(m)
    assert (torch.cat(outs, 2) - whole).abs().max() <= 1e-4 * whole.abs().max()

    monkeypatch.setattr(E, "CAUSAL_CHUNK_S", 0.05)              # 800-sample chunks: many boundaries
    enh = E.Enhancer(net).eval()
    rng = np.random.default_rng(0)
    for n in (100, 16000 + 77):
        w = (0.1 * rng.standard_normal((net.cfg.in_channels, n))).astype(np.float32)
        ref = enh.enhance_array(w)
        for size in (333, n):
            got = np.concatenate(list(enh.enhance_blocks(_blocks(w, size))))
            assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-5, (n, size)
    hop_by_hop = np.concatenate(list(enh.enhance_blocks(_blocks(w[:, :5000], 1000), streaming=True)))
    assert np.abs(hop_by_hop - enh.enhance_array(w[:, :5000])).max() <= 1e-5


@pytest.mark.slow
def test_noncausal_windows_are_cross_faded_in_place(monkeypatch):
    """Non-causal: a file up to one window is enhanced whole (identical); longer ones in overlapping windows whose
    cross-fade keeps every sample in place: with the identity start (the output hardly depends on context) the
    windowed output is the whole-file output within a small tolerance, at every window and block size."""
    torch.manual_seed(0)
    enh = E.Enhancer(create_model(TINY)).eval()
    rng = np.random.default_rng(1)
    x = (0.1 * rng.standard_normal((1, 5 * 16000 + 3))).astype(np.float32)
    ref = enh.enhance_array(x)
    with torch.no_grad():
        same = np.concatenate(list(E.overlap_blocks(enh, _blocks(x, 4000), x.shape[1], 1600)))
        assert np.array_equal(same, ref)
        for chunk, overlap, size in ((16000, 1600, 4000), (20000, 3200, 999), (9000, 2000, 10 ** 6)):
            got = np.concatenate(list(E.overlap_blocks(enh, _blocks(x, size), chunk, overlap)))
            assert got.shape == ref.shape
            assert np.abs(got - ref).max() <= 0.02 * np.abs(ref).max(), (chunk, overlap)
    # (a sample shifted or dropped at a window edge, or weights that do not sum to 1, would be a ~0.5 error)
    with pytest.raises(ValueError, match="causal"):
        next(enh.enhance_blocks([x], streaming=True))


@pytest.mark.parametrize("sr, ch", [(16000, 1), (48000, 2), (44100, 1), (8000, 1)])
def test_read_blocks_equals_whole_file_read(tmp_path, sr, ch):
    rng = np.random.default_rng(2)
    x = (0.3 * rng.standard_normal((3 * sr + 13, ch))).astype(np.float32)
    sf.write(str(tmp_path / "a.wav"), x, sr, subtype="FLOAT")
    ref, _ = read_audio(tmp_path / "a.wav", 16000)
    got = np.concatenate(list(read_blocks(tmp_path / "a.wav", 0.37, 16000)), axis=1)
    assert got.shape == ref.shape and np.abs(got - ref).max() <= 1e-6


def test_a_header_outside_sane_rates_is_refused_before_reading(tmp_path):
    """A 4-MB WAV whose header says 1 Hz asked the resampler for 119 GiB; now one line, nothing allocated."""
    import struct
    n = 2_000_000
    hdr = (b"RIFF" + struct.pack("<I", 36 + 2 * n) + b"WAVEfmt " + struct.pack("<IHHIIHH", 16, 1, 1, 1, 2, 2, 16)
           + b"data" + struct.pack("<I", 2 * n))
    (tmp_path / "one.wav").write_bytes(hdr + bytes(2 * n))
    for read in (lambda p: read_audio(p, 16000), lambda p: next(read_blocks(p))):
        with pytest.raises(HwkdError, match="header says 1 Hz"):
            read(tmp_path / "one.wav")


def _peak_rss_mib(argv) -> float:
    """Peak RSS of one child process alone (os.wait4), in MiB."""
    p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    assert p.returncode == 0, p.stderr.read().decode()[-2000:]
    return ru.ru_maxrss / 1024


@pytest.mark.slow
def test_enhance_memory_does_not_grow_with_the_file(tmp_path):
    """`hwkd enhance` of 60 s against 5 s with the causal student preset: the peak RSS hardly moves (the
    whole-file path grew ~10-16 MB per second of audio: +550 MB or more here). Performance figures live in
    benchmarks/enhance_memory.py; this only checks that memory is bounded."""
    from hwkd.models.checkpoint import save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(tmp_path / "c.pt", create_model("cpu-student-causal"))
    rng = np.random.default_rng(3)
    peaks = {}
    for seconds in (5, 60):
        x = 0.05 * rng.standard_normal(seconds * 16000)
        write(tmp_path / f"in{seconds}.wav", x)
        peaks[seconds] = _peak_rss_mib([sys.executable, "-m", "hwkd", "-q", "enhance", str(tmp_path / "c.pt"),
                                        str(tmp_path / f"in{seconds}.wav"), str(tmp_path / "out.wav")])
        assert sf.info(str(tmp_path / "out.wav")).frames == seconds * 16000
    growth = peaks[60] - peaks[5]
    assert growth < 55 * 16 / 10, f"peak RSS grew {growth:.0f} MiB from 5 s to 60 s of audio ({peaks})"


@pytest.mark.slow
def test_enhance_keeps_an_old_output_when_the_input_fails_midway(tmp_path):
    """A NaN found in a later block ends the run with one line; the file being written is removed and an
    existing output is left as it was."""
    from hwkd.models.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "c.pt", create_model(dict(TINY, causal=True, time_attention="none")))
    x = (0.05 * np.random.default_rng(4).standard_normal(20 * 16000)).astype(np.float32)
    x[15 * 16000] = np.nan                                         # beyond the first blocks
    sf.write(str(tmp_path / "nan.wav"), x, 16000, subtype="FLOAT")
    old = write(tmp_path / "out.wav", x[:1600] * 0)
    before = old.read_bytes()
    r = subprocess.run([sys.executable, "-m", "hwkd", "enhance", str(tmp_path / "c.pt"), str(tmp_path / "nan.wav"),
                        str(old)], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "NaN" in r.stderr
    assert old.read_bytes() == before
    assert not [p for p in Path(tmp_path).iterdir() if p.name.startswith(".tmp-")]


def test_ctrl_c_midway_leaves_no_partial_file_and_keeps_the_old_output(tmp_path):
    """SIGINT while the output is half written: exit 130, one line, the temporary file removed, the old output
    untouched."""
    import signal
    import time

    from hwkd.models.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "c.pt", create_model(dict(TINY, causal=True, time_attention="none")))
    write(tmp_path / "long.wav", 0.05 * np.random.default_rng(5).standard_normal(600 * 16000))
    old = write(tmp_path / "out" / "out.wav", np.zeros(1600))
    before = old.read_bytes()
    p = subprocess.Popen([sys.executable, "-m", "hwkd", "enhance", str(tmp_path / "c.pt"), str(tmp_path / "long.wav"),
                          str(old)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         # a suite started in the background (`&`, nohup) ignores SIGINT, and children inherit that
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while time.time() < deadline and p.poll() is None:
        if any(q.stat().st_size > 16000 for q in old.parent.glob(".tmp-*.wav")):    # a few blocks written
            break
        time.sleep(0.1)
    assert p.poll() is None, "finished before it could be interrupted"
    p.send_signal(signal.SIGINT)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and len(err.strip().splitlines()) == 1 and "no partial output" in err, err
    assert old.read_bytes() == before and [q.name for q in old.parent.iterdir()] == ["out.wav"]
