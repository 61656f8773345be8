"""hwkd compare: the scheme x student x seed matrix, its report, resume and refused setting changes."""

import json
import time

import pandas as pd
import pytest

from hwkd.errors import HwkdError

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
    assert all(json.loads(c.read_text())["device"] == "cpu" for c in cells)   # and the device (--device)
    # every mono cell is also scored out of domain (the tiny corpus has 2 such clips; its Ambisonics set none)
    oods = {c: json.loads(c.read_text())["ood"] for c in cells}
    assert all((o is not None) == ("foa8" not in str(c)) for c, o in oods.items())
    assert all(o["clips"] == 2 and o["split"] == "ood" and o["enhanced"]["si_sdr_db"] != o["noisy"]["si_sdr_db"]
               for o in oods.values() if o)
    assert "## Out of domain" in (tmp_path / "report" / "table.md").read_text()
    # the teacher scored once on the same clips, kept in the run folder: the gap each scheme closes is reported
    kept = json.loads((tmp_path / "run" / "teacher_scores.json").read_text())
    assert set(kept) == {"1", "4"} and kept["1"]["eval_clips"] == json.loads(cells[0].read_text())["eval_clips"]
    assert kept["1"]["ood"]["clips"] == 2 and kept["4"]["ood"] is None
    assert "## The teacher–student gap each scheme closes" in (tmp_path / "report" / "table.md").read_text()
    assert list(df.sort_values("in_channels")["ood_seeds"]) == [2, 2, 2, 2, 0, 0]
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
    # the same run folder as hwkd left it before the matrix was a study (no study.db; compare.json without the
    # students' network configs): its finished cells are read from their result.json files, and adopted
    (tmp_path / "run" / "study.db").unlink()
    settings = json.loads((tmp_path / "run" / "compare.json").read_text())
    for k in ("student_configs", "storage", "name"):
        del settings[k]
    (tmp_path / "run" / "compare.json").write_text(json.dumps(settings))
    # a cell from before hwkd recorded its thread count: read from its checkpoint's training config (the
    # cells here trained with torch's default count, so "default"), and the report notes the mix
    old = json.loads(cells[1].read_text())
    del old["threads"]
    old["cpu"] = "another CPU, torch AVX2"          # and one trained on another host
    cells[1].write_text(json.dumps(old))
    # resume: a finished cell is not retrained; a cell whose result is missing is redone alone
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
    assert r.stdout.count("hwkd compare: cell ") == 1, r.stdout
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
        # out of domain: 5 dB lower, and i2srf-tfckd 0.2 dB (not 0.1) ahead of no-KD there; fitnet never scored
        o = {**m, "si_sdr_db": sdr - 5 + (0.1 if scheme == "i2srf-tfckd" else 0.0)}
        return {"student": "s", "scheme": scheme, "seed": seed, "in_channels": 1, "params": 100,
                "macs_per_s": 1e6, "enhanced": m, "noisy": m,
                "ood": None if scheme == "fitnet" else {"split": "ood", "clips": 4, "enhanced": o,
                                                        "noisy": {**m, "si_sdr_db": -1.0}}}
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
    assert "Cells trained on: not recorded (10 cell(s), ?)." in md       # cells from before workers were recorded
    # out of domain: the same pairing on each cell's ood scores; a scheme without them says so
    assert abs(rows["i2srf-tfckd"]["ood_si_sdr_db_gain_vs_none"] - 0.2) < 1e-9 and rows["fitnet"]["ood_seeds"] == 0
    assert rows["none"]["ood_si_sdr_db"] == 4.0 - 5 and rows["none"]["ood_noisy_si_sdr"] == -1.0
    assert abs(duels["none"]["ood_si_sdr_db"] - 0.2) < 1e-9 and duels["fitnet"]["ood_seeds"] == 0
    ood_md = md.split("## Out of domain")[1]
    assert "| s | noisy input | – | 1.500 | 0.800 | 0.700 | -1.00 |" in ood_md
    assert "| s | fitnet | 0 | not scored" in ood_md
    assert "| s | i2srf-tfckd | 3 | 1.510 ± 0.025 (+0.010 ± 0.025) | 0.800 ± 0.000 (+0.000 ± 0.000) |" in ood_md
    assert "**+0.20 ± 0.00** |" in md.split("minus the other scheme at the same seed, out of domain")[1]
    assert "- s (out of domain): i2srf-tfckd PESQ-WB ahead of 1 of 2 by mean" in md
    assert "teacher–student gap" not in md and summary["gap_closed"] == []         # no teacher scored: no share
    # with the teacher's scores on the same clips: each scheme's paired gain as a share of (teacher − no-KD)
    t = {"file": "t.pt", "params": 1000, "enhanced": {"pesq_wb": 2.0, "stoi": 0.9, "estoi": 0.8, "si_sdr_db": 5.0},
         "ood": {"enhanced": {"pesq_wb": 1.5, "stoi": 0.9, "estoi": 0.8, "si_sdr_db": 1.0}}}
    summary = report(results, tmp_path, cc, teachers={1: t})
    gaps = {g["scheme"]: g for g in summary["gap_closed"]}
    assert abs(gaps["i2srf-tfckd"]["si_sdr_db"] - 0.1) < 1e-9 and gaps["i2srf-tfckd"]["si_sdr_db_ci95"] < 1e-9
    assert abs(gaps["i2srf-tfckd"]["pesq_wb"] - 0.02) < 1e-9 and abs(gaps["i2srf-tfckd"]["ood_si_sdr_db"] - 0.1) < 1e-9
    assert gaps["i2srf-tfckd"]["ood_pesq_wb"] is None      # no-KD's ood PESQ-WB (1.5) already reaches the teacher's
    assert gaps["fitnet"]["ood_si_sdr_db"] is None
    # the gap on the seeds paired: at has seed 0 alone (no-KD 2.0 there, not its mean 4.0): 7.0 / (5.0 - 2.0)
    assert abs(gaps["at"]["si_sdr_db"] - 7.0 / 3.0) < 1e-9 and gaps["at"]["si_sdr_db_gap"] == 3.0
    md = (tmp_path / "table.md").read_text()
    assert "- s (100 parameters; 3 no-KD seed(s)): teacher − no-KD = +1.00 dB SI-SDR, +0.500 PESQ-WB in domain; " \
           "+2.00 dB SI-SDR, +0.000 PESQ-WB out of domain" in md
    assert "| s | i2srf-tfckd | +10 % ± 0 | +2 % ± 5 | +10 % ± 0 | – |" in md
    assert summary["teachers"]["1"]["enhanced"]["si_sdr_db"] == 5.0
    # a teacher that could not be scored (no means) gives no gap table, not a crash
    empty = {**t, "enhanced": {m: None for m in t["enhanced"]}, "ood": None}
    assert report(results, tmp_path, cc, teachers={1: empty})["gap_closed"] == []


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


