"""Checkpoints that carry their own config: any model rebuilds from its checkpoint alone.

Only tensors and plain Python values are stored, so loading uses `torch.load(weights_only=True)`.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from hwkd.errors import HwkdError
from hwkd.models.dpdcrn import DPDCRN, LEGACY_FIELDS, DPDCRNConfig

FORMAT = "hwkd-checkpoint"
VERSION = 1


def save_checkpoint(path: str | os.PathLike, model: DPDCRN, **extra) -> None:
    """Atomic write: {format, version, model: {family, config}, state_dict, **extra}."""
    _save_atomic({"format": FORMAT, "version": VERSION,
                  "model": {"family": "dpdcrn", "config": model.cfg.to_dict()},
                  "state_dict": model.state_dict(), **extra}, path)


def _save_atomic(payload: dict, path: str | os.PathLike) -> None:
    """torch.save to a temporary file beside `path`, then renamed over it (a reader never sees half a file)."""
    from hwkd.audio.io import atomic_target, publish
    p, tmp = atomic_target(path, ".pt")
    try:
        torch.save(payload, tmp)
        publish(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | os.PathLike) -> dict:
    p = Path(path)
    if not p.is_file():
        raise HwkdError(f"checkpoint not found: {p}", "give the path of a .pt file written by hwkd train")
    try:
        ck = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for corrupt or foreign files
        raise HwkdError(f"cannot read checkpoint {p} ({type(exc).__name__})",
                        "give a checkpoint written by hwkd (weights-only loadable)") from None
    if not isinstance(ck, dict) or ck.get("format") != FORMAT:
        raise HwkdError(f"{p} is not an hwkd checkpoint", "give a checkpoint written by hwkd train")
    if ck.get("version", 0) > VERSION:
        raise HwkdError(f"{p} was written by a newer hwkd (format {ck['version']})", "upgrade hwkd")
    cfg = (ck.get("model") or {}).get("config") if isinstance(ck.get("model"), dict) else None
    if not isinstance(cfg, dict) or not isinstance(ck.get("state_dict"), dict):
        raise HwkdError(f"{p} is an hwkd checkpoint without a model config or weights (damaged)",
                        "use another checkpoint, e.g. the run's last.pt or best.pt")
    # a config written before a field existed was trained with that field's old behaviour (causal_norm only
    # matters for causal models: a non-causal one gets the default, so it still equals its preset)
    legacy = dict(LEGACY_FIELDS)
    if not cfg.get("causal"):
        legacy["causal_norm"] = DPDCRNConfig.__dataclass_fields__["causal_norm"].default
    ck["model"]["config"] = {**legacy, **cfg}
    return ck


def load_model(path: str | os.PathLike) -> tuple[DPDCRN, dict]:
    """Rebuild the model from the checkpoint alone; returns (model in eval mode, checkpoint dict)."""
    ck = read_checkpoint(path)
    return _build(path, ck).eval(), ck


def _build(path, ck: dict) -> DPDCRN:
    """The checkpoint's model with its weights; a config or weights that do not make one are one HwkdError."""
    try:
        model = DPDCRN(DPDCRNConfig.from_dict(ck["model"]["config"]))
    except (ValueError, TypeError) as exc:
        raise HwkdError(f"{path} holds an invalid model config ({exc})",
                        "use a checkpoint written by this hwkd version, or retrain") from None
    try:
        model.load_state_dict(ck["state_dict"])
    except (RuntimeError, TypeError) as exc:
        lines = str(exc).strip().splitlines()
        why = (lines[1] if len(lines) > 1 else lines[0]).strip()[:200]
        raise HwkdError(f"{path}: its weights do not fit its model config ({why})",
                        "use an undamaged checkpoint (the run's last.pt or best.pt)") from None
    return model


def slim_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a training checkpoint without optimizer and scheduler state (for shipping a model)."""
    ck = read_checkpoint(src)
    train = {k: v for k, v in ck.get("train", {}).items() if k not in ("optimizer", "scheduler")}
    model = _build(src, ck)
    save_checkpoint(dst, model, train=train, meta=ck.get("meta", {}))


def portable_checkpoint(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy a training checkpoint to carry across machines in git (training/save.sh): everything kept, the
    optimizer's moment estimates stored in bfloat16 (half their bytes). A resume reads them back as the
    parameters' dtype (torch's Optimizer.load_state_dict casts them): the weights, the objective's state, the
    step count and the schedule resume exactly, Adam's running averages to bfloat16's precision (8 bits, ~0.4 %)."""
    ck = read_checkpoint(src)
    opt = (ck.get("train") or {}).get("optimizer") or {}
    for state in opt.get("state", {}).values():
        for k, v in state.items():
            if k != "step" and torch.is_tensor(v) and v.is_floating_point() and v.dim() > 0:
                state[k] = v.to(torch.bfloat16)
    _save_atomic(ck, dst)
