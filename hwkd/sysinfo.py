"""Machine fingerprint and the CPU load of other processes during a measurement.

Every benchmark records both: this machine is shared, and a figure taken while something else was busy
must say so.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import threading
import time
from importlib import metadata

CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def pid_domain() -> str:
    """Where a process id means this process: the kernel's boot id and this PID namespace. Two workers whose
    domains match can tell each other's death by the pid; a host name alone cannot (cloned machines and
    containers share names, containers share a kernel but not pids)."""
    try:
        boot = open("/proc/sys/kernel/random/boot_id").read().strip()
        ns = os.stat("/proc/self/ns/pid").st_ino
    except OSError:
        return ""             # unknown: no pid check across processes
    return f"{boot}/{ns}"


def ours(attrs: dict) -> bool:
    """Whether a trial's worker (user attrs `worker` HOST:PID and `pid_domain`) ran where this process can check
    its pid. Trials from before `pid_domain` was recorded: by host name."""
    import socket
    w = attrs.get("worker", "")
    if ":" not in w or not w.rsplit(":", 1)[1].isdigit():
        return False
    if "pid_domain" in attrs:
        return bool(attrs["pid_domain"]) and attrs["pid_domain"] == pid_domain()
    return w.rsplit(":", 1)[0] == socket.gethostname()


def pid_alive(pid: int) -> bool:
    """Whether a process with this id runs on this host (one of another user counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def die_with_parent(parent: int | None = None) -> None:
    """In a child process: be killed when the parent dies (kill -9 of a worker leaves no orphan trainer), and
    exit at once if `parent` (the starter's pid, when given) is already gone — it may die between the fork and
    the prctl, and then no signal would ever come. The signal follows the thread that forked this process:
    start such children from a thread that lives as long as they should (the main thread here)."""
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)       # PR_SET_PDEATHSIG
    except OSError:
        return
    if parent is not None and os.getppid() != parent:
        os._exit(127)


def parent_death_signal(sig: int, parent: int):
    """A `preexec_fn` for subprocess.Popen: the child gets `sig` when the thread that started it ends (so when
    its process dies, even by kill -9), and exits at once if `parent` (the starter's pid) is already gone.
    Linux's PR_SET_PDEATHSIG; it is cleared by a change of user, so a child that must run as another user
    should switch before (see `as_user`). Start such children from a thread that lives as long as they should."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl            # looked up here, not after the fork

    def setup() -> None:
        if prctl(1, int(sig), 0, 0, 0) != 0:                   # PR_SET_PDEATHSIG
            os._exit(127)
        if os.getppid() != parent:                             # the parent died before the prctl
            os._exit(127)
    return setup


def as_user(name: str, then=None):
    """A `preexec_fn` that drops root to user `name` (its groups only), then runs `then` (e.g. the
    parent-death setup, which must follow the change of user)."""
    import grp
    import pwd
    pw = pwd.getpwnam(name)
    groups = [g.gr_gid for g in grp.getgrall() if name in g.gr_mem] + [pw.pw_gid]

    def setup() -> None:
        os.setgroups(groups)
        os.setgid(pw.pw_gid)
        os.setuid(pw.pw_uid)
        if then is not None:
            then()
    return setup


def exit_with_parent(parent: int, poll_s: float = 0.25) -> None:
    """In a pool worker (its initializer): exit when `parent`, the process that runs the pool, is gone. A
    watchdog thread compares getppid() with it; PR_SET_PDEATHSIG would be tied to the thread that happened
    to fork the worker, and pools may fork from short-lived threads."""
    if os.getppid() != parent:
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != parent:
                os._exit(1)                 # finished clips and scores are already on disk / sent back
    threading.Thread(target=watch, name="hwkd-exit-with-parent", daemon=True).start()


def _cpuinfo() -> dict:
    """The first processor's block of /proc/cpuinfo as {field: value} (empty where there is none)."""
    info = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, val = line.partition(":")
                info.setdefault(key.strip(), val.strip())
    except OSError:
        pass
    return info


def cpu_tag() -> str:
    """The CPU as far as float results go: model name, family/model, and the vector ISA torch dispatches to.
    Two hosts with one model name can differ here (and then a CPU training run differs in its last bits,
    which training amplifies), so a result that is compared across runs records it."""
    info = _cpuinfo()
    try:
        import torch
        isa = torch.backends.cpu.get_cpu_capability()
    except Exception:           # torch missing or too old to say
        isa = "?"
    name = info.get("model name") or platform.processor() or platform.machine()
    fam = f" (family {info['cpu family']} model {info['model']})" if "cpu family" in info and "model" in info else ""
    return f"{name}{fam}, torch {isa}"


def fingerprint() -> dict:
    cpu = _cpuinfo().get("model name") or platform.processor()
    gov = None
    try:
        gov = open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read().strip()
    except OSError:
        pass
    mem = None
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = round(int(line.split()[1]) / 2 ** 20, 1)
    except OSError:
        pass
    versions = {}
    for name in ("hwkd", "torch", "numpy", "pesq", "pystoi", "onnxruntime", "openvino", "onnx", "fvcore"):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "governor": gov, "memory_gib": mem,
            "machine": platform.machine(), "kernel": platform.release(), "python": platform.python_version(),
            "versions": versions, "date": time.strftime("%Y-%m-%d")}


def _busy_jiffies() -> int | None:
    try:
        f = open("/proc/stat").readline().split()
    except OSError:
        return None
    user, nice, system, idle, iowait, irq, softirq, steal = (int(x) for x in f[1:9])
    return user + nice + system + irq + softirq + steal


class LoadMeter:
    """Context manager: wall time, CPU used by this process and its reaped children, and by all others.

    other_load is the busy fraction of the machine's cores that other processes used (0 = idle machine).
    """

    def __enter__(self):
        self._t = time.perf_counter()
        self._busy = _busy_jiffies()
        self._own = self._own_cpu()
        return self

    @staticmethod
    def _own_cpu() -> float:
        t = os.times()
        return t.user + t.system + t.children_user + t.children_system

    def __exit__(self, *exc):
        self.wall_s = time.perf_counter() - self._t
        self.own_cpu_s = self._own_cpu() - self._own
        busy = _busy_jiffies()
        if busy is None or self._busy is None:
            self.other_cpu_s = None
            self.other_load = None
        else:
            total = (busy - self._busy) / CLK_TCK
            self.other_cpu_s = max(0.0, total - self.own_cpu_s)
            self.other_load = self.other_cpu_s / (self.wall_s * (os.cpu_count() or 1))
        return False

    def as_dict(self) -> dict:
        return {"wall_s": round(self.wall_s, 3), "own_cpu_s": round(self.own_cpu_s, 3),
                "other_cpu_s": None if self.other_cpu_s is None else round(self.other_cpu_s, 3),
                "other_load": None if self.other_load is None else round(self.other_load, 3)}
