"""INT8 variants of the embedded teacher (offline model) against FP32: ONNX Runtime dynamic quantization and
NNCF static quantization of the OpenVINO IR (calibrated on train clips), latency ratio on 1 s of audio per
call and SI-SDR / PESQ-WB deltas on val clips of the embedded corpus. What `hwkd profile --int8` reports.

    python benchmarks/int8_deltas.py [--threads 1] [--clips 20] [--calib-clips 20]
"""

import argparse
import tempfile
from pathlib import Path

from hwkd.data.datasets import split_pairs
from hwkd.data.layouts import scan
from hwkd.data.synth import default_dataset
from hwkd.hw.measure import Protocol
from hwkd.hw.profile import profile
from hwkd.models.checkpoint import load_model
from hwkd.models.teacher import embedded_teacher_path
from hwkd.sysinfo import LoadMeter, fingerprint

from _common import save


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clips", type=int, default=20)
    ap.add_argument("--calib-clips", type=int, default=20)
    a = ap.parse_args()
    net, _ = load_model(embedded_teacher_path())
    sc = scan(default_dataset(1, progress=True), channels=1)
    pairs = split_pairs(sc, "val", limit=a.clips)
    calib = split_pairs(sc, "train", limit=a.calib_clips)
    with tempfile.TemporaryDirectory() as tmp, LoadMeter() as load:
        res = profile(net, "cpu", Path(tmp), runtimes=["onnxruntime"], threads=[a.threads],
                      protocol=Protocol.named("default"), int8_pairs=pairs, int8_calib=calib)
    out = {name: {k: v for k, v in q.items() if k not in ("model", "calibration_clips")}
           for name, q in res["int8"].items()}
    save("int8_deltas", {"model": "embedded teacher (cpu-teacher, offline)", "params": res["params"],
                         "threads": a.threads, "val_clips": len(pairs), "calib_clips": len(calib),
                         "protocol": "default", "variants": out, "other_load": load.other_load,
                         "fingerprint": fingerprint()}, teacher=True)


if __name__ == "__main__":
    main()
