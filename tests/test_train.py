"""Training, resume after kill -9, and the evaluate / enhance commands, on a tiny model and corpus."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import soundfile as sf
import torch

from hwkd.models.checkpoint import load_model, read_checkpoint

from conftest import run_cli, tone, write

TINY_MODEL = "channels: 8\nlayers: 1\ndepth: 2\nheads: 2\n"


@pytest.fixture
def corpus(tiny_corpus):
    return tiny_corpus


@pytest.fixture(scope="module")
def model_yaml(tmp_path_factory):
    p = tmp_path_factory.mktemp("cfg") / "tiny.yaml"
    p.write_text(TINY_MODEL)
    return p


def _train_cmd(corpus, model_yaml, out, epochs=2):
    return [sys.executable, "-m", "hwkd", "train", "--model", str(model_yaml), "--data", str(corpus),
            "--out", str(out), "--epochs", str(epochs), "--batch-size", "2", "--ckpt-every", "3",
            "--threads", "1", "--val-pesq-clips", "2"]


@pytest.mark.slow
def test_killed_training_resumes_exactly(tmp_path, corpus, model_yaml):
    ref = subprocess.run(_train_cmd(corpus, model_yaml, tmp_path / "ref"), capture_output=True, text=True)
    assert ref.returncode == 0, ref.stderr[-2000:]

    out = tmp_path / "killed"
    p = subprocess.Popen(_train_cmd(corpus, model_yaml, out), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    t0 = time.time()
    while not (out / "last.pt").exists() and time.time() - t0 < 120:
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    ck = read_checkpoint(out / "last.pt")
    assert ck["train"]["epoch"] == 0 and ck["train"]["pos"] == 3      # killed mid-epoch
    res = subprocess.run(_train_cmd(corpus, model_yaml, out), capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "resuming" in res.stdout and "epoch 1, step 3 of 20" in res.stdout

    a, _ = load_model(tmp_path / "ref" / "last.pt")
    b, _ = load_model(out / "last.pt")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert (out / "best.pt").is_file()


@pytest.mark.slow
def test_training_improves_and_commands_run(tmp_path, corpus, model_yaml):
    out = tmp_path / "run"
    r = subprocess.run(_train_cmd(corpus, model_yaml, out, epochs=3), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    hist = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]      # it learns something

    e = run_cli("-q", "evaluate", out / "best.pt", "--data", corpus, "--split", "test", "--out", tmp_path / "e.json",
                "--jobs", "1")
    assert e.returncode == 0, e.stderr
    assert "pesq_wb" in e.stdout and "enhanced" in e.stdout
    j = json.loads((tmp_path / "e.json").read_text())
    assert j["utterances"] == 4 and j["enhanced"]["si_sdr_db"]["n"] == 4
    # by condition, from the corpus's manifest: every clip in one noise family and one SNR band
    assert "by noise" in e.stdout and "by SNR" in e.stdout
    for key in ("noise", "snr"):
        assert sum(r["n"] for r in j["by_condition"][key].values()) == 4

    noisy = corpus / "test" / "noisy" / "clip_000000.wav"
    n = run_cli("enhance", out / "best.pt", noisy, tmp_path / "o.wav")
    assert n.returncode == 0, n.stderr
    y, sr = sf.read(tmp_path / "o.wav")
    assert sr == 16000 and len(y) == 16000 and np.abs(y).max() > 0
    # bad inputs: 4-channel file for a mono model, streaming a non-causal model, missing checkpoint
    write(tmp_path / "foa.wav", tone(16000, ch=4))
    bad = run_cli("enhance", out / "best.pt", tmp_path / "foa.wav", tmp_path / "x.wav")
    assert bad.returncode == 2 and "foa.wav has 4 channel(s)" in bad.stderr and "Traceback" not in bad.stderr
    bad = run_cli("enhance", out / "best.pt", noisy, tmp_path / "x.wav", "--streaming")
    assert bad.returncode == 2 and "non-causal" in bad.stderr
    bad = run_cli("evaluate", tmp_path / "missing.pt")
    assert bad.returncode == 2 and "checkpoint not found" in bad.stderr
    assert not (tmp_path / "x.wav").exists()


@pytest.mark.slow
def test_streaming_enhance_of_a_causal_checkpoint(tmp_path):
    from hwkd.models import create_model
    from hwkd.models.checkpoint import save_checkpoint
    m = create_model(dict(channels=8, layers=1, depth=2, heads=2, causal=True, time_attention="causal"))
    save_checkpoint(tmp_path / "c.pt", m)
    write(tmp_path / "in.wav", tone(12000))
    a = run_cli("enhance", tmp_path / "c.pt", tmp_path / "in.wav", tmp_path / "off.wav")
    b = run_cli("enhance", tmp_path / "c.pt", tmp_path / "in.wav", tmp_path / "str.wav", "--streaming")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    x, _ = sf.read(tmp_path / "off.wav")
    y, _ = sf.read(tmp_path / "str.wav")
    assert np.abs(x - y).max() <= 2 / 32768   # identical up to PCM16 rounding


@pytest.mark.slow
def test_evaluate_a_plain_paired_folder(tmp_path, paired):
    """A folder without splits (noisy/ + clean/) is evaluated whole by default (was: "split 'test' not found")."""
    from hwkd.models import create_model
    from hwkd.models.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "m.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2)))
    r = run_cli("-q", "evaluate", tmp_path / "m.pt", "--data", paired, "--jobs", "1", "--out", tmp_path / "e.json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[all], 3 utterances" in r.stdout and json.loads((tmp_path / "e.json").read_text())["utterances"] == 3
    r = run_cli("-q", "evaluate", tmp_path / "m.pt", "--data", paired, "--split", "test")
    assert r.returncode == 2 and "split 'test' not found" in r.stderr
    # --against: a second model on the same utterances, the paired difference per metric
    save_checkpoint(tmp_path / "m2.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2)))
    r = run_cli("-q", "evaluate", tmp_path / "m.pt", "--data", paired, "--jobs", "1", "--against", tmp_path / "m2.pt",
                "--out", tmp_path / "ab.json")
    assert r.returncode == 0 and "against" in r.stdout, r.stderr[-2000:]
    ab = json.loads((tmp_path / "ab.json").read_text())
    rows_a, rows_b = ab["rows"]["enhanced"], ab["against"]["rows"]
    assert len(rows_a) == len(rows_b) == 3
    want = np.mean([x["si_sdr_db"] - y["si_sdr_db"] for x, y in zip(rows_a, rows_b)])
    assert ab["against"]["difference"]["si_sdr_db"]["mean"] == pytest.approx(want) and abs(want) > 1e-6
    r = run_cli("-q", "evaluate", tmp_path / "m.pt", "--data", paired, "--jobs", "1", "--against", tmp_path / "m.pt",
                "--out", tmp_path / "aa.json")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "aa.json").read_text())["against"]["difference"]["pesq_wb"]["mean"] == 0.0
    save_checkpoint(tmp_path / "foa.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2, in_channels=4)))
    r = run_cli("-q", "evaluate", tmp_path / "m.pt", "--data", paired, "--against", tmp_path / "foa.pt")
    assert r.returncode == 2 and "--against" in r.stderr and "same input" in r.stderr
    # a truncated WAV is enhanced with a warning that names it (it was enhanced silently)
    cut = tmp_path / "cut.wav"
    cut.write_bytes((paired / "noisy" / "u0.wav").read_bytes()[:-10000])
    r = run_cli("enhance", tmp_path / "m.pt", cut, tmp_path / "o.wav")
    assert r.returncode == 0 and "cut.wav is truncated: its header declares 16000 samples" in r.stderr
    # outputs get the mode a plain open() gives (they were 0600); a folder or an unwritable path is one line
    import os
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "o.wav").stat().st_mode & 0o777 == 0o666 & ~umask
    r = run_cli("enhance", tmp_path / "m.pt", cut, tmp_path)
    assert r.returncode == 2 and "is a folder, not a file name" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("enhance", tmp_path / "m.pt", cut, cut / "o.wav")
    assert r.returncode == 2 and "cannot write" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.slow
def test_two_data_parallel_workers_train_like_one_process(tmp_path, corpus, model_yaml):
    """--workers 2 splits every batch between two processes and averages their gradients: the same updates as one
    process on the whole batch (up to float summation order), and the same checkpoints and history."""
    def cmd(out, workers):
        return _train_cmd(corpus, model_yaml, out, epochs=2) + ["--max-steps-per-epoch", "3", "--workers",
                                                                  str(workers), "--val-pesq-clips", "0"]
    one = subprocess.run(cmd(tmp_path / "one", 1), capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run(cmd(tmp_path / "two", 2), capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    a, _ = load_model(tmp_path / "one" / "last.pt")
    b, _ = load_model(tmp_path / "two" / "last.pt")
    # Adam turns the float-order noise in near-zero gradients (a conv bias before an instance norm) into
    # visible steps, so weights agree to ~1e-3, not 1e-6; a worker that skipped its share or did not average
    # would differ by the size of the updates themselves (~lr = 1e-3 per step, 6 steps)
    diff = max(float((x - y).abs().max()) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert diff < 2e-3, diff
    ha = [json.loads(line) for line in (tmp_path / "one" / "history.jsonl").read_text().splitlines()]
    hb = [json.loads(line) for line in (tmp_path / "two" / "history.jsonl").read_text().splitlines()]
    assert [h["workers"] for h in hb] == [2, 2] and [h["epoch"] for h in hb] == [1, 2]
    assert abs(ha[-1]["val_si_sdr_db"] - hb[-1]["val_si_sdr_db"]) < 0.01
    # a worker that fails: one line naming it, the finished checkpoints kept
    env = {**os.environ, "HWKD_FAULT_WORKER": "1"}
    r = subprocess.run(cmd(tmp_path / "two", 2)[:-4] + ["--epochs", "3", "--workers", "2"], capture_output=True,
                       text=True, env=env, timeout=300)
    assert r.returncode == 2 and "hwkd: error: data-parallel training" in r.stderr and "worker 1 (exit 1)" in r.stderr
    assert read_checkpoint(tmp_path / "two" / "last.pt")["train"]["epoch"] == 2      # nothing lost
    # an odd batch cannot be split evenly: refused before any work
    bad = run_cli("train", "--model", model_yaml, "--data", corpus, "--out", tmp_path / "bad", "--batch-size", "3",
                  "--workers", "2")
    assert bad.returncode == 2 and "--workers 2" in bad.stderr and "Traceback" not in bad.stderr
    assert not (tmp_path / "bad").exists()


def test_scores_by_condition_come_from_the_manifest(tmp_path):
    from hwkd.data.layouts import Pair
    from hwkd.train.evaluate import by_condition, conditions
    d = tmp_path / "test"
    (d / "noisy").mkdir(parents=True)
    recs = [{"noisy": "noisy/a.wav", "noise_kind": "babble", "snr_db": -2.0},
            {"noisy": "noisy/b.wav", "noise_kind": "white", "snr_db": 7.5, "room": {"rt60_s": 0.45}},
            {"noisy": "noisy/c.wav", "noise_kind": "babble", "snr_db": 21.0}]
    (d / "manifest.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\nnot json\n")
    pairs = [Pair(d / "noisy" / f"{k}.wav", d / "clean" / f"{k}.wav", k) for k in "abcz"]   # z: not described
    conds = conditions(pairs)
    assert conds == [{"noise": "babble", "snr": "< 0 dB"},
                     {"noise": "white", "snr": "5 to 10 dB", "rt60": "0.3 to 0.6 s"},
                     {"noise": "babble", "snr": ">= 20 dB"}, {}]
    noisy = [{"si_sdr_db": v} for v in (0.0, 5.0, 20.0, 1.0)]
    enh = [{"si_sdr_db": v} for v in (1.0, 15.0, 23.0, 9.0)]
    t = by_condition(conds, noisy, enh, ("si_sdr_db", "pesq_wb"))
    assert t["noise"]["babble"]["n"] == 2 and t["noise"]["babble"]["si_sdr_db"]["gain"] == pytest.approx(2.0)
    assert t["noise"]["white"]["si_sdr_db"]["gain"] == pytest.approx(10.0) and "pesq_wb" not in t["noise"]["white"]
    assert list(t["snr"]) == ["< 0 dB", "5 to 10 dB", ">= 20 dB"] and list(t["rt60"]) == ["0.3 to 0.6 s"]
    assert by_condition([{}], noisy[:1], enh[:1], ("si_sdr_db",)) == {}


def test_part_of_a_schedule_then_the_rest_equals_the_whole(tmp_path, corpus):
    """TrainConfig.until_epoch stops after that epoch of the planned schedule (a fork point for benchmarks that
    continue a long run one epoch two ways); resuming without it finishes the same schedule exactly."""
    from dataclasses import replace

    from hwkd.models.dpdcrn import DPDCRNConfig
    from hwkd.train.recipe import train_model
    from hwkd.train.trainer import TrainConfig
    cfg = DPDCRNConfig(channels=4, layers=1, depth=1, heads=0, gru_hidden=8)
    tcfg = TrainConfig(epochs=2, batch_size=4, segment_s=1.0, threads=1, val_pesq_clips=0, ckpt_every=0,
                       max_steps_per_epoch=3)
    train_model(cfg, tmp_path / "whole", tcfg, data=corpus, progress=False)
    part = train_model(cfg, tmp_path / "parts", replace(tcfg, until_epoch=1), data=corpus, progress=False)
    assert [h["epoch"] for h in part["history"]] == [1]
    first = read_checkpoint(tmp_path / "parts" / "last.pt")["train"]
    assert first["epoch"] == 1 and first["pos"] == 0
    train_model(cfg, tmp_path / "parts", tcfg, data=corpus, progress=False)
    a, _ = load_model(tmp_path / "whole" / "last.pt")
    b, _ = load_model(tmp_path / "parts" / "last.pt")
    for (k, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(x, y, atol=1e-6), k
