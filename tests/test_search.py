"""hwkd search / report / pick on tiny data: real distillation, real profiling, a real database server."""

import glob
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from hwkd.errors import HwkdError
from hwkd.search.controllers import Controller
from hwkd.search.pareto import front_mask, hypervolume
from hwkd.search.space import load_space

from conftest import postgres_server, run_cli
from servers import free_port

TINY_SPACE = """name: tiny
params:
  channels: [8, 12]
  layers: 1
  depth: [1, 2]
  heads: [0, 2]
  gru_hidden: [8, 12]
  intra_bidirectional: [true, false]
  causal: true
  time_attention: none
  hop: 256
  in_channels: 1
"""


def _space(tmp_path) -> Path:
    p = tmp_path / "tiny.yaml"
    p.write_text(TINY_SPACE)
    return p


def _search_args(tmp_path, corpus, name, trials, target="rpi4", extra=()):
    return ["-q", "search", "--target", target, "--space", _space(tmp_path), "--data", corpus, "--name",
            str(tmp_path / "runs" / name), "--trials", trials, "--steps", 2, "--promote-steps", 2,
            "--promote-after", 2, "--batch-size", 2, "--val-pesq-clips", 1, "--reports", tmp_path / "reports",
            *extra]


def _env(tmp_path, **kw):
    return {**os.environ, "HWKD_HOME": str(tmp_path / "home"), **kw}


def _db_trials(run: Path) -> list[tuple]:
    con = sqlite3.connect(run / "study.db")
    rows = con.execute("SELECT t.number, t.state, a.value_json FROM trials t LEFT JOIN trial_user_attributes a "
                       "ON a.trial_id = t.trial_id AND a.key = 'key' ORDER BY t.number").fetchall()
    con.close()
    return rows


# -- spaces and Pareto arithmetic -----------------------------------------------------------------------

def test_shipped_spaces_load_and_bad_spaces_are_refused(tmp_path):
    for name in ("default", "foa"):
        s = load_space(name, teacher_hop=256)
        assert s.size() > 100 and s.to_config({d.name: d.choices[0] for d in s.free}).causal
    cases = {
        "params:\n  channels: [8, 12]\n  heads: [4]\n": "channels/2 = 6 must be divisible by heads = 4",
        "params:\n  widht: [8]\n": "unknown dimension(s) widht",
        "params:\n  channels: [8\n": "not valid YAML",
        "params:\n  layers: {low: 3, high: 1}\n": "low <= high",
        "params:\n  causal: [true]\n  time_attention: [full]\n": "causal model needs",
        "params:\n  hop: [128, 256]\n": "differ from the teacher's hop 256",
        "params: []\n": "non-empty 'params' mapping",
    }
    for i, (text, msg) in enumerate(cases.items()):
        p = tmp_path / f"s{i}.yaml"
        p.write_text(text)
        with pytest.raises(HwkdError) as e:
            load_space(p, teacher_hop=256)
        assert msg in str(e.value) and str(p) in str(e.value), (text, str(e.value))
    with pytest.raises(HwkdError, match="search space nope not found"):
        load_space("nope")


def test_front_and_hypervolume_against_brute_force():
    rng = np.random.default_rng(0)
    q, c = rng.uniform(0, 10, 40), rng.uniform(0, 5, 40)
    mask = front_mask(q, c)
    for i in range(40):  # a point is on the front iff no point dominates it
        dom = any(q[j] >= q[i] and c[j] <= c[i] and (q[j] > q[i] or c[j] < c[i]) for j in range(40))
        assert mask[i] == (not dom)
    # area by dense sampling of the reference box [0, 12] x [0, 6]
    gq, gc = np.meshgrid(np.linspace(0, 12, 601), np.linspace(0, 6, 601))
    covered = np.zeros_like(gq, bool)
    for qi, ci in zip(q, c):
        covered |= (gq <= qi) & (gc >= ci)
    approx = covered.mean() * 12 * 6
    assert abs(hypervolume(q, c, 0.0, 6.0) - approx) < 0.02 * approx
    assert hypervolume(q, c, 20.0, 6.0) == 0.0            # nothing better than the reference


# -- the whole loop ---------------------------------------------------------------------------------------

