"""The training settings (a module without torch: the CLI shows its defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 8
    lr: float = 1e-3
    warmup_frac: float = 0.1      # linear warm-up over this fraction of the planned steps, then cosine
    min_lr_ratio: float = 0.05
    grad_clip: float = 5.0
    seed: int = 0
    segment_s: float = 4.0
    val_pesq_clips: int = 20
    val_clips: int | None = None  # validate on the first N val clips only (None: all)
    ckpt_every: int = 50          # steps between mid-epoch checkpoints
    device: str = "cpu"
    threads: int | None = None    # torch intra-op threads (default: torch's choice)
    max_steps_per_epoch: int | None = None
    workers: int = 1              # data-parallel processes (CPU); the batch is split among them
    loader_workers: int = 0       # processes preparing the next batches while a step runs (0: in the step)
    until_epoch: int | None = None  # stop (resumably) after this epoch of the `epochs`-long schedule (None: all)
