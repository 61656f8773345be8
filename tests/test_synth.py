"""The embedded corpus: real audio from the Debian packages (install.sh installs them)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf

from hwkd.data import speech
from hwkd.data.layouts import check_samples, scan
from hwkd.data.synth import CorpusSpec, build_corpus, make_clip
from hwkd.errors import HwkdError

from conftest import run_cli
from servers import alive, children

TINY = CorpusSpec(sizes={"mono": (3, 2, 2), "foa": (2, 1, 1)})


def test_speakers_are_disjoint_across_splits():
    ids = {s: {sp.id for group in speech.speakers(s).values() for sp in group} for s in speech.SPLITS}
    assert all(ids.values())
    assert not ids["train"] & ids["val"] and not ids["train"] & ids["test"] and not ids["val"] & ids["test"]
    for split in speech.SPLITS:   # every split has recorded speech and TTS
        assert speech.speakers(split)["asterisk-g722"] and speech.speakers(split)["espeak-ng"]


def test_the_out_of_domain_split_shares_no_voice_noise_family_or_snr_range_with_the_others():
    from hwkd.data.noise import NOISE_KINDS, OOD_NOISE_KINDS
    from hwkd.data.synth import OOD_SNR_DB
    ood = {sp.id for group in speech.speakers("ood").values() for sp in group}
    others = {sp.id for s in speech.SPLITS for group in speech.speakers(s).values() for sp in group}
    assert ood and not ood & others
    assert set(OOD_NOISE_KINDS) - {"babble"} and not (set(OOD_NOISE_KINDS) - {"babble"}) & set(NOISE_KINDS)
    assert OOD_SNR_DB[0] < CorpusSpec().snr_db[0] and OOD_SNR_DB[1] > CorpusSpec().snr_db[1]
    metas = [make_clip(CorpusSpec(clip_s=1.0), "mono", "ood", i)[2] for i in range(6)]
    assert {m["speaker"] for m in metas} <= ood and {m["noise_kind"] for m in metas} <= set(OOD_NOISE_KINDS)
    assert all(OOD_SNR_DB[0] <= m["snr_db"] <= OOD_SNR_DB[1] for m in metas)
    for v in speech.FESTIVAL_OOD:          # every voice speaks, questions included (the Italian one failed on "?")
        u = speech.utterance(speech.Speaker(f"festival:{v}", "festival", v), np.random.default_rng(3))
        q = speech._tts(speech.Speaker(f"festival:{v}", "festival", v), "Did you see the green coat?",
                        np.random.default_rng(0))
        assert len(u) > 8000 and len(q) > 8000 and np.abs(q).max() > 0.01
    noisy, clean, meta = make_clip(CorpusSpec(clip_s=1.0), "foa", "ood", 0)
    assert noisy.shape == (4, 16000) and meta["speaker"] in ood and np.isfinite(noisy).all()


def test_clip_is_a_pure_function_of_seed_split_index():
    a = make_clip(TINY, "mono", "val", 5)
    b = make_clip(TINY, "mono", "val", 5)
    c = make_clip(TINY, "mono", "val", 6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    assert not np.array_equal(a[1], c[1])
    other_seed = make_clip(CorpusSpec(seed=1), "mono", "val", 5)
    assert not np.array_equal(a[1], other_seed[1])


def test_mono_mix_hits_its_snr_and_level():
    for i in range(4):
        noisy, clean, meta = make_clip(TINY, "mono", "train", i)
        noise = noisy[0] - clean
        from hwkd.data.synth import active_rms
        snr = 20 * np.log10(active_rms(clean) / np.sqrt(np.mean(noise ** 2)))
        assert snr == pytest.approx(meta["snr_db"], abs=0.05)
        assert -36 <= meta["level_dbfs"] <= -14 and np.abs(noisy).max() <= 0.99 + 1e-6


def test_foa_clip_is_bformat_with_aligned_dry_target():
    noisy, clean, meta = make_clip(TINY, "foa", "test", 0)
    assert noisy.shape == (4, 64000) and clean.shape == (64000,)
    room = meta["room"]
    assert 0.2 <= room["rt60_s"] <= 0.8 and room["image_order"] <= 12
    d = meta["target_delay_samples"]
    assert np.all(clean[:d] == 0) and np.any(clean[d:d + 16000] != 0)
    # the direct path dominates W's cross-correlation with the target at lag 0
    w = noisy[0]
    lags = range(-20, 21)
    xc = [np.dot(w[max(0, k):len(w) + min(0, k)], clean[max(0, -k):len(clean) - max(0, k)]) for k in lags]
    assert abs(list(lags)[int(np.argmax(xc))]) <= 1


def test_build_resume_and_determinism(tmp_path):
    a = build_corpus(tmp_path / "a", TINY, jobs=2, progress=False)
    assert a["built"] == 11 and a["skipped"] == 0
    s = scan(tmp_path / "a")
    assert s.layout == "hwkd-corpus" and not s.problems
    chans = {p.split: s.info[p.noisy].channels for p in s.pairs}
    assert chans["mono/train"] == 1 and chans["foa/test"] == 4
    man = [json.loads(line) for line in (tmp_path / "a" / "mono" / "train" / "manifest.jsonl").read_text().splitlines()]
    assert [m["id"] for m in man] == ["clip_000000", "clip_000001", "clip_000002"]
    for key in ("speaker", "source", "noise_kind", "snr_db", "level_dbfs", "seed"):
        assert key in man[0]
    meta = json.loads((tmp_path / "a" / "corpus.json").read_text())
    assert meta["versions"]["debian_packages"]["espeak-ng"] and meta["versions"]["python_packages"]["numpy"]

    # one process gives byte-identical files
    build_corpus(tmp_path / "b", TINY, jobs=1, progress=False)
    for rel in ("mono/val/noisy/clip_000001.wav", "foa/train/clean/clip_000001.wav"):
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes()

    # a lost clip is rebuilt, the rest kept; a bigger size extends
    (tmp_path / "a" / "mono" / "test" / ".meta" / "clip_000001.json").unlink()
    bigger = CorpusSpec(sizes={"mono": (4, 2, 2), "foa": (2, 1, 1)})
    r = build_corpus(tmp_path / "a", bigger, jobs=2, progress=False)
    assert r["built"] == 2 and r["skipped"] == 10

    with pytest.raises(HwkdError, match="other settings"):
        build_corpus(tmp_path / "a", CorpusSpec(seed=7, sizes=TINY.sizes), progress=False)


@pytest.mark.slow
def test_killed_build_resumes(tmp_path):
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "hwkd", "-q", "data", "synth", "--out", str(out), "--mono", "150,0,0",
           "--foa", "0,0,0", "--jobs", "2"]
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    meta = out / "mono" / "train" / ".meta"
    t0 = time.time()
    while time.time() - t0 < 60 and (not meta.is_dir() or len(list(meta.glob("*.json"))) < 5):
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    done = len(list(meta.glob("*.json")))
    assert 5 <= done < 150
    r = run_cli("-q", "data", "synth", "--out", out, "--mono", "150,0,0", "--foa", "0,0,0")
    assert r.returncode == 0, r.stderr
    assert f"kept {done}" in r.stdout and f"built {150 - done}" in r.stdout
    assert not list(out.rglob(".tmp-*"))   # a killed writer's temp files are cleaned on resume
    s = scan(out)
    assert len(s.pairs) == 150 and not s.problems
    x, sr = sf.read(str(out / "mono" / "train" / "noisy" / "clip_000149.wav"))
    assert sr == 16000 and len(x) == 64000


def test_bad_sizes_message():
    r = run_cli("data", "synth", "--mono", "10,10")
    assert r.returncode == 2 and "TRAIN,VAL,TEST" in r.stderr


@pytest.mark.slow
def test_two_builders_at_once_wait_for_each_other(tmp_path):
    """Two workers building one corpus on one host: one builds, the other waits for it, then finds every
    clip built. (Without the lock the second deleted the first's partial writes, and both built clips.)"""
    out = tmp_path / "c"
    cmd = [sys.executable, "-m", "hwkd", "data", "synth", "--out", str(out), "--mono", "120,2,2", "--foa", "0,0,0",
           "--clip-s", "1", "--jobs", "1"]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=170) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-2000:]
    built = sorted(outs, key=lambda oe: "built 124" in oe[0])
    (waited_out, waited_err), (builder_out, _) = built
    assert "built 124, kept 0" in builder_out and "built 0, kept 124" in waited_out, outs
    assert "is being built by another process" in waited_err and "waiting for it" in waited_err
    assert not list(out.rglob(".tmp-*"))
    s = scan(out)
    assert len(s.pairs) == 124 and not s.problems
    assert check_samples(s) == 248 and not s.problems   # every sample of every file reads
    lines = (out / "mono" / "train" / "manifest.jsonl").read_text().splitlines()
    assert [json.loads(line)["id"] for line in lines] == [f"clip_{i:06d}" for i in range(120)]


