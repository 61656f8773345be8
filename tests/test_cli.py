import os

import pytest

from conftest import run_cli


def test_help_lists_every_command_on_one_line():
    r = run_cli("--help")
    assert r.returncode == 0
    lines = r.stdout.splitlines()
    for cmd in ("search", "data", "metrics"):
        hits = [ln for ln in lines if ln.strip().startswith(cmd + " ")]
        assert len(hits) == 1, cmd
        nxt = lines[lines.index(hits[0]) + 1]
        assert not nxt.startswith("      "), f"help of {cmd} wraps onto a second line"
    sub = run_cli("data", "--help").stdout
    assert "synth" in sub and "check" in sub


def test_search_unknown_target_and_bad_yaml(tmp_path):
    r = run_cli("search", "--target", "pi5000")
    assert r.returncode == 2 and "unknown target 'pi5000'" in r.stderr and "rpi4" in r.stderr
    bad = tmp_path / "mine.yaml"
    bad.write_text("name: mine\ndevice: [unclosed\n")
    r = run_cli("search", "--target", bad)
    assert r.returncode == 2 and "malformed YAML" in r.stderr and str(bad) in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
def test_search_bad_space_and_unreachable_store(paired, tmp_path):
    env = {**os.environ, "HWKD_HOME": str(tmp_path / "home")}
    r = run_cli("search", "--target", "rpi4", "--data", paired, "--space", "nope", env=env)
    assert r.returncode == 2 and "search space nope not found" in r.stderr and "default" in r.stderr
    r = run_cli("search", "--target", "rpi4", "--data", paired, "--storage",
                "postgresql+psycopg://hwkd@127.0.0.1:9/none", "--name", "x", env=env)
    assert r.returncode == 2 and "cannot open the search store" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli("search", "--target", "rpi4", "--time-budget", "soon", env=env)
    assert r.returncode == 2 and "not a duration" in r.stderr
    r = run_cli("search", "--resume", "never-ran", env=env)
    assert r.returncode == 2 and "no search run at" in r.stderr


@pytest.mark.slow
def test_metrics_command_on_a_folder(paired, tmp_path):
    out = tmp_path / "m" / "noisy.csv"
    r = run_cli("-q", "metrics", paired, "--out", out, "--jobs", "1")
    assert r.returncode == 0, r.stderr
    assert "pesq_wb" in r.stdout and "status: " in r.stdout
    assert out.is_file() and out.with_suffix(".json").is_file()
    r = run_cli("metrics", paired, "--enhanced", tmp_path / "none")
    assert r.returncode == 2 and "enhanced folder not found" in r.stderr




@pytest.mark.parametrize("argv, flag", [
    (["search", "--target", "rpi4", "--trials", "0"], "--trials"),
    (["search", "--target", "rpi4", "--time-budget", "-5"], "--time-budget"),
    (["search", "--target", "rpi4", "--time-budget", "0m"], "--time-budget"),
    (["search", "--target", "rpi4", "--trial-timeout", "0"], "--trial-timeout"),
    (["search", "--target", "rpi4", "--trial-timeout", "-30s"], "--trial-timeout"),
    (["search", "--target", "rpi4", "--trial-timeout", "soon"], "--trial-timeout"),
    (["search", "--target", "rpi4", "--max-latency-ms", "0"], "--max-latency-ms"),
    (["search", "--target", "rpi4", "--max-latency-ms", "-1"], "--max-latency-ms"),
    (["search", "--target", "rpi4", "--max-latency-ms", "nan"], "--max-latency-ms"),
    (["search", "--target", "rpi4", "--threads", "0"], "--threads"),
    (["pick", "run", "--max-latency-ms", "-2"], "--max-latency-ms"),
    (["data", "synth", "--jobs", "-1"], "--jobs"),
    (["data", "synth", "--clip-s", "0"], "--clip-s"),
    (["compare", "--seeds", "0"], "--seeds"),
    (["metrics", "x", "--limit", "0"], "--limit"),
    (["train", "--model", "cpu-student", "--out", "r", "--threads", "0"], "--threads"),
])
def test_impossible_flag_values_are_refused_at_parse_time(argv, flag, capsys):
    """A count, size, limit or budget of 0 or below is one error line naming the flag, exit 2 (was: a traceback
    after work started, or an exit 0 having done nothing)."""
    from hwkd.cli import build_parser
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and f"argument {flag}" in err[-1] and "Traceback" not in "\n".join(err)


@pytest.mark.slow
def test_profile_zero_threads_is_one_line(tmp_path):
    r = run_cli("profile", "cpu-student-causal", "--target", "cpu", "--threads", "0", "--out", tmp_path / "p")
    assert r.returncode == 2 and "thread counts start at 1" in r.stderr and "Traceback" not in r.stderr


def test_a_flag_a_resumed_or_retargeted_run_fixes_is_refused_not_ignored():
    from argparse import Namespace

    import pytest

    from hwkd.cli.search import RUN_FIXED, SC, TARGET_FIXED, check_fixed
    from hwkd.errors import HwkdError
    from hwkd.search.config import SearchConfig
    sc = SearchConfig(steps=40, target="rpi4", kd="i2srf-tfckd")
    base = {**{f: None for f, _ in RUN_FIXED + TARGET_FIXED},
            "space": SC.space, "kd": SC.kd, "controller": SC.controller, "seed": SC.seed}    # nothing given
    both = RUN_FIXED + TARGET_FIXED
    check_fixed(Namespace(**base), sc, "r", "--resume", both)
    check_fixed(Namespace(**{**base, "steps": 40, "target": "rpi4"}), sc, "r", "--resume", both)   # its own values
    with pytest.raises(HwkdError, match=r"--resume r keeps .*--kd none \(the run has i2srf-tfckd\); --steps 99"):
        check_fixed(Namespace(**{**base, "steps": 99, "kd": "none"}), sc, "r", "--resume", both)
    with pytest.raises(HwkdError, match="--target rpi5"):
        check_fixed(Namespace(**{**base, "target": "rpi5"}), sc, "r", "--resume", both)
    check_fixed(Namespace(**{**base, "target": "rpi5"}), sc, "r", "--like", RUN_FIXED)     # --like: a new target