def _fake_cells(monkeypatch, trained: list, fail_on: str | None = None, diverge_on: tuple = ()):
    """_run_cell replaced by one that records which cell it trained and returns a result at once."""
    from hwkd.experiments import compare

    def run_cell(cdir, which, student, scheme, seed, *args, worker=None, ratio=None, **kwargs):
        key = compare.cell_key(student, scheme, seed, ratio)
        if key == fail_on:
            raise KeyboardInterrupt
        if key in diverge_on:
            trained.append(key)
            raise FloatingPointError("loss is nan at epoch 1 step 3")
        trained.append(key)
        m = {"pesq_wb": 1.5, "stoi": 0.8, "estoi": 0.7, "si_sdr_db": 5.0 + seed}
        res = {"student": compare.student_label(student), "scheme": scheme, "seed": seed, "in_channels": 1,
               "params": 100, "macs_per_s": 1e6, "enhanced": m, "noisy": m, "threads": 1, "cpu": "x",
               "curve": [[1, 4.0 + seed]], "worker": worker, "kd_ratio": ratio,
               "val_si_sdr_db": 4.0 + seed + (ratio == 1.0)}
        cdir.mkdir(parents=True, exist_ok=True)
        (cdir / "result.json").write_text(json.dumps(res))
        return res
    monkeypatch.setattr(compare, "_run_cell", run_cell)


def _states(out, name=None):
    import optuna
    study = optuna.load_study(study_name=name or out.name, storage=f"sqlite:///{out / 'study.db'}")
    return [(t.user_attrs["cell"], t.state.name) for t in study.get_trials()]


def test_the_matrix_queue_takes_over_dead_and_silent_workers_and_trains_each_cell_once(tmp_path, monkeypatch):
    """The cells are an Optuna study's queue: a cell whose worker on this host died, or whose worker elsewhere
    stopped stamping its heartbeat, is queued again and trained here; a live worker's cell is left to it and
    said; a duplicate queue entry is pruned; an interrupted cell is failed and trained on the next run."""
    # a pid is checked only where it means the same process: same kernel boot and PID namespace (a host name
    # is shared by cloned machines and containers); trials from before pid_domain was recorded: by host name
    import socket

    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.report.compare import report as compare_report
    from hwkd.sysinfo import ours, pid_domain
    me = f"{socket.gethostname()}:1"
    assert ours({"worker": me, "pid_domain": pid_domain()}) and not ours({"worker": me, "pid_domain": "x/1"})
    assert ours({"worker": me}) and not ours({"worker": "elsewhere:1"}) and not ours({"worker": "garbled"})
    monkeypatch.setattr(compare, "STALE_AFTER_S", 1)
    monkeypatch.setattr(compare, "HEARTBEAT_S", 0.2)
    teacher, out = embedded_teacher_path(), tmp_path / "run"
    cc = compare.CompareConfig(schemes=["none", "fitnet"], students=["cpu-student"], seeds=3)
    trained, said = [], []
    _fake_cells(monkeypatch, trained, fail_on="cpu-student/fitnet/seed0")
    with pytest.raises(KeyboardInterrupt):
        compare.run_compare(out, cc, teacher, progress=False, log=said.append)
    assert trained == ["cpu-student/none/seed0", "cpu-student/none/seed1", "cpu-student/none/seed2"]
    assert ("cpu-student/fitnet/seed0", "FAIL") in _states(out)
    # three more cells taken by "other workers": one on a host that stops stamping, one on this host whose
    # process is gone, one alive on another host (its heartbeat kept fresh below)
    m = compare.Matrix(out, cc, teacher)
    m.recover()
    taken = [m.take() for _ in range(3)]
    taken.sort(key=lambda t: t[2])              # an interrupted cell is queued again behind the others
    assert [k for _, _, k in taken] == ["cpu-student/fitnet/seed0", "cpu-student/fitnet/seed1",
                                       "cpu-student/fitnet/seed2"]
    for (tid, _, _), worker, domain in zip(taken, ("far-away:1", f"{socket.gethostname()}:999999999", "live-host:2"),
                                           ("another-boot/1", pid_domain(), "another-boot/2")):
        m.storage.set_trial_user_attr(tid, "worker", worker)
        m.storage.set_trial_user_attr(tid, "pid_domain", domain)
    import optuna
    m.study.add_trial(optuna.trial.create_trial(       # a duplicate entry of a finished cell
        state=optuna.trial.TrialState.WAITING, params={"student": "cpu-student", "scheme": "none", "seed": 0},
        distributions=m._distributions(), user_attrs={"cell": "cpu-student/none/seed0"}))
    time.sleep(2.2)     # > 2 s: SQLite stamps heartbeats and "now" to the whole second (1.5 s can read as 1 s)
    trained.clear()
    _fake_cells(monkeypatch, trained)
    from hwkd.store import Heartbeat
    with Heartbeat(m.storage, taken[2][0]):                   # the live one stamps (every 0.2 s); far-away does not
        results = compare.run_compare(out, cc, teacher, progress=False, log=said.append)
    assert sorted(trained) == ["cpu-student/fitnet/seed0", "cpu-student/fitnet/seed1"]
    assert len(results) == 5 and {r["worker"] for r in results} >= {compare.Matrix(out, cc, teacher).worker}
    summary = compare_report(results, tmp_path / "report", cc)
    assert summary["trained_on"] == {socket.gethostname(): 5}
    assert said[-1].startswith("hwkd compare: 1 cell(s) left to the other worker(s)") and "fitnet x seed 2" in said[-1]
    states = _states(out)
    assert ("cpu-student/none/seed0", "PRUNED") in states                 # the duplicate, not retrained
    assert [s for k, s in states if k == "cpu-student/fitnet/seed2"] == ["RUNNING"]
    # the settings are the study's: other ones are refused
    with pytest.raises(HwkdError, match="other settings.*seeds"):
        compare.run_compare(out, compare.CompareConfig(schemes=cc.schemes, students=cc.students, seeds=2), teacher,
                            progress=False)
    # --report-only reads the study, trains nothing
    assert len(compare.run_compare(out, cc, teacher, progress=False, train_missing=False)) == 5
    # the folder belongs to its matrix: another name or store is refused (its cells would be adopted into it)
    with pytest.raises(HwkdError, match="holds comparison run, not other"):
        compare.run_compare(out, cc, teacher, progress=False, name="other")
    with pytest.raises(HwkdError, match="keeps its matrix in sqlite"):
        compare.run_compare(out, cc, teacher, progress=False, storage=f"sqlite:///{tmp_path / 'else.db'}")
    # a study of that name that is not a comparison (e.g. a search) is refused, not taken over
    import optuna
    shared = f"sqlite:///{tmp_path / 'shared.db'}"
    optuna.create_study(study_name="srch", storage=shared, directions=["maximize", "minimize", "minimize"])
    with pytest.raises(HwkdError, match="is not a KD comparison"):
        compare.run_compare(tmp_path / "srch", cc, teacher, progress=False, storage=shared)


