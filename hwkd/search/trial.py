"""One search trial, run in its own process: distil the candidate, validate it, profile it on the target.

    python -m hwkd.search.trial TRIAL_DIR/spec-rungN.json      (the search runs this; writes rungN.json)

A trial directory belongs to one candidate (its folder name is the candidate's hash), so a trial that is
retried after a crash resumes its training from the checkpoint the trainer left, and a rung whose result
file exists is never recomputed. Rung 0 is the short distillation plus profiling; rung 1 (multi-fidelity
promotion) continues training from rung 0's best weights for more steps and validates again.

Any exception, a NaN loss or a kill (out of memory) ends this process without a result file; the search
records the trial as failed with the reason from error.json / the exit status and goes on. The search runs
this process in a process group of its own and kills the group when it gives no result within the trial
timeout (a hung trial: failed and retried once).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from hwkd import SAMPLE_RATE


@dataclass
class RungResult:
    """What one rung of a trial hands the search (TRIAL/rungN.json): the quality after its training and, on rung 0,
    the candidate's size and its latency per hop on the target with how that latency was obtained."""
    val_si_sdr_db: float
    val_pesq_wb: float | None = None
    rung: int = 0
    steps: int | None = None
    total_steps: int | None = None
    val_clips: int | None = None
    val_pesq_clips: int | None = None
    train_s: float = 0.0
    kd_lambda: float | None = None
    train_data: str | None = None
    # rung 0: size and latency (per hop; "how" says measured on what or predicted by what)
    params: int | None = None
    macs_per_s: float | None = None
    latency_ms: float | None = None
    latency_mode: str | None = None
    latency_how: str | None = None
    latency_provenance: str | None = None
    latency_p90_ms: float | None = None
    latency_lo_ms: float | None = None      # a calibrated prediction's band, per hop
    latency_hi_ms: float | None = None
    rtf: float | None = None
    latency_busy: bool | None = None
    runtime: str | None = None
    threads: int | None = None
    hop_ms: float | None = None
    profile_s: float | None = None

    @classmethod
    def read(cls, path: Path) -> RungResult:
        d = json.loads(Path(path).read_text())
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def to_dict(self) -> dict:
        return asdict(self)


# the fields a candidate's profile on the target fills (re-targeting takes them anew)
PROFILE_FIELDS = ("params", "macs_per_s", "latency_ms", "latency_mode", "latency_how", "latency_provenance",
                  "latency_p90_ms", "latency_lo_ms", "latency_hi_ms", "rtf", "latency_busy", "runtime", "threads",
                  "hop_ms", "profile_s")


@dataclass
class TrialRecord(RungResult):
    """A finished trial as the study records it (its user attrs; hwkd.store.collect reads them back): the
    rung-0 result, the quality of the last rung trained, and what the search decided about it."""
    rung0_si_sdr_db: float | None = None
    constraint: float = 0.0                   # > 0: over the latency limit by that much (ms per hop)
    near_limit: bool | None = None            # the prediction's band straddles a limit
    feasible: bool = True
    score: float | None = None                # the scalar score single-objective controllers are told
    trial_s: float | None = None
    rung1_s: float | None = None              # wall time of the promotion (rung 1), when there was one
    checkpoint: str | None = None
    rung1_error: str | None = None


def finetune_lr(spec: dict) -> float:
    """Peak lr of a rung that starts from trained weights (a promotion, or rung 0 on a supernet with --steps N):
    the run's --finetune-lr (1e-4 on a supernet), else half the from-scratch peak (runs recorded before it)."""
    return spec.get("finetune_lr") or spec["lr"] * 0.5


