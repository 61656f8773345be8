"""Corpus synthesis speed: 1000 mono 4-s clips and 200 Ambisonics 4-s clips, from scratch, on all cores.

Goal (issue: Foundation): each in <= 3 minutes on the 2-core machine. Writes results/synth_speed.json.
Usage: python benchmarks/synth_speed.py [--repeats 3] [--jobs N]
"""

import argparse
import os
import tempfile

from hwkd.data.synth import CorpusSpec, build_corpus
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import median, save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--jobs", type=int, default=os.cpu_count())
    ap.add_argument("--mono", type=int, default=1000)
    ap.add_argument("--foa", type=int, default=200)
    a = ap.parse_args()
    res = {"machine": fingerprint(), "jobs": a.jobs, "clip_s": 4.0, "runs": {}}
    for name, sizes in (("mono", {"mono": (a.mono, 0, 0), "foa": (0, 0, 0)}),
                        ("foa", {"mono": (0, 0, 0), "foa": (a.foa, 0, 0)})):
        runs = []
        for r in range(a.repeats):
            with tempfile.TemporaryDirectory() as d, LoadMeter() as m:
                out = build_corpus(d, CorpusSpec(seed=100 + r, sizes=sizes), jobs=a.jobs, progress=False)
            assert out["built"] == (a.mono if name == "mono" else a.foa)
            runs.append(m.as_dict())
            print(name, r, m.as_dict())
        n = a.mono if name == "mono" else a.foa
        wall = median([x["wall_s"] for x in runs])
        res["runs"][name] = {"clips": n, "median_wall_s": wall, "clips_per_s": round(n / wall, 2),
                             "goal_s": 180, "meets_goal": wall <= 180, "repeats": runs}
    save("synth_speed", res)


if __name__ == "__main__":
    main()
