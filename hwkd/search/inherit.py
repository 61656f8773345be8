"""Rung 0 of a supernet search, in the search's own process: a candidate scored with the weights it inherits.

A from-scratch trial trains, so it runs in a child process (hwkd.search.trial) that a hang or an out-of-memory
kill cannot take the search down with. Scoring inherited weights trains nothing: the child's start-up (Python,
torch, the supernet file, the val clips read from disk) cost more than the scoring itself, so here the supernet
is loaded once, the val subset read once into memory, and each candidate is extracted, scored on it, saved as
its rung-0 best.pt (what a promotion, the report and `hwkd pick` start from) and sized. Its latency is
profiled as any trial's, except that a target whose latency is predicted gets no ONNX/OpenVINO export here
(the predictor needs none; `hwkd pick` exports the student it picks, with its parity check).

A candidate that raises is the search's failed trial, with the reason (error.json as a child writes it); a
non-finite figure fails it as a NaN loss would. Injected faults (tests): "raise" and "nan" as in a trial
process; "hang" is a child-process fault and not injected here.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from hwkd.audio.io import write_text_atomic
from hwkd.search.trial import RungResult, check_finite, profile_summary, record_failure

INHERITED = "inherited from the supernet"


class InheritedScorer:
    def __init__(self, supernet: str, data: str, channels: int, val_clips: int | None, val_pesq_clips: int,
                 target: dict | str, runtime: str, threads: int, protocol: str):
        from hwkd.data.datasets import SpeechPairs
        from hwkd.hw.targets import load_target
        from hwkd.train.supernet import load_supernet
        self.supernet_path = supernet
        self.sn, _ = load_supernet(supernet)
        val = SpeechPairs(data, split="val", mode="utterance", channels=channels, limit=val_clips)
        self.val = [val[i] for i in range(len(val))]
        self.val_pesq_clips = val_pesq_clips
        self.target = load_target(target) if isinstance(target, str) else target
        self.runtime, self.threads, self.protocol = runtime, threads, protocol

    def score(self, cfg, tdir: Path, fault: str | None = None) -> RungResult:
        import torch

        from hwkd.models.checkpoint import save_checkpoint
        from hwkd.models.enhancer import Enhancer
        from hwkd.train.trainer import validate
        t0 = time.perf_counter()
        if fault == "raise":
            raise RuntimeError("injected fault (HWKD_FAULT_TRIALS): this candidate raises")
        model = self.sn.extract(cfg).eval()
        if fault == "nan":
            with torch.no_grad():
                for p in model.parameters():
                    p.fill_(float("nan"))
        with torch.inference_mode():
            val = validate(Enhancer(model), self.val, self.val_pesq_clips, "cpu")
        check_finite(val["val_si_sdr_db"], val.get("val_pesq_wb"), val)
        save_checkpoint(tdir / "rung0" / "best.pt", model.eval(),
                        meta={"inherited_from": self.supernet_path,
                              "command": f"hwkd search trial {tdir.name} rung 0 (inherited)"})
        train_s = round(time.perf_counter() - t0, 2)
        prof = profile_summary(model, self.target, tdir / "export", self.runtime, self.threads, self.protocol,
                               export=False)
        return RungResult(rung=0, steps=0, total_steps=0, val_si_sdr_db=float(val["val_si_sdr_db"]),
                          val_pesq_wb=val.get("val_pesq_wb"), val_clips=val.get("val_clips"),
                          val_pesq_clips=val.get("val_pesq_clips"), train_s=train_s, kd_lambda=None,
                          train_data=INHERITED, **prof)

    def run(self, cfg, tdir: Path, fault: str | None = None) -> tuple[RungResult | None, str | None]:
        """(result, None) or (None, reason), as `Search._child` returns; a result already on disk stands."""
        result = tdir / "rung0.json"
        if result.is_file():
            return RungResult.read(result), None
        (tdir / "error.json").unlink(missing_ok=True)
        try:
            out = self.score(cfg, tdir, fault)
        except (KeyboardInterrupt, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001  (any failure of a candidate is recorded, never raised further)
            return None, record_failure(tdir, 0, e)[:500]
        write_text_atomic(result, json.dumps(out.to_dict(), indent=1))
        return out, None