@pytest.mark.slow
def test_search_isolates_failures_reports_and_picks(tmp_path, tiny_corpus):
    env = _env(tmp_path, HWKD_FAULT_TRIALS="1:raise,2:nan")
    r = run_cli(*_search_args(tmp_path, tiny_corpus, "s1", 5), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stopped (trials): 3 complete, 2 failed" in r.stdout, r.stdout
    run = tmp_path / "runs" / "s1"
    rep = tmp_path / "reports" / "s1"
    for f in ("index.html", "trials.csv", "front.csv", "summary.json", "quality_vs_latency.png",
              "quality_vs_macs.png", "hypervolume.png"):
        assert (rep / f).is_file(), f
    import pandas as pd
    df = pd.read_csv(rep / "trials.csv")
    failed = df[df["state"] == "FAIL"].set_index("trial")["error"]
    assert "RuntimeError: injected fault" in failed[1] and failed[2].startswith("nan:"), failed
    done = df[df["state"] == "COMPLETE"]
    assert done["key"].is_unique and len(done) == 3
    assert done["latency_how"].str.contains("predicted").all()             # rpi4 without a device
    assert (done["rung"] == 1).any()                                         # multi-fidelity promoted one
    summ = json.loads((rep / "summary.json").read_text())
    assert summ["front"] and summ["hypervolume"] >= 0 and len(summ["hypervolume_history"]) == summ["feasible"]
    assert "uncalibrated default" in " ".join(summ["latency_how"])
    # pick: the best student within a limit, exported and runnable
    out = tmp_path / "pick"
    r = run_cli("pick", run, "--max-latency-ms", 100, "--target", "rpi4", "--out", out, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((out / "card.json").read_text())
    assert card["on_front"] and card["latency"]["per_hop_ms"] <= 100 and "predicted" in card["latency"]["how"]
    best = done.sort_values("val_si_sdr_db").iloc[-1]
    assert card["trial"] == best["trial"]
    for f in ("model.pt", "offline.onnx", "step.onnx", "model_card.md"):
        assert (out / f).is_file(), f
    assert (out / "model.pt").stat().st_size < 500_000        # the student alone, no distiller or optimizer
    import soundfile as sf
    noisy = sorted((tiny_corpus).rglob("*.wav"))[0]
    r = run_cli("enhance", out / "model.pt", noisy, tmp_path / "e.wav", "--streaming", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert sf.info(str(tmp_path / "e.wav")).samplerate == 16000
    # bad requests: clear one-line errors
    r = run_cli("pick", run, "--max-latency-ms", 1e-9, env=env)
    assert r.returncode == 2 and "no student of s1 runs within" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("pick", run, "--target", "cpu", env=env)
    assert r.returncode == 2 and "ran on target rpi4, not cpu" in r.stderr
    r = run_cli("report", tmp_path / "runs" / "nope", env=env)
    assert r.returncode == 2 and "no search run at" in r.stderr
    r = run_cli(*_search_args(tmp_path, tiny_corpus, "s1", 5), env=env)
    assert r.returncode == 2 and "--resume" in r.stderr                    # never overwrites a run


@pytest.mark.slow
def test_search_resumes_after_kill_9_without_losing_a_finished_trial(tmp_path, tiny_corpus):
    env = _env(tmp_path)
    run = tmp_path / "runs" / "k"
    args = _search_args(tmp_path, tiny_corpus, "k", 3, target="cpu", extra=("--no-report",))
    proc = subprocess.Popen([sys.executable, "-m", "hwkd", *map(str, args)], env=env, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and not glob.glob(str(run / "trials" / "*" / "rung0.json")):
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.2)
    time.sleep(1.0)                                          # let it start on the next candidate
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = {p: p.stat().st_mtime_ns for p in map(Path, glob.glob(str(run / "trials" / "*" / "rung0.json")))}
    assert finished
    r = run_cli("-q", "search", "--resume", run, "--no-report", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 complete" in r.stdout, r.stdout
    for p, mtime in finished.items():                         # finished work was not redone
        assert p.stat().st_mtime_ns == mtime
    rows = _db_trials(run)
    complete_keys = [k for _, state, k in rows if state == "COMPLETE"]
    assert len(complete_keys) == 3 and len(set(complete_keys)) == 3
    measured = json.loads(next(iter(finished)).read_text())
    assert measured["latency_how"].startswith("measured on cpu (onnxruntime")


# -- many workers, one study on a real database server ---------------------------------------------------

PG_PASSWORD = "hw%k-s3cret"            # '%' is written %25 in a URL: neither form may show anywhere
SECRET = "s3cret"


@pytest.fixture
def postgres_with_password():
    """(URL without the password, URL with it) of a server that asks for PG_PASSWORD."""
    with postgres_server(PG_PASSWORD) as urls:
        yield urls


@pytest.mark.slow
def test_two_workers_share_one_study_on_a_database_server(tmp_path, tiny_corpus, postgres):
    env = _env(tmp_path)
    args = [*_search_args(tmp_path, tiny_corpus, "shared", 4, extra=("--no-report",)), "--storage", postgres]
    procs = [subprocess.Popen([sys.executable, "-m", "hwkd", *map(str, args)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, e) in zip(procs, outs):
        assert p.returncode == 0, e[-3000:]
    import optuna
    study = optuna.load_study(study_name="shared", storage=postgres)
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 4
    keys = [t.user_attrs["key"] for t in done]
    assert len(set(keys)) == 4                                # no candidate trained twice
    assert len({t.user_attrs["worker"] for t in done}) == 2   # both workers did trials
    # run.json keeps the URL without its password: the report takes it from $HWKD_STORAGE (or PGPASSWORD)
    r = run_cli("report", tmp_path / "runs" / "shared", "--reports", tmp_path / "reports",
                env={**env, "HWKD_STORAGE": postgres})
    assert r.returncode == 0, r.stderr[-2000:]
    summ = json.loads((tmp_path / "reports" / "shared" / "summary.json").read_text())
    assert summ["trials_complete"] == 4 and summ["front"]


def _files_holding(root: Path, secret: str) -> list[Path]:
    return [p for p in Path(root).rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.slow
def test_a_store_password_is_never_shown_even_when_the_server_is_unreachable(tmp_path, paired):
    env = _env(tmp_path, PGPASSFILE=str(tmp_path / "no-pgpass"))
    url = f"postgresql+psycopg://hwkd:{PG_PASSWORD.replace('%', '%25')}@127.0.0.1:{free_port()}/postgres"
    shown = "cannot open the search store postgresql+psycopg://hwkd:***@127.0.0.1:"
    base = ("search", "--target", "rpi4", "--data", paired, "--name", "x")
    r = run_cli(*base, "--storage", url, env=env)
    assert r.returncode == 2 and shown in r.stderr, r.stderr[-2000:]
    assert SECRET not in r.stdout + r.stderr and "Traceback" not in r.stderr
    assert "visible to every user of this machine (ps)" in r.stderr          # a password on the command line
    r = run_cli(*base, env={**env, "HWKD_STORAGE": url})                     # the same URL from the environment
    assert r.returncode == 2 and shown in r.stderr and SECRET not in r.stdout + r.stderr, r.stderr[-2000:]
    assert "visible to every user" not in r.stderr
    taken = tmp_path / "runs" / "taken"                       # a local run of that name: never taken over
    taken.mkdir(parents=True)
    (taken / "run.json").write_text(json.dumps({"storage": "sqlite:///study.db", "name": "taken"}))
    r = run_cli("search", "--target", "rpi4", "--data", paired, "--name", taken, env={**env, "HWKD_STORAGE": url})
    assert r.returncode == 2 and "a search named" in r.stderr and "--resume" in r.stderr, r.stderr[-2000:]
    assert (taken / "run.json").read_text().startswith('{"storage": "sqlite:///study.db"')
    r = run_cli("report", "nowhere", env={**env, "HWKD_STORAGE": url})
    assert r.returncode == 2 and "no search 'nowhere' in postgresql+psycopg://hwkd:***@" in r.stderr, r.stderr
    assert SECRET not in r.stderr
    r = run_cli(*base, "--storage", f"not a URL {SECRET}", env=env)          # refused at parse time, not repeated
    assert r.returncode == 2 and "argument --storage: not a database URL" in r.stderr and SECRET not in r.stderr
    r = run_cli("pick", "nowhere", env={**env, "HWKD_STORAGE": f"not a URL {SECRET}"})
    assert r.returncode == 2 and "$HWKD_STORAGE is not a database URL" in r.stderr and SECRET not in r.stderr


@pytest.mark.slow
def test_a_server_password_is_never_printed_stored_or_in_ps(tmp_path, tiny_corpus, postgres_with_password):
    """The password comes from $HWKD_STORAGE (or PGPASSWORD): it is in no command line while the search runs, in
    no trial process's environment, in no output, run.json, trial file or report; run.json's URL without it
    works with PGPASSWORD; the server connection has hwkd's connect and statement timeouts."""
    bare, with_pw = postgres_with_password
    env = _env(tmp_path, PGPASSFILE=str(tmp_path / "no-pgpass"), HWKD_STORAGE=with_pw)
    env.pop("PGPASSWORD", None)
    args = _search_args(tmp_path, tiny_corpus, "pw", 1, extra=("--trial-timeout", "20m"))
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        proc = subprocess.Popen([sys.executable, "-m", "hwkd", *map(str, args)], env=env, stdout=fo, stderr=fe)
        in_cmdline, trial_envs = [], []
        while proc.poll() is None:                 # what `ps` (and a root `ps e`) would show, all along
            for d in Path("/proc").glob("[0-9]*"):
                try:
                    cmd = (d / "cmdline").read_bytes()
                    if SECRET.encode() in cmd:
                        in_cmdline.append(cmd)
                    if b"hwkd.search.trial" in cmd:
                        trial_envs.append((d / "environ").read_bytes())
                except OSError:
                    pass
            time.sleep(0.2)
    out, err = out.read_text(), err.read_text()
    assert proc.returncode == 0, err[-3000:]
    assert not in_cmdline
    assert trial_envs and not any(SECRET.encode() in e or b"HWKD_STORAGE=" in e for e in trial_envs)
    assert SECRET not in out + err and "store postgresql+psycopg://hwkd:***@127.0.0.1:" in out, out
    run, rep = tmp_path / "runs" / "pw", tmp_path / "reports" / "pw"
    manifest = json.loads((run / "run.json").read_text())
    assert manifest["storage"] == bare and manifest["trial_timeout_s"] == 1200       # no password; --trial-timeout
    assert (rep / "index.html").is_file() and (run / "trials").is_dir()
    assert _files_holding(run, SECRET) == [] and _files_holding(rep, SECRET) == []
    no_store = {k: v for k, v in env.items() if k != "HWKD_STORAGE"}
    r = run_cli("report", run, "--reports", tmp_path / "r2", env={**no_store, "PGPASSWORD": PG_PASSWORD})
    assert r.returncode == 0, r.stderr[-2000:]                 # run.json's URL + libpq's PGPASSWORD
    r = run_cli("report", run, "--reports", tmp_path / "r3", env=no_store)
    assert r.returncode == 2 and "cannot read the store of" in r.stderr and "PGPASSWORD" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    wrong = with_pw.replace(PG_PASSWORD.replace("%", "%25"), "Wr0ngPw")
    r = run_cli("report", run, "--reports", tmp_path / "r3", env={**no_store, "HWKD_STORAGE": wrong})
    assert r.returncode == 2 and "password authentication failed" in r.stderr and "Wr0ngPw" not in r.stderr
    from hwkd import store
    with store.open_rdb(with_pw).engine.connect() as con:
        assert con.exec_driver_sql("SHOW statement_timeout").scalar() == "2min"
        assert con.connection.dbapi_connection.info.get_parameters()["connect_timeout"] == "10"


@pytest.mark.slow
def test_a_run_folder_copied_elsewhere_is_picked_from(tmp_path, tiny_corpus):
    """run.json names its SQLite store relative to the run folder: a finished run copied elsewhere (the original
    deleted) is picked from and reported on, and nothing is created where it was; an older run.json's absolute
    path falls back to RUN/study.db; a run folder without its study.db is one error line, never an empty store."""
    env = _env(tmp_path)
    r = run_cli(*_search_args(tmp_path, tiny_corpus, "orig", 1, extra=("--no-report",)), env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    orig = tmp_path / "runs" / "orig"
    assert json.loads((orig / "run.json").read_text())["storage"] == "sqlite:///study.db"
    moved = tmp_path / "elsewhere" / "moved"
    shutil.copytree(orig, moved)
    shutil.rmtree(orig)
    r = run_cli("pick", moved, "--out", tmp_path / "pick", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    assert not orig.exists()                                  # no empty study.db at the old place
    card = json.loads((tmp_path / "pick" / "card.json").read_text())
    assert card["trial"] == 0 and (tmp_path / "pick" / "model.pt").is_file()
    manifest = json.loads((moved / "run.json").read_text())
    manifest["storage"] = f"sqlite:///{orig / 'study.db'}"     # as hwkd wrote run.json before
    (moved / "run.json").write_text(json.dumps(manifest))
    r = run_cli("report", moved, "--reports", tmp_path / "reports", env=env)
    assert r.returncode == 0 and "1 complete trials" in r.stdout, r.stderr[-2000:]
    assert not orig.exists()
    (moved / "study.db").unlink()
    for cmd in (("pick", moved), ("-q", "search", "--resume", moved)):
        r = run_cli(*cmd, env=env)
        assert r.returncode == 2 and f"the store of search moved ({moved / 'study.db'}) is missing" in r.stderr, \
            (cmd, r.stderr[-2000:])
        assert "Traceback" not in r.stderr
    assert not (moved / "study.db").exists() and not orig.exists()


def test_workers_asking_at_once_neither_train_a_candidate_twice_nor_overrun_trials(tmp_path):
    import threading

    import optuna
    from optuna.trial import TrialState

    from hwkd.search.run import Search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(storage=f"sqlite:///{tmp_path / 's.db'}", study_name="s",
                                directions=["maximize", "minimize", "minimize"])
    s = Search.__new__(Search)        # only the study-facing parts: no teacher, no data
    s.study, s.storage, s.controller, s.worker = study, study._storage, Controller(None, 0), "w"
    a, b = study.ask(), study.ask()   # two workers asked at once; b writes its key first
    b.set_user_attr("key", "k1")
    threading.Timer(0.5, lambda: a.set_user_attr("key", "k1")).start()
    t0 = time.monotonic()
    assert [t.number for t in s._earlier_same_key(b.number, "k1")] == [a.number]   # b waited for a's key
    assert time.monotonic() - t0 >= 0.4
    assert s._earlier_same_key(a.number, "k1") == []         # a neither waits on nor yields to b
    assert s._earlier_same_key(b.number, "k2") == []
    # --trials 2 with a done and b running: a worker that saw one left asks a third trial, closed unrun
    study.tell(a, [1.0, 1.0, 1.0])
    assert s.run_one({}, limit=2) == "over_limit"
    c = study.get_trials()[-1]
    assert c.state == TrialState.PRUNED and c.user_attrs["over_limit"] and s.counted() == 2


def test_a_trial_without_heartbeat_is_failed_and_retried_by_any_worker(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution

    from hwkd.search.run import Search
    from hwkd.store import Heartbeat
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize", "minimize"])
    s = Search.__new__(Search)
    s.study, s.storage, s.controller, s.worker = study, storage, Controller(None, 0), "w"
    dist = {"channels": CategoricalDistribution([8, 12])}
    dead, live = study.ask(dist), study.ask(dist)
    for t, key in ((dead, "k1"), (live, "k2")):       # workers on other hosts: no process this host can check
        t.set_user_attr("key", key)
        t.set_user_attr("worker", f"elsewhere:{t.number + 1}")
    storage.record_heartbeat(dead._trial_id)          # one stamp, then its worker goes silent
    with Heartbeat(storage, live._trial_id):
        time.sleep(4.5)
        assert s.recover() == 1
    got = {t.number: t for t in study.get_trials()}
    assert got[dead.number].state.name == "FAIL" and got[live.number].state.name == "RUNNING"
    retry = [t for t in got.values() if t.state.name == "WAITING"]
    assert len(retry) == 1 and retry[0].user_attrs["retry_of"] == dead.number
    assert retry[0].user_attrs["key"] == "k1"         # so a retry killed before it names its candidate is retried
    assert s.recover() == 0                           # one retry per dead trial
    # a finished trial of the candidate makes any other trial of it redundant, whatever their numbers
    study.tell(live, [1.0, 1.0, 1.0])
    assert [t.number for t in s._earlier_same_key(0, "k2")] == [live.number]


def test_a_worker_failed_as_stale_while_it_ran_keeps_its_finished_result(tmp_path):
    import optuna
    from optuna.distributions import CategoricalDistribution

    from hwkd.models.dpdcrn import DPDCRNConfig
    from hwkd.search.run import Search, SearchConfig
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize", "minimize"])
    s = Search.__new__(Search)
    s.study, s.storage, s.controller, s.run, s.cost_ref = study, storage, Controller(None, 0), tmp_path, 16.0
    s.sc, s.target, s.log = SearchConfig(promote_steps=0), {"name": "rpi4"}, lambda m: None
    trial = study.ask({"channels": CategoricalDistribution([8, 12])})
    trial.set_user_attr("key", "k1")
    tdir = tmp_path / "trials" / "k1"
    tdir.mkdir(parents=True)        # the child's rung-0 result, as a trial that trained to the end leaves it
    (tdir / "rung0.json").write_text(json.dumps({"val_si_sdr_db": 9.0, "val_pesq_wb": 1.5, "latency_ms": 2.0,
                                                 "hop_ms": 16.0, "macs_per_s": 3e8, "train_s": 1.0}))
    study.tell(trial, state=optuna.trial.TrialState.FAIL)     # another worker saw no heartbeat and failed it
    assert s._train_candidate(trial, tdir, {"channels": 8}, DPDCRNConfig(), {}) == "done"
    done = [t for t in study.get_trials() if t.state.name == "COMPLETE"]
    assert len(done) == 1 and done[0].number != trial.number and done[0].user_attrs["recorded_for"] == trial.number
    assert done[0].values == [9.0, 2.0, 0.3] and done[0].params == trial.params
    assert done[0].user_attrs["key"] == "k1" and done[0].user_attrs["feasible"] is True
    assert s.recover() == 0         # the candidate has a finished trial: the failed one is not retried


def test_promotions_stop_while_they_have_taken_more_than_their_share_of_the_trials_time(tmp_path):
    """--promote-share F: a front member is promoted only while promotions (rung1_s) have taken at most F of the
    finished trials' time (trial_s, infeasible trials included); without it, every front member is."""
    import optuna

    from hwkd.search.run import Search, SearchConfig
    from hwkd.search.trial import TrialRecord
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
    for i, (t, r1, feasible) in enumerate([(10.0, None, True), (40.0, 30.0, True), (10.0, None, False)]):
        study.add_trial(optuna.trial.create_trial(values=[8.0 + i, 1.0 + i, 0.1], user_attrs={
            "rung0_si_sdr_db": 8.0 + i, "latency_ms": 1.0 + i, "trial_s": t, "rung1_s": r1, "feasible": feasible}))
    s = Search.__new__(Search)
    s.study = study
    best = TrialRecord(val_si_sdr_db=20.0, latency_ms=0.5)          # on the front: dominates every trial
    s.sc = SearchConfig(promote_steps=20, promote_after=2)
    assert s._promote(99, best)
    s.sc.promote_share = 0.5                                          # 30 s of 60: at the share, still promotes
    assert s._promote(99, best)
    s.sc.promote_share = 0.4                                          # over it
    assert not s._promote(99, best)
    s.sc.promote_share = None
    assert not s._promote(99, TrialRecord(val_si_sdr_db=1.0, latency_ms=9.0))     # off the front


def _gone(pid: int) -> bool:
    """The process has ended (a zombie nobody reaped counts as ended: it runs nothing)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.mark.slow
def test_a_hung_trial_is_killed_failed_and_retried_once_keeping_finished_work(tmp_path):
    """A trial process that never ends (HWKD_FAULT_TRIALS n:hang, in a real child process that starts a process of
    its own) is killed with its process group at --trial-timeout, failed with the reason, and retried once; the
    retry, if it hangs too, is failed for good; a finished trial of the search stays as it was."""
    import optuna

    from hwkd.search.controllers import suggest
    from hwkd.search.run import Search, SearchConfig, candidate_key
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}")
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize", "minimize"])
    space = load_space(_space(tmp_path), teacher_hop=256)
    logs = []
    s = Search.__new__(Search)
    s.study, s.storage, s.controller, s.run, s.cost_ref, s.space = (study, storage, Controller(None, 0), tmp_path,
                                                                        16.0, space)
    s.sc, s.target, s.log, s.worker = SearchConfig(promote_steps=0, trial_timeout_s=4), {"name": "rpi4"}, \
        logs.append, "here:1"
    free = {d.name: d.choices for d in space.free}
    study.enqueue_trial({k: c[0] for k, c in free.items()})         # a candidate that finishes
    study.enqueue_trial({k: c[-1] for k, c in free.items()})        # one that hangs
    # trial 0 finished earlier: its result file is there (the child is not run again)
    t0 = study.ask()
    cand0 = suggest(t0, space)
    key0 = candidate_key(space.to_config(cand0))
    t0.set_user_attr("key", key0)
    (tmp_path / "trials" / key0).mkdir(parents=True)
    done0 = tmp_path / "trials" / key0 / "rung0.json"
    done0.write_text(json.dumps({"val_si_sdr_db": 9.0, "val_pesq_wb": 1.5, "latency_ms": 2.0, "hop_ms": 16.0,
                                 "macs_per_s": 3e8, "train_s": 1.0}))
    mtime0 = done0.stat().st_mtime_ns
    assert s._train_candidate(t0, tmp_path / "trials" / key0, cand0, space.to_config(cand0), {}) == "done"

    t_start = time.monotonic()
    assert s.run_one({1: "hang"}) == "failed"
    waited = time.monotonic() - t_start
    hung = study.get_trials()[1]
    key1 = hung.user_attrs["key"]
    pids = json.loads((tmp_path / "trials" / key1 / "hang.pids").read_text())
    alive = [p for p in pids if not _gone(p)]
    for p in alive:                                           # (no process left behind by a failing test)
        os.kill(p, signal.SIGKILL)
    assert not alive, pids                                    # the trial process and the one it started
    assert 4 <= waited < 60, waited
    assert hung.state.name == "FAIL" and hung.user_attrs["error"].startswith("timeout: rung 0 gave no result "
                                                                             "within 4 s")
    assert hung.user_attrs["timed_out"] and hung.user_attrs["will_retry"]
    assert "retried once" in logs[-1], logs
    assert "no result after 4 s" in (tmp_path / "trials" / key1 / "trial.log").read_text()
    assert s.counted() == 1                                   # counted through its retry, not twice
    assert s.recover() == 1 and s.recover() == 0              # one retry, of the same candidate
    retry = study.get_trials()[-1]
    assert retry.state.name == "WAITING" and retry.user_attrs["retry_of"] == 1
    assert retry.system_attrs["fixed_params"] == hung.params

    (tmp_path / "trials" / key1 / "hang.pids").unlink()
    assert s.run_one({2: "hang"}) == "failed"                # the retry runs (and hangs as well)
    again = study.get_trials()[2]
    assert again.user_attrs["key"] == key1 and again.user_attrs["timed_out"]
    assert again.user_attrs["will_retry"] is False and "not retried" in logs[-1], logs
    assert all(_gone(p) for p in json.loads((tmp_path / "trials" / key1 / "hang.pids").read_text()))
    assert s.recover() == 0 and s.counted() == 2              # no third try; the search goes on
    first = study.get_trials()[0]
    assert first.state.name == "COMPLETE" and first.values == [9.0, 2.0, 0.3]    # finished work kept
    assert done0.stat().st_mtime_ns == mtime0


def test_the_default_trial_timeout_follows_the_training_budget():
    from hwkd.search.run import TRIAL_TIMEOUT_BASE_S, TRIAL_TIMEOUT_PER_AUDIO_S, Search, SearchConfig
    s = Search.__new__(Search)
    s.sc = SearchConfig(batch_size=4, segment_s=1.0)
    assert s.trial_timeout_s(40) == TRIAL_TIMEOUT_BASE_S + TRIAL_TIMEOUT_PER_AUDIO_S * 160     # 40 steps x 4 x 1 s
    s.sc = SearchConfig(batch_size=8, segment_s=2.0)
    assert s.trial_timeout_s(40) == TRIAL_TIMEOUT_BASE_S + TRIAL_TIMEOUT_PER_AUDIO_S * 640
    s.sc = SearchConfig(batch_size=4, segment_s=1.0, trial_timeout_s=90.0)
    assert s.trial_timeout_s(400) == 90.0                     # --trial-timeout wins


def test_nni_tuners_propose_into_the_optuna_study(tmp_path):
    import optuna

    from hwkd.search.controllers import NNIProposer, suggest
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(_space(tmp_path), teacher_hop=256)
    for name in ("nni-random", "nni-tpe", "nni-evolution"):
        prop = NNIProposer(name, space, seed=0, worker="w1")
        study = optuna.create_study(directions=["maximize", "minimize", "minimize"])
        seen, proposed = [], []
        for _ in range(12):
            prop.observe([t for t in study.trials if t.state.name in ("COMPLETE", "FAIL")])
            pid, params = prop.propose()
            study.enqueue_trial(params, user_attrs={"nni_id": pid, "nni_worker": "w1"})
            proposed.append(params)
            trial = study.ask()
            cand = suggest(trial, space)
            assert cand == params, name                       # the trial runs what NNI proposed
            space.to_config(cand)                              # and it is a valid model of the space
            score = cand["channels"] / 4 + cand["depth"]       # a synthetic score: bigger is better
            trial.set_user_attr("score", score)
            study.tell(trial, [score, 1.0, 1.0])
            seen.append(score)
        assert len(prop.seen) == 11, name                      # every finished trial was reported back
        if name == "nni-evolution":            # after the initial population of 8: one-key mutations of parents
            for i in range(8, len(proposed)):
                child = proposed[i]
                assert any(sum(child[k] != par[k] for k in child) <= 1 for par in proposed[:i]), child
    # results of other workers reach TPE through import_data
    tpe = NNIProposer("nni-tpe", space, seed=1, worker="w2")
    tpe.observe([t for t in study.trials])
    assert len(tpe.seen) == 12


def test_a_predicted_band_across_a_limit_is_flagged_near_it():
    from hwkd.search.run import near_limit
    assert near_limit(0.9, 1.2, [1.0])             # the band straddles the user's limit
    assert not near_limit(0.5, 0.8, [1.0, 16.0])   # wholly inside
    assert not near_limit(1.1, 1.3, [1.0])         # wholly outside: infeasible, not "near"
    assert near_limit(14.0, 17.0, [4.0, 16.0])     # the real-time limit (the hop)
    assert not near_limit(None, None, [1.0])       # measured: no band


def test_controllers_are_plug_ins_behind_one_ask_tell_interface(tmp_path):
    """Every registered controller gives the study a sampler; one registered from outside (a plug-in) is found
    by name and proposes through before_ask, NNI tuners included; an unknown name is one clear error."""
    import optuna

    from hwkd.search.controllers import CONTROLLERS, Controller, make_controller, register, suggest
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = load_space(_space(tmp_path), teacher_hop=256)
    assert {"optuna", "nsga2", "random", "nni-random", "nni-tpe", "nni-evolution"} <= set(CONTROLLERS)
    for name in CONTROLLERS:
        c = make_controller(name, space, 0)
        assert c.name == name and isinstance(c.sampler(0, 4), optuna.samplers.BaseSampler)
    fixed = {d.name: d.choices[-1] if d.rng is None else d.rng[1] for d in space.free}

    @register("test-fixed")
    class Fixed(Controller):                      # a plug-in: always proposes the same candidate
        def sampler(self, seed, n_startup):
            return optuna.samplers.RandomSampler(seed=seed)

        def before_ask(self, study, trials, worker):
            study.enqueue_trial(fixed)
    try:
        for name in ("test-fixed", "nni-random"):
            c = make_controller(name, space, 0)
            study = optuna.create_study(sampler=c.sampler(0, 4), directions=["maximize", "minimize"])
            for _ in range(3):
                c.before_ask(study, study.get_trials(deepcopy=False), "w1")
                trial = study.ask()
                cand = suggest(trial, space)
                if name == "test-fixed":
                    assert cand == fixed
                assert trial.user_attrs.get("nni_worker") == ("w1" if name == "nni-random" else None)
                study.tell(trial, [1.0, 1.0])
    finally:
        CONTROLLERS.pop("test-fixed")
    with pytest.raises(HwkdError, match="unknown controller 'nope'"):
        make_controller("nope", space, 0)


@pytest.mark.slow
def test_search_on_a_supernet_scores_inherited_weights(tmp_path, tiny_corpus):
    import torch

    from hwkd.models.checkpoint import load_model
    from hwkd.train.supernet import load_supernet, train_supernet
    from hwkd.train.trainer import TrainConfig
    space = load_space(_space(tmp_path))
    sn_dir = tmp_path / "supernet"
    train_supernet(space.configs(), sn_dir, TrainConfig(epochs=1, batch_size=2, segment_s=0.5, threads=1,
                                                        max_steps_per_epoch=1, val_pesq_clips=0),
                   scheme="none", data=tiny_corpus, progress=False)
    args = _search_args(tmp_path, tiny_corpus, "sn", 3, extra=("--supernet", sn_dir, "--val-clips", 2))
    args[args.index("--steps") + 1] = 0
    i = args.index("--val-pesq-clips")
    del args[i:i + 2]                         # the supernet default: PESQ on the clips SI-SDR is scored on
    r = run_cli(*args, env=_env(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "stopped (trials): 3 complete" in r.stdout, r.stdout
    sn, _ = load_supernet(sn_dir)
    rung0 = sorted(glob.glob(str(tmp_path / "runs" / "sn" / "trials" / "*" / "rung0.json")))
    assert len(rung0) == 3
    for f in rung0:
        rec = json.loads(Path(f).read_text())
        assert rec["train_data"] == "inherited from the supernet" and rec["steps"] == 0
        assert rec["val_clips"] == 2          # --val-clips: every candidate on the same first clips
        assert rec["val_pesq_clips"] == 2     # ... PESQ-WB too (on 5, gains read 0.04-0.14 high: supernet_pesq)
        model, ck = load_model(Path(f).parent / "rung0" / "best.pt")
        want = sn.extract(model.cfg)
        for (k, a), (_, b) in zip(model.state_dict().items(), want.state_dict().items(), strict=True):
            assert torch.equal(a, b), k
    assert json.loads((tmp_path / "runs" / "sn" / "run.json").read_text())["val_pesq_clips"] == 2   # as recorded
    # rung 0 scored in the search's process (no trial process, no export for a predicted target); a promoted
    # front member's fine-tune (rung 1) runs in a trial process
    assert not glob.glob(str(tmp_path / "runs" / "sn" / "trials" / "*" / "spec-rung0.json"))
    assert glob.glob(str(tmp_path / "runs" / "sn" / "trials" / "*" / "spec-rung1.json"))
    # ... at the supernet fine-tune's learning rate, not half the from-scratch peak (which undid the supernet's
    # cooled weights: results/supernet_finetune.json)
    from hwkd.models.checkpoint import read_checkpoint
    from hwkd.search.config import SUPERNET_DEFAULTS
    rung1 = glob.glob(str(tmp_path / "runs" / "sn" / "trials" / "*" / "rung1" / "last.pt"))
    assert rung1 and all(read_checkpoint(f)["train"]["config"]["lr"] == SUPERNET_DEFAULTS["finetune_lr"]
                         for f in rung1)
    assert not glob.glob(str(tmp_path / "runs" / "sn" / "trials" / "*" / "export" / "*.onnx"))
    # re-targeting: the same candidates and quality, latency predicted anew for rpi5 under a limit
    r = run_cli("-q", "search", "--like", tmp_path / "runs" / "sn", "--target", "rpi5", "--max-latency-ms", 0.05,
                "--name", str(tmp_path / "runs" / "sn5"), "--reports", tmp_path / "reports", env=_env(tmp_path))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "re-targeted 3 trial(s) of 3" in r.stdout and "stopped (trials): 3 complete" in r.stdout, r.stdout
    from hwkd.search.run import open_run
    from hwkd.store import collect
    a = collect(*open_run(str(tmp_path / "runs" / "sn")))[0].set_index("key")
    b = collect(*open_run(str(tmp_path / "runs" / "sn5")))[0].set_index("key")
    assert sorted(a.index) == sorted(b.index)
    assert (a["val_si_sdr_db"] == b.loc[a.index, "val_si_sdr_db"]).all()
    assert (a["latency_ms"] != b.loc[a.index, "latency_ms"]).all()
    assert b["latency_how"].str.contains("predicted").all() and not b["feasible"].any()   # 0.05 ms: none fits
    assert all(Path(c).is_file() and str(tmp_path / "runs" / "sn5") in c for c in b["checkpoint"])
    assert (tmp_path / "reports" / "sn5" / "index.html").is_file()
    # resumed, nothing is adopted twice; --like with --resume, or without --target, is refused
    r = run_cli("-q", "search", "--resume", tmp_path / "runs" / "sn5", env=_env(tmp_path))
    assert r.returncode == 0 and "re-targeted 0 trial(s) of 3" in r.stdout, r.stdout + r.stderr[-2000:]
    bad = run_cli("-q", "search", "--like", tmp_path / "runs" / "sn", "--resume", "x", env=_env(tmp_path))
    assert bad.returncode == 2 and "--like starts a new run" in bad.stderr
    bad = run_cli("-q", "search", "--like", tmp_path / "runs" / "sn", env=_env(tmp_path))
    assert bad.returncode == 2 and "needs --target" in bad.stderr
    bad = run_cli("-q", "search", "--like", tmp_path / "runs" / "sn", "--target", "rpi5", "--kd", "none",
                  env=_env(tmp_path))                     # a setting the source run fixes: refused, not ignored
    assert bad.returncode == 2 and "keeps the run's own settings" in bad.stderr and "--kd none" in bad.stderr
    # a space the supernet does not hold is refused before anything runs; --steps 0 needs a supernet
    wide = tmp_path / "wide.yaml"
    wide.write_text(TINY_SPACE.replace("channels: [8, 12]", "channels: [8, 16]"))
    bad = run_cli("-q", "search", "--target", "rpi4", "--space", wide, "--data", tiny_corpus, "--name",
                  str(tmp_path / "runs" / "bad"), "--supernet", sn_dir, "--steps", 0, env=_env(tmp_path))
    assert bad.returncode == 2 and "the supernet" in bad.stderr and "was not trained on" in bad.stderr \
        and "channels 16" in bad.stderr
    args = _search_args(tmp_path, tiny_corpus, "bad2", 1)
    args[args.index("--steps") + 1] = 0
    bad = run_cli(*args, env=_env(tmp_path))
    assert bad.returncode == 2 and "--steps 0" in bad.stderr


def test_a_search_records_its_teachers_sha256_and_refuses_another_file_on_resume(tmp_path, tiny_corpus):
    import torch

    from hwkd.models.teacher import embedded_teacher_path, teacher_sha256
    from hwkd.search.run import Search, SearchConfig
    teacher = tmp_path / "teacher.pt"
    shutil.copyfile(embedded_teacher_path(), teacher)
    sc = dict(target="rpi4", space=str(_space(tmp_path)), data=str(tiny_corpus), teacher=str(teacher),
              val_pesq_clips=0)
    run = tmp_path / "runs" / "t"
    s = Search(run, SearchConfig(**sc), progress=False)
    want = teacher_sha256(teacher)
    assert s.study.user_attrs["teacher_sha256"] == want
    assert json.loads((run / "run.json").read_text())["teacher_sha256"] == want
    Search(run, SearchConfig(**sc), progress=False)             # the same file: rejoins
    ck = torch.load(teacher, weights_only=False)                # a retrained teacher at the same path
    ck.setdefault("meta", {})["retrained"] = True
    torch.save(ck, teacher)
    with pytest.raises(HwkdError, match=r"distilled from a teacher file with SHA-256 .* restore that teacher file"):
        Search(run, SearchConfig(**sc), progress=False)
    Search(tmp_path / "runs" / "t2", SearchConfig(**sc), progress=False)       # a new run takes the new file


def test_response_kd_from_a_teacher_of_another_mask_form_is_refused_before_anything_is_written(tmp_path, tiny_corpus):
    from hwkd.models import create_model
    from hwkd.models.checkpoint import save_checkpoint
    from hwkd.search.run import Search, SearchConfig
    teacher = tmp_path / "beam.pt"
    save_checkpoint(teacher, create_model(dict(channels=8, layers=1, depth=1, heads=2, in_channels=4,
                                               mask_mode="filter-sum")))
    sc = SearchConfig(target="rpi4", space=str(_space(tmp_path)), data=str(tiny_corpus), teacher=str(teacher),
                      kd="response", val_pesq_clips=0)
    with pytest.raises(HwkdError, match="response KD compares masks of one form.*feature scheme"):
        Search(tmp_path / "runs" / "r", sc, progress=False)
    assert not (tmp_path / "runs" / "r").exists()


def test_a_trial_asked_by_a_worker_killed_before_it_named_itself_is_failed_after_the_grace(tmp_path, monkeypatch):
    """Optuna's stale check skips a RUNNING trial never stamped with a heartbeat; recover() fails such an
    orphan (no worker named) once it is older than STALE_AFTER_S, and leaves a younger one alone."""
    import optuna
    from optuna.trial import TrialState

    from hwkd.search import run
    from hwkd.search.run import Search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize", "minimize"])
    s = Search.__new__(Search)
    s.study, s.storage, s.controller, s.worker = study, storage, Controller(None, 0), "w"
    orphan = study.ask()                              # then killed: no heartbeat, no worker attr
    monkeypatch.setattr(run, "STALE_AFTER_S", 3600)
    s.recover()
    assert storage.get_trial(orphan._trial_id).state == TrialState.RUNNING
    monkeypatch.setattr(run, "STALE_AFTER_S", 1)
    time.sleep(1.5)
    s.recover()
    assert storage.get_trial(orphan._trial_id).state == TrialState.FAIL


def test_a_worker_names_its_trial_before_sampling_so_a_kill_there_is_recovered_at_once(tmp_path, monkeypatch):
    """The trial is named (worker, pid_domain) right after ask, before the sampler runs: a worker killed while
    sampling leaves a trial that recover() fails at once by its dead pid and that no longer counts against
    --trials (an unnamed one counted until the orphan grace ran out, and a resumed search stopped short)."""
    import socket

    import optuna
    from optuna.trial import TrialState

    from hwkd.search import controllers
    from hwkd.search.run import Search
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = optuna.storages.RDBStorage(f"sqlite:///{tmp_path / 's.db'}", heartbeat_interval=1, grace_period=3)
    study = optuna.create_study(storage=storage, study_name="s", directions=["maximize", "minimize", "minimize"])
    dead = subprocess.Popen(["true"])
    dead.wait()
    s = Search.__new__(Search)
    s.study, s.storage, s.controller, s.space = study, storage, Controller(None, 0), None
    s.worker = f"{socket.gethostname()}:{dead.pid}"

    def killed(trial, space):
        raise KeyboardInterrupt                       # stands for the SIGKILL while the sampler works

    monkeypatch.setattr(controllers, "suggest", killed)
    with pytest.raises(KeyboardInterrupt):
        s.run_one({}, limit=3)
    (t,) = study.get_trials()
    assert t.state == TrialState.RUNNING and t.user_attrs["worker"] == s.worker and "key" not in t.user_attrs
    assert s.counted() == 1                           # live until recovered ...
    s.recover()
    assert storage.get_trial(t._trial_id).state == TrialState.FAIL
    assert s.counted() == 0                           # ... and then not a finished trial
    assert len(study.get_trials()) == 1               # nothing to retry: it never had a candidate
    # killed inside ask (no name yet): counted while a live worker may still name it, not once it is old
    from hwkd.search import run
    study.ask()
    assert s.counted() == 1
    monkeypatch.setattr(run, "NAMED_WITHIN_S", 0.5)
    time.sleep(1.0)
    assert s.counted() == 0


def test_a_rung_from_trained_weights_uses_the_finetune_lr():
    # one rule for a promotion and for rung 0 on a supernet with --steps N (both call it in run_rung)
    from hwkd.search.trial import finetune_lr
    assert finetune_lr({"lr": 3e-3, "finetune_lr": 1e-4}) == 1e-4
    assert finetune_lr({"lr": 3e-3, "finetune_lr": None}) == 1.5e-3      # a run recorded before the field
    assert finetune_lr({"lr": 3e-3}) == 1.5e-3


def test_val_pesq_clips_follows_val_clips_unless_given(tmp_path):
    """--val-clips N alone: PESQ-WB on at most N clips (from scratch its 5 are cut to N, not refused); a
    --val-pesq-clips above --val-clips is refused, naming both."""
    env = _env(tmp_path)
    r = run_cli("search", "--target", "rpi4", "--from-scratch", "--val-clips", 3, "--data", tmp_path / "none", env=env)
    assert r.returncode != 0 and "dataset path not found" in r.stderr and "--val-pesq-clips" not in r.stderr, r.stderr
    r = run_cli("search", "--target", "rpi4", "--from-scratch", "--val-clips", 3, "--val-pesq-clips", 4, env=env)
    assert r.returncode != 0 and "--val-pesq-clips 4: more than the 3 val clips" in r.stderr, r.stderr
