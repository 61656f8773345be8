"""Time to quality: what a ~50k-parameter causal student gains over the noisy input after a wall-clock budget.

For each scheme (no KD, I²SRF-TFCKD from the embedded teacher) and each budget (default 5, 15, 60 minutes),
one run of hwkd's training recipe (hwkd.train.recipe.train_model: identity start, on-the-fly mixing, warm-up
over 10 % of the planned steps then cosine, balanced λ) whose planned steps fill the budget: the step time is
measured on 3 steps first (after one warm-up step), and steps = budget / step time. The best-val checkpoint is
scored on the default test split (100 utterances: PESQ-WB, STOI, eSTOI, SI-SDR; mean ± 95 % CI) against the
noisy input. Each run is its own folder under --out and resumes after a kill; a finished run is not redone.

The learning curve (val SI-SDR against training minutes, validation time excluded) of each run is plotted
to results/time_to_quality.png. Its minutes are the steps done times the step time the plan was made with:
the budget is fixed in steps when the run starts, so a run that other work slowed down (its "load" records
how much) still shows what the planned budget buys; "trained" in the README is the wall clock it really took.

Training runs as 2 data-parallel workers x 1 thread by default (--workers; hwkd train --workers), which
steps a batch of 8 ~1.3x faster than one process x 2 threads on 2 cores (results/train_workers.json).

    python benchmarks/time_to_quality.py [--budgets 5,15,60] [--schemes none,i2srf-tfckd] [--threads 2]
                                         [--workers 2] [--batch 8]
"""

import argparse
import json
import time
from pathlib import Path

import torch

from hwkd.data.datasets import split_pairs
from hwkd.data.layouts import scan
from hwkd.data.synth import default_dataset
from hwkd.kd import uses_teacher
from hwkd.models.checkpoint import load_model
from hwkd.models.dpdcrn import DPDCRNConfig
from hwkd.models.teacher import embedded_teacher_path
from hwkd.paths import hwkd_home
from hwkd.sysinfo import LoadMeter, fingerprint
from hwkd.train.evaluate import evaluate_pairs
from hwkd.train.recipe import KDSpec, make_objective, train_model, training_set
from hwkd.train.trainer import TrainConfig

from _common import RESULTS, save

STUDENT = dict(channels=20, layers=1, depth=3, heads=1, gru_hidden=32, causal=True, time_attention="none")
METRICS = ("pesq_wb", "stoi", "estoi", "si_sdr_db")


