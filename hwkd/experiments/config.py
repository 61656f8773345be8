"""The settings of a KD comparison (a light module: the CLI shows its defaults)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class CompareConfig:
    schemes: list
    students: list
    seeds: int = 3
    epochs: int = 1
    batch_size: int = 8
    segment_s: float = 2.0
    lr: float = 2e-3
    lam: float | None = None        # None: balanced per cell (hwkd.train.objective)
    max_steps_per_epoch: int | None = None
    val_pesq_clips: int = 5
    eval_split: str = "test"
    eval_limit: int | None = None
    threads: int | None = None
    # the KD weight's tuning grid: target gradient ratios λ·‖∇L_KD‖/‖∇L_SE‖ (hwkd.train.objective); each KD scheme
    # trains one cell per ratio on a tuning seed of its own, the best on val is chosen per student and scheme, and
    # the reported seeds train at it.
    # None: the balanced default ratio alone, no tuning
    kd_ratios: list | None = None
    # the student whose tuning grid decides every student's ratio (its label; None: each student is tuned on its
    # own grid). The ratio is a share of the student's own SE gradient, so it carries across sizes
    tune_on: str | None = None
    # fixed KD-weight ratios, no tuning: scheme -> the target ratio its cells are balanced at (e.g. what a finished
    # matrix's grid chose, for its ablations or another student); a KD scheme not named keeps the balanced default
    kd_ratio: dict | None = None
    # on-the-fly mixing version of every cell (hwkd.data.mixing): None is settled when the matrix is opened — a
    # new matrix takes the current version, one whose recorded settings predate the field mixed with 1
    mixing_version: int | None = None
    # how each KD cell balances λ (hwkd.train.recipe.BALANCE_RULES): None is settled like mixing_version — a new
    # matrix takes the current rule, one whose recorded settings predate the field balanced with mean-2
    balance: str | None = None
