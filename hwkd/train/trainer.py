"""The trainer: Adam with warm-up + cosine decay, gradient clipping, validation every epoch (SI-SDR on all
of val, PESQ-WB on a subset), best and last checkpoints, progress bar, seeds, CPU or CUDA.

It knows no training method by name: an *objective* maps (enhancer, batch) to (loss, parts for logging),
and may bring trainable modules of its own (`objective.modules()`), which are optimised and checkpointed
with the model. Plain speech-enhancement training is `SEObjective`.

Resume: `last.pt` is written every `ckpt_every` steps and at each epoch's end with the optimizer,
scheduler and position in the epoch. The data order of an epoch is a permutation seeded by (seed, epoch),
so a resumed run skips the batches already seen and continues exactly where the killed one was.

Data parallel on one machine (`workers` > 1, CPU): hwkd.train.recipe starts workers - 1 more processes; each
takes its share of every batch (items rank, rank + workers, ...), the gradients are averaged over the workers
(one all-reduce per step, gloo on loopback) before clipping, so every worker makes the same update and the run
trains on the same batches as one process would. Worker 0 validates, checkpoints and prints; the others only
step. On 2 cores, 2 workers x 1 thread step a batch of 8 faster than 1 process x 2 threads
(benchmarks/train_workers.py): small convolutions and the GRU's per-frame matrix products use two threads
poorly. Each worker's share of a batch is smaller, so the gain shrinks with the batch (see README).
"""

from __future__ import annotations

import json
import math
import os
import time
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwkd.audio.io import write_text_atomic
from hwkd.data.datasets import SpeechPairs, collate_pad
from hwkd.errors import HwkdError
from hwkd.models.checkpoint import read_checkpoint, save_checkpoint
from hwkd.models.dpdcrn import DPDCRN
from hwkd.models.enhancer import Enhancer
from hwkd.train.config import TrainConfig  # noqa: F401  (the settings; imported from here too)
from hwkd.train.losses import neg_si_sdr, se_loss
from hwkd.train.shared import heavy_turn, step_turn


class SEObjective:
    """Plain speech-enhancement training (the no-KD baseline)."""

    name = "se"

    def modules(self) -> list[nn.Module]:
        return []

    def __call__(self, enhancer: Enhancer, batch: dict) -> tuple[torch.Tensor, dict]:
        est = enhancer(batch["noisy"])
        return se_loss(est, batch["clean"], enhancer.n_fft, enhancer.hop)


def check_objective(ck: dict, last: Path, name: str) -> None:
    """A run resumes under the objective it was trained with ("se" or a KD scheme; a checkpoint from before the
    record passes)."""
    was = ck["train"].get("objective", name)
    if was != name:
        raise HwkdError(f"{last} was trained with objective {was!r}, not {name!r}",
                        f"resume with --kd {'none' if was == 'se' else was}, or choose another --out")


def warmup_steps(cfg: TrainConfig, total_steps: int) -> int:
    """Warm-up length: a fraction of the planned steps (at least one step when the fraction is > 0)."""
    return max(1, round(cfg.warmup_frac * total_steps)) if cfg.warmup_frac > 0 else 0


def _lr_lambda(cfg: TrainConfig, total_steps: int):
    """Linear warm-up over warmup_frac of the planned steps, then cosine down to min_lr_ratio at the last step:
    the schedule fits the budget, so a 24-step trial and a 10,000-step teacher both reach their peak and decay."""
    warm = warmup_steps(cfg, total_steps)

    def f(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        p = min(1.0, (step - warm) / max(1, total_steps - warm - 1))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * p))
    return f


MIN_SEGMENT_S = 0.1     # training segments: several STFT frames (a 32-ms window), and never 0 samples


