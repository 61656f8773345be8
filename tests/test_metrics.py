import subprocess
import sys
import time

import numpy as np
import pytest
from pesq import pesq
from pystoi import stoi

from hwkd.metrics import score_clip, score_pairs, si_sdr, summarize

from servers import alive, children


def _speechlike(seed, n=64000):
    """Amplitude-modulated harmonic signal: enough structure for PESQ's VAD."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000
    f0 = 120 + 40 * np.sin(2 * np.pi * 0.5 * t)
    phase = 2 * np.pi * np.cumsum(f0) / 16000
    x = sum(np.sin(k * phase) / k for k in range(1, 20))
    env = (np.sin(2 * np.pi * 3 * t) > -0.3) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t))
    return (0.1 * x * env + 0.001 * rng.standard_normal(n)).astype(np.float64)


def _pair(seed, snr=5.0):
    clean = _speechlike(seed)
    noise = np.random.default_rng(seed + 100).standard_normal(len(clean))
    noise *= np.sqrt(np.mean(clean ** 2) / np.mean(noise ** 2)) / 10 ** (snr / 20)
    return clean + noise, clean


def test_values_identical_to_the_reference_packages():
    noisy, clean = _pair(1)
    row = score_clip(noisy, clean)
    assert row["status"] == "ok"
    assert row["pesq_wb"] == pesq(16000, clean, noisy, "wb")
    # pystoi itself differs in the last bit between two identical calls (BLAS summation order),
    # so "identical" here is equality to 1e-12
    assert row["stoi"] == pytest.approx(stoi(clean, noisy, 16000, extended=False), abs=1e-12)
    assert row["estoi"] == pytest.approx(stoi(clean, noisy, 16000, extended=True), abs=1e-12)


def test_si_sdr_zero_mean_convention():
    _, clean = _pair(2)
    rng = np.random.default_rng(0)
    est = clean + 0.1 * rng.standard_normal(len(clean)) * clean.std()
    v = si_sdr(est, clean)
    assert v == pytest.approx(20.0, abs=0.3)
    assert si_sdr(3.0 * est, clean) == pytest.approx(v, abs=1e-9)       # scale invariant
    assert si_sdr(est + 0.5, clean) == pytest.approx(v, abs=1e-9)       # zero-mean: DC offset ignored
    assert si_sdr(est + 0.5, clean, zero_mean=False) < v - 10


def test_bad_clips_get_a_status_not_a_crash():
    noisy, clean = _pair(3)
    assert score_clip(noisy, np.zeros_like(clean))["status"] == "silent_reference"
    assert score_clip(noisy[:4000], clean[:4000])["status"].startswith("too_short")
    bad = noisy.copy()
    bad[10] = np.nan
    r = score_clip(bad, clean)
    assert r["status"] == "nan_input" and r["pesq_wb"] is None


def _load(est_spec, ref_spec):
    if est_spec == "raise":
        raise OSError("disk gone")
    noisy, clean = _pair(est_spec)
    return noisy, (np.zeros_like(clean) if ref_spec == "silent" else clean), 16000


def test_parallel_matches_serial_and_isolates_failures():
    jobs = [(i, "ok", f"c{i}") for i in range(6)] + [(7, "silent", "s"), ("raise", "ok", "r")]
    par = score_pairs(jobs, _load, jobs=2)
    ser = score_pairs(jobs, _load, jobs=1)
    assert [r["id"] for r in par] == [j[2] for j in jobs]
    for a, b in zip(par, ser):
        assert a.keys() == b.keys() and a["status"] == b["status"]
        for k in ("pesq_wb", "stoi", "estoi", "si_sdr_db"):
            assert (a[k] is None and b[k] is None) or a[k] == pytest.approx(b[k], abs=1e-12)
    assert par[6]["status"] == "silent_reference"
    assert par[7]["status"].startswith("unreadable") and "disk gone" in par[7]["status"]
    s = summarize(par)
    assert s["pesq_wb"]["n"] == 6 and s["status_counts"] == {"ok": 6, "silent_reference": 1, "unreadable": 1}
    assert s["pesq_wb"]["ci95"] > 0


@pytest.mark.slow
def test_dnsmos_offline():
    noisy, clean = _pair(4, snr=0)
    r = score_clip(clean, clean, dnsmos=True)
    rn = score_clip(noisy, clean, dnsmos=True)
    for k in ("dnsmos_sig", "dnsmos_bak", "dnsmos_ovrl", "dnsmos_p808"):
        assert 1.0 <= r[k] <= 5.0
    assert rn["dnsmos_bak"] < r["dnsmos_bak"]   # white noise at 0 dB must lower background quality


SCORER = """
import sys, time
import numpy as np
from hwkd.metrics import score_pairs

def slow_load(est, ref):
    time.sleep(0.5)
    x = np.random.default_rng(0).standard_normal(16000) * 0.1
    return x, x, 16000

print("scoring", flush=True)
score_pairs([(i, i, f"c{i}") for i in range(400)], slow_load, jobs=2)
"""


def test_pool_workers_exit_when_the_scorer_is_killed():
    p = subprocess.Popen([sys.executable, "-c", SCORER], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout.readline() == b"scoring\n", p.stderr.read()[-2000:]
    t0 = time.time()
    while time.time() - t0 < 60 and len(children(p.pid)) < 2:
        time.sleep(0.05)
    workers = children(p.pid)
    assert len(workers) == 2 and p.poll() is None
    time.sleep(1)                                       # busy scoring
    p.kill()                                            # the scorer only (SIGKILL), not its process group
    p.wait()
    t0 = time.time()
    while time.time() - t0 < 5 and any(alive(w) for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if alive(w)], "pool workers outlived their killed parent"