def test_each_kd_weight_is_tuned_on_val_on_a_seed_of_its_own_and_its_seeds_train_at_the_chosen_ratio(
        tmp_path, monkeypatch):
    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.report.compare import report as compare_report
    teacher, out = embedded_teacher_path(), tmp_path / "run"
    cc = compare.CompareConfig(schemes=["none", "fitnet"], students=["cpu-student"], seeds=3, kd_ratios=[0.25, 1.0])
    trained = []
    _fake_cells(monkeypatch, trained)
    results = compare.run_compare(out, cc, teacher, progress=False)
    assert trained == ["cpu-student/none/seed0", "cpu-student/none/seed1", "cpu-student/none/seed2",
                       # tuning at a seed of its own (the reported seeds are not the best of several draws on val)
                       "cpu-student/fitnet@r0.25/seed10000", "cpu-student/fitnet@r1/seed10000",
                       "cpu-student/fitnet@r1/seed0", "cpu-student/fitnet@r1/seed1", "cpu-student/fitnet@r1/seed2"]
    assert [(r["scheme"], r["seed"], r["kd_ratio"]) for r in results] == [
        ("none", 0, None), ("none", 1, None), ("none", 2, None), ("fitnet", 0, 1.0), ("fitnet", 1, 1.0),
        ("fitnet", 2, 1.0)]
    assert results[3]["kd_tuning"] == {"0.25": 10004.0, "1": 10005.0}
    summary = compare_report(results, tmp_path / "report", cc)
    assert summary["kd_tuning"][0]["chosen_ratio"] == 1.0
    assert summary["learning_curves"]["cpu-student"]["x"] == "epoch"          # these curves record no steps
    assert (tmp_path / "report" / "curves_0.png").stat().st_size > 1000
    assert "| cpu-student | fitnet | 10004.00 | **10005.00** |" in (tmp_path / "report" / "table.md").read_text()
    assert "cells finished" not in (tmp_path / "report" / "table.md").read_text()
    # a diverging cell is a result, not a crash: a diverged ratio is never chosen, a diverged seed is listed
    trained.clear()
    _fake_cells(monkeypatch, trained, diverge_on=("cpu-student/fitnet@r1/seed10000", "cpu-student/fitnet@r0.25/seed2"))
    results = compare.run_compare(tmp_path / "div", cc, teacher, progress=False)
    assert "cpu-student/fitnet@r0.25/seed0" in trained                       # trained at the ratio that did not
    summary = compare_report(results, tmp_path / "report-div", cc)
    md = (tmp_path / "report-div" / "table.md").read_text()
    assert "| cpu-student | fitnet | **10004.00** | diverged |" in md
    assert "Diverged (not in the means): cpu-student x fitnet x seed 2 at ratio 0.25 (loss is nan" in md
    assert summary["diverged"][0]["seed"] == 2 and "(5 of the 6 cells finished)" in md
    # every ratio diverged: the grid's cells are reported as diverged (not dropped); a report of diverged cells
    # alone is written too
    _fake_cells(monkeypatch, trained, diverge_on=("cpu-student/fitnet@r1/seed10000",
                                                  "cpu-student/fitnet@r0.25/seed10000"))
    results = compare.run_compare(tmp_path / "div-all", cc, teacher, progress=False)
    gone = [(r["seed"], r["kd_ratio"]) for r in results if r.get("diverged")]
    assert sorted(gone) == [(10000, 0.25), (10000, 1.0)]
    compare_report([r for r in results if r.get("diverged")], tmp_path / "report-gone", cc)
    assert "Diverged (not in the means)" in (tmp_path / "report-gone" / "table.md").read_text()
    for bad in ([0.5, 0.5], [0.0, 1.0], [], [0.1, 0.1000001]):
        with pytest.raises(HwkdError, match="--kd-ratios"):
            compare.run_compare(tmp_path / "x", compare.CompareConfig(schemes=["none"], students=["cpu-student"],
                                                                      kd_ratios=bad), teacher, progress=False)
    with pytest.raises(HwkdError, match="--lam fixes it"):
        compare.run_compare(tmp_path / "x", compare.CompareConfig(schemes=["none"], students=["cpu-student"],
                                                                  kd_ratios=[1.0], lam=0.1), teacher, progress=False)


def test_fixed_kd_ratios_train_every_seed_at_them_without_a_tuning_grid(tmp_path, monkeypatch):
    """--kd-ratio: each named KD scheme's cells are balanced at its fixed ratio (what a finished matrix's grid
    chose, e.g. for its ablations), no tuning cell is trained, the others keep the balanced default; the report
    says so. Impossible or clashing values are refused before anything is written."""
    from hwkd.cli.compare import fixed_ratios
    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.report.compare import report as compare_report
    teacher, out = embedded_teacher_path(), tmp_path / "run"
    assert fixed_ratios("0.25", ["none", "fitnet", "at"]) == {"fitnet": 0.25, "at": 0.25}
    assert fixed_ratios("fitnet=1,at=0.5", ["none", "fitnet", "at"]) == {"fitnet": 1.0, "at": 0.5}
    for bad in ("x", "fitnet=", "fitnet"):
        with pytest.raises(HwkdError, match="--kd-ratio"):
            fixed_ratios(bad if bad != "fitnet" else "fitnet,at=1", ["fitnet", "at"])
    cc = compare.CompareConfig(schemes=["none", "fitnet", "at"], students=["cpu-student"], seeds=2,
                               kd_ratio={"fitnet": 0.25})
    trained = []
    _fake_cells(monkeypatch, trained)
    results = compare.run_compare(out, cc, teacher, progress=False)
    assert trained == ["cpu-student/none/seed0", "cpu-student/none/seed1", "cpu-student/fitnet@r0.25/seed0",
                       "cpu-student/fitnet@r0.25/seed1", "cpu-student/at/seed0", "cpu-student/at/seed1"]
    assert [(r["scheme"], r["kd_ratio"]) for r in results] == [
        ("none", None), ("none", None), ("fitnet", 0.25), ("fitnet", 0.25), ("at", None), ("at", None)]
    assert json.loads((out / "compare.json").read_text())["kd_ratio"] == {"fitnet": 0.25}
    assert len(compare.run_compare(out, cc, teacher, progress=False, train_missing=False)) == 6    # read back
    compare_report(results, tmp_path / "report", cc)
    md = (tmp_path / "report" / "table.md").read_text()
    assert "KD-weight ratios fixed, not tuned: fitnet 0.25" in md and "KD-weight tuning" not in md
    with pytest.raises(HwkdError, match="other settings.*kd_ratio"):        # another ratio is another matrix
        compare.run_compare(out, compare.CompareConfig(schemes=cc.schemes, students=cc.students, seeds=2,
                                                       kd_ratio={"fitnet": 0.5}), teacher, progress=False)
    for fixed, extra, match in (({"fitnet": 0.0}, {}, "needs positive ratios"),
                                ({"semckd": 0.5}, {}, "names no KD scheme of --kd"),
                                ({"none": 0.5}, {}, "names no KD scheme"),
                                ({}, {}, "--kd has no KD scheme"),
                                ({"fitnet": 0.5}, {"lam": 0.1}, "--lam fixes λ"),
                                ({"fitnet": 0.5}, {"kd_ratios": [0.5, 1.0]}, "--kd-ratios tunes it")):
        with pytest.raises(HwkdError, match=match):
            compare.run_compare(tmp_path / "x", compare.CompareConfig(schemes=["none", "fitnet"],
                                                                      students=["cpu-student"], kd_ratio=fixed,
                                                                      **extra), teacher, progress=False)
    assert not (tmp_path / "x").exists()


