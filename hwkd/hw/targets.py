"""Targets: YAML files in targets/ describing hardware + runtimes + settings (where cost is measured).

Schema (every field is checked; an error names the file, the field and the fix):

    name: rpi4                      # required, the name users type
    description: ...                # optional
    kind: local | remote            # local = this machine; remote = a device over SSH (or predicted)
    device:                         # required
      type: cpu | cuda
      arch: host | x86_64 | aarch64 | armv7l
      cpu: host | <model name>      # e.g. Cortex-A72
      cores: 4                      # remote targets: the chip's figures (used by the default predictor)
      freq_ghz: 1.5                 # 0 < GHz <= 10
      simd_bits: 128                # vector width, a multiple of 32 from 32 to 2048 (NEON 128, AVX2 256)
      memory_gb: 4
    runtimes: [onnxruntime, openvino]   # from hwkd.hw.runtimes.RUNTIMES
    threads: [1, 4]                 # thread counts to measure
    modes: [hop, offline]           # optional: what to measure (default: hop for a causal model, else offline)
    precisions: [fp32, fp16]        # optional (default [fp32]); fp16 on GPU runtimes
    batches: [1, 64]                # optional (default [1]): streams per hop call / utterances per offline call
    ssh:                            # remote targets only; host null = no device configured
      host: null
      user: pi
      port: 22
      key: ~/.ssh/id_ed25519
      known_hosts: ~/.ssh/known_hosts
      python: python3
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path

from hwkd.config import is_int, is_number, load_yaml_mapping
from hwkd.errors import HwkdError

KINDS = ("local", "remote")
DEVICE_TYPES = ("cpu", "cuda")
ARCHES = ("host", "x86_64", "aarch64", "armv7l")
# device figures: (check, what it must be); integers exclude YAML booleans (`cores: true` is not 1 core)
DEVICE_NUMBERS = {
    "cores": (lambda v: is_int(v) and 1 <= v <= 1024, "a whole number of cores from 1 to 1024"),
    "freq_ghz": (lambda v: is_number(v) and 0 < v <= 10, "a clock in GHz above 0 and at most 10"),
    "simd_bits": (lambda v: is_int(v) and 32 <= v <= 2048 and v % 32 == 0,
                  "a vector width in bits, a multiple of 32 from 32 to 2048 (NEON 128, AVX2 256, AVX-512 512)"),
    "memory_gb": (lambda v: is_number(v) and v > 0, "a positive number of GB"),
}
SSH_FIELDS = ("host", "user", "port", "key", "known_hosts", "python")
# a DNS name or an ~/.ssh/config alias (labels of letters, digits, '-', '_'; no label starts or ends with '-'),
# or an IP address; never anything ssh could read as an option
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
# a user name: POSIX's portable characters, not starting with '-' (and the trailing '$' of machine accounts)
_USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,31}\$?")


def targets_dir() -> Path:
    return Path(os.environ.get("HWKD_TARGETS", Path(__file__).resolve().parents[2] / "targets"))


def available_targets() -> list[str]:
    return sorted(p.stem for p in targets_dir().glob("*.yaml"))


def load_target(name_or_path: str) -> dict:
    p = Path(name_or_path)
    if not (p.suffix in (".yaml", ".yml") and p.is_file()):
        p = targets_dir() / f"{name_or_path}.yaml"
        if not p.is_file():
            raise HwkdError(f"unknown target {name_or_path!r}",
                            f"use one of: {', '.join(available_targets()) or '(none found)'} "
                            f"or a path to a target YAML file")
    data = load_yaml_mapping(p, "see targets/cpu.yaml")
    validate_target(data, p)
    data["_path"] = str(p)
    return data


def validate_target(data: dict, path: Path) -> None:
    from hwkd.hw.runtimes import RUNTIMES

    def bad(field: str, why: str):
        raise HwkdError(f"target file {path}: {field} {why}", "see targets/README.md for the schema")

    for req in ("name", "device"):
        if req not in data:
            bad(f"'{req}'", "is missing")
    if not isinstance(data["name"], str) or not data["name"]:
        bad("'name'", "must be a non-empty string")
    if not isinstance(data.get("description", ""), str):
        bad("'description'", "must be a string")
    data.setdefault("kind", "local")
    if data["kind"] not in KINDS:
        bad("'kind'", f"must be one of {', '.join(KINDS)}, not {data['kind']!r}")
    dev = data["device"]
    if not isinstance(dev, dict):
        bad("'device'", "must be a mapping (type, arch, cpu, ...)")
    dev.setdefault("type", "cpu")
    dev.setdefault("arch", "host")
    if dev["type"] not in DEVICE_TYPES:
        bad("'device.type'", f"must be one of {', '.join(DEVICE_TYPES)}, not {dev['type']!r}")
    if dev["arch"] not in ARCHES:
        bad("'device.arch'", f"must be one of {', '.join(ARCHES)}, not {dev['arch']!r}")
    if not isinstance(dev.get("cpu", ""), str):
        bad("'device.cpu'", f"must be a CPU name or host, not {dev['cpu']!r}")
    for num, (ok, what) in DEVICE_NUMBERS.items():
        if num in dev and not ok(dev[num]):
            bad(f"'device.{num}'", f"must be {what}, not {dev[num]!r}")
    runtimes = data.setdefault("runtimes", ["onnxruntime"])
    if not isinstance(runtimes, list) or not runtimes:
        bad("'runtimes'", "must be a non-empty list")
    for rt in runtimes:
        if not isinstance(rt, str) or rt not in RUNTIMES:
            bad("'runtimes'", f"has unknown runtime {rt!r} (known: {', '.join(RUNTIMES)})")
    threads = data.setdefault("threads", [1])
    if not isinstance(threads, list) or not threads or not all(is_int(t) and 1 <= t <= 1024 for t in threads):
        bad("'threads'", f"must be a non-empty list of whole thread counts from 1 to 1024, not {threads!r}")
    from hwkd.hw.runtimes import MODES, PRECISIONS
    for fld, known in (("modes", MODES), ("precisions", PRECISIONS)):
        if fld in data and not (isinstance(data[fld], list) and data[fld] and all(v in known for v in data[fld])):
            bad(f"'{fld}'", f"must be a non-empty list of {', '.join(known)}, not {data[fld]!r}")
    if "batches" in data and not (isinstance(data["batches"], list) and data["batches"]
                                  and all(is_int(b) and 1 <= b <= 4096 for b in data["batches"])):
        bad("'batches'", f"must be a non-empty list of whole batch sizes from 1 to 4096, not {data['batches']!r}")
    if data["kind"] == "remote":
        ssh = data.setdefault("ssh", {})
        if not isinstance(ssh, dict):
            bad("'ssh'", "must be a mapping (host, user, port, key, known_hosts, python)")
        try:
            check_ssh(ssh)
        except ValueError as e:
            bad(*e.args)
    elif "ssh" in data:
        bad("'ssh'", "is only for kind: remote")


def valid_host(host: str) -> bool:
    """A host name, an ~/.ssh/config alias or an IP address (IPv6 without brackets)."""
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    return len(host) <= 253 and all(_HOST_LABEL.fullmatch(label) for label in host.removesuffix(".").split("."))


def check_ssh(ssh: dict) -> None:
    """The ssh mapping of a remote target; raises ValueError(field, why) for the first bad field. Checked when a
    target is loaded and again by `hwkd.hw.remote.Device`: host and user end up on ssh's command line."""
    unknown = sorted(set(ssh) - set(SSH_FIELDS))
    if unknown:
        raise ValueError(f"'ssh.{unknown[0]}'", f"is not a field (known: {', '.join(SSH_FIELDS)})")
    host = ssh.get("host")
    if host is not None and not (isinstance(host, str) and valid_host(host)):
        raise ValueError("'ssh.host'", f"must be a host name or an IP address, not {host!r}")
    user = ssh.get("user")
    if user is not None and not (isinstance(user, str) and _USER.fullmatch(user)):
        raise ValueError("'ssh.user'", f"must be a user name (letters, digits, '_', '.', '-'; not starting with "
                                       f"'-'), not {user!r}")
    port = ssh.get("port", 22)
    if type(port) is not int or not 0 < port < 65536:                  # type(): `port: true` is a bool
        raise ValueError("'ssh.port'", f"must be a port number (an integer 1-65535), not {port!r}")
    for f in ("key", "known_hosts", "python"):
        if f in ssh and ssh[f] is not None and not (isinstance(ssh[f], str) and ssh[f]):
            raise ValueError(f"'ssh.{f}'", f"must be a non-empty string, not {ssh[f]!r}")


def is_local(target: dict) -> bool:
    return target.get("kind", "local") == "local"


def latency_source(target: dict) -> str:
    """How a latency on this target is obtained: "measured" (here), "ssh" (measured on the target's device over
    SSH) or "predicted" (a remote target that names no device: the calibrated predictor, hwkd.hw.predict)."""
    if is_local(target):
        return "measured"
    return "ssh" if (target.get("ssh") or {}).get("host") else "predicted"
