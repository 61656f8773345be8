"""The SSH runner against a real OpenSSH server that this test starts on loopback (no mock)."""

import getpass
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from hwkd.errors import HwkdError
from hwkd.hw.measure import Protocol
from hwkd.hw.profile import profile
from hwkd.hw.remote import Device
from hwkd.hw.targets import load_target
from hwkd.models.registry import create_model

from conftest import run_cli
from servers import free_port, start_sshd, stop, with_env


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    srv = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield srv
    stop(srv["proc"])


def _target(tmp_path, sshd, **ssh_over) -> dict:
    ssh = {"host": "127.0.0.1", "user": getpass.getuser(), "port": sshd["port"], "key": sshd["key"],
           "known_hosts": sshd["known_hosts"], "python": sys.executable, **ssh_over}
    p = tmp_path / "dev.yaml"
    p.write_text(yaml.safe_dump({"name": "loopback-dev", "kind": "remote",
                                 "device": {"type": "cpu", "arch": "host", "cpu": "host"},
                                 "runtimes": ["onnxruntime", "openvino"], "threads": [1], "ssh": ssh}))
    return load_target(str(p))


@pytest.mark.slow
def test_profile_over_ssh(tmp_path, sshd):
    torch.manual_seed(0)
    net = create_model(dict(channels=8, layers=1, depth=2, heads=2, causal=True, time_attention="none"))
    res = profile(net, _target(tmp_path, sshd), tmp_path / "out", protocol=Protocol(warmup=3, runs=30, min_s=0.05),
                  progress=lambda *a: None)
    assert [m["runtime"] for m in res["latency"]] == ["onnxruntime", "openvino"]
    for m in res["latency"]:
        assert m["how"].startswith("measured on loopback-dev over SSH")
        assert m["runs"] >= 30 and 0 < m["p50_ms"] <= m["p99_ms"] and m["mode"] == "hop"
        assert m["fingerprint"]["cpu"]
    # the work folder on the device is removed afterwards
    assert not list(Path("/tmp").glob("hwkd-??????/spec.json"))


def test_unknown_host_key_is_refused(tmp_path, sshd):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    dev = Device(_target(tmp_path, sshd, known_hosts=str(empty)), retries=0)
    with pytest.raises(HwkdError, match="host key") as e:
        dev.check_runtime("onnxruntime")
    assert "loopback-dev" in str(e.value)


def test_unreachable_device(tmp_path, sshd):
    dev = Device(_target(tmp_path, sshd, port=free_port()), connect_timeout=2, retries=1)
    with pytest.raises(HwkdError, match="unreachable.*check that the device is on"):
        dev.check_runtime("onnxruntime")


def test_device_lacking_the_runtime(tmp_path, sshd):
    fake = tmp_path / "python-without-runtimes"
    fake.write_text("#!/bin/sh\nexec /usr/bin/env -i PYTHONNOUSERSITE=1 /usr/bin/python3 -S \"$@\"\n")
    fake.chmod(0o755)
    dev = Device(_target(tmp_path, sshd, python=str(fake)), retries=0)
    with pytest.raises(HwkdError, match="lacks onnxruntime.*pip install"):
        dev.check_runtime("onnxruntime")


def test_target_without_a_device(tmp_path):
    with pytest.raises(HwkdError, match="names no device"):
        Device(load_target("rpi4"))


@pytest.mark.slow
def test_calibrate_over_ssh_then_predict(tmp_path, sshd, small_grid):
    from hwkd.hw.predict import calibrate, load_predictor, save_calibration
    from hwkd.hw.profile import profile
    target = _target(tmp_path, sshd)
    calib = calibrate("onnxruntime", 1, device=Device(target), progress=None,
                      protocol=Protocol(warmup=3, runs=20, min_s=0.02), passes=2)
    assert calib["where"].startswith("loopback-dev over SSH")
    assert all(v > 0 for v in calib["table_ms"].values())
    save_calibration(calib, "loopback-dev")
    assert load_predictor("loopback-dev", "onnxruntime", 1) is not None
    # without a device, the same target is predicted from that calibration
    target["ssh"]["host"] = None
    net = create_model(dict(channels=12, layers=1, depth=2, heads=2, causal=True, time_attention="none"))
    res = profile(net, target, tmp_path / "p", runtimes=["onnxruntime"], threads=[1], progress=lambda *a: None)
    row = res["latency"][0]
    assert row["how"] == "predicted (calibrated)" and "over SSH" in row["provenance"] and row["p50_ms"] > 0


