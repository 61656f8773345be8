"""Search efficiency: hypervolume of the default controller (Optuna TPE, multi-objective) vs random search at
equal wall-clock budget on the embedded default (rpi4, I²SRF-TFCKD, embedded teacher; `hwkd search`'s default
start: the shipped supernet over its space, or --from-scratch over the default space).

Each (controller, seed) is a full `hwkd search` with --time-budget and no trial cap, run one after another
(interleaved by seed, so machine noise hits both alike). The hypervolume is computed in (val SI-SDR, per-hop
latency) over feasible complete trials with one reference point for all runs: the noisy input's val SI-SDR
and the hop duration (16 ms, real time per hop). A finished run is reused when the script is rerun.
Beside the equal-wall-clock ratio: each run's hypervolume after each evaluation (complete trials in the order
they completed, infeasible ones included: they cost an evaluation too), and how many evaluations the first
controller needed to reach the final hypervolume of the second on the same seed (None: never within its budget).
And the ceiling: the hypervolume of all runs' candidates together, a lower bound on the space's best front; where
both controllers come near it, ceiling / hypervolume bounds any ratio a better controller could show.

    python benchmarks/search_efficiency.py [--budget 5m] [--seeds 0,1,2] [--controllers optuna,random]
        [--from-scratch]                   (every candidate trained from scratch: the figures before 2026-12-02)
        [--supernet RUN --space wide]      (candidates scored from the supernet's weights, its defaults)
        [--promote-steps 0]                (rung 0 only: every evaluation is one candidate's first score, so
                                            the controllers are compared on what they propose)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import pandas as pd

from hwkd.paths import hwkd_home
from hwkd.report.search import collect
from hwkd.search.pareto import hypervolume, hypervolume_history
from hwkd.search.run import open_run
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget", default="5m")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--controllers", default="optuna,random")
    ap.add_argument("--target", default="rpi4")
    ap.add_argument("--space", default=None, help="search space (default: hwkd search's)")
    ap.add_argument("--supernet", default=None, help="a trained supernet's run folder (hwkd search --supernet)")
    ap.add_argument("--promote-steps", type=int, default=None, help="hwkd search --promote-steps (default: its)")
    ap.add_argument("--from-scratch", action="store_true", help="hwkd search --from-scratch")
    ap.add_argument("--name", default="search_efficiency")
    a = ap.parse_args()
    seeds = [int(s) for s in a.seeds.split(",")]
    ctrls = a.controllers.split(",")
    # another --supernet, --space or start: another --name; the promotion steps are in the folder's name
    root = hwkd_home() / "runs" / (f"{a.name}-{a.budget}"
                                   + (f"-promote{a.promote_steps}" if a.promote_steps is not None else ""))
    extra = ((["--space", a.space] if a.space else []) + (["--supernet", a.supernet] if a.supernet else [])
             + (["--promote-steps", str(a.promote_steps)] if a.promote_steps is not None else [])
             + (["--from-scratch"] if a.from_scratch else []))
    runs = {}
    reused = []         # runs finished by an earlier invocation: their load is not in this one's "load"
    union = []          # every feasible evaluation of every run: the best front this benchmark saw
    with LoadMeter() as load:
        for seed in seeds:
            for c in ctrls:
                run = root / f"{c}-s{seed}"
                done = run / "done.json"
                if done.is_file():
                    reused.append(f"{c}:{seed}")
                else:
                    cmd = [sys.executable, "-m", "hwkd", "-q", "search", "--target", a.target, "--controller", c,
                           "--seed", str(seed), "--time-budget", a.budget, "--trials", "100000", "--no-report",
                           "--name", str(run), *extra]
                    if (run / "run.json").is_file():
                        cmd = [sys.executable, "-m", "hwkd", "-q", "search", "--resume", str(run), "--no-report"]
                    t0 = time.perf_counter()
                    print(f"== {c} seed {seed}: {' '.join(cmd[3:])}", flush=True)
                    subprocess.run(cmd, check=True, env=os.environ)
                    done.write_text(json.dumps({"wall_s": round(time.perf_counter() - t0, 1)}))
                settings = json.loads((run / "run.json").read_text())
                df, attrs = collect(*open_run(str(run)))
                ok = df[(df["state"] == "COMPLETE") & (df["feasible"] == True)]  # noqa: E712
                union.append(ok[["key", "val_si_sdr_db", "latency_ms"]])
                done_in_order = df[df["state"] == "COMPLETE"].sort_values("completed")
                feasible = done_in_order["feasible"] == True  # noqa: E712
                curve = hypervolume_history(
                    done_in_order["val_si_sdr_db"].where(feasible, -1e9).to_numpy(float),  # infeasible: no area
                    done_in_order["latency_ms"].to_numpy(float), attrs["quality_ref"], attrs["cost_ref"])
                runs[f"{c}:{seed}"] = {
                    "controller": c, "seed": seed,
                    "settings": {k: settings.get(k) for k in ("space", "supernet", "steps", "promote_steps",
                                                               "finetune_lr", "val_clips", "val_pesq_clips")},
                    "complete": int((df["state"] == "COMPLETE").sum()),
                    "failed": int((df["state"] == "FAIL").sum()), "feasible": int(len(ok)),
                    "best_si_sdr_db": float(ok["val_si_sdr_db"].max()) if len(ok) else None,
                    "quality_ref": attrs["quality_ref"], "cost_ref": attrs["cost_ref"],
                    "hypervolume": hypervolume(ok["val_si_sdr_db"], ok["latency_ms"], attrs["quality_ref"],
                                               attrs["cost_ref"]),
                    "wall_s": json.loads(done.read_text())["wall_s"], "hypervolume_by_evaluation": curve}
    kinds = {json.dumps(r["settings"], sort_keys=True) for r in runs.values()}
    if len(kinds) > 1:          # e.g. runs reused from before a default changed beside new ones: not comparable
        raise SystemExit(f"the runs under {root} were made with different settings ({sorted(kinds)}): remove the "
                         "old ones or choose another --name")
    q_ref = runs[f"{ctrls[0]}:{seeds[0]}"]["quality_ref"]
    assert all(abs(r["quality_ref"] - q_ref) < 1e-9 for r in runs.values()), "runs used different val sets"
    hv = {c: [runs[f"{c}:{s}"]["hypervolume"] for s in seeds] for c in ctrls}
    mean = {c: statistics.mean(v) for c, v in hv.items()}
    ratio = mean[ctrls[0]] / mean[ctrls[1]] if len(ctrls) > 1 and mean[ctrls[1]] else None
    per_seed = [runs[f"{ctrls[0]}:{s}"]["hypervolume"] / runs[f"{ctrls[1]}:{s}"]["hypervolume"]
                if len(ctrls) > 1 and runs[f"{ctrls[1]}:{s}"]["hypervolume"] else None for s in seeds]
    # The ceiling: the front of all runs' candidates together (a lower bound on the space's best front). In a
    # space whose front every controller nearly fills at this budget, no controller can beat another by more
    # than ceiling / the other's hypervolume.
    u = pd.concat(union).drop_duplicates("key")
    ceiling = hypervolume(u["val_si_sdr_db"], u["latency_ms"], q_ref, runs[f"{ctrls[0]}:{seeds[0]}"]["cost_ref"])
    # evaluations the first controller needed to reach the second's final hypervolume, seed by seed
    to_reach = {}
    if len(ctrls) > 1:
        for s in seeds:
            goal = runs[f"{ctrls[1]}:{s}"]["hypervolume"]
            curve = runs[f"{ctrls[0]}:{s}"]["hypervolume_by_evaluation"]
            k = next((i + 1 for i, h in enumerate(curve) if h >= goal and goal > 0), None)
            to_reach[s] = {"evaluations": k, f"{ctrls[1]}_evaluations": runs[f"{ctrls[1]}:{s}"]["complete"],
                           "fraction": k / runs[f"{ctrls[1]}:{s}"]["complete"] if k else None}
    out = {"budget": a.budget, "target": a.target, "space": a.space, "supernet": a.supernet,
           "promote_steps": a.promote_steps,
           f"evaluations_for_{ctrls[0]}_to_reach_{ctrls[-1]}_final": to_reach,
           "seeds": seeds, "controllers": ctrls, "runs": runs,
           "hypervolume": hv, "hypervolume_mean": mean, f"ratio_{ctrls[0]}_over_{ctrls[-1]}": ratio,
           "ratio_per_seed": per_seed,
           "ceiling": {"hypervolume": ceiling, "distinct_candidates": int(len(u)),
                       "how": "the front of every run's feasible candidates together (deduplicated by architecture)",
                       "largest_possible_ratio_over": {c: ceiling / mean[c] for c in ctrls if mean[c]}},
           "units": "dB x ms (val SI-SDR above noisy x per-hop latency below 16 ms)",
           "load": load.as_dict(), "runs_reused_from_an_earlier_invocation": reused, "machine": fingerprint()}
    print(json.dumps({"hypervolume_mean": mean, "ceiling": ceiling, "ratio": ratio, "per_seed": per_seed,
                      "to_reach": to_reach}, indent=1))
    save(a.name, out, teacher=True)


if __name__ == "__main__":
    main()
