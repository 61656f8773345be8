"""hwkd: hardware-aware knowledge distillation and NAS benchmarking for speech enhancement."""

__version__ = "0.1.0"

SAMPLE_RATE = 16000
