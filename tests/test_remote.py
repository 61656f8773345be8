"""The SSH runner against a real OpenSSH server that this test starts on loopback (no mock)."""

import getpass
import os
import shutil
import socket
import subprocess
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
from hwkd.models.registry import create_model
from hwkd.targets import load_target

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    assert Path(SSHD).exists(), "sshd is missing: ./install.sh installs openssh-server for these tests"
    d = tmp_path_factory.mktemp("sshd")
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)         # sshd's privilege-separation directory
    port = _free_port()
    cfg = d / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
                   f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
                   "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
                   f"StrictModes no\nUsePAM no\nPidFile {d / 'sshd.pid'}\nSubsystem sftp internal-sftp\n")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stderr=subprocess.PIPE)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    else:
        proc.kill()
        pytest.fail(f"sshd did not start: {proc.stderr.read().decode()[-500:]}")
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    yield {"port": port, "key": str(d / "client_key"), "known_hosts": str(d / "known_hosts"), "dir": d}
    proc.terminate()
    proc.wait(timeout=10)


def _target(tmp_path, sshd, **ssh_over) -> dict:
    ssh = {"host": "127.0.0.1", "user": getpass.getuser(), "port": sshd["port"], "key": sshd["key"],
           "known_hosts": sshd["known_hosts"], "python": sys.executable, **ssh_over}
    p = tmp_path / "dev.yaml"
    p.write_text(yaml.safe_dump({"name": "loopback-dev", "kind": "remote",
                                 "device": {"type": "cpu", "arch": "host", "cpu": "host"},
                                 "runtimes": ["onnxruntime", "openvino"], "threads": [1], "ssh": ssh}))
    return load_target(str(p))


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
    dev = Device(_target(tmp_path, sshd, port=_free_port()), connect_timeout=2, retries=1)
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


def test_calibrate_over_ssh_then_predict(tmp_path, sshd, small_grid):
    from hwkd.hw.predict import calibrate, load_predictor, save_calibration
    from hwkd.hw.profile import profile
    target = _target(tmp_path, sshd)
    calib = calibrate("onnxruntime", 1, device=Device(target), progress=None,
                      protocol=Protocol(warmup=3, runs=20, min_s=0.02))
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
