"""Named presets (timm-style `create_model`) and config files."""

from __future__ import annotations

from pathlib import Path

from hwkd.config import load_yaml_mapping
from hwkd.errors import HwkdError
from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig

PRESETS: dict[str, dict] = {
    # the paper's networks (3,218,118 and 595,494 parameters)
    "paper-teacher": dict(channels=128, layers=4),
    "paper-student": dict(channels=64, layers=1),
    # sized for a 2-core CPU: the embedded default's teacher and a starting student
    # (one or two attention heads: CPU attention with 3-6 dimensions per head costs more than the GRUs)
    "cpu-teacher": dict(channels=48, layers=2, heads=1),
    "cpu-student": dict(channels=24, layers=1, heads=2),
    # streaming-causal student: cumulative causal norms, no time attention, runs hop by hop
    "cpu-student-causal": dict(channels=24, layers=1, heads=2, causal=True, time_attention="none"),
    # the three student sizes of the KD comparison (hwkd compare, benchmarks/kd_compare.py)
    "kd-small": dict(channels=12, layers=1, depth=2, heads=1, gru_hidden=12),
    "kd-medium": dict(channels=24, layers=1, depth=3, heads=2, gru_hidden=24),
    "kd-large": dict(channels=32, layers=2, depth=4, heads=2, gru_hidden=32),
    # the comparison's Ambisonics student: kd-medium on 4 input channels (taught by the Ambisonics teacher)
    "kd-medium-foa": dict(channels=24, layers=1, depth=3, heads=2, gru_hidden=24, in_channels=4),
}


def list_presets() -> list[str]:
    return sorted(PRESETS)


def resolve_config(spec: str | dict | DPDCRNConfig, **overrides) -> DPDCRNConfig:
    """A preset name, a YAML/JSON config file, a dict or a config -> DPDCRNConfig (overrides applied)."""
    if isinstance(spec, DPDCRNConfig):
        base = spec.to_dict()
    elif isinstance(spec, dict):
        base = dict(spec)
    elif spec in PRESETS:
        base = dict(PRESETS[spec])
    elif Path(spec).suffix in (".yaml", ".yml", ".json"):
        base = load_yaml_mapping(spec, "e.g. channels: 32, layers: 2")
        base = base.get("model", base)
    else:
        raise HwkdError(f"unknown model {spec!r}", f"use a preset ({', '.join(list_presets())}) or a config file")
    base.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return DPDCRNConfig.from_dict(base)
    except (ValueError, TypeError) as exc:
        raise HwkdError(f"invalid model config {spec!r}: {exc}", "see hwkd/models/dpdcrn.py DPDCRNConfig") from None


def create_model(spec: str | dict | DPDCRNConfig, **overrides) -> DPDCRN:
    return DPDCRN(resolve_config(spec, **overrides))
