"""Measure on a real device over SSH: copy the exported model and a small measuring worker, run the same
protocol there, bring the numbers back.

The device needs `python3` with numpy and onnxruntime and/or openvino (no torch, no hwkd install): the
worker is hwkd's own `hw/measure.py` with the two stdlib-only modules it imports, copied into a temporary
folder on the device. OpenSSH's `ssh`/`scp` do the transport with BatchMode (keys only, never a prompt),
strict host-key checking against the target's known_hosts file, a connect timeout, and retries on
connection failures (exit 255). Every failure ends in one HwkdError naming the device and the fix.

Host and user are checked (`hwkd.hw.targets.check_ssh`) and follow `--` on ssh's and scp's command lines, so a
target file cannot smuggle an ssh option in. The worker runs on the device under GNU `timeout` (its own
process group, a deadline a little past the local one, in case the connection is lost); when the local
deadline passes first, the worker's process group is killed over a new connection before the work folder is
removed, so nothing keeps measuring on the device after hwkd gave up.
"""

from __future__ import annotations

import ipaddress
import json
import math
import re
import shlex
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from hwkd.errors import HwkdError
from hwkd.hw.measure import Measurement, Protocol

HWKD_DIR = Path(__file__).resolve().parents[1]
# what a device needs to measure (no torch there): the latency protocol and what it imports at module level
# (tests/test_remote.py imports this set alone, without the rest of hwkd)
WORKER_FILES = {"hwkd/__init__.py": HWKD_DIR / "__init__.py", "hwkd/errors.py": HWKD_DIR / "errors.py",
                "hwkd/sysinfo.py": HWKD_DIR / "sysinfo.py", "hwkd/hw/__init__.py": HWKD_DIR / "hw" / "__init__.py",
                "hwkd/hw/runtimes.py": HWKD_DIR / "hw" / "runtimes.py", "hwkd/hw/gpu.py": HWKD_DIR / "hw" / "gpu.py",
                "hwkd/hw/measure.py": HWKD_DIR / "hw" / "measure.py"}
RUNTIME_MODULES = {"onnxruntime": "onnxruntime", "openvino": "openvino"}
WORKDIR = re.compile(r"/tmp/hwkd-[A-Za-z0-9]{6}")      # what `mktemp -d /tmp/hwkd-XXXXXX` prints
REMOTE_GRACE_S = 30                                    # the device's own deadline: the local one + this


class DeviceTimeout(HwkdError):
    """A command on the device ran past its deadline (its worker was stopped)."""