def test_the_report_gives_each_schemes_training_clock_per_cell_and_how_it_trained(tmp_path):
    """The report's training-clock table: the median over a scheme's cells of its training wall clock (recorded,
    else read from the cell's history: cells from before it was recorded), alone or in groups; diverged cells
    are left out, and cells without a clock are counted as untimed."""
    from hwkd.experiments.compare import CompareConfig
    from hwkd.report.compare import report as compare_report
    m = {"pesq_wb": 1.5, "stoi": 0.8, "estoi": 0.7, "si_sdr_db": 5.0}
    base = {"student": "s", "in_channels": 1, "params": 100, "macs_per_s": 1e6, "enhanced": m, "noisy": m,
            "threads": 1, "cpu": "x"}
    results = [{**base, "scheme": "none", "seed": 0, "train_elapsed_s": 600.0, "group": 1},
               {**base, "scheme": "none", "seed": 1, "train_elapsed_s": 660.0, "group": 1},
               {**base, "scheme": "none", "seed": 2, "train_elapsed_s": 720.0, "group": 1},
               {**base, "scheme": "fitnet", "seed": 0, "train_elapsed_s": 4800.0, "group": 4},
               {**base, "scheme": "fitnet", "seed": 1},                   # before it was recorded: its history
               {**base, "scheme": "fitnet", "seed": 2}]                   # no history either: untimed
    cells = tmp_path / "cells"
    (cells / "s" / "fitnet" / "seed1").mkdir(parents=True)
    (cells / "s" / "fitnet" / "seed1" / "history.jsonl").write_text(
        json.dumps({"epoch": 1, "val_si_sdr_db": 4.0, "train_elapsed_s": 100.0}) + "\n"
        + json.dumps({"epoch": 2, "val_si_sdr_db": 4.5, "train_elapsed_s": 5400.0}) + "\n")
    summary = compare_report(results, tmp_path / "r", CompareConfig(schemes=["none", "fitnet"], students=["s"],
                                                                     seeds=3), cells_dir=cells)
    md = (tmp_path / "r" / "table.md").read_text()
    assert "| s | none | 3 of 3 | 11.0 | alone |" in md
    assert "| s | fitnet | 2 of 3 | 85.0 | in groups of 4, 2 not recorded |" in md
    got = {c["scheme"]: c for c in summary["train_clock"]}
    assert got["fitnet"]["median_s"] == 5100.0 and got["none"]["groups"] == [1]


def test_a_matrix_recorded_before_the_balancing_rule_reopens_and_keeps_mean_2(tmp_path, monkeypatch):
    """A matrix whose recorded settings (study and compare.json) predate `balance` and `kd_ratio` reopens with no
    settings diff, and its remaining KD cells balance λ as its first ones did (mean-2), not with today's rule."""
    import optuna

    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.train import recipe
    teacher, out = embedded_teacher_path(), tmp_path / "run"
    cc = compare.CompareConfig(schemes=["none", "fitnet"], students=["cpu-student"], seeds=1)
    real = compare._run_cell
    _fake_cells(monkeypatch, [], fail_on="cpu-student/fitnet/seed0")
    with pytest.raises(KeyboardInterrupt):
        compare.run_compare(out, cc, teacher, progress=False)
    assert cc.balance == recipe.BALANCE_RULE                     # a new matrix takes today's rule
    study = optuna.load_study(study_name="run", storage=f"sqlite:///{out / 'study.db'}")
    old = {k: v for k, v in study.user_attrs["compare"].items() if k not in ("balance", "kd_ratio")}
    study.set_user_attr("compare", old)                           # as a matrix from before the fields left it
    saved = json.loads((out / "compare.json").read_text())
    (out / "compare.json").write_text(json.dumps({k: v for k, v in saved.items() if k not in ("balance", "kd_ratio")}))
    got = []

    def capture(cfg, run, tcfg, data=None, kd=None, **kwargs):
        got.append(kd)
        raise RuntimeError("captured")
    monkeypatch.setattr(compare, "_run_cell", real)
    monkeypatch.setattr(recipe, "train_model", capture)
    again = compare.CompareConfig(schemes=["none", "fitnet"], students=["cpu-student"], seeds=1)
    with pytest.raises(RuntimeError, match="captured"):
        compare.run_compare(out, again, teacher, progress=False)
    assert again.balance == "mean-2" and [k.balance for k in got] == ["mean-2"] and got[0].scheme == "fitnet"


def test_a_run_folder_from_before_the_study_is_adopted_without_retraining(tmp_path, monkeypatch):
    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    teacher, out = embedded_teacher_path(), tmp_path / "old"
    cc = compare.CompareConfig(schemes=["none"], students=["cpu-student"], seeds=2)
    trained = []
    _fake_cells(monkeypatch, trained)
    compare.run_compare(out, cc, teacher, progress=False)
    (out / "study.db").unlink()                                   # as a run from before the study left it
    settings = json.loads((out / "compare.json").read_text())
    for k in ("student_configs", "storage", "name"):
        del settings[k]
    (out / "compare.json").write_text(json.dumps(settings))
    (out / "cells" / "cpu-student" / "none" / "seed1" / "result.json").unlink()
    assert len(compare.run_compare(out, cc, teacher, progress=False, train_missing=False)) == 1   # read as files
    trained.clear()
    assert len(compare.run_compare(out, cc, teacher, progress=False)) == 2
    assert trained == ["cpu-student/none/seed1"]                  # seed 0 adopted from its result.json


