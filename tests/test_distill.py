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


@pytest.mark.parametrize("student, teacher_ch, flag, want", [
    ("kd-small", 1, None, 1), ("kd-small", 4, None, 4), ("kd-medium-foa", 1, None, 4),
    ("kd-medium-foa", 4, None, 4), ("kd-small", 1, "4", 4)])
def test_distill_picks_the_students_input_channels(tmp_path, monkeypatch, student, teacher_ch, flag, want):
    """An Ambisonics student keeps its 4 channels under a mono teacher (it teaches from W); a mono preset takes an
    Ambisonics teacher's 4; --in-channels wins. Checked before any training (run_training is replaced)."""
    from hwkd.cli import build_parser
    from hwkd.cli import train as cli_train
    save_checkpoint(tmp_path / "t.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2,
                                                         in_channels=teacher_ch)))
    seen = {}
    monkeypatch.setattr(cli_train, "run_training", lambda args, cfg, kd=None: seen.setdefault("cfg", cfg) and 0)
    argv = ["distill", "--student", student, "--teacher", str(tmp_path / "t.pt"), "--kd", "response",
            "--out", str(tmp_path / "run")] + (["--in-channels", flag] if flag else [])
    args = build_parser().parse_args(argv)
    args.func(args)
    assert seen["cfg"].in_channels == want