class Device:
    def __init__(self, target: dict, connect_timeout: float = 10, retries: int = 2, command_timeout: float = 900):
        from hwkd.hw.targets import check_ssh
        ssh = target.get("ssh") or {}
        where = target.get("_path", f"target {target['name']}")
        try:
            check_ssh(ssh)
        except ValueError as e:
            raise HwkdError(f"{where}: {e.args[0]} {e.args[1]}", "see targets/README.md for the schema") from None
        if not ssh.get("host"):
            raise HwkdError(f"target {target['name']} names no device (ssh.host is empty)",
                            f"set ssh.host in {target.get('_path', 'the target file')}, or use a local target")
        if not shutil.which("ssh") or not shutil.which("scp"):
            raise HwkdError("the OpenSSH client (ssh, scp) is not installed", "apt-get install openssh-client")
        self.name = target["name"]
        self.host, self.user = ssh["host"], ssh.get("user")
        self.port = ssh.get("port", 22)
        self.python = ssh.get("python", "python3")
        self.key = ssh.get("key") and str(Path(ssh["key"]).expanduser())
        self.known_hosts = str(Path(ssh.get("known_hosts", "~/.ssh/known_hosts")).expanduser())
        self.connect_timeout, self.retries, self.command_timeout = connect_timeout, retries, command_timeout
        self.where = f"{self.user + '@' if self.user else ''}{self.host}:{self.port}"
        self._runtimes: dict[str, str] = {}              # runtime -> version, checked once per Device

    def _opts(self) -> list[str]:
        o = ["-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={self.known_hosts}",
             "-o", f"ConnectTimeout={int(self.connect_timeout)}", "-o", "LogLevel=ERROR"]
        if self.key:
            o += ["-i", self.key, "-o", "IdentitiesOnly=yes"]
        return o

    def _dest(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def _scp_dest(self, path: str) -> str:
        """scp's remote operand: [user@]host:path, an IPv6 address in brackets."""
        host = self.host
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass
        return f"{self.user + '@' if self.user else ''}{host}:{path}"

    def _run(self, argv: list[str], what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        timeout = self.command_timeout if timeout is None else timeout
        last = None
        for attempt in range(self.retries + 1):
            try:
                r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise DeviceTimeout(f"device {self.name} ({self.where}): {what} took over {timeout:.0f} s",
                                    "check the device's load, or use --protocol quick") from None
            if r.returncode != 255:              # 255 = ssh's own failure (connection, auth, host key)
                return r
            last = r
            err = r.stderr.lower()
            if "host key" in err or "permission denied" in err:
                break                              # not transient: do not retry
            time.sleep(min(2 ** attempt, 5))
        msg = (last.stderr.strip().splitlines() or ["no message"])[-1]
        if "host key verification failed" in last.stderr.lower() or "no matching host key" in last.stderr.lower() \
                or "host key" in last.stderr.lower():
            fix = f"add the device's host key to {self.known_hosts} (ssh-keyscan -p {self.port} {self.host}), " \
                  "after checking it is the right device"
        elif "permission denied" in last.stderr.lower():
            fix = f"install your public key on the device (ssh-copy-id -p {self.port} {self._dest()}) or set ssh.key"
        else:
            fix = "check that the device is on, the host and port are right and sshd runs there"
        raise HwkdError(f"device {self.name} ({self.where}) unreachable: {msg}", fix)

    def ssh(self, command: str, what: str, timeout: float | None = None) -> subprocess.CompletedProcess:
        # `--`: the destination is never read as an option, whatever the target file says
        return self._run(["ssh", *self._opts(), "-p", str(self.port), "--", self._dest(), command], what, timeout)

    def check_runtime(self, runtime: str) -> str:
        if runtime in self._runtimes:
            return self._runtimes[runtime]
        mod = RUNTIME_MODULES.get(runtime)
        if mod is None:
            raise HwkdError(f"runtime {runtime!r} cannot run on a remote device", "use onnxruntime or openvino")
        r = self.ssh(f"{shlex.quote(self.python)} -c 'import numpy, {mod}; print({mod}.__version__)'",
                     f"checking {runtime}")
        if r.returncode != 0:
            raise HwkdError(f"device {self.name} ({self.where}) lacks {runtime} for {self.python}",
                            f"on the device: {self.python} -m pip install numpy {runtime}")
        self._runtimes[runtime] = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        return self._runtimes[runtime]

    def _workdir(self) -> str:
        r = self.ssh("mktemp -d /tmp/hwkd-XXXXXX", "creating a work folder")
        if r.returncode != 0:
            raise HwkdError(f"device {self.name}: cannot create a temporary folder ({r.stderr.strip()})",
                            "check the device's /tmp")
        out = r.stdout.strip()
        if not WORKDIR.fullmatch(out):
            # e.g. a shell startup file that prints: that text would end up in paths and remote commands. The
            # folder mktemp made (when one line is its path) is removed if still empty
            made = [line for line in out.splitlines() if WORKDIR.fullmatch(line.strip())]
            if len(made) == 1:
                try:
                    self.ssh(f"rmdir -- {shlex.quote(made[0].strip())}", "cleaning up",
                             timeout=self.connect_timeout + 30)
                except HwkdError:
                    pass
            raise HwkdError(f"device {self.name} ({self.where}): `mktemp -d /tmp/hwkd-XXXXXX` printed {out[:200]!r}, "
                            "not one folder path",
                            "make the device's shell print nothing for non-interactive logins (check ~/.bashrc)")
        return out

    def _stop_worker(self, rdir: str) -> None:
        """Kill the worker's process group (GNU timeout leads it; its pid is in worker.pid)."""
        q = shlex.quote(f"{rdir}/worker.pid")
        try:
            self.ssh(f'p=$(cat {q} 2>/dev/null) && [ -n "$p" ] && '
                     '{ kill -KILL -- "-$p" 2>/dev/null || kill -KILL "$p" 2>/dev/null; }; true',
                     "stopping the worker", timeout=self.connect_timeout + 30)
        except HwkdError:
            pass                           # unreachable now: the device's own deadline stops it

    def measure(self, runtime: str, mode: str, threads: int, model_files: list[Path], hop: int, in_channels: int,
                protocol: Protocol) -> Measurement:
        return self.measure_batch(runtime, threads, [(mode, model_files)], hop, in_channels, protocol)[0]

    def measure_batch(self, runtime: str, threads: int, items: list[tuple[str, list[Path]]], hop: int,
                      in_channels: int, protocol: Protocol, progress=None,
                      timeout: float | None = None) -> list[Measurement]:
        """Measure several exported models in one session: (mode, [model file(s)]) each, in order. `timeout`
        (default command_timeout) bounds the measuring; past it the worker is killed and DeviceTimeout raised."""
        timeout = self.command_timeout if timeout is None else timeout
        self.check_runtime(runtime)
        rdir = self._workdir()
        qdir = shlex.quote(rdir)
        try:
            with tempfile.TemporaryDirectory() as tmp:
                stage = Path(tmp)
                for rel, src in WORKER_FILES.items():
                    dst = stage / rel
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    dst.write_text(src.read_text() if src else "")
                batch, files = [], []
                for i, (mode, model_files) in enumerate(items):
                    sub = f"m{i}"
                    spec = {"runtime": runtime, "mode": mode, "threads": threads, "ckpt": None, "hop": hop,
                            "in_channels": in_channels, "protocol": protocol.__dict__, "onnx": None, "ir": None}
                    first = model_files[0]
                    spec["ir" if first.suffix == ".xml" else "onnx"] = f"{rdir}/{sub}/{first.name}"
                    batch.append(spec)
                    (stage / sub).mkdir()
                    for f in model_files:
                        (stage / sub / f.name).symlink_to(f.resolve())
                    files.append(stage / sub)
                (stage / "spec.json").write_text(json.dumps({"batch": batch}))
                self._run(["scp", *self._opts(), "-P", str(self.port), "-q", "-r", "--", str(stage / "spec.json"),
                           str(stage / "hwkd"), *map(str, files), self._scp_dest(f"{rdir}/")], "copying files")
            # exec: the login shell becomes `timeout`, which leads a new process group with the worker in it
            deadline = math.ceil(timeout) + REMOTE_GRACE_S
            cmd = (f"cd {qdir} && echo $$ > worker.pid && exec timeout -k 5 {deadline} "
                   f"{shlex.quote(self.python)} -m hwkd.hw.measure spec.json")
            try:
                r = self.ssh(cmd, f"measuring {runtime}", timeout=timeout)
            except DeviceTimeout:
                self._stop_worker(rdir)
                raise
            if r.returncode == 127 and "timeout" in r.stderr:
                raise HwkdError(f"device {self.name} ({self.where}) has no `timeout` command",
                                "install GNU coreutils on the device")
            if r.returncode == 124:
                raise DeviceTimeout(f"device {self.name} ({self.where}): measuring {runtime} ran past the device's "
                                    f"own {deadline} s deadline", "check the device's load, or use --protocol quick")
            if r.returncode != 0:
                tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
                raise HwkdError(f"device {self.name}: measuring {runtime} ({threads} threads) failed: {tail}",
                                "check the runtime install on the device")
            out = []
            for line in r.stdout.strip().splitlines()[-len(items):]:
                m = Measurement(**json.loads(line))
                m.how = f"measured on {self.name} over SSH ({self.where})"
                out.append(m)
            return out
        finally:
            try:
                self.ssh(f"rm -rf {qdir}", "cleaning up", timeout=self.connect_timeout + 60)
            except HwkdError:
                pass                          # the error that got us here (if any) is the one to report