@pytest.mark.slow
def test_workers_on_two_machines_share_one_matrix_on_a_database_server(tmp_path, tiny_corpus, postgres):
    """Two run folders stand for two machines on one PostgreSQL matrix: a worker killed (-9) inside a cell has
    that cell taken over, no cell is trained twice, both workers train, and a third folder reports every cell
    from the store alone (learning curves included)."""
    import os
    import signal
    import subprocess
    import sys

    import optuna
    s8 = tmp_path / "s8.yaml"
    s8.write_text("channels: 8\nlayers: 1\ndepth: 1\nheads: 0\n")
    env = {**os.environ, "HWKD_HOME": str(tmp_path / "home"), "PYTHONUNBUFFERED": "1"}

    def cmd(folder, *extra):
        return [sys.executable, "-m", "hwkd", "-q", "compare", "--kd", "none,fitnet", "--students", str(s8),
                "--seeds", "3", "--epochs", "2", "--max-steps-per-epoch", "4", "--batch-size", "2",
                "--segment-s", "0.5", "--val-pesq-clips", "1", "--eval-limit", "2", "--data", str(tiny_corpus),
                "--storage", postgres, "--name", "kd", "--out", str(tmp_path / folder),
                "--report-dir", str(tmp_path / f"report-{folder}"), *extra]
    a = subprocess.Popen(cmd("a"), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         start_new_session=True)
    lines = []
    for line in a.stdout:                         # kill -9 as soon as it starts its second cell
        lines.append(line)
        if "hwkd compare: cell 2/6" in line:
            os.killpg(a.pid, signal.SIGKILL)
            break
    a.wait()
    assert any("cell 2/6" in x for x in lines), "".join(lines) + a.stderr.read()[-3000:]
    procs = [subprocess.Popen(cmd(f), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for f in ("a", "b")]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    started = [x.split("cell ", 1)[1].split(": ", 1)[1] for o, _ in outs for x in o.splitlines()
               if "hwkd compare: cell " in x]
    assert len(started) == 5 and len(set(started)) == 5, started          # the 5 unfinished cells, once each
    assert all(o.count("hwkd compare: cell ") >= 1 for o, _ in outs)      # both workers trained
    study = optuna.load_study(study_name="kd", storage=postgres)
    by_cell: dict = {}
    for t in study.get_trials():
        by_cell.setdefault(t.user_attrs["cell"], []).append(t.state.name)
        assert t.state.name != "PRUNED" or t.user_attrs["duplicate"]       # a retry queued by both workers at once
    assert len(by_cell) == 6 and all(states.count("COMPLETE") == 1 for states in by_cell.values()), by_cell
    assert [s for states in by_cell.values() for s in states].count("FAIL") == 1      # the killed worker's cell
    assert len([k for k in study.user_attrs if k.startswith("cell:")]) == 6
    # a third machine reports from the store alone: every cell and its learning curve, nothing trained
    r = run_cli(*cmd("c", "--report-only")[3:], env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "cells finished" not in (tmp_path / "report-c" / "table.md").read_text()
    assert "learning curves: " in (tmp_path / "report-c" / "index.html").read_text()
    curves = json.loads((tmp_path / "report-c" / "summary.json").read_text())["learning_curves"]
    assert curves["s8"]["x"] == "training steps" and curves["s8"]["schemes"]["fitnet"][-1][0] == 8
    assert not (tmp_path / "c" / "cells").exists()
    r = run_cli(*[x if x != "3" else "2" for x in cmd("c")[3:]], env=env)            # other settings
    assert r.returncode == 2 and "other settings" in r.stderr and "seeds" in r.stderr


def test_a_cell_taken_by_a_process_killed_before_it_stamped_or_named_itself_is_queued_again(tmp_path, monkeypatch):
    """Optuna's stale check skips a RUNNING trial that was never stamped; an orphan like that (no heartbeat, no
    worker) is failed after the grace period and its cell queued again."""
    from optuna.trial import TrialState

    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    monkeypatch.setattr(compare, "STALE_AFTER_S", 3600)
    teacher, out = embedded_teacher_path(), tmp_path / "run"
    cc = compare.CompareConfig(schemes=["none"], students=["cpu-student"], seeds=1)
    m = compare.Matrix(out, cc, teacher)
    m.recover()
    (t,) = m.trials()
    assert m.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING)     # then killed at once
    trained = []
    _fake_cells(monkeypatch, trained)
    assert compare.run_compare(out, cc, teacher, progress=False) == []      # within the grace: left running
    monkeypatch.setattr(compare, "STALE_AFTER_S", 1)
    time.sleep(1.5)     # an orphan (never stamped): fail_orphans, on Python's clock
    assert len(compare.run_compare(out, cc, teacher, progress=False)) == 1
    assert trained == ["cpu-student/none/seed0"] and [s for _, s in _states(out)] == ["FAIL", "COMPLETE"]


def test_a_recorded_matrix_is_restored_with_its_kd_weight_tuning_cells(tmp_path, monkeypatch):
    """benchmarks/kd_compare.py --restore-from writes the reported cells and the tuning grid's cells back, so
    the matrix neither trains the grid again nor chooses its ratio again; a record of other settings is refused."""
    import importlib
    import sys
    from dataclasses import asdict
    from pathlib import Path

    from hwkd.experiments.compare import TUNE_SEED, CompareConfig, cell_key
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    monkeypatch.delitem(sys.modules, "kd_compare", raising=False)     # (and monkeypatch drops it afterwards)
    kd_compare = importlib.import_module("kd_compare")
    cc = CompareConfig(schemes=["none", "fitnet"], students=["kd-small"], seeds=1, kd_ratios=[0.5, 1.0])

    def cell(scheme, seed, ratio):
        return {"student": "kd-small", "student_spec": "kd-small", "scheme": scheme, "seed": seed,
                "kd_ratio": ratio, "val_si_sdr_db": 7.0}
    rec = {"settings": asdict(cc), "machine": {"cpu": "AMD EPYC", "date": "2026-12-01"},
           "cells": [cell("none", 0, None), cell("fitnet", 0, 1.0)],
           "tuning_cells": [cell("fitnet", TUNE_SEED, 0.5), cell("fitnet", TUNE_SEED, 1.0)]}
    recorded = tmp_path / "kd_compare.json"
    recorded.write_text(json.dumps(rec))
    kd_compare.restore(recorded, tmp_path / "run", cc)
    for c in rec["cells"] + rec["tuning_cells"]:
        got = json.loads((tmp_path / "run" / "cells" / cell_key("kd-small", c["scheme"], c["seed"], c["kd_ratio"])
                          / "result.json").read_text())
        assert got["restored_from"] == "kd_compare.json (2026-12-01)" and got["kd_ratio"] == c["kd_ratio"]
    assert len(list((tmp_path / "run" / "cells").rglob("result.json"))) == 4
    other = CompareConfig(schemes=["none", "fitnet"], students=["kd-small"], seeds=2, kd_ratios=[0.5, 1.0])
    with pytest.raises(SystemExit, match="other settings"):
        kd_compare.restore(recorded, tmp_path / "run2", other)
    # what the recorded matrix settled when it opened (its mixing version; λ balanced as before the field was
    # recorded: mean-2) the restored one keeps, so that the cells still to train match the restored ones
    settled = {k: v for k, v in asdict(cc).items() if k not in ("mixing_version", "balance")}
    recorded.write_text(json.dumps({**rec, "settings": {**settled, "mixing_version": 3}}))
    fresh = CompareConfig(schemes=["none", "fitnet"], students=["kd-small"], seeds=1, kd_ratios=[0.5, 1.0])
    kd_compare.restore(recorded, tmp_path / "run3", fresh)
    assert (fresh.mixing_version, fresh.balance) == (3, "mean-2")


def test_inputs_checked_before_the_run_folder_accept_what_trains_and_refuse_what_cannot(tmp_path):
    """compare's check_inputs: a mono teacher teaches an Ambisonics student (W channel); an Ambisonics teacher
    cannot teach a mono one, unless no scheme uses a teacher (it then only sets the students' hop)."""
    from hwkd.errors import HwkdError
    from hwkd.experiments.compare import check_inputs
    from hwkd.experiments.config import CompareConfig
    from hwkd.models import create_model
    from hwkd.models.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "mono.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2)))
    save_checkpoint(tmp_path / "foa.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2, in_channels=4)))
    ok = CompareConfig(schemes=["none", "response"], students=["kd-small", "kd-medium-foa"])
    check_inputs(ok, tmp_path / "mono.pt", None)
    with pytest.raises(HwkdError, match="must share input"):
        check_inputs(CompareConfig(schemes=["response"], students=["kd-small"]), tmp_path / "foa.pt", None)
    check_inputs(CompareConfig(schemes=["none"], students=["kd-small"]), tmp_path / "foa.pt", None)
    with pytest.raises(HwkdError, match="dataset path not found"):
        check_inputs(ok, tmp_path / "mono.pt", {1: tmp_path / "nodata"})
    # a beam-steering Ambisonics teacher: feature schemes teach a spec-form student; response KD (masks of
    # another form) is refused with what a compare user can do
    save_checkpoint(tmp_path / "steered.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2, in_channels=4,
                                                               mask_mode="steered")))
    check_inputs(CompareConfig(schemes=["none", "i2srf-tfckd"], students=["kd-medium-foa"]), tmp_path / "steered.pt",
                 None)
    with pytest.raises(HwkdError, match="leave response out of --kd"):
        check_inputs(CompareConfig(schemes=["none", "response"], students=["kd-medium-foa"]),
                     tmp_path / "steered.pt", None)
    assert not (tmp_path / "run").exists()


