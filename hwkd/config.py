"""YAML loading with errors that name the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path

import yaml

from hwkd.errors import HwkdError


def load_yaml_mapping(path: str | Path, example: str) -> dict:
    """Read a YAML file that must hold a mapping; `example` is shown in the fix of any error."""
    p = Path(path)
    if not p.is_file():
        raise HwkdError(f"file not found: {p}", "check the path")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise HwkdError(f"malformed YAML in {p}{where}", f"fix the syntax ({example})") from None
    except UnicodeDecodeError:
        raise HwkdError(f"{p} is not a text file", f"give a YAML file ({example})") from None
    if not isinstance(data, dict):
        raise HwkdError(f"{p} must hold a YAML mapping", example)
    return data


def is_int(v) -> bool:
    """An integer in a YAML file: `true` is not one (YAML booleans are Python ints)."""
    return isinstance(v, int) and not isinstance(v, bool)


def is_number(v) -> bool:
    """An int or a float in a YAML file, not a boolean, finite."""
    import math
    return (is_int(v) or isinstance(v, float)) and math.isfinite(v)


def changed_settings(old: dict, new: dict, ignore: tuple = ()) -> list[str]:
    """The settings (keys of `new`, except `ignore`) whose value in `old` differs, each as "key: old -> new",
    sorted: what a resumed run, corpus or comparison refuses to continue with."""
    return [f"{k}: {old.get(k)!r} -> {new[k]!r}" for k in sorted(new) if k not in ignore and old.get(k) != new[k]]