def check_budget(cfg: TrainConfig) -> None:
    """Refuse budgets that cannot train: one line naming the flag and the fix."""
    checks = [(cfg.epochs >= 1, f"--epochs {cfg.epochs}", "give 1 or more"),
              (cfg.batch_size >= 1, f"--batch-size {cfg.batch_size}", "give 1 or more"),
              (cfg.max_steps_per_epoch is None or cfg.max_steps_per_epoch >= 1,
               f"--steps / --max-steps-per-epoch {cfg.max_steps_per_epoch}", "give 1 or more"),
              (cfg.lr > 0 and math.isfinite(cfg.lr), f"--lr {cfg.lr}", "give a positive learning rate, e.g. 2e-3"),
              (0 <= cfg.warmup_frac < 1, f"warm-up fraction {cfg.warmup_frac}", "give a fraction in [0, 1)"),
              (cfg.segment_s >= MIN_SEGMENT_S and math.isfinite(cfg.segment_s), f"--segment-s {cfg.segment_s}",
               f"give a segment length of at least {MIN_SEGMENT_S} s, e.g. 2"),
              (cfg.val_pesq_clips >= 0, f"--val-pesq-clips {cfg.val_pesq_clips}", "give 0 or more"),
              (cfg.val_clips is None or cfg.val_clips >= 1, f"--val-clips {cfg.val_clips}", "give 1 or more"),
              (cfg.ckpt_every >= 0, f"--ckpt-every {cfg.ckpt_every}", "give 0 (off) or more"),
              (cfg.threads is None or cfg.threads >= 1, f"--threads {cfg.threads}", "give 1 or more"),
              (cfg.until_epoch is None or cfg.until_epoch >= 1, f"until epoch {cfg.until_epoch}", "give 1 or more"),
              (cfg.workers >= 1, f"--workers {cfg.workers}", "give 1 or more"),
              (cfg.loader_workers >= 0, f"--loader-workers {cfg.loader_workers}", "give 0 (off) or more"),
              (cfg.workers == 1 or cfg.loader_workers == 0,
               f"--loader-workers {cfg.loader_workers} with --workers {cfg.workers}",
               "loader processes are for one training process (a GPU run); use one or the other"),
              (cfg.workers == 1 or cfg.batch_size % cfg.workers == 0,
               f"--batch-size {cfg.batch_size} with --workers {cfg.workers}",
               "give a batch size that the workers divide evenly"),
              (cfg.workers == 1 or not cfg.device.startswith("cuda"), f"--workers {cfg.workers} on {cfg.device}",
               "data-parallel workers are for CPU training; use --workers 1 on a GPU")]
    for ok, what, fix in checks:
        if not ok:
            raise HwkdError(f"{what}: impossible training budget", fix)
    check_device(cfg.device)


def check_device(device: str) -> None:
    """--device: a device torch knows and this machine has, checked before any folder is made."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise HwkdError(f"--device {device}: not a device torch knows", "give cpu, cuda or cuda:N") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise HwkdError(f"--device {device} asked for but no CUDA device is available", "use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise HwkdError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)",
                        f"give cuda:0 to cuda:{torch.cuda.device_count() - 1}")
    if dev.type not in ("cpu", "cuda"):
        raise HwkdError(f"--device {device}: hwkd trains on cpu or cuda", "give cpu, cuda or cuda:N")


def stack_batch(items: list[dict], device) -> dict:
    """Equal-length training items -> {"noisy": [B, C, N], "clean": [B, N]} on the device."""
    return {"noisy": torch.stack([it["noisy"] for it in items]).to(device),
            "clean": torch.stack([it["clean"] for it in items]).to(device)}


def _as_arrays(items: list[dict]) -> list[dict]:
    """A loader process's batch as numpy arrays: pickled through the pipe rather than shared memory, which a
    container's small /dev/shm (64 MB by default) would not hold for a few batches of 4-channel audio ahead."""
    return [{k: v.numpy() if torch.is_tensor(v) else v for k, v in it.items()} for it in items]


def batch_items(train_set, batches: list[list[int]], loader_workers: int):
    """The items of each batch in turn: read in this process, or (loader_workers > 0) prepared ahead by that many
    forked processes, so on-the-fly mixing runs beside the step (a GPU run's step is shorter than its mixing).
    Items are functions of (seed, epoch, index) alone, so both give the same batches (test)."""
    if loader_workers == 0:
        for idx in batches:
            yield [train_set[i] for i in idx]
        return
    from torch.utils.data import DataLoader
    # its own generator: the workers' base seed is not drawn from the global RNG (training's draws stay as they are)
    loader = iter(DataLoader(train_set, batch_sampler=batches, num_workers=loader_workers, collate_fn=_as_arrays,
                             prefetch_factor=4, multiprocessing_context="fork", generator=torch.Generator()))
    while True:
        try:
            items = next(loader)
        except StopIteration:
            return
        except HwkdError as e:      # a user's problem met in a loader process: its own one line, not the traceback
            raise HwkdError(str(e).strip().splitlines()[-1].split("HwkdError: ", 1)[-1]) from None
        yield [{k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in it.items()} for it in items]


def epoch_order(n: int, seed: int, epoch: int) -> list[int]:
    g = torch.Generator().manual_seed(seed * 100003 + epoch)
    return torch.randperm(n, generator=g).tolist()


