"""Bad inputs a new user gives, each through the real CLI (`hwkd.cli.main`, as `python -m hwkd` runs it): a
non-zero exit, exactly one line on stderr naming the thing (and the fix), no traceback, and no file of the case's
folder created, changed or removed (pre-existing outputs included: out.wav, adir/keep.txt, run/keep.txt).

The cases run in one child process (imports paid once; each case's stderr captured on its own, a per-case alarm
turns a hang into a failure, an address-space limit turns a runaway allocation into one); three of them also run
as separate `python -m hwkd` processes, so the in-process runs are checked against the real thing.
"""

import json
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import tone, write

DRIVER = r'''
import contextlib, hashlib, io, json, resource, signal, sys, traceback
from pathlib import Path
resource.setrlimit(resource.RLIMIT_AS, (6 << 30, 6 << 30))   # a runaway allocation fails fast, not the machine

class Proxy:                        # logging binds sys.stderr once: give it an object whose target moves per case
    target = io.StringIO()
    def write(self, s): return self.target.write(s)
    def flush(self): pass
    def isatty(self): return False
    def __getattr__(self, name): return getattr(self.target, name)

def hung(*_):
    raise TimeoutError("the case ran past 90 s (a hang)")

def tree(root):
    return {str(p.relative_to(root)): hashlib.sha1(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*"))
            if p.is_file()}

sys.stderr = proxy = Proxy()
signal.signal(signal.SIGALRM, hung)
from hwkd.cli import main
cases, root = json.loads(sys.argv[1]), Path(sys.argv[2])
rows = {}
for cid, argv in cases.items():
    before = tree(root)
    proxy.target = io.StringIO()
    signal.alarm(90)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            rc = main(argv)
    except SystemExit as e:
        rc = e.code if isinstance(e.code, int) else 1
    except BaseException:
        proxy.target.write(traceback.format_exc())
        rc = 1
    finally:
        signal.alarm(0)
    after = tree(root)
    rows[cid] = {"rc": rc, "stderr": proxy.target.getvalue(),
                 "changed": sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))}
sys.__stdout__.write(json.dumps(rows))
'''


def _wav_header(rate: int, n: int) -> bytes:
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, rate, 2 * rate, 2, 16)          # PCM16 mono
    return b"RIFF" + struct.pack("<I", 36 + 2 * n) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", 2 * n)