def test_a_matrix_recorded_before_pooled_taps_is_not_resumed_pooled():
    from hwkd.config import changed_settings
    from hwkd.experiments.compare import with_legacy
    from hwkd.kd.i2srf import TAP_BINS
    old = {"schemes": ["none", "i2srf-tfckd"], "mixing_version": 2}
    assert with_legacy(old)["i2srf_tap_bins"] is None                     # it was trained unpooled
    new = {**old, "i2srf_tap_bins": TAP_BINS}
    assert changed_settings(with_legacy(old), new) == [f"i2srf_tap_bins: None -> {TAP_BINS}"]
    assert "i2srf_tap_bins" not in with_legacy({"schemes": ["none", "fitnet"]})   # no I²SRF cell: no matter
    assert with_legacy({"schemes": ["none"]})["mixing_version"] == 1


def test_the_ambisonics_part_takes_a_baseline_its_teacher_can_teach(tmp_path, monkeypatch):
    """kd_compare.py --part foa adds the main matrix's best baseline at kd-medium, leaving response KD out when the
    embedded Ambisonics teacher's output form is not kd-medium-foa's (the shipped one steers a beam)."""
    import importlib
    import sys
    from pathlib import Path

    from hwkd.experiments.compare import CompareConfig
    from hwkd.models import teacher as t
    from hwkd.models.checkpoint import load_model
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    monkeypatch.delitem(sys.modules, "kd_compare", raising=False)
    kd_compare = importlib.import_module("kd_compare")
    cc = CompareConfig(schemes=["none", "response", "fitnet"], students=["kd-medium"], seeds=1)
    rows = [{"student": "kd-medium", "scheme": s, "si_sdr_db_gain_vs_none": g}
            for s, g in (("none", 0.0), ("response", 0.5), ("fitnet", 0.2))]
    recorded = tmp_path / "kd_compare.json"
    recorded.write_text(json.dumps({"settings": kd_compare.settings_as_new(cc), "cells_total": 3, "cells_finished": 3,
                                    "rows": rows,
                                    "machine": {"date": "2026-12-03"}}))
    assert kd_compare.best_baseline(recorded, cc)["scheme"] == "response"
    assert kd_compare.best_baseline(recorded, cc, exclude=("response",))["scheme"] == "fitnet"
    steered = load_model(t.embedded_teacher_path(4))[0].cfg.mask_mode == "steered"
    assert kd_compare.response_cannot_teach("kd-medium-foa") == (("response",) if steered else ())
    assert kd_compare.response_cannot_teach("kd-medium") == ()
    monkeypatch.setattr(t, "ASSET_FOA", tmp_path / "absent.pt")          # no Ambisonics teacher: the mono one
    assert kd_compare.response_cannot_teach("kd-medium-foa") == ()


def test_the_ablations_and_ambisonics_parts_train_at_the_ratios_the_main_matrix_chose(tmp_path, monkeypatch):
    """kd_compare.py's parts given --kd-ratios take each scheme's ratio from the main matrix's tuning grid (its
    --tune-on student's) instead of tuning their own; an unfinished grid or other settings are refused."""
    import importlib
    import sys
    from dataclasses import asdict
    from pathlib import Path

    from hwkd.experiments.compare import CompareConfig
    bench = Path(__file__).resolve().parents[1] / "benchmarks"
    monkeypatch.syspath_prepend(str(bench))
    monkeypatch.delitem(sys.modules, "kd_compare", raising=False)
    kd_compare = importlib.import_module("kd_compare")
    cc = CompareConfig(schemes=["none", "fitnet", "i2srf-tfckd"], students=["kd-small", "kd-medium"], seeds=1,
                       kd_ratios=[0.25, 0.5, 1.0], tune_on="kd-small")
    vals = {("fitnet", 0.25): 9.0, ("fitnet", 0.5): 9.5, ("fitnet", 1.0): 9.1,
            ("i2srf-tfckd", 0.25): 10.2, ("i2srf-tfckd", 0.5): 10.1, ("i2srf-tfckd", 1.0): None}     # 1: diverged
    grid = [{"student": "kd-small", "scheme": sc, "kd_ratio": r, "val_si_sdr_db": v} for (sc, r), v in vals.items()]
    recorded = tmp_path / "kd_compare.json"
    recorded.write_text(json.dumps({"settings": kd_compare.settings_as_new(cc), "tuning_cells": grid,
                                    "machine": {"date": "2026-12-04"}}))
    got = kd_compare.main_ratios(recorded, cc, ["i2srf-tfckd", "fitnet"])
    assert got["ratios"] == {"i2srf-tfckd": 0.25, "fitnet": 0.5} and "kd-small's grid" in got["from"]
    recorded.write_text(json.dumps({"settings": kd_compare.settings_as_new(cc), "tuning_cells": grid[:5],
                                    "machine": {"date": "2026-12-04"}}))
    with pytest.raises(SystemExit, match="not finished the tuning grid of i2srf-tfckd at kd-small"):
        kd_compare.main_ratios(recorded, cc, ["i2srf-tfckd"])
    other = CompareConfig(**{**asdict(cc), "seeds": 3})
    with pytest.raises(SystemExit, match="other settings.*seeds"):
        kd_compare.main_ratios(recorded, other, ["fitnet"])
    with pytest.raises(SystemExit, match="does not exist"):
        kd_compare.main_ratios(tmp_path / "absent.json", cc, ["fitnet"])