@torch.no_grad()
def validate(enhancer: Enhancer, val: SpeechPairs, pesq_clips: int, device: str, batch_size: int = 8) -> dict:
    from hwkd.metrics.quality import pesq_wb
    enhancer.eval()
    sdrs, pesqs = [], []
    for start in range(0, len(val), batch_size):
        items = [val[i] for i in range(start, min(len(val), start + batch_size))]
        b = collate_pad(items)
        est = enhancer(b["noisy"].to(device)).cpu()
        for k, n in enumerate(b["lengths"].tolist()):
            sdrs.append(-float(neg_si_sdr(est[k, :n], b["clean"][k, :n])))
            if start + k < pesq_clips:
                try:
                    pesqs.append(pesq_wb(est[k, :n].numpy(), b["clean"][k, :n].numpy()))
                except Exception:  # a clip PESQ cannot score is left out of the mean
                    pass
    enhancer.train()
    return {"val_si_sdr_db": float(np.mean(sdrs)), "val_pesq_wb": float(np.mean(pesqs)) if pesqs else None,
            "val_clips": len(sdrs), "val_pesq_clips": len(pesqs)}


def _average_grads(params: list, world: int) -> None:
    """All-reduce the gradients (one flat buffer) and divide by the number of workers. Parameters without a
    gradient (not used by this step's graph, the same on every worker) stay without one, as in one process."""
    import torch.distributed as dist
    used = [p for p in params if p.grad is not None]
    if not used:
        return
    flat = torch.cat([p.grad.reshape(-1) for p in used])
    dist.all_reduce(flat)
    flat /= world
    k = 0
    for p in used:
        n = p.grad.numel()
        p.grad.copy_(flat[k:k + n].view_as(p.grad))
        k += n