def _build(d: Path) -> None:
    """Every bad input of the table, plus the good files around them, in one folder."""
    from hwkd.models import create_model
    from hwkd.models.checkpoint import FORMAT, save_checkpoint
    torch.manual_seed(0)
    save_checkpoint(d / "m.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2)))
    causal = create_model(dict(channels=8, layers=1, depth=1, heads=2, causal=True, time_attention="none"))
    save_checkpoint(d / "c.pt", causal)
    cfg = causal.cfg.to_dict()
    torch.save({"format": FORMAT, "version": 1, "model": {"family": "dpdcrn", "config": {**cfg, "hop": 0}},
                "state_dict": causal.state_dict()}, d / "badcfg.pt")
    torch.save({"format": FORMAT, "version": 1, "model": {"family": "dpdcrn", "config": {**cfg, "channels": 12}},
                "state_dict": causal.state_dict()}, d / "badweights.pt")
    torch.save({"format": FORMAT, "version": 1}, d / "nomodel.pt")
    torch.save({"a": torch.zeros(2)}, d / "foreign.pt")
    (d / "garbage.pt").write_bytes(b"not a checkpoint")
    write(d / "ok.wav", tone(16000))
    write(d / "out.wav", tone(8000, seed=5))                       # a pre-existing output: must survive
    write(d / "stereo.wav", tone(16000, ch=2))
    (d / "rate1.wav").write_bytes(_wav_header(1, 2_000_000) + bytes(4_000_000))   # 4 MB "at 1 Hz"
    (d / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    (d / "text.wav").write_text("hello\n")
    (d / "empty.wav").write_bytes(_wav_header(16000, 0))
    x = (0.05 * np.random.default_rng(0).standard_normal(20 * 16000)).astype(np.float32)
    x[15 * 16000] = np.nan                                         # in a later block: the output is half written
    sf.write(str(d / "nan.wav"), x, 16000, subtype="FLOAT")
    for i in range(2):
        write(d / "P" / "noisy" / f"u{i}.wav", tone(16000, seed=i))
        write(d / "P" / "clean" / f"u{i}.wav", tone(16000, seed=10 + i))
    (d / "afile").write_text("a file, not a folder\n")
    (d / "adir").mkdir()
    (d / "adir" / "keep.txt").write_text("kept\n")
    (d / "run").mkdir()
    (d / "run" / "keep.txt").write_text("kept\n")
    save_checkpoint(d / "foa.pt", create_model(dict(channels=8, layers=1, depth=1, heads=2, in_channels=4)))
    for name, text in (("run_empty", ""), ("run_malformed", '{"storage": "sqlite:///study.db", '),
                       ("run_list", "[1, 2]"), ("run_nostore", '{"name": "x"}'),
                       ("run_emptydb", '{"storage": "sqlite:///study.db", "name": "run_emptydb"}'),
                       ("run_nodb", '{"storage": "sqlite:///study.db", "name": "run_nodb"}')):
        (d / name).mkdir()
        (d / name / "run.json").write_text(text)
    (d / "run_emptydb" / "study.db").write_bytes(b"")                # opening it must not write tables into it
    (d / "sn_bad").mkdir()
    (d / "sn_bad" / "supernet.json").write_text('{"max": {\n')
    (d / "sn_bad" / "best.pt").write_text("x")
    dev = "device: {type: cpu, arch: aarch64, cpu: X, cores: 4, freq_ghz: 1.5, simd_bits: 128}\n"
    targets = {
        "simd16": "name: t\nkind: remote\n" + dev.replace("simd_bits: 128", "simd_bits: 16"),
        "threads_true": "name: t\ndevice: {type: cpu}\nthreads: [true]\n",
        "cores_true": "name: t\nkind: remote\n" + dev.replace("cores: 4", "cores: true"),
        "freq0": "name: t\nkind: remote\n" + dev.replace("freq_ghz: 1.5", "freq_ghz: 0"),
        "port_true": "name: t\nkind: remote\n" + dev + "ssh: {port: true}\n",
        "user_list": "name: t\nkind: remote\n" + dev + "ssh: {host: pi.local, user: [pi]}\n",
        "runtime_map": "name: t\ndevice: {type: cpu}\nruntimes: [{a: 1}]\n",
        "t_malformed": "name: t\ndevice: [unclosed\n",
        "t_list": "- a\n- b\n",
    }
    models = {"hop0": "channels: 16\nhop: 0\n", "inch0": "channels: 16\nin_channels: 0\n",
              "heads_neg": "channels: 16\nheads: -1\n", "depth40": "channels: 16\ndepth: 40\n",
              "chan_true": "channels: true\n", "causal_int": "channels: 16\ncausal: 1\ntime_attention: none\n",
              "gru0": "channels: 16\ngru_hidden: 0\n", "chan6400": "channels: 6400\n",
              "unknown_field": "channels: 16\nwidth: 3\n", "m_malformed": "channels: [16\n"}
    spaces = {"wide": "params:\n  channels: [8, 16]\n  gru_hidden: {low: 1, high: 1000000000000}\n",
              "nested": "params:\n  channels: [[8, 16]]\n", "s_hop0": "params:\n  channels: [8, 16]\n  hop: 0\n",
              "heads3": "params:\n  channels: [8, 16]\n  heads: [3]\n", "s_malformed": "params: {channels: [8\n"}
    for name, text in {**targets, **models, **spaces}.items():
        (d / f"{name}.yaml").write_text(text)


def _cases(d: Path) -> dict:
    """id -> (argv, what stderr must say)."""
    def p(name):
        return str(d / name)
    train = ["train", "--model", "cpu-student", "--out", p("run")]
    search = ["search", "--target", "rpi4", "--data", p("P")]
    enhance = ["enhance", p("m.pt")]
    cases = {
        # refused at parse time (fixed before: README "bad inputs"): one line naming the flag
        "search --trials 0": (["search", "--target", "rpi4", "--trials", "0"], "argument --trials"),
        "search --time-budget -5": (["search", "--target", "rpi4", "--time-budget", "-5"], "argument --time-budget"),
        "search --max-latency-ms 0": (["search", "--target", "rpi4", "--max-latency-ms", "0"], "--max-latency-ms"),
        "search --max-latency-ms -1": (["search", "--target", "rpi4", "--max-latency-ms", "-1"], "--max-latency-ms"),
        "search --promote-share 0": (["search", "--target", "rpi4", "--promote-share", "0"], "--promote-share 0"),
        "search --finetune-lr 0": (["search", "--target", "rpi4", "--finetune-lr", "0"], "--finetune-lr 0"),
        "search --val-pesq-clips > --val-clips": (["search", "--target", "rpi4", "--val-pesq-clips", "30"],
                                                  "--val-pesq-clips 30: more than the 25 val clips"),
        "data synth --jobs -1": (["data", "synth", "--jobs", "-1"], "argument --jobs"),
        "data synth --clip-s 0": (["data", "synth", "--clip-s", "0"], "argument --clip-s"),
        "train --hop 0": (train + ["--hop", "0"], "argument --hop"),
        "train --in-channels 0": (train + ["--in-channels", "0"], "argument --in-channels"),
        "metrics --channel -1": (["metrics", p("P"), "--channel", "-1"], "argument --channel"),
        "data check --channels 0": (["data", "check", p("P"), "--channels", "0"], "argument --channels"),
        "enhance without its arguments": (["enhance", p("m.pt")], "required: input, output"),
        # impossible budgets
        "profile --threads 0": (["profile", "cpu-student-causal", "--target", "cpu", "--threads", "0"],
                                "thread counts start at 1"),
        "search --segment-s 0": (search + ["--segment-s", "0"], "--segment-s 0"),
        "search --from-scratch --supernet": (search + ["--from-scratch", "--supernet", p("sn_bad")], "contradict"),
        "search --resume --from-scratch": (["search", "--resume", p("run_list"), "--from-scratch"],
                                           "--from-scratch is for a new search"),
        "search --batch-size 0": (search + ["--batch-size", "0"], "--batch-size 0"),
        "train --batch-size 0 (no corpus built first)": (train + ["--batch-size", "0"], "--batch-size 0"),
        "train --segment-s 0": (train + ["--segment-s", "0"], "--segment-s 0"),
        "train --epochs 0": (train + ["--epochs", "0"], "--epochs 0"),
        "train --segment-s 0.001 (no STFT frame)": (train + ["--segment-s", "0.001"], "at least 0.1 s"),
        "train --device bogus": (train + ["--device", "bogus"], "--device bogus"),
        "supernet extract from a damaged supernet.json": (["supernet", "extract", p("sn_bad"), "--model",
                                                           "cpu-student-causal", "--out", p("x.pt")],
                                                          "supernet.json is damaged"),
        # outputs
        "enhance to an existing folder": (enhance + [p("ok.wav"), p("adir")], "is a folder"),
        "enhance under a file": (enhance + [p("ok.wav"), p("afile/o.wav")], "cannot write"),
        "enhance onto its input": (enhance + [p("ok.wav"), p("ok.wav")], "is the input file"),
        "evaluate --save a file": (["evaluate", p("m.pt"), "--data", p("P"), "--save", p("afile")], "--save"),
        "evaluate --save the dataset's folder": (["evaluate", p("m.pt"), "--data", p("P"), "--save", p("P/noisy")],
                                                 "holds the dataset's own files"),
        "evaluate --out a folder": (["evaluate", p("m.pt"), "--data", p("P"), "--out", p("adir")], "is a folder"),
        "metrics --out a folder": (["metrics", p("P"), "--out", p("adir")], "is a folder"),
        "metrics --out under a file": (["metrics", p("P"), "--out", p("afile/x.csv")], "cannot write"),
        "data synth --out a file": (["data", "synth", "--out", p("afile")], "is a file, not a folder"),
        "train --out a file": (["train", "--model", "cpu-student", "--out", p("afile"), "--data", p("P")],
                               "is a file, not a folder"),
        # datasets
        "evaluate --split test of a plain folder": (["evaluate", p("m.pt"), "--data", p("P"), "--split", "test"],
                                                    "has no splits"),
        "evaluate a missing dataset": (["evaluate", p("m.pt"), "--data", p("nodata")], "dataset path not found"),
        "evaluate --data a file": (["evaluate", p("m.pt"), "--data", p("afile")], "is a file, not a folder"),
        "metrics --channel 3 of mono files": (["metrics", p("P"), "--channel", "3"], "--channel 3"),
        "metrics --split of a plain folder": (["metrics", p("P"), "--split", "nope"], "has no splits"),
        "data check a missing path": (["data", "check", p("nodata")], "not found"),
        # audio
        "WAV whose header says 1 Hz": (enhance + [p("rate1.wav"), p("out.wav")], "header says 1 Hz"),
        "corrupt WAV": (enhance + [p("corrupt.wav"), p("out.wav")], "unreadable audio file"),
        "text file named .wav": (enhance + [p("text.wav"), p("out.wav")], "unreadable audio file"),
        "NaN in a later block": (enhance + [p("nan.wav"), p("out.wav")], "contains NaN"),
        "empty WAV": (enhance + [p("empty.wav"), p("out.wav")], "empty audio file"),
        "stereo into a mono model": (enhance + [p("stereo.wav"), p("out.wav")], "has 2 channel(s)"),
        "missing input": (enhance + [p("missing.wav"), p("out.wav")], "audio file not found"),
        "--streaming a non-causal model": (enhance + [p("ok.wav"), p("out.wav"), "--streaming"], "non-causal"),
        # checkpoints
        "missing checkpoint": (["enhance", p("missing.pt"), p("ok.wav"), p("out.wav")], "checkpoint not found"),
        "foreign .pt": (["enhance", p("foreign.pt"), p("ok.wav"), p("out.wav")], "not an hwkd checkpoint"),
        "garbage .pt": (["enhance", p("garbage.pt"), p("ok.wav"), p("out.wav")], "cannot read checkpoint"),
        "checkpoint with hop 0": (["enhance", p("badcfg.pt"), p("ok.wav"), p("out.wav")], "invalid model config"),
        "checkpoint whose weights misfit": (["enhance", p("badweights.pt"), p("ok.wav"), p("out.wav")],
                                            "weights do not fit"),
        "checkpoint without a model": (["enhance", p("nomodel.pt"), p("ok.wav"), p("out.wav")],
                                       "without a model config"),
        "distill from a missing teacher": (["distill", "--student", "cpu-student", "--teacher", p("missing.pt"),
                                            "--out", p("run")], "checkpoint not found"),
        # targets
        "unknown target": (["calibrate", "--target", "pi5000"], "unknown target 'pi5000'"),
    }
    for name, what in (("simd16", "'device.simd_bits'"), ("threads_true", "'threads'"),
                       ("cores_true", "'device.cores'"), ("freq0", "'device.freq_ghz'"), ("port_true", "'ssh.port'"),
                       ("user_list", "'ssh.user'"),
                       ("runtime_map", "unknown runtime"), ("t_malformed", "malformed YAML"),
                       ("t_list", "must hold a YAML mapping")):
        cases[f"target {name}"] = (["calibrate", "--target", p(f"{name}.yaml")], what)
    # model configs
    for name, what in (("hop0", "hop must be from 1 to 511"), ("inch0", "in_channels must be from 1"),
                       ("heads_neg", "heads must be from 0"), ("depth40", "depth must be from 1 to 12"),
                       ("chan_true", "channels must be a whole number"), ("causal_int", "causal must be true or false"),
                       ("gru0", "gru_hidden must be from 1"), ("chan6400", "channels must be from 4 to 1024"),
                       ("unknown_field", "unknown DPDCRN config field"), ("m_malformed", "malformed YAML")):
        cases[f"model {name}"] = (["train", "--model", p(f"{name}.yaml"), "--out", p("run")], what)
    cases["unknown preset"] = (["train", "--model", "cpu-studnet", "--out", p("run")], "unknown model")
    # search spaces
    for name, what in (("wide", "1,000,000,000,000 values"), ("nested", "has the wrong type"),
                       ("s_hop0", "hop must be from 1"), ("heads3", "is not a valid DPDCRN"),
                       ("s_malformed", "is not valid YAML"), ("nowhere", "not found")):
        cases[f"space {name}"] = (search + ["--space", p(f"{name}.yaml")], what)
    cases["space a folder"] = (search + ["--space", p("adir")], "is a folder, not a YAML file")
    cases["pick from a missing run"] = (["pick", "nosuchrun", "--max-latency-ms", "5"], "no search run")
    # damaged search runs (report, pick, resume, re-target)
    for name in ("run_empty", "run_malformed", "run_list", "run_nostore"):
        cases[f"report {name}"] = (["report", p(name)], "run.json is damaged")
    cases["pick run_malformed"] = (["pick", p("run_malformed"), "--max-latency-ms", "5"], "run.json is damaged")
    cases["search --resume run_list"] = (["search", "--resume", p("run_list")], "run.json is damaged")
    cases["search --like run_nostore"] = (["search", "--like", p("run_nostore"), "--target", "rpi4"],
                                          "run.json is damaged")
    cases["report of an empty study.db"] = (["report", p("run_emptydb")], "is an empty file")
    cases["report --storage a server for a SQLite run"] = (
        ["report", p("run_nodb"), "--storage", "postgresql+psycopg://u@localhost/db"], "its own SQLite file")
    cases["report --reports a file"] = (["report", p("run_nodb"), "--reports", p("afile")], "is a file, not a folder")
    cases["pick --out a file"] = (["pick", p("run_nodb"), "--max-latency-ms", "5", "--out", p("afile")],
                                  "is a file, not a folder")
    # compare: refused before its run folder is made
    compare = ["compare", "--kd", "response", "--students", "cpu-student", "--data", p("P")]
    cases["compare --out a file"] = (compare + ["--out", p("afile")], "is a file, not a folder")
    cases["compare --epochs 0"] = (compare + ["--epochs", "0", "--out", p("cmp")], "--epochs 0")
    cases["compare --segment-s 0"] = (compare + ["--segment-s", "0", "--out", p("cmp")], "--segment-s 0")
    cases["compare --data missing"] = (["compare", "--kd", "response", "--students", "cpu-student", "--data",
                                        p("nodata"), "--out", p("cmp")], "dataset path not found")
    cases["compare an Ambisonics teacher for a mono student"] = (compare + ["--teacher", p("foa.pt"), "--out",
                                                                             p("cmp")], "must share input")
    cases["compare --lam -1"] = (compare + ["--lam", "-1", "--out", p("cmp")], "argument --lam")
    cases["compare --device gpu0"] = (compare + ["--device", "gpu0", "--out", p("cmp")], "not a device torch knows")
    cases["compare --kd-ratio 0"] = (compare + ["--kd-ratio", "0", "--out", p("cmp")], "needs positive ratios")
    cases["distill --lam nan"] = (["distill", "--student", "cpu-student", "--lam", "nan", "--out", p("run")],
                                  "argument --lam")
    # bench: refused before anything is measured
    bench = ["bench", "--models", p("c.pt"), "--targets", "cpu"]
    cases["bench --runtimes bogus"] = (bench + ["--runtimes", "bogus", "--out", p("b.csv")], "unknown 'bogus'")
    cases["bench --modes hop of a non-causal model"] = (["bench", "--models", p("m.pt"), "--targets", "cpu",
                                                         "--modes", "hop", "--out", p("b.csv")], "not causal")
    cases["bench --out a folder"] = (bench + ["--out", p("adir")], "is a folder")
    return cases


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    _build(d)
    cases = _cases(d)
    env = {**os.environ, "HWKD_HOME": str(tmp_path_factory.mktemp("home"))}
    r = subprocess.run([sys.executable, "-c", DRIVER, json.dumps({k: v[0] for k, v in cases.items()}), str(d)],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return d, cases, json.loads(r.stdout), env


CASE_IDS = list(_cases(Path("/x")))


def test_table_size():
    assert len(CASE_IDS) == 108, len(CASE_IDS)       # the number quoted in the README


@pytest.mark.parametrize("case", CASE_IDS)
def test_bad_input_is_one_line(table, case):
    d, cases, rows, _ = table
    row, (argv, what) = rows[case], cases[case]
    lines = row["stderr"].strip().splitlines()
    assert row["rc"] not in (0, None), f"exit 0 for {argv}"
    assert "Traceback" not in row["stderr"], row["stderr"][-3000:]
    assert len(lines) == 1, row["stderr"]
    assert lines[0].startswith("hwkd") and "error:" in lines[0], lines[0]
    assert what in lines[0], lines[0]
    assert row["changed"] == [], f"files created, changed or removed: {row['changed']}"


@pytest.mark.slow
@pytest.mark.parametrize("case", ["WAV whose header says 1 Hz", "search --trials 0", "target simd16"])
def test_the_same_in_a_real_process(table, case):
    """`python -m hwkd` as a user runs it: the exit code, the one line and the files match the in-process run."""
    d, cases, rows, env = table
    r = subprocess.run([sys.executable, "-m", "hwkd", *cases[case][0]], capture_output=True, text=True, env=env,
                       timeout=300)
    assert r.returncode == rows[case]["rc"] == 2
    assert r.stderr == rows[case]["stderr"] and len(r.stderr.strip().splitlines()) == 1
    assert (d / "out.wav").is_file() and sf.info(str(d / "out.wav")).frames == 8000
