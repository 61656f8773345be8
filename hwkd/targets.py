"""Targets: YAML files in targets/ describing hardware + runtime + settings (where cost is measured)."""

from __future__ import annotations

import os
from pathlib import Path

from hwkd.config import load_yaml_mapping
from hwkd.errors import HwkdError


def targets_dir() -> Path:
    return Path(os.environ.get("HWKD_TARGETS", Path(__file__).resolve().parents[1] / "targets"))


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
    if "name" not in data or "device" not in data:
        raise HwkdError(f"target file {p} needs the fields 'name' and 'device'", "see targets/cpu.yaml")
    data["_path"] = str(p)
    return data
