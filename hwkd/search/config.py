"""A search's settings (a light module: the CLI shows its defaults)."""

from __future__ import annotations

from dataclasses import dataclass, fields

# `hwkd search --supernet`'s defaults where a flag is not given: candidates scored as inherited (no training),
# the time budget the only limit, and a fixed val subset (every rung, the noisy reference too) that keeps one
# candidate to seconds. No promotions: on the shipped supernet (trained to the end of its cosine schedule) a
# fine-tune of 20 steps changed val SI-SDR by -0.30 dB at the former 1.5e-3, -0.05 at 3e-4, +0.00 at 1e-4, and
# one of 100 steps by +0.02..+0.06 dB (results/supernet_finetune*.json), while a promotion costs ~20 inherited
# scorings; the budget buys candidates instead (OFA's practice: search on inherited weights). A fine-tune asked
# for (--promote-steps N, --steps N) runs at finetune_lr, the least harmful rate measured.
# PESQ-WB on the same clips as SI-SDR (`hwkd search` sets it to --val-clips when only that is given): on 5 clips
# (the from-scratch default) the inherited sub-networks' gain over noisy read 0.04-0.14 higher than on all 100
# (results/supernet_pesq.json: the first 5 are harder clips); on 25 a candidate took a median 2.98 s instead of
# 2.25 s, a fifth fewer candidates in the first command's budget (255 against 322).
SUPERNET_VAL_CLIPS = 25
SUPERNET_DEFAULTS = {"steps": 0, "promote_steps": 0, "promote_after": 30, "promote_share": 0.5, "trials": None,
                     "val_clips": SUPERNET_VAL_CLIPS, "val_pesq_clips": SUPERNET_VAL_CLIPS, "finetune_lr": 1e-4}


@dataclass
class SearchConfig:
    target: str = "rpi4"
    space: str = "default"
    kd: str = "i2srf-tfckd"
    lam: float | None = None              # None: balanced per candidate (hwkd.train.objective)
    controller: str = "optuna"
    trials: int | None = 40
    time_budget_s: float | None = 900.0
    seed: int = 0
    max_latency_ms: float | None = None
    realtime: bool = True                 # constraint: latency per hop below the hop duration
    steps: int = 40                       # rung 0: training steps of the short distillation
    promote_steps: int = 60               # rung 1: further steps for promising candidates (0 = one fidelity)
    promote_after: int = 3                # finished trials before any promotion
    promote_share: float | None = None    # promotions only while their wall time is at most this share of all
                                          # finished trials' (None: no cap); with a supernet a fine-tune costs
                                          # ~20 inherited scorings, and uncapped they ate ~2/3 of the budget
    batch_size: int = 4
    segment_s: float = 1.0
    lr: float = 3e-3
    finetune_lr: float | None = None      # peak lr of a rung that starts from trained weights (a promotion, a
                                          # supernet fine-tune); None: half of lr. A supernet search takes
                                          # SUPERNET_DEFAULTS' (results/supernet_finetune.json)
    val_pesq_clips: int = 5
    val_clips: int | None = None          # candidates are scored on the first N val clips (None: all; `hwkd
                                          # search --supernet` defaults to SUPERNET_VAL_CLIPS)
    runtime: str | None = None            # default: the target's first runtime
    threads: int | None = None            # default: the target's first thread count
    protocol: str = "quick"
    trial_timeout_s: float | None = None  # one trial process (rung); None: derived from the training budget
    teacher: str | None = None            # default: the embedded teacher
    data: str | None = None               # default: the embedded corpus (mono or Ambisonics by the space)
    like: str | None = None               # re-targeted from this run: its quality results, latency taken anew
    supernet: str | None = None           # a trained supernet's run folder: candidates start from inherited
                                          # weights (steps 0: scored as inherited, no training)
    mixing_version: int | None = None     # on-the-fly mixing version of every trial (hwkd.data.mixing): a new
                                          # run takes the current one; runs from before the field mixed with 1
    balance: str | None = None            # how every trial balances λ (hwkd.train.recipe.BALANCE_RULES): a new
                                          # run takes the current rule; runs from before the field used mean-2

    @classmethod
    def from_dict(cls, d: dict) -> SearchConfig:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