def train(model: DPDCRN, train_set: SpeechPairs, val_set: SpeechPairs, run_dir: str | os.PathLike,
          cfg: TrainConfig, objective=None, progress: bool = True, meta: dict | None = None,
          rank: int = 0) -> dict:
    """Train (or resume) into run_dir; returns the final summary. best.pt / last.pt / history.jsonl.
    With cfg.workers > 1 this is one worker (`rank`) of a data-parallel run whose process group is set up
    (hwkd.train.recipe does that); only rank 0 writes."""
    check_budget(cfg)
    run = Path(run_dir)
    world = cfg.workers
    lead = rank == 0
    progress = progress and lead
    run.mkdir(parents=True, exist_ok=True)
    objective = objective or SEObjective()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = torch.device(cfg.device)        # checked by check_budget above
    enhancer = Enhancer(model).to(device)
    extra = nn.ModuleList(objective.modules()).to(device)
    params = list(enhancer.parameters()) + list(extra.parameters())
    opt = torch.optim.Adam(params, lr=cfg.lr)
    steps_per_epoch = len(train_set) // cfg.batch_size
    if cfg.max_steps_per_epoch:
        if cfg.max_steps_per_epoch > steps_per_epoch > 0 and lead:   # a cap is "at most": said, not hidden
            import sys
            print(f"hwkd train: an epoch is one pass over the training set, {steps_per_epoch} steps of "
                  f"{cfg.batch_size}; the cap of {cfg.max_steps_per_epoch} per epoch does not add steps (a budget "
                  f"of steps: more epochs, or recipe.train_model(steps=N))", file=sys.stderr)
        steps_per_epoch = min(steps_per_epoch, cfg.max_steps_per_epoch)
    if steps_per_epoch == 0:
        raise HwkdError(f"the training set has {len(train_set)} segments, fewer than one batch of {cfg.batch_size}",
                        "use a smaller --batch-size or more data")
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg, steps_per_epoch * cfg.epochs))

    epoch, pos, best, history = 0, 0, -math.inf, []
    last = run / "last.pt"
    if last.is_file():
        ck = read_checkpoint(last)
        if ck["model"]["config"] != model.cfg.to_dict():
            raise HwkdError(f"{last} holds another model ({ck['model']['config']})",
                            "resume with the same model, or choose another --out")
        check_objective(ck, last, objective.name)
        enhancer.net.load_state_dict(ck["state_dict"])
        if ck.get("objective_state"):
            extra.load_state_dict(ck["objective_state"])
        opt.load_state_dict(ck["train"]["optimizer"])
        sched.load_state_dict(ck["train"]["scheduler"])
        epoch, pos = ck["train"]["epoch"], ck["train"]["pos"]
        best, history = ck["train"]["best"], ck["train"]["history"]
        if progress:
            print(f"resuming {run}: epoch {epoch + 1}, step {pos} of {steps_per_epoch}")
    if world > 1:   # the same start everywhere, whatever each worker read or built
        import torch.distributed as dist
        for t in list(enhancer.state_dict().values()) + list(extra.state_dict().values()):
            dist.broadcast(t, 0)

    def checkpoint(path, epoch_, pos_):
        if not lead:
            return
        save_checkpoint(path, enhancer.net, objective_state=extra.state_dict(),
                        train={"epoch": epoch_, "pos": pos_, "best": best, "history": history,
                               "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                               "config": asdict(cfg), "objective": objective.name},
                        meta=meta or {})

    enhancer.train()
    t_start = time.perf_counter()
    train_time = history[-1].get("train_elapsed_s", 0.0) if history else 0.0   # steps only, across resumes
    if cfg.loader_workers and hasattr(train_set, "prepare"):
        train_set.prepare()         # e.g. the Ambisonics room pool: built once here, shared by the forked loaders
    while epoch < min(cfg.epochs, cfg.until_epoch or cfg.epochs):   # until_epoch: a part of the schedule
        t_epoch = time.perf_counter()
        order = epoch_order(len(train_set), cfg.seed, epoch)
        train_set.set_epoch(epoch)
        bar = None
        if progress:
            from tqdm import tqdm
            bar = tqdm(total=steps_per_epoch, initial=pos, desc=f"epoch {epoch + 1}/{cfg.epochs}",
                       unit="step", dynamic_ncols=True)
        sums: dict = {}
        n_seen = 0
        step_times = []
        items_of = batch_items(train_set, [order[p * cfg.batch_size:(p + 1) * cfg.batch_size][rank::world]
                                           for p in range(pos, steps_per_epoch)], cfg.loader_workers)
        try:
            while pos < steps_per_epoch:
                t_step = time.perf_counter()
                batch = stack_batch(next(items_of), device)
                with step_turn():       # a run in a group of runs sharing a teacher steps in turn (hwkd.train.shared)
                    loss, parts = objective(enhancer, batch)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(f"loss is {float(loss)} at epoch {epoch + 1} step {pos}")
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    if world > 1:
                        _average_grads(params, world)
                    nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    opt.step()
                sched.step()
                pos += 1
                n_seen += 1
                step_times.append(time.perf_counter() - t_step)
                for k, v in {"loss": float(loss.detach()), **parts}.items():
                    sums[k] = sums.get(k, 0.0) + v
                if bar:
                    bar.update()
                    bar.set_postfix(loss=f"{sums['loss'] / n_seen:.3f}")
                if cfg.ckpt_every and pos % cfg.ckpt_every == 0 and pos < steps_per_epoch:
                    checkpoint(last, epoch, pos)
        finally:
            items_of.close()            # loader processes, if any, end with the epoch (or an error)
        if bar:
            bar.close()
        train_time += time.perf_counter() - t_epoch
        if not lead:            # the others go on to the next epoch; the next all-reduce waits for worker 0
            epoch, pos = epoch + 1, 0
            continue
        with heavy_turn():
            val = validate(enhancer, val_set, cfg.val_pesq_clips, cfg.device)
        if hasattr(objective, "validate_more"):        # e.g. the supernet's smallest sub-network
            val.update(objective.validate_more(val_set, cfg.device))
        rec = {"epoch": epoch + 1, "steps": (epoch + 1) * steps_per_epoch,
               **{f"train_{k}": v / max(1, n_seen) for k, v in sums.items()}, **val,
               "lr": sched.get_last_lr()[0], "elapsed_s": round(time.perf_counter() - t_start, 1),
               "train_elapsed_s": round(train_time, 1),
               # the first step of a process is slow (allocator, thread pools): left out when there are others
               "step_s_median": round(float(np.median(step_times[1:] or step_times)), 4) if step_times else None,
               "workers": world}
        history.append(rec)
        # rewritten whole from the checkpointed history: a run killed between this write and the
        # checkpoint below repeats the epoch without leaving a duplicate line
        write_text_atomic(run / "history.jsonl", "".join(json.dumps(h) + "\n" for h in history))
        if progress:
            pq = f"{val['val_pesq_wb']:.3f}" if val["val_pesq_wb"] is not None else "-"
            print(f"epoch {epoch + 1}: val SI-SDR {val['val_si_sdr_db']:.2f} dB, PESQ-WB {pq}")
        epoch, pos = epoch + 1, 0
        if val["val_si_sdr_db"] > best:
            best = val["val_si_sdr_db"]
            checkpoint(run / "best.pt", epoch, 0)
        checkpoint(last, epoch, 0)
    return {"run": str(run), "epochs": cfg.epochs, "best_val_si_sdr_db": best, "history": history}
