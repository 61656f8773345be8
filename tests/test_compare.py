"""hwkd compare: the scheme x student x seed matrix, its report, resume and refused setting changes."""

import json

import pandas as pd
import pytest

import browser
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


@pytest.mark.slow
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
    assert (tmp_path / "report" / "gain_vs_size.png").stat().st_size > 1000
    assert "i2srf-tfckd" in (tmp_path / "report" / "table.md").read_text()
    assert all(json.loads(c.read_text())["threads"] >= 1 for c in cells)   # the intra-op count each trained with
    assert all("torch" in json.loads(c.read_text())["cpu"] for c in cells)   # the CPU and ISA each trained on
    assert "thread counts" not in (tmp_path / "report" / "table.md").read_text()
    assert "different CPUs" not in (tmp_path / "report" / "table.md").read_text()
    # the HTML page: the tables, the interactive gain plots, learning curves, a clip per scheme and student
    page = (tmp_path / "report" / "index.html").read_text()
    assert "<table>" in page and "learning curves: " in page and page.count("<audio") == 3 * (2 + 2)
    if browser.available():
        res = browser.open_report(tmp_path / "report" / "index.html", screenshot=tmp_path / "compare.png")
        assert res["console_errors"] == [] and res["external_requests"] == [], res
        assert res["bokeh_views"] >= 2 + 3 and res["canvases"] >= 5, res           # 2 gain plots, 3 curves
        assert all(a["ready"] >= 1 and a["error"] is None for a in res["audio"]), res["audio"]
    # a cell from before hwkd recorded its thread count: read from its checkpoint's training config (the
    # cells here trained with torch's default count, so "default"), and the report notes the mix
    old = json.loads(cells[1].read_text())
    del old["threads"]
    old["cpu"] = "another CPU, torch AVX2"          # and one trained on another host
    cells[1].write_text(json.dumps(old))
    # resume: a finished matrix is not retrained; a cell whose result is missing is redone alone
    victim = cells[0]
    mtimes = {c: c.stat().st_mtime for c in cells if c != victim}
    victim.unlink()
    # --report-only: the finished cells now, nothing trained, the missing one said in the header
    r = run_cli(*args, "--report-only")
    assert r.returncode == 0, r.stderr[-3000:]
    assert not victim.is_file() and "(11 of the 12 cells finished)" in (tmp_path / "report" / "table.md").read_text()
    assert sorted(pd.read_csv(tmp_path / "report" / "table.csv")["seeds"]) == [1, 2, 2, 2, 2, 2]
    md = (tmp_path / "report" / "table.md").read_text()
    assert "different intra-op thread counts (" in md and "default: " in md
    assert "on different CPUs (" in md and "another CPU, torch AVX2: " in md
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
    from hwkd.experiments.compare import CompareConfig, run_compare
    from hwkd.models import create_model
    from hwkd.models.checkpoint import save_checkpoint
    from hwkd.models.teacher import ASSET
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(ASSET.read_bytes())
    cc = CompareConfig(schemes=["none"], students=["cpu-student"], seeds=0)   # no cells: settings only
    assert run_compare(tmp_path / "run", cc, teacher, progress=False) == []
    save_checkpoint(teacher, create_model("cpu-teacher"))                        # same path, new weights
    with pytest.raises(HwkdError, match="teacher_sha256"):
        run_compare(tmp_path / "run", cc, teacher, progress=False)


def test_report_pairs_gains_by_seed_and_sets_i2srf_against_every_scheme(tmp_path):
    """A seed fixes init and data order in every scheme, so gains are differences at the same seed: a scheme
    that is 0.1 dB better at every seed gets +0.10 ± 0.00 although the seeds spread by 4 dB."""
    from hwkd.experiments.compare import CompareConfig
    from hwkd.report.compare import report

    def cell(scheme, seed, sdr, pesq):
        m = {"pesq_wb": pesq, "stoi": 0.8, "estoi": 0.7, "si_sdr_db": sdr}
        return {"student": "s", "scheme": scheme, "seed": seed, "in_channels": 1, "params": 100,
                "macs_per_s": 1e6, "enhanced": m, "noisy": m}
    base = [2.0, 4.0, 6.0]
    results = ([cell("none", k, b, 1.5) for k, b in enumerate(base)]
               + [cell("fitnet", k, b + 0.3 * (k - 1), 1.5) for k, b in enumerate(base)]     # +0 ± spread
               + [cell("i2srf-tfckd", k, b + 0.1, 1.5 + 0.01 * k) for k, b in enumerate(base)]
               + [cell("at", 0, 9.0, 1.6)])                                                   # one seed only
    cc = CompareConfig(schemes=["none", "fitnet", "at", "i2srf-tfckd"], students=["s"], seeds=3)
    summary = report(results, tmp_path, cc)
    rows = {r["scheme"]: r for r in summary["rows"]}
    assert abs(rows["i2srf-tfckd"]["si_sdr_db_gain_vs_none"] - 0.1) < 1e-9
    assert rows["i2srf-tfckd"]["si_sdr_db_gain_ci95"] < 1e-9 < rows["i2srf-tfckd"]["si_sdr_db_ci95"]
    assert abs(rows["fitnet"]["si_sdr_db_gain_vs_none"]) < 1e-9 and rows["fitnet"]["si_sdr_db_gain_ci95"] > 0.5
    assert rows["at"]["si_sdr_db_gain_vs_none"] == 7.0 and rows["at"]["si_sdr_db_gain_ci95"] is None
    duels = {d["versus"]: d for d in summary["head_to_head"]["pairs"]}
    assert set(duels) == {"none", "fitnet", "at"} and duels["at"]["seeds"] == 1
    assert abs(duels["fitnet"]["si_sdr_db"] - 0.1) < 1e-9 and abs(duels["none"]["pesq_wb"] - 0.01) < 1e-9
    md = (tmp_path / "table.md").read_text()
    assert "(10 of the 12 cells finished)" in md and "| 1.510 ± 0.025 (+0.010 ± 0.025) |" in md
    assert "| s | none | 3 | +0.010 ± 0.025 | **+0.10 ± 0.00** |" in md
    assert "- s: i2srf-tfckd PESQ-WB ahead of 2 of 3 by mean" in md