def step_time(cfg, tcfg, data, kd: KDSpec, mixing: str = "auto", mix_version: int | None = None) -> float:
    """Median seconds per training step of this recipe (3 steps after 1 warm-up), on real batches. With
    data-parallel workers: the median step (the first left out) of a 10-step run of the recipe itself (its
    workers started; 6 steps measured 1.33 s where the run then stepped in 1.07 s)."""
    import statistics
    if tcfg.workers > 1:
        import tempfile
        from dataclasses import replace
        with tempfile.TemporaryDirectory() as d:
            t = replace(tcfg, epochs=1, max_steps_per_epoch=10, val_pesq_clips=0, ckpt_every=0)
            out = train_model(cfg, d, t, data=data, kd=kd, progress=False, mixing=mixing, mix_version=mix_version)
        return out["history"][-1]["step_s_median"]

    from hwkd.models import DPDCRN
    from hwkd.models.enhancer import Enhancer
    from hwkd.train.trainer import SEObjective, epoch_order, stack_batch
    torch.manual_seed(0)
    model = DPDCRN(cfg)
    ts = training_set(data, "train", tcfg.segment_s, cfg.in_channels, 0, mixing, mix_version)
    obj = make_objective(model, kd, tcfg, ts, None) or SEObjective()
    enh = Enhancer(model)
    params = list(enh.parameters()) + [p for m in obj.modules() for p in m.parameters()]
    opt = torch.optim.Adam(params, lr=1e-4)
    ts.set_epoch(0)
    order = epoch_order(len(ts), tcfg.seed, 0)
    times = []
    for k in range(4):
        t0 = time.perf_counter()
        batch = stack_batch([ts[i] for i in order[k * tcfg.batch_size:(k + 1) * tcfg.batch_size]], "cpu")
        # ^ includes the cost of mixing this one batch (first_batches(k + 1) mixed k + 1 batches: the step time
        #   came out ~25 % high and a run filled ~80 % of its budget)
        loss, _ = obj(enh, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budgets", default="5,15,60", help="minutes of training wall clock, comma-separated")
    ap.add_argument("--schemes", default="none,i2srf-tfckd",
                    help="comma-separated; scheme options as NAME:OPTION=VALUE[+...], e.g. "
                         "i2srf-tfckd:fusion_mid=128; ratio=R sets the λ balancing target")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--workers", type=int, default=2,
                    help="data-parallel training processes, --threads split among them (1: one process)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--segment-s", type=float, default=2.0)
    ap.add_argument("--out", type=Path, default=hwkd_home() / "runs" / "time_to_quality")
    ap.add_argument("--name", default="time_to_quality")
    ap.add_argument("--student", default=None, help="JSON of DPDCRN config overrides (diagnostics)")
    ap.add_argument("--mixing", default="auto", choices=("auto", "off"), help="off: the static training clips")
    ap.add_argument("--mixing-version", type=int, default=None,
                    help="on-the-fly mixing version of new runs (default: hwkd's current one; diagnostics)")
    ap.add_argument("--steps", type=int, default=None,
                    help="train this many steps instead of filling the budget (diagnostics at equal steps)")
    ap.add_argument("--start", default="identity", choices=("identity", "default"),
                    help="default: PyTorch's init of the mask layer instead of the identity start (diagnostics)")
    ap.add_argument("--dnsmos", action="store_true",
                    help="also DNSMOS (perceptual, non-intrusive) on both splits: ~3 s per clip and core")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    student = {**STUDENT, **(json.loads(a.student) if a.student else {})}
    cfg = DPDCRNConfig(**student)
    data = default_dataset(1)
    sc = scan(data, channels=1)
    test = split_pairs(sc, "test")
    ood = split_pairs(sc, "ood")          # the out-of-domain split (hwkd.data.synth)
    teacher_path = embedded_teacher_path()
    teacher, _ = load_model(teacher_path)
    res_path = RESULTS / f"{a.name}.json"
    res = json.loads(res_path.read_text()) if res_path.is_file() else {"runs": {}}
    res.update({"student": student, "mixing": a.mixing, "start": a.start, "batch": a.batch,
                "segment_s": a.segment_s, "lr": a.lr,
                "threads": a.threads, "workers": a.workers,
                "teacher_sha256": __import__("hashlib").sha256(teacher_path.read_bytes()).hexdigest(),
                "eval": f"test split, {len(test)} utterances"})
    if "val_noisy_si_sdr_db" not in res:
        from hwkd.data.datasets import SpeechPairs
        from hwkd.metrics.quality import si_sdr
        val = SpeechPairs(data, split="val", mode="utterance", channels=1)
        res["val_noisy_si_sdr_db"] = sum(si_sdr(val[i]["noisy"][0].numpy(), val[i]["clean"].numpy())
                                         for i in range(len(val))) / len(val)
    # an epoch has len(train split segments) // batch steps: a plan of longer epochs would get fewer steps than planned
    from hwkd.data.datasets import SpeechPairs
    epoch_cap = len(SpeechPairs(data, split="train", mode="segment", segment_s=a.segment_s)) // a.batch
    for scheme in a.schemes.split(","):
        # "name" or "name:option=int" (e.g. i2srf-tfckd:fusion_mid=128) for a scheme option
        name, _, opt = scheme.partition(":")
        options = {k: float(v) if "." in v else int(v) for k, v in (o.split("=") for o in opt.split("+") if o)}
        ratio = options.pop("ratio", None)                  # the λ balancing target, not a scheme option
        kd = KDSpec(name, teacher if uses_teacher(name) else None, options=options, ratio=ratio)
        for minutes in map(float, a.budgets.split(",")):
            key = f"{scheme}@{minutes:g}min"
            run = a.out / f"{scheme.replace(':', '-').replace('=', '')}-{minutes:g}min"
            if key in res["runs"] and (run / "done").is_file():
                print(f"{key}: done before")
                if score_more(res["runs"][key], run, test, ood, a.dnsmos):   # splits or metrics added since
                    res["machine"] = fingerprint()
                    save(a.name, res)
                continue
            tcfg = TrainConfig(epochs=1, batch_size=a.batch, lr=a.lr, segment_s=a.segment_s, threads=a.threads,
                               val_pesq_clips=5, ckpt_every=25, workers=a.workers)
            plan = run / "plan.json"
            if plan.is_file():
                p = json.loads(plan.read_text())
            elif a.steps:                                     # diagnostics: equal steps, no step timing
                per_epoch = max(5, min(a.steps // 5, epoch_cap))
                epochs = -(-a.steps // per_epoch)
                per_epoch = a.steps // epochs
                p = {"step_s": None, "steps": epochs * per_epoch, "steps_per_epoch": per_epoch, "epochs": epochs}
                run.mkdir(parents=True, exist_ok=True)
                plan.write_text(json.dumps(p))
            else:
                st = step_time(cfg, tcfg, data, kd, a.mixing, a.mixing_version)
                steps = max(10, int(minutes * 60 / st))
                # validate about every 2.5 minutes of training (at least 4 points on the curve)
                per_epoch = max(5, min(steps // 4, int(150 / st), epoch_cap))
                epochs = -(-steps // per_epoch)
                per_epoch = steps // epochs                   # epochs x per_epoch within the budget's steps
                p = {"step_s": st, "steps": epochs * per_epoch, "steps_per_epoch": per_epoch, "epochs": epochs}
                run.mkdir(parents=True, exist_ok=True)
                plan.write_text(json.dumps(p))
            tcfg.epochs, tcfg.max_steps_per_epoch = p["epochs"], p["steps_per_epoch"]
            print(f"{key}: {p['epochs'] * p['steps_per_epoch']} steps planned"
                  + (f" ({p['step_s']:.2f} s/step)" if p["step_s"] else " (fixed)"))
            t0 = time.perf_counter()
            init = None
            if a.start == "default":                      # the same seeded network, mask layer as PyTorch inits it
                from hwkd.models import DPDCRN
                torch.manual_seed(tcfg.seed)
                net = DPDCRN(cfg)
                net.dec2.reset_parameters()
                init = net.state_dict()
            with LoadMeter() as load:
                out = train_model(cfg, run, tcfg, data=data, kd=kd, progress=False, mixing=a.mixing, init=init,
                                  meta={"command": f"benchmarks/time_to_quality.py {key}"},
                                  mix_version=a.mixing_version)
            best, _ = load_model(run / "best.pt")
            ev = evaluate_pairs(best, test, progress=False)
            hist = out["history"]
            res["runs"][key] = {
                "scheme": scheme, "budget_min": minutes, "planned": p, "scheme_options": options,
                "train_data": out["train_data"], "mixing_version": out.get("mixing_version"),
                "kd_weight": out.get("kd_weight"),
                "wall_s_this_process": round(time.perf_counter() - t0, 1),
                "curve": [{"epoch": h["epoch"], "steps": h["epoch"] * p["steps_per_epoch"],
                           "train_elapsed_s": h.get("train_elapsed_s", h["elapsed_s"]),
                           "val_si_sdr_db": h["val_si_sdr_db"], "val_pesq_wb": h["val_pesq_wb"], "lr": h["lr"]}
                          for h in hist],
                "noisy": {m: ev["noisy"][m] for m in METRICS},
                "enhanced": {m: ev["enhanced"][m] for m in METRICS},
                "gain": {m: ev["enhanced"][m]["mean"] - ev["noisy"][m]["mean"] for m in METRICS},
                "load": load.as_dict()}
            score_more(res["runs"][key], run, test, ood, a.dnsmos)
            (run / "done").write_text("1")
            g = res["runs"][key]["gain"]
            print(f"{key}: test gain SI-SDR {g['si_sdr_db']:+.2f} dB, PESQ-WB {g['pesq_wb']:+.3f}, "
                  f"eSTOI {g['estoi']:+.3f}")
            res["machine"] = fingerprint()
            save(a.name, res)
    plot(res, RESULTS / f"{a.name}.png")


def score_more(rec: dict, run: Path, test: list, ood: list, dnsmos: bool) -> bool:
    """Adds to a run's record what it lacks: the out-of-domain split's scores ("ood": noisy, enhanced, gain) and,
    with dnsmos, DNSMOS on both splits. Returns whether anything was added."""
    added = False
    want = METRICS + (("dnsmos_ovrl", "dnsmos_sig", "dnsmos_bak") if dnsmos else ())
    best = None
    for split, pairs, where in (("test", test, rec), ("ood", ood, rec.setdefault("ood", {}))):
        if all(m in where.get("gain", {}) for m in want):   # test: its SI-SDR etc. are there; DNSMOS may not be
            continue
        if best is None:
            best, _ = load_model(run / "best.pt")
        ev = evaluate_pairs(best, pairs, progress=False, dnsmos=dnsmos)
        ms = [m for m in want if m in ev["enhanced"]]
        where["noisy"] = {**where.get("noisy", {}), **{m: ev["noisy"][m] for m in ms}}
        where["enhanced"] = {**where.get("enhanced", {}), **{m: ev["enhanced"][m] for m in ms}}
        where["gain"] = {**where.get("gain", {}),
                         **{m: ev["enhanced"][m]["mean"] - ev["noisy"][m]["mean"] for m in ms}}
        if split == "ood":
            where["eval"] = f"ood split, {len(pairs)} utterances"
        g = where["gain"]
        print(f"  {split}: gain SI-SDR {g['si_sdr_db']:+.2f} dB, PESQ-WB {g['pesq_wb']:+.3f}"
              + (f", DNSMOS OVRL {g['dnsmos_ovrl']:+.3f}" if "dnsmos_ovrl" in g else ""))
        added = True
    return added


def plot(res: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(7, 4))
    noisy = None
    for key, r in sorted(res["runs"].items()):
        # x: the steps done at the step time the plan was made with (a quiet machine), so a run slowed by other
        # work (recorded in its "load") is drawn where its updates belong; runs without a timed plan: wall clock
        st = r["planned"].get("step_s")
        per = r["planned"]["steps_per_epoch"]
        xs = [0.0] + [(c["epoch"] * per * st if st else c["train_elapsed_s"]) / 60 for c in r["curve"]]
        noisy = r["noisy"]["si_sdr_db"]["mean"]
        ys = [None] + [c["val_si_sdr_db"] for c in r["curve"]]
        ax.plot(xs[1:], ys[1:], marker="o", ms=3, ls="-" if r["scheme"] == "none" else "--", label=key)
    if res.get("val_noisy_si_sdr_db") is not None:
        ax.axhline(res["val_noisy_si_sdr_db"], color="grey", lw=1, ls=":", label="noisy input (val)")
    ax.set_xlabel("training minutes (steps x the planned step time, 2 cores, validation excluded)")
    ax.set_ylabel("val SI-SDR (dB)")
    ax.set_title("time to quality: ~50k-parameter causal student", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path} (test-split noisy input: {noisy:.2f} dB SI-SDR)" if noisy is not None else "")


if __name__ == "__main__":
    main()
