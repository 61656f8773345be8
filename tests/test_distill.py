"""hwkd distill: a tiny student learns from a tiny teacher with I²SRF-TFCKD through the generic trainer."""

import json

import pytest

from hwkd.models import create_model
from hwkd.models.checkpoint import read_checkpoint, save_checkpoint

from conftest import run_cli


@pytest.mark.slow
def test_distill_runs_logs_kd_parts_and_checkpoints_the_distiller(tmp_path, tiny_corpus):
    teacher = create_model(dict(channels=12, layers=2, depth=2, heads=2))
    save_checkpoint(tmp_path / "teacher.pt", teacher)
    student = tmp_path / "student.yaml"
    student.write_text("channels: 8\nlayers: 1\ndepth: 2\nheads: 2\n")
    args = ["-q", "distill", "--teacher", tmp_path / "teacher.pt", "--student", student, "--kd", "i2srf-tfckd",
            "--data", tiny_corpus, "--out", tmp_path / "run", "--epochs", "1", "--batch-size", "2",
            "--max-steps-per-epoch", "2", "--val-pesq-clips", "1", "--threads", "1"]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    hist = json.loads((tmp_path / "run" / "history.jsonl").read_text().splitlines()[0])
    for k in ("train_kd_enc", "train_kd_mid", "train_kd_dec", "train_kd_inter", "train_se"):
        assert k in hist
    ck = read_checkpoint(tmp_path / "run" / "last.pt")
    assert ck["train"]["objective"] == "i2srf-tfckd"
    assert any(k.startswith("0.calib.") for k in ck["objective_state"])
    assert ck["model"]["config"]["channels"] == 8        # the checkpoint holds the student alone

    bad = run_cli("distill", "--teacher", tmp_path / "teacher.pt", "--student", student, "--kd", "magic",
                  "--data", tiny_corpus, "--out", tmp_path / "bad", "--epochs", "1")
    assert bad.returncode == 2 and "unknown KD scheme 'magic'" in bad.stderr