def test_pool_workers_exit_when_the_builder_is_killed(tmp_path):
    out = tmp_path / "c"
    p = subprocess.Popen([sys.executable, "-m", "hwkd", "-q", "data", "synth", "--out", str(out), "--mono", "400,0,0",
                          "--foa", "0,0,0", "--clip-s", "1", "--jobs", "2"], stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    meta = out / "mono" / "train" / ".meta"
    t0 = time.time()
    while time.time() - t0 < 60 and (not meta.is_dir() or len(list(meta.glob("*.json"))) < 5):
        time.sleep(0.05)
    workers = children(p.pid)
    assert len(workers) == 2 and p.poll() is None
    p.kill()                                            # the builder only (SIGKILL), not its process group
    p.wait()
    t0 = time.time()
    while time.time() - t0 < 5 and any(alive(w) for w in workers):
        time.sleep(0.05)
    assert not [w for w in workers if alive(w)], "pool workers outlived their killed parent"
    # and the corpus lock went with them: a build resumes (a held lock would hang it); clips finish out of
    # order in a pool, so of the first 5 some may be built again
    r = run_cli("-q", "data", "synth", "--out", out, "--mono", "5,0,0", "--foa", "0,0,0", "--clip-s", "1",
                timeout=120)
    m = re.search(r"built (\d+), kept (\d+)", r.stdout)
    assert r.returncode == 0 and m and int(m[1]) + int(m[2]) == 5 and int(m[2]) >= 1, r.stdout + r.stderr
