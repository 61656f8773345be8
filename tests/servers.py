"""The real servers some tests need, started by the tests themselves: OpenSSH's sshd and a PostgreSQL server.

Both listen on 127.0.0.1 only (never on another interface), on a free port, with their files in a private
folder. Both run in the foreground as children of the test process with a parent-death signal
(PR_SET_PDEATHSIG), so they end with the test run even when pytest is killed with -9. sshd takes keys only;
PostgreSQL takes a password generated per server (scram-sha-256, for local sockets too).

install.sh installs the two packages without starting or enabling their system services; a host that opted
out (HWKD_NO_SSHD=1, HWKD_NO_POSTGRES=1 or HWKD_TEST_SERVERS=0 in the environment of the tests) skips the
tests that need them. Without an opt-out a missing server fails its tests.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

from hwkd.sysinfo import as_user, parent_death_signal

SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def _opted_out(var: str) -> bool:
    return os.environ.get(var) == "1" or os.environ.get("HWKD_TEST_SERVERS") == "0"


def require(binary: str, opt_out: str, package: str) -> None:
    if Path(binary).exists():
        return
    if _opted_out(opt_out):
        pytest.skip(f"{binary} is not installed ({opt_out}=1 or HWKD_TEST_SERVERS=0): this test needs the {package} "
                    "server binaries")
    pytest.fail(f"{binary} is missing: ./install.sh installs {package} for this test (without starting its service); "
                f"set {opt_out}=1 to skip the tests that need it")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(ok, proc: subprocess.Popen, what: str, log, timeout: float = 30) -> None:
    t_end = time.monotonic() + timeout
    while time.monotonic() < t_end:
        if proc.poll() is not None:
            break
        if ok():
            return
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    pytest.fail(f"{what} did not start: {log()[-800:]}")


def stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def start_sshd(d: Path, extra_config: str = "") -> dict:
    """sshd on 127.0.0.1:<free port> with keys in `d`; every session it starts carries HWKD_TEST_SSHD=<port>
    (SetEnv), so a test can find the processes this server started. Returns {proc, port, key, known_hosts,
    dir, marker}."""
    require(SSHD, "HWKD_NO_SSHD", "openssh-server")
    d.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / name)], check=True)
    (d / "authorized_keys").write_text((d / "client_key.pub").read_text())
    os.chmod(d / "authorized_keys", 0o600)
    if os.geteuid() == 0:
        os.makedirs("/run/sshd", exist_ok=True)         # sshd's privilege-separation directory
    port = free_port()
    marker = f"HWKD_TEST_SSHD={port}"
    cfg = d / "sshd_config"
    cfg.write_text(f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_key'}\n"
                   f"AuthorizedKeysFile {d / 'authorized_keys'}\nPasswordAuthentication no\n"
                   "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
                   f"StrictModes no\nUsePAM no\nPidFile {d / 'sshd.pid'}\nSubsystem sftp internal-sftp\n"
                   f"SetEnv {marker}\n{extra_config}")
    log = open(d / "sshd.log", "w")
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=parent_death_signal(signal.SIGTERM, os.getpid()))
    log.close()

    def up() -> bool:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return True
        except OSError:
            return False
    _wait(up, proc, "sshd", lambda: (d / "sshd.log").read_text())
    host_pub = (d / "host_key.pub").read_text().split()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    return {"proc": proc, "port": port, "key": str(d / "client_key"), "known_hosts": str(d / "known_hosts"),
            "dir": d, "marker": marker}


def pg_bin() -> Path:
    hits = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    require(hits[-1] if hits else "/usr/lib/postgresql/<version>/bin/initdb", "HWKD_NO_POSTGRES", "postgresql")
    return Path(hits[-1]).parent


def start_postgres(password: str | None = None) -> dict:
    """A PostgreSQL server on 127.0.0.1:<free port> (its socket in a private folder), superuser hwkd with
    `password` (generated when None). Returns {proc, port, url, password, dir}; `stop_postgres` ends it."""
    pg = pg_bin()
    d = Path(tempfile.mkdtemp(prefix="hwkd-pg-"))
    password = password or secrets.token_hex(16)
    (d / "pw").write_text(password + "\n")
    os.chmod(d / "pw", 0o600)
    drop = None
    if os.geteuid() == 0:                                   # the server refuses to run as root
        shutil.chown(d, "postgres")
        shutil.chown(d / "pw", "postgres")
        drop = as_user("postgres")
    data = d / "data"
    r = subprocess.run([pg / "initdb", "-D", data, "-A", "scram-sha-256", "-U", "hwkd", "--pwfile", d / "pw"],
                       capture_output=True, text=True, preexec_fn=drop)
    (d / "pw").unlink()
    if r.returncode != 0:
        pytest.fail(f"initdb failed: {r.stderr[-800:]}")
    port = free_port()
    die = parent_death_signal(signal.SIGQUIT, os.getpid())     # SIGQUIT: the server's immediate shutdown
    log = open(d / "log", "w")
    proc = subprocess.Popen([pg / "postgres", "-D", data, "-p", str(port), "-k", d, "-c", "listen_addresses=127.0.0.1",
                             "-c", "unix_socket_permissions=0700"], stdout=log, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, preexec_fn=as_user("postgres", die) if drop else die)
    log.close()
    _wait(lambda: subprocess.run([pg / "pg_isready", "-q", "-h", "127.0.0.1", "-p", str(port)]).returncode == 0,
          proc, "PostgreSQL", lambda: (d / "log").read_text())
    return {"proc": proc, "port": port, "password": password, "dir": d,
            "url": f"postgresql+psycopg://hwkd:{quote(password, safe='')}@127.0.0.1:{port}/postgres"}


def stop_postgres(pg: dict) -> None:
    stop(pg["proc"], signal.SIGINT)                         # SIGINT: fast shutdown
    shutil.rmtree(pg["dir"], ignore_errors=True)


# -- what a process is doing, from /proc --------------------------------------------------------------------------
def alive(pid: int) -> bool:
    """Running (not gone, not a zombie waiting to be reaped)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def children(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            if int((p / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
        except (OSError, ValueError):
            pass
    return out


def with_env(entry: str) -> list[int]:
    """Live processes whose environment holds `entry` (NAME=value)."""
    out = []
    for p in Path("/proc").glob("[0-9]*"):
        try:
            env = (p / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if entry.encode() in env and alive(int(p.name)):
            out.append(int(p.name))
    return out


def listening(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket `pid` listens on (IPv4 and IPv6)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = set()
    for table, v6 in (("tcp", False), ("tcp6", True)):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if f[3] != "0A" or f[9] not in inodes:          # 0A: LISTEN
                continue
            hexaddr, hexport = f[1].split(":")
            raw = bytes.fromhex(hexaddr)
            # /proc prints the address as 32-bit words in host (little-endian) order
            raw = b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4))
            out.add((socket.inet_ntop(socket.AF_INET6 if v6 else socket.AF_INET, raw), int(hexport, 16)))
    return out