# -- what a target file may put on ssh's command line ------------------------------------------------------------
@pytest.mark.parametrize("field,value", [
    ("host", "-oProxyCommand=touch {pwned}"),
    ("host", "127.0.0.1 -oProxyCommand=touch {pwned}"),
    ("user", "-oProxyCommand=touch {pwned}"),
    ("user", "me@127.0.0.1"),
    ("port", True),
    ("port", "22"),
    ("port", 0),
])
@pytest.mark.slow
def test_bad_ssh_fields_are_refused_in_one_line_before_any_ssh_runs(tmp_path, sshd, field, value):
    pwned = tmp_path / "pwned"
    if isinstance(value, str):
        value = value.format(pwned=pwned)
    # ssh and scp first on PATH: they record any call, then run the real ones
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("ssh", "scp"):
        (bin_dir / tool).write_text(f"#!/bin/sh\ntouch {tmp_path / 'ssh-ran'}\nexec {shutil.which(tool)} \"$@\"\n")
        (bin_dir / tool).chmod(0o755)
    ssh = {"host": "127.0.0.1", "user": getpass.getuser(), "port": sshd["port"], "key": sshd["key"],
           "known_hosts": sshd["known_hosts"], "python": sys.executable, field: value}
    p = tmp_path / "dev.yaml"
    p.write_text(yaml.safe_dump({"name": "loopback-dev", "kind": "remote", "device": {"type": "cpu"},
                                 "runtimes": ["onnxruntime"], "threads": [1], "ssh": ssh}))
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "HWKD_HOME": str(tmp_path / "home")}
    r = run_cli("calibrate", "--target", p, env=env, timeout=120)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr
    assert f"ssh.{field}" in lines[0] and "targets/README.md" in lines[0] and str(p) in lines[0]
    # a target mapping handed to the runner directly (not read from a file) is checked too
    with pytest.raises(HwkdError, match=rf"ssh\.{field}"):
        Device({"name": "loopback-dev", "kind": "remote", "ssh": ssh})
    assert not (tmp_path / "ssh-ran").exists() and not pwned.exists()


def test_a_device_shell_that_prints_is_refused_clearly(tmp_path):
    """mktemp's output becomes a path in remote commands: anything but one folder path is refused."""
    # a device whose every session greets first (as a chatty ~/.bashrc does), then runs the command
    greet = tmp_path / "greet.sh"
    greet.write_text("#!/bin/sh\necho 'Welcome to the device'\nexec /bin/sh -c \"$SSH_ORIGINAL_COMMAND\"\n")
    greet.chmod(0o755)
    srv = start_sshd(tmp_path / "sshd", extra_config=f"ForceCommand {greet}\n")
    try:
        target = _target(tmp_path, srv)
        dev = Device(target, retries=0)
        assert dev.check_runtime("onnxruntime")                 # the version is the last line
        with pytest.raises(HwkdError, match=r"printed 'Welcome to the device\\n/tmp/hwkd-\w{6}', not one folder "
                                            r"path.*print nothing") as e:
            dev.measure("onnxruntime", "hop", 1, [tmp_path / "never-copied.onnx"], hop=256, in_channels=1,
                        protocol=Protocol(warmup=1, runs=1, min_s=0.0))
        made = Path(re.search(r"device\\n(/tmp/hwkd-\w{6})'", str(e.value))[1])
        assert not made.exists()                                # the folder mktemp made is not left behind
    finally:
        stop(srv["proc"])