def test_a_shared_teacher_computes_each_batch_once_and_its_members_step_in_turn_within_its_slack():
    """hwkd.train.shared: members asking for the same batches get the taps computing them alone gives, bit for bit,
    from one forward per batch; one member steps at a time; a member ahead waits for the slowest; one that left
    is not waited for."""
    import threading

    import torch

    from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig
    from hwkd.models.enhancer import Enhancer
    from hwkd.train.shared import SharedTeacher, step_turn, teacher_taps
    torch.manual_seed(0)
    teacher = Enhancer(DPDCRN(DPDCRNConfig(channels=8, layers=1, depth=1, heads=0, gru_hidden=8))).eval()
    batches = [torch.randn(2, 1, 4000, generator=torch.Generator().manual_seed(i)) for i in range(6)]
    alone = [teacher_taps(teacher, b) for b in batches]          # no group: computed here
    group = SharedTeacher(slack=1)
    ids = [group.join() for _ in range(3)]
    got, inside, most_inside = {m: [] for m in ids}, [0], [0]

    def member(m, n):
        with group.member(m):
            for b in batches[:n]:
                with step_turn():
                    inside[0] += 1
                    most_inside[0] = max(most_inside[0], inside[0])
                    got[m].append(teacher_taps(teacher, b))
                    inside[0] -= 1
    threads = [threading.Thread(target=member, args=(m, n)) for m, n in zip(ids, (6, 6, 3))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)               # the member that stopped after 3 is not waited for
    assert group.computed == 6 and group.shared == 6 + 6 + 3 - 6
    assert most_inside[0] == 1 and 1 <= group.most_ahead <= group.slack
    for m in ids:
        for mine, ref in zip(got[m], alone):
            for k in ref:
                assert all(torch.equal(a, b) for a, b in zip(mine[k], ref[k]))


@pytest.mark.slow
def test_grouped_cells_share_the_teachers_forward_and_get_what_they_get_alone(tmp_path, tiny_corpus):
    """hwkd compare --group: the cells of a seed train side by side in threads, one teacher forward per batch for
    all of them, and each cell's result (weights, λ, scores) is the one it gets trained alone."""
    s1 = tmp_path / "s8.yaml"
    s1.write_text("channels: 8\nlayers: 1\ndepth: 1\nheads: 0\n")
    common = ["-q", "compare", "--kd", "none,fitnet,i2srf-tfckd", "--students", s1, "--seeds", "1", "--threads", "1",
              "--epochs", "1", "--max-steps-per-epoch", "3", "--batch-size", "2", "--segment-s", "0.5",
              "--val-pesq-clips", "1", "--eval-limit", "2", "--data", tiny_corpus]
    runs = {}
    for name, extra in (("alone", []), ("group", ["--group", "3"])):
        r = run_cli(*common, *extra, "--out", tmp_path / name, "--report-dir", tmp_path / f"report-{name}")
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = r.stdout
    assert "3 cells side by side, taking turns, the teacher's forward shared by 2" in runs["group"]
    # n balancing batches (the first n training batches again; n as the KD cells recorded) + 3 steps per KD cell,
    # every request answered once: the steps' 3 batches computed once for both cells; the balancing batches are
    # shared only as far as the group's cache holds them (each cell balances on all n in one turn)
    n = json.loads((tmp_path / "group" / "cells" / "s8" / "fitnet" / "seed0" / "result.json").read_text()
                   )["kd_weight"]["batches"]
    import re
    done = re.search(r"teacher forwards (\d+), shared (\d+), a member at most", runs["group"])
    assert done and int(done[1]) + int(done[2]) == 2 * (n + 3) and int(done[2]) >= 3 and int(done[1]) >= n
    import torch
    for scheme in ("none", "fitnet", "i2srf-tfckd"):
        cells = [tmp_path / n / "cells" / "s8" / scheme / "seed0" for n in ("alone", "group")]
        a, g = (json.loads((c / "result.json").read_text()) for c in cells)
        assert a["curve"] == g["curve"] and a["kd_weight"] == g["kd_weight"]
        wa, wg = (torch.load(c / "best.pt", weights_only=True)["state_dict"] for c in cells)
        assert all(torch.equal(wa[k], wg[k]) for k in wa)                       # the same weights, bit for bit
        # (the scores up to the last bits: STOI's numpy sums may round otherwise in a thread)
        assert g["enhanced"] == pytest.approx(a["enhanced"], rel=1e-12)
        # each records how it trained and its training clock (from its history, across resumes)
        assert (a["group"], g["group"]) == (1, 3) and a["train_elapsed_s"] > 0 and g["train_elapsed_s"] > 0
    md = (tmp_path / "report-group" / "table.md").read_text()
    assert "| s8 | fitnet | 1 of 1 |" in md and "in groups of 3 |" in md


def test_ctrl_c_stops_a_groups_cells_at_their_next_step_and_a_failing_cell_leaves_its_siblings_training(
        tmp_path, monkeypatch, tiny_corpus):
    """hwkd compare --group: Ctrl-C while a group trains stops every cell at its next step (none is cut off in
    the middle of one), fails their trials as interrupted and raises; the next run trains them. A cell that fails
    fails its own trial and is raised once its siblings have finished (theirs are recorded)."""
    import signal
    import threading

    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.train.shared import GroupStopped, step_turn
    teacher, out = embedded_teacher_path(), tmp_path / "run"
    cc = compare.CompareConfig(schemes=["none", "fitnet", "at"], students=["cpu-student"], seeds=1)
    steps, ended, said, pressed = {}, [], [], []

    def endless_cell(cdir, which, student, scheme, seed, *args, member=None, **kwargs):
        key = compare.cell_key(student, scheme, seed)
        assert member is not None
        with member[0].member(member[1]):
            try:
                while True:
                    with step_turn():
                        steps[key] = steps.get(key, 0) + 1
                        time.sleep(0.01)
                    if steps[key] > 3000:       # (a lost signal fails the test instead of hanging it)
                        raise RuntimeError("the Ctrl-C never reached the main thread")
                    if len(steps) == 3 and min(steps.values()) == 4 and not pressed:
                        pressed.append(key)
                        # Ctrl-C, once every cell has stepped a few times: SIGINT to the main thread, as a terminal
                        # sends it (_thread.interrupt_main() sends no signal: on 3.11 another thread recomputing the
                        # eval breaker can leave it unseen by a main thread that waits, as it hung a CI run)
                        signal.pthread_kill(threading.main_thread().ident, signal.SIGINT)
            except GroupStopped:
                ended.append(key)
                raise
    monkeypatch.setattr(compare, "_run_cell", endless_cell)
    # Python's own Ctrl-C handler, whatever this process inherited (a shell starting pytest in the background
    # ignores SIGINT, and Python then keeps it ignored)
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        with pytest.raises(KeyboardInterrupt):
            compare.run_compare(out, cc, teacher, data={1: tiny_corpus}, progress=False, log=said.append, group=3)
    finally:
        signal.signal(signal.SIGINT, before)
    assert sorted(ended) == sorted(steps) and len(steps) == 3 and min(steps.values()) > 3
    assert not [t for t in threading.enumerate() if t.name.startswith("cell-")]     # each one waited for
    assert any("stopping the group's cells" in s for s in said)
    assert sorted(s for _, s in _states(out)) == ["FAIL"] * 3
    # the next run trains them; one fails (not interrupted): its siblings finish and are recorded, then it is raised
    trained = []
    _fake_cells(monkeypatch, trained)
    real = compare._run_cell

    def one_fails(cdir, which, student, scheme, *args, **kwargs):
        if scheme == "fitnet":
            raise RuntimeError("a broken cell")
        return real(cdir, which, student, scheme, *args, **kwargs)
    monkeypatch.setattr(compare, "_run_cell", one_fails)
    with pytest.raises(RuntimeError, match="a broken cell"):
        compare.run_compare(out, cc, teacher, data={1: tiny_corpus}, progress=False, log=said.append, group=3)
    assert sorted(trained) == ["cpu-student/at/seed0", "cpu-student/none/seed0"]
    states = _states(out)
    assert sorted(s for k, s in states if k != "cpu-student/fitnet/seed0") == ["COMPLETE", "COMPLETE", "FAIL", "FAIL"]
    assert [s for k, s in states if k == "cpu-student/fitnet/seed0"] == ["FAIL", "FAIL"]


