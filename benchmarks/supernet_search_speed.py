"""How many candidates a supernet search scores in its budget, and how long re-targeting it takes.

Runs `hwkd search --target T --space S --supernet RUN --time-budget B` with the supernet defaults (candidates
scored as inherited on the val subset; promotions as the defaults say), then re-targets the finished run with
`hwkd search --like RUN --target T2 --max-latency-ms X`; records the candidates evaluated, the time per
candidate (inherited scoring, fine-tunes), and the re-targeting wall clock, with the machine and its load.
A finished step is reused when rerun.

    python benchmarks/supernet_search_speed.py --supernet RUN [--space wide] [--budget 15m] [--target rpi4]
        [--retarget rpi5] [--retarget-limit-ms 4]
    python benchmarks/supernet_search_speed.py --from SEARCH [--retarget rpi5]   (re-target a finished search, e.g.
        the README's first command's run: its figures are taken from the run, not re-measured)
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from hwkd.paths import hwkd_home
from hwkd.report.search import collect
from hwkd.search.run import open_run
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save


def run_timed(cmd: list, done) -> dict:
    """{"wall_s", "load"} of the command, kept in `done` so that a rerun reuses a finished step with its figures."""
    if done.is_file():
        return json.loads(done.read_text())
    print("==", " ".join(map(str, cmd[3:])), flush=True)
    with LoadMeter() as load:
        subprocess.run(cmd, check=True, env=os.environ)
    out = {"wall_s": round(load.wall_s, 1), "load": load.as_dict()}
    done.write_text(json.dumps(out))
    return out


def summary(run) -> dict:
    df, attrs = collect(*open_run(str(run)))
    settings = json.loads((run / "run.json").read_text())
    ok = df[df["state"] == "COMPLETE"]
    fine = ok[ok["rung"] == 1]
    front = ok[(ok["feasible"] == True)]  # noqa: E712
    return {"complete": int(len(ok)), "failed": int((df["state"] == "FAIL").sum()), "promoted": int(len(fine)),
            "feasible": int(len(front)), "quality_ref_db": attrs["quality_ref"],
            "trial_s_median": statistics.median(ok["trial_s"]) if len(ok) else None,
            "trial_s_median_inherited_only": statistics.median(ok[ok["rung"] == 0]["trial_s"])
            if (ok["rung"] == 0).any() else None,
            "trial_s_median_promoted": statistics.median(fine["trial_s"]) if len(fine) else None,
            "best_si_sdr_db": float(ok["val_si_sdr_db"].max()) if len(ok) else None,
            "settings": {k: settings.get(k) for k in ("target", "space", "steps", "promote_steps", "promote_after",
                                                       "val_clips", "val_pesq_clips", "supernet", "like", "finetune_lr",
                                                       "max_latency_ms")}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--supernet", default=None)
    ap.add_argument("--from", dest="source", type=Path, default=None,
                    help="a finished search to re-target instead of running one")
    ap.add_argument("--space", default="wide")
    ap.add_argument("--budget", default="15m")
    ap.add_argument("--target", default="rpi4")
    ap.add_argument("--retarget", default="rpi5")
    ap.add_argument("--retarget-limit-ms", default="4")
    ap.add_argument("--name", default="supernet_search_speed")
    a = ap.parse_args()
    if (a.supernet is None) == (a.source is None):
        raise SystemExit("give --supernet RUN (search, then re-target) or --from SEARCH (re-target that search)")
    root = hwkd_home() / "runs" / a.name
    root.mkdir(parents=True, exist_ok=True)
    if a.source is not None:
        from hwkd.search.run import resolve_run
        a.source = resolve_run(str(a.source))
        if not (a.source / "run.json").is_file():
            raise SystemExit(f"{a.source} is not a finished search (no run.json)")
    # the re-targeted run and its timing are kept per source and target: a rerun from another source re-measures
    src = f"from-{a.source.name}" if a.source is not None else "search"
    run, like = a.source or root / "search", root / f"like-{a.retarget}-{src}"
    hwkd = [sys.executable, "-m", "hwkd", "-q"]
    if a.source is None:
        cmd = hwkd + ["search", "--target", a.target, "--space", a.space, "--supernet", a.supernet,
                      "--time-budget", a.budget, "--no-report", "--name", str(run)]
        if (run / "run.json").is_file():
            cmd = hwkd + ["search", "--resume", str(run), "--no-report"]
        search_t = run_timed(cmd, root / "search.done.json")
    else:
        search_t = {"reused": str(a.source)}
    like_t = run_timed(hwkd + ["search", "--like", str(run), "--target", a.retarget, "--max-latency-ms",
                               a.retarget_limit_ms, "--no-report", "--name", str(like)],
                       like.with_name(like.name + ".done.json"))
    out = {"supernet": a.supernet or json.loads((run / "run.json").read_text()).get("supernet"),
           "budget": a.budget if a.source is None else None,
           "search": {**summary(run), **search_t}, "retarget": {**summary(like), **like_t, "goal_s": 120},
           "goal_candidates": 100, "machine": fingerprint()}
    print(json.dumps({k: {kk: out[k].get(kk) for kk in ("complete", "promoted", "wall_s")}
                      for k in ("search", "retarget")}, indent=1))
    save(a.name, out, teacher=True)


if __name__ == "__main__":
    main()
