"""The DPDCRN family, its presets and checkpoints. Knows nothing about distillation: it exposes feature taps."""

from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig
from hwkd.models.registry import PRESETS, create_model, list_presets

__all__ = ["DPDCRN", "DPDCRNConfig", "PRESETS", "create_model", "list_presets"]