def test_cells_trained_on_different_devices_are_noted_and_cells_from_before_the_device_was_kept_count_as_cpu():
    from hwkd.report.compare import _mixed_note
    cells = [{"scheme": "none", "seed": 0, "threads": 1, "cpu": "x"},             # (recorded before the device)
             {"scheme": "fitnet", "seed": 0, "threads": 1, "cpu": "x", "device": "cpu"}]
    assert _mixed_note("s", cells) == []
    cells.append({"scheme": "at", "seed": 0, "threads": 1, "cpu": "x", "device": "cuda:0 (NVIDIA H200)"})
    note = "\n".join(_mixed_note("s", cells))
    assert "trained on different devices (cpu: none s0, fitnet s0; cuda:0 (NVIDIA H200): at s0)" in note


def test_tune_on_one_student_sets_every_students_ratio_and_narrows_a_matrix_whose_other_grids_never_started(
        tmp_path, monkeypatch):
    """--tune-on S: only S trains the KD-weight grid; every student's seeds train at S's choice. A matrix started
    with a grid per student can be narrowed so while no other student's grid cell has started (their waiting
    cells are pruned from the queue); once one has, the other setting is refused."""
    import optuna

    from hwkd.experiments import compare
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.report.compare import report as compare_report
    teacher, out = embedded_teacher_path(), tmp_path / "run"
    per_student = compare.CompareConfig(schemes=["none", "fitnet"], students=["cpu-student", "cpu-student-causal"],
                                        seeds=1, kd_ratios=[0.25, 1.0])
    one = compare.CompareConfig(**{**per_student.__dict__, "tune_on": "cpu-student"})
    assert compare.Matrix(tmp_path / "count", one, teacher).total == 2 * 2 + 2
    trained = []
    _fake_cells(monkeypatch, trained, fail_on="cpu-student/fitnet@r0.25/seed10000")
    with pytest.raises(KeyboardInterrupt):           # started per student: stopped in cpu-student's grid
        compare.run_compare(out, per_student, teacher, progress=False)
    # a worker of the matrix still training (here: this process, alive) would queue the other grids again
    m = compare.Matrix(out, per_student, teacher)
    tid, _, _ = m.take()
    with pytest.raises(HwkdError, match="is training cpu-student/fitnet@r1/seed10000 \\(stop it first\\)"):
        compare.run_compare(out, one, teacher, progress=False)
    m._set_state(tid, optuna.trial.TrialState.FAIL, error="interrupted")
    trained.clear()
    _fake_cells(monkeypatch, trained)
    results = compare.run_compare(out, one, teacher, progress=False)
    assert sorted(trained) == ["cpu-student-causal/fitnet@r1/seed0", "cpu-student-causal/none/seed0",
                               "cpu-student/fitnet@r0.25/seed10000", "cpu-student/fitnet@r1/seed0",
                               "cpu-student/fitnet@r1/seed10000"]
    assert [(r["student"], r["scheme"], r["kd_ratio"]) for r in results] == [
        ("cpu-student", "none", None), ("cpu-student", "fitnet", 1.0), ("cpu-student-causal", "none", None),
        ("cpu-student-causal", "fitnet", 1.0)]
    assert results[3]["kd_tuning"] == {"0.25": 10004.0, "1": 10005.0}          # cpu-student's grid
    pruned = sorted(k for k, s in _states(out) if s == "PRUNED")
    assert pruned == ["cpu-student-causal/fitnet@r0.25/seed10000", "cpu-student-causal/fitnet@r1/seed10000"]
    assert json.loads((out / "compare.json").read_text())["tune_on"] == "cpu-student"
    compare_report(results, tmp_path / "report", one)
    md = (tmp_path / "report" / "table.md").read_text()
    assert "The grid trained on cpu-student alone" in md
    assert "| cpu-student-causal | fitnet | 10004.00 | **10005.00** |" in md
    # another student's grid cell started already: narrowing is refused
    _fake_cells(monkeypatch, trained, fail_on="cpu-student-causal/fitnet@r0.25/seed10000")
    with pytest.raises(KeyboardInterrupt):
        compare.run_compare(tmp_path / "late", per_student, teacher, progress=False)
    with pytest.raises(HwkdError, match="cpu-student-causal/fitnet@r0.25/seed10000 has started: it cannot be narrowed"):
        compare.run_compare(tmp_path / "late", one, teacher, progress=False)
    for bad, why in ((dict(tune_on="nobody"), "not one of the students"),
                     (dict(tune_on="cpu-student", kd_ratios=None), "no tuning grid")):
        with pytest.raises(HwkdError, match=why):
            compare.run_compare(tmp_path / "bad", compare.CompareConfig(**{**per_student.__dict__, **bad}), teacher,
                                progress=False)


def test_a_kd_objective_is_built_with_its_teacher_on_another_device_than_the_student():
    """hwkd compare --device cuda puts the teacher on the GPU before a cell builds its KD objective, whose tap-shape
    probe then runs each network where it is (the meta device stands in for a GPU here)."""
    from hwkd.kd.base import schemes
    from hwkd.models import create_model
    from hwkd.models.checkpoint import load_model
    from hwkd.models.teacher import embedded_teacher_path
    from hwkd.train.objective import KDObjective
    teacher = load_model(embedded_teacher_path())[0].to("meta")
    student = create_model("kd-small")
    for scheme in ("fitnet", "i2srf-tfckd", "reviewkd"):
        assert scheme in schemes()
        assert KDObjective(teacher, student, scheme, 2, 16000).distiller is not None
