"""The noisy baseline of the embedded default corpus's test split: PESQ-WB, STOI, eSTOI, SI-SDR and DNSMOS
of the unprocessed input against the clean target — mono, and the Ambisonics W channel.
Builds the default corpus first if it is missing. Writes results/noisy_baseline.json.
Usage: python benchmarks/noisy_baseline.py [--no-dnsmos]
"""

import argparse

from hwkd.data.datasets import select_pairs
from hwkd.data.layouts import scan
from hwkd.data.synth import CorpusSpec, build_corpus
from hwkd.metrics import BASE_METRICS, DNSMOS_METRICS, score_pairs, summarize
from hwkd.metrics.quality import load_channel_and_reference
from hwkd.paths import default_corpus_dir
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--no-dnsmos", action="store_true")
    a = ap.parse_args()
    root = default_corpus_dir()
    spec = CorpusSpec()
    build_corpus(root, spec, progress=True)
    s = scan(root)
    out = {"machine": fingerprint(), "corpus": str(root), "corpus_identity": spec.identity(),
           "corpus_sizes": spec.sizes, "sets": {}}
    metrics = BASE_METRICS + (() if a.no_dnsmos else DNSMOS_METRICS)
    for split, label in (("mono/test", "mono"), ("foa/test", "foa_w_channel")):
        pairs = select_pairs(s, split)
        jobs = [((p.noisy, 0), p.clean, p.id) for p in pairs]
        with LoadMeter() as m:
            rows = score_pairs(jobs, load_channel_and_reference, dnsmos=not a.no_dnsmos, progress=True, desc=label)
        out["sets"][label] = {"split": split, "clips": len(rows), "summary": summarize(rows, metrics),
                              "load": m.as_dict()}
        print(label, {k: round(v["mean"], 3) for k, v in out["sets"][label]["summary"].items()
                      if isinstance(v, dict) and v.get("mean") is not None})
    save("noisy_baseline", out)


if __name__ == "__main__":
    main()
