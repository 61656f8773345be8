"""hwkd compare: the scheme x student x seed matrix, its report, resume and refused setting changes."""

import json

import pandas as pd

from conftest import run_cli


def _args(tmp_path, tiny_corpus, tiny_foa, out="run"):
    s1, s2, s3 = (tmp_path / n for n in ("s8.yaml", "s12.yaml", "foa8.yaml"))
    s1.write_text("channels: 8\nlayers: 1\ndepth: 1\nheads: 0\n")
    s2.write_text("channels: 12\nlayers: 1\ndepth: 2\nheads: 2\n")
    s3.write_text("channels: 8\nlayers: 1\ndepth: 1\nheads: 0\nin_channels: 4\n")
    return ["-q", "compare", "--kd", "none,i2srf-tfckd", "--students", f"{s1},{s2},{s3}", "--seeds", "2",
            "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "2", "--segment-s", "0.5",
            "--val-pesq-clips", "1", "--eval-limit", "2", "--data", tiny_corpus, "--data-foa", tiny_foa,
            "--out", tmp_path / out, "--report-dir", tmp_path / "report"]


def test_compare_matrix_report_and_resume(tmp_path, tiny_corpus, tiny_foa):
    args = _args(tmp_path, tiny_corpus, tiny_foa)
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    cells = sorted((tmp_path / "run" / "cells").glob("*/*/seed*/result.json"))
    assert len(cells) == 3 * 2 * 2
    assert "cells finished" not in (tmp_path / "report" / "table.md").read_text()
    df = pd.read_csv(tmp_path / "report" / "table.csv")
    assert len(df) == 3 * 2 and set(df["scheme"]) == {"none", "i2srf-tfckd"}
    assert (df["seeds"] == 2).all() and df["si_sdr_db_ci95"].notna().all()
    assert df[df["scheme"] == "none"]["si_sdr_db_gain_vs_none"].abs().max() == 0
    assert set(df["in_channels"]) == {1, 4}                      # a mono and an Ambisonics student
    assert (tmp_path / "report" / "quality_vs_size.png").stat().st_size > 1000
    assert "i2srf-tfckd" in (tmp_path / "report" / "table.md").read_text()
    # resume: a finished matrix is not retrained; a cell whose result is missing is redone alone
    victim = cells[0]
    mtimes = {c: c.stat().st_mtime for c in cells if c != victim}
    victim.unlink()
    # --report-only: the finished cells now, nothing trained, the missing one said in the header
    r = run_cli(*args, "--report-only")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not victim.is_file() and "(11 of the 12 cells finished)" in (tmp_path / "report" / "table.md").read_text()
    assert sorted(pd.read_csv(tmp_path / "report" / "table.csv")["seeds"]) == [1, 2, 2, 2, 2, 2]
    r = run_cli(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert victim.is_file() and all(c.stat().st_mtime == t for c, t in mtimes.items())
    assert r.stdout.count("cell ") == 1
    # other settings in the same run folder are refused
    bad = [a if a != "2" else "3" for a in args]                    # --seeds 3 (and batch 3)
    r = run_cli(*bad)
    assert r.returncode == 2 and "other settings" in r.stderr and "seeds" in r.stderr
    r = run_cli(*_args(tmp_path, tiny_corpus, tiny_foa, out="never-started"), "--report-only")
    assert r.returncode == 2 and "no comparison yet" in r.stderr
    json.loads((tmp_path / "run" / "compare.json").read_text())


def test_compare_refuses_a_retrained_teacher_at_the_same_path(tmp_path):
    import pytest

    from hwkd.errors import HwkdError
    from hwkd.kd.compare import CompareConfig, run_compare
    from hwkd.models import create_model
    from hwkd.models.checkpoint import save_checkpoint
    from hwkd.teacher import ASSET
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(ASSET.read_bytes())
    cc = CompareConfig(schemes=["none"], students=["cpu-student"], seeds=0)   # no cells: settings only
    assert run_compare(tmp_path / "run", cc, teacher, progress=False) == []
    save_checkpoint(teacher, create_model("cpu-teacher"))                        # same path, new weights
    with pytest.raises(HwkdError, match="teacher_sha256"):
        run_compare(tmp_path / "run", cc, teacher, progress=False)