def run_rung(spec: dict) -> dict:
    import torch

    from hwkd.models.checkpoint import load_model
    from hwkd.models.dpdcrn import DPDCRNConfig

    tdir = Path(spec["dir"])
    rung = spec["rung"]
    cfg = DPDCRNConfig.from_dict(spec["config"])
    if spec.get("threads_train"):
        torch.set_num_threads(spec["threads_train"])
    fault = spec.get("fault")
    if fault == "raise":
        raise RuntimeError("injected fault (HWKD_FAULT_TRIALS): this candidate raises")
    t0 = time.perf_counter()
    init = None
    lam = spec["lam"]
    lr = spec["lr"]
    if rung > 0:
        # a promoted rung continues from the previous rung's best weights with the same λ, in a warm restart
        # of the schedule at the fine-tune learning rate (default half the peak; a fresh optimizer needs its
        # short warm-up again)
        prev, _ = load_model(tdir / f"rung{rung - 1}" / "best.pt")
        init = prev.state_dict()
        lr = finetune_lr(spec)
        saved = tdir / f"rung{rung - 1}" / "kd_weight.json"
        if lam is None and saved.is_file():
            lam = float(json.loads(saved.read_text())["lam"])
    elif spec.get("supernet"):
        # rung 0 starts from the weights the supernet gives this sub-network; a fine-tune continues from them
        # at the fine-tune learning rate, as a promoted rung does
        from hwkd.train.supernet import load_supernet
        sn, _ = load_supernet(spec["supernet"])
        init = sn.extract(cfg).state_dict()
        lr = finetune_lr(spec)
    if fault == "nan":
        init = {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v     # a diverged network
                for k, v in (init or _fresh(cfg, spec["seed"])).items()}
    if spec["steps"] == 0:
        raise ValueError("a rung of 0 steps is scored in the search's own process (hwkd.search.inherit)")
    out = _train(cfg, init, spec, tdir, t0, lr, lam)
    check_finite(out.val_si_sdr_db, out.val_pesq_wb, out)
    if rung == 0:
        out = RungResult(**{**out.to_dict(), **_profile(spec, tdir)})
    return out


def _train(cfg, init: dict | None, spec: dict, tdir: Path, t0: float, lr: float, lam) -> RungResult:
    """A rung trained with the one recipe (from `init`, or the identity start when None)."""
    from hwkd.kd import uses_teacher
    from hwkd.models.checkpoint import load_model
    from hwkd.train.recipe import KDSpec, train_model
    from hwkd.train.trainer import TrainConfig
    rung = spec["rung"]
    tcfg = TrainConfig(epochs=1, batch_size=spec["batch_size"], lr=lr, seed=spec["seed"],
                       segment_s=spec["segment_s"], val_pesq_clips=spec["val_pesq_clips"],
                       val_clips=spec.get("val_clips"), ckpt_every=25)
    teacher = None
    if uses_teacher(spec["kd"]):
        teacher, _ = load_model(spec["teacher"])
    res = train_model(cfg, tdir / f"rung{rung}", tcfg, data=spec["data"], kd=KDSpec(spec["kd"], teacher, lam,
                                                                                 balance=spec.get("balance")),
                      init=init, progress=True, mix_version=spec.get("mixing_version"), steps=spec["steps"],
                      meta={"command": f"hwkd search trial {tdir.name} rung {rung}"})
    last = res["history"][-1]
    steps = int(last.get("steps", spec["steps"]))         # the budget, or a little more (whole epochs)
    return RungResult(rung=rung, steps=steps, total_steps=steps + spec.get("steps_before", 0),
                      val_si_sdr_db=float(last["val_si_sdr_db"]), val_pesq_wb=last.get("val_pesq_wb"),
                      val_clips=last.get("val_clips"), val_pesq_clips=last.get("val_pesq_clips"),
                      train_s=round(time.perf_counter() - t0, 2), kd_lambda=res.get("kd_weight", {}).get("lam"),
                      train_data=res["train_data"])


def _hang(tdir: Path) -> None:
    """Tests only (HWKD_FAULT_TRIALS n:hang): a trial that never ends, with a process of its own (as a profiling
    subprocess would be), both named in hang.pids; the search's --trial-timeout must kill them both."""
    import os
    import subprocess
    sub = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"])
    (tdir / "hang.pids.tmp").write_text(json.dumps([os.getpid(), sub.pid]))
    os.replace(tdir / "hang.pids.tmp", tdir / "hang.pids")
    while True:
        time.sleep(60)


def _fresh(cfg, seed: int) -> dict:
    import torch

    from hwkd.models import DPDCRN
    torch.manual_seed(seed)
    return DPDCRN(cfg).state_dict()


def _finite(x: float) -> bool:
    return x == x and abs(x) != float("inf")