# -- calibration over SSH in chunks ---------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_chunk_past_its_deadline_keeps_the_finished_chunks_and_stops_its_worker(tmp_path, sshd, small_grid):
    from hwkd.hw.predict import anchor_configs, block_specs, calibrate, load_predictor, partial_path, save_calibration
    n = len(block_specs()) + len(anchor_configs())
    chunk = n // 2 + 1                              # two chunks a pass, four in all
    calls = tmp_path / "calls"
    # the device's python: the first measuring worker runs, the next one hangs (in a child, as a worker's
    # helper would), so its chunk cannot finish in time
    hang = tmp_path / "python-hangs-second"
    hang.write_text(f"#!/bin/sh\nif [ \"$1\" = -m ]; then\n  echo run >> {calls}\n"
                    f"  [ \"$(wc -l < {calls})\" -ge 2 ] && sleep 600\nfi\nexec {sys.executable} \"$@\"\n")
    hang.chmod(0o755)
    partial = partial_path("loopback-dev", "onnxruntime", 1)
    proto = Protocol(warmup=3, runs=20, min_s=0.02)
    dev = Device(_target(tmp_path, sshd, python=str(hang)))
    with pytest.raises(HwkdError) as e:
        calibrate("onnxruntime", 1, device=dev, progress=None, protocol=proto, partial=partial, chunk=chunk,
                  chunk_timeout=30, passes=2)
    # the chunk and what was kept are named; its worker is gone now, before the device's own deadline
    # (REMOTE_GRACE_S after the local one) could have stopped it
    assert "calibration chunk 2/4 (pass 1/2" in str(e.value) and f"1 of 4 chunks are done and kept in {partial}" \
        in str(e.value) and "rerun" in str(e.value)
    assert calls.read_text().count("run") == 2
    deadline = time.monotonic() + 3
    while with_env(sshd["marker"]) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert with_env(sshd["marker"]) == [], "the worker kept running on the device"
    state = json.loads(partial.read_text())
    first = state["passes"][0]
    assert all(v > 0 for v in first[:chunk]) and all(v is None for v in first[chunk:])
    assert all(v is None for v in state["passes"][1])
    # a rerun resumes: only the three chunks left are measured, and the table is complete
    dev = Device(_target(tmp_path, sshd, python=sys.executable))
    notes = []
    calib = calibrate("onnxruntime", 1, device=dev, progress=notes.append, protocol=proto, partial=partial,
                      chunk=chunk, chunk_timeout=120, passes=2)
    assert any("resuming, 1 of 4 chunks kept" in m for m in notes), notes
    assert sum("done" in m for m in notes) == 3
    assert calib["table_ms"][next(iter(calib["table_ms"]))] <= first[0]      # the smaller of the two passes
    assert len(calib["table_ms"]) == len(block_specs()) and all(v > 0 for v in calib["table_ms"].values())
    save_calibration(calib, "loopback-dev")
    assert not partial.exists() and load_predictor("loopback-dev", "onnxruntime", 1) is not None


def test_the_files_shipped_to_a_device_measure_on_their_own(tmp_path):
    """The worker package copied to a device (hwkd.hw.remote.WORKER_FILES) imports and measures without the rest
    of hwkd: a module the latency protocol starts to import at module level must be shipped too."""
    import subprocess

    import onnx
    from onnx import TensorProto, helper

    from hwkd.hw.remote import WORKER_FILES
    for rel, src in WORKER_FILES.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(src.read_text() if src else "")
    x = helper.make_tensor_value_info("features", TensorProto.FLOAT, [1, 2, "frames", 257])
    y = helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 2, "frames", 257])
    g = helper.make_graph([helper.make_node("Identity", ["features"], ["mask"])], "g", [x], [y])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "m.onnx"))
    code = ("import sys, hwkd.hw.measure as m; assert m.__file__.startswith(sys.argv[1]), m.__file__; "
            "r = m.measure('onnxruntime', 'offline', 1, onnx=__import__('pathlib').Path(sys.argv[2]), "
            "protocol=m.Protocol(warmup=1, runs=3, min_s=0.0)); print(r.p50_ms)")
    p = subprocess.run([sys.executable, "-c", code, str(tmp_path), str(tmp_path / "m.onnx")], cwd=tmp_path,
                       env={"PYTHONPATH": str(tmp_path), "PATH": os.environ.get("PATH", "")},
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    assert float(p.stdout.strip().splitlines()[-1]) > 0