@pytest.mark.slow
def test_compare_workers_share_the_cells_out(tmp_path, tiny_corpus):
    """--workers 2: two processes, every cell trained exactly once, both workers busy, one report."""
    s1 = tmp_path / "s8.yaml"
    s1.write_text("channels: 8\nlayers: 1\ndepth: 1\nheads: 0\n")
    r = run_cli("-q", "compare", "--kd", "none,fitnet", "--students", s1, "--seeds", "2", "--workers", "2",
                "--epochs", "1", "--max-steps-per-epoch", "1", "--batch-size", "2", "--segment-s", "0.5",
                "--val-pesq-clips", "1", "--eval-limit", "2", "--data", tiny_corpus,
                "--out", tmp_path / "run", "--report-dir", tmp_path / "report")
    assert r.returncode == 0, r.stderr[-3000:]
    started = [line for line in r.stdout.splitlines() if "hwkd compare: cell " in line]
    assert len(started) == 4 and len({line.split(": ", 2)[-1] for line in started}) == 4     # each cell once
    assert {line.split("]")[0] for line in started} == {"[worker 0", "[worker 1"}
    assert "2 workers, 1 thread(s) each" in r.stdout
    assert len(list((tmp_path / "run" / "cells").glob("*/*/seed*/result.json"))) == 4
    assert "cells finished" not in (tmp_path / "report" / "table.md").read_text()


def test_a_claimed_cell_is_skipped_and_freed_when_its_holder_dies(tmp_path):
    import subprocess
    import sys

    from hwkd.paths import claim_folder
    cdir = tmp_path / "cell"
    mine = claim_folder(cdir)
    assert mine is not None and claim_folder(cdir) is None              # a second claim, even in-process: refused
    mine.close()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from hwkd.paths import claim_folder\n"
                               f"c = claim_folder(Path({str(cdir)!r}))\nprint('held', flush=True)\ntime.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    assert claim_folder(cdir) is None and json.loads((cdir / "claim.lock").read_text())["pid"] == holder.pid
    holder.kill()                                                        # kill -9: the kernel drops its lock
    holder.wait()
    again = claim_folder(cdir)
    assert again is not None
    again.close()


def test_the_cells_said_left_to_other_processes_are_those_still_running(tmp_path, monkeypatch):
    """A cell another process held when this one passed it, but finished since, is not said to be running."""
    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.paths import claim_folder
    out = tmp_path / "run"
    cell = out / "cells" / "cpu-student" / "none"
    claims = [claim_folder(cell / f"seed{k}") for k in (0, 1)]             # two cells held "elsewhere"
    assert all(c is not None for c in claims)

    def run_cell(cdir, *args, **kwargs):                                   # train seed 2; meanwhile seed 0 ends
        res = {"scheme": "none", "seed": int(cdir.name[4:])}
        (cell / "seed0" / "result.json").write_text(json.dumps({**res, "seed": 0}))
        (cdir / "result.json").write_text(json.dumps(res))
        return res
    monkeypatch.setattr(compare, "_run_cell", run_cell)
    said = []
    cc = compare.CompareConfig(schemes=["none"], students=["cpu-student"], seeds=3)
    compare.run_compare(out, cc, embedded_teacher_path(), progress=False, log=said.append)
    left = [line for line in said if "left to the other" in line]
    assert len(left) == 1 and "1 cell(s)" in left[0] and "seed 1" in left[0] and "seed 0" not in left[0]
    for c in claims:
        c.close()