def check_finite(si_sdr: float, pesq: float | None, what) -> None:
    """A rung whose validation is not finite failed as a NaN loss does (FloatingPointError: kind "nan")."""
    if not all(map(_finite, (si_sdr, pesq or 0.0))):
        raise FloatingPointError(f"validation gave a non-finite figure: {what}")


def record_failure(tdir: Path, rung: int, e: BaseException) -> str:
    """A failed rung's reason in TRIAL/error.json (the search reads it back) -> "kind: message"."""
    from hwkd.audio.io import write_text_atomic
    kind = "nan" if isinstance(e, FloatingPointError) else type(e).__name__
    write_text_atomic(tdir / "error.json", json.dumps({"rung": rung, "kind": kind, "error": str(e),
                                                       "traceback": traceback.format_exc()}, indent=1))
    return f"{kind}: {e}"


def _profile(spec: dict, tdir: Path) -> dict:
    from hwkd.models.checkpoint import load_model
    net, _ = load_model(tdir / "rung0" / "best.pt")
    return profile_summary(net, spec["target"], tdir / "export", spec["runtime"], spec["threads"], spec["protocol"])


def profile_summary(net, target, out_dir: Path, runtime: str, threads: int, protocol: str,
                    export: bool = True) -> dict:
    """A candidate's size and its latency per hop on the target (RungResult's fields), with how it was obtained.
    export=False: no ONNX/OpenVINO export where the latency is predicted (a measurement needs the files)."""
    from hwkd.hw.measure import Protocol
    from hwkd.hw.profile import profile
    t0 = time.perf_counter()
    prof = profile(net, target, out_dir, runtimes=[runtime], threads=[threads],
                   protocol=Protocol.named(protocol), progress=lambda *_: None, export=export,
                   modes=["hop" if net.cfg.causal else "offline"], precisions=["fp32"], batches=[1])
    lat = prof["latency"][0]
    if "p50_ms" not in lat:
        raise RuntimeError(f"no latency for this candidate on {prof['target']}: {lat.get('skipped')}")
    hop_ms = net.cfg.hop / SAMPLE_RATE * 1e3
    per_hop = lat["p50_ms"] * hop_ms / lat["audio_ms_per_call"]
    how = lat.get("how") or "measured"
    if how == "measured":
        how = (f"measured on {prof['target']} ({lat['runtime']} {lat.get('version', '')}, "
               f"{lat['threads']} thread(s), {lat.get('runs')} runs, p50)")
    return {"params": prof["params"], "macs_per_s": prof["macs_per_s"], "latency_ms": per_hop,
            "latency_mode": prof["mode"], "latency_how": how, "latency_provenance": lat.get("provenance"),
            "latency_p90_ms": lat.get("p90_ms") and lat["p90_ms"] * hop_ms / lat["audio_ms_per_call"],
            # a calibrated prediction's band (the interval the measured value should lie in), per hop
            "latency_lo_ms": lat.get("band_lo_ms") and lat["band_lo_ms"] * hop_ms / lat["audio_ms_per_call"],
            "latency_hi_ms": lat.get("band_hi_ms") and lat["band_hi_ms"] * hop_ms / lat["audio_ms_per_call"],
            "rtf": lat.get("rtf"), "latency_busy": lat.get("busy"), "runtime": lat["runtime"],
            "threads": lat["threads"], "hop_ms": hop_ms, "profile_s": round(time.perf_counter() - t0, 2)}


def main(argv=None) -> int:
    spec_path = Path((argv or sys.argv[1:])[0])
    spec = json.loads(spec_path.read_text())
    tdir = Path(spec["dir"])
    if spec.get("fault") == "hang":
        _hang(tdir)
    from hwkd.audio.io import write_text_atomic  # here: the fault above comes before numpy and scipy load
    result = tdir / f"rung{spec['rung']}.json"
    try:
        out = run_rung(spec)
    except BaseException as e:  # noqa: BLE001  (any failure of a candidate is recorded, never raised further)
        print(f"trial failed: {record_failure(tdir, spec['rung'], e)}", file=sys.stderr)
        return 1
    write_text_atomic(result, json.dumps(out.to_dict(), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
