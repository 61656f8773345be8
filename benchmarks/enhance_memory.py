"""Peak memory of `hwkd enhance` against input length, and what chunking a non-causal model costs in quality.

1. Memory: for each model (the causal student preset `cpu-student-causal`, seeded weights, and the shipped
   non-causal teacher `hwkd/assets/teacher-cpu-mono.pt`, preset cpu-teacher) and each input length, a
   synthetic 16 kHz PCM16 WAV is generated in a temporary folder (written block by block; deleted at the end,
   never kept) and `python -m hwkd -q enhance CKPT IN OUT` runs in a child process. Its peak RSS is the child's
   ru_maxrss (os.wait4: that child alone). Linux carries a parent's high-water mark into the children it
   spawns, so this script spawns them before it imports torch (it holds ~30 MB then). A point that runs past
   --max-run-s is stopped (SIGINT, as a user's Ctrl-C) and reported `partial` with the audio it had enhanced
   by then (its temporary output's size): the peak of a chunked run is reached within its first chunks, so a
   partial point still bounds it. Lengths up to --whole-max-s also run the whole-file path the command used
   before (read the file, Enhancer.enhance_array, write), for the slope it had. `baseline` rows: a child that
   imports hwkd and torch and loads the checkpoint, enhancing nothing (the floor every point includes).
2. Non-causal chunking: --quality-s seconds of the embedded corpus's test split (noisy and clean clips
   concatenated) enhanced by the teacher whole-file and in overlapping windows of each --windows length
   (hwkd.models.enhancer NONCAUSAL_CHUNK_S, NONCAUSAL_OVERLAP_S): SI-SDR against clean of both (over the whole
   concatenation, and the mean over its utterances), and of the chunked output against the whole-file output.
   The causal student's chunked output against its whole-file output on the same audio: max abs difference
   (float rounding, since its chunks carry the streaming state).

    python benchmarks/enhance_memory.py [--lengths 10,60,600,3600] [--max-run-s 900] [--windows 10,20,30]
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from hwkd.sysinfo import fingerprint

from _common import RESULTS, save

ROOT = Path(__file__).resolve().parents[1]
SR = 16000
WHOLE = """import sys
from hwkd.audio.io import read_audio, write_wav_atomic
from hwkd.models.checkpoint import load_model
from hwkd.models.enhancer import Enhancer
m, _ = load_model(sys.argv[1])
x, _ = read_audio(sys.argv[2], sample_rate=16000)
write_wav_atomic(sys.argv[3], Enhancer(m).eval().enhance_array(x), 16000)
"""
BASELINE = """import sys
import torch
from hwkd.models.checkpoint import load_model
from hwkd.models.enhancer import Enhancer
Enhancer(load_model(sys.argv[1])[0]).eval()
"""
MAKE_CAUSAL = """import sys
import torch
from hwkd.models.checkpoint import save_checkpoint
from hwkd.models.registry import create_model
torch.manual_seed(0)
save_checkpoint(sys.argv[1], create_model("cpu-student-causal"))
"""


def make_wav(path: Path, seconds: float, seed: int = 0) -> None:
    """Tone bursts in noise, PCM16, written a minute at a time (the benchmark itself stays small)."""
    rng = np.random.default_rng(seed)
    n = round(seconds * SR)
    with sf.SoundFile(str(path), "w", SR, 1, subtype="PCM_16") as f:
        for a in range(0, n, 60 * SR):
            t = np.arange(a, min(n, a + 60 * SR)) / SR
            burst = np.sin(2 * np.pi * 0.5 * t) > 0
            x = 0.1 * np.sin(2 * np.pi * 220 * t) * burst + 0.03 * rng.standard_normal(len(t))
            f.write(x.astype(np.float32))


def run_child(argv: list[str], out: Path, limit_s: float) -> dict:
    """Run argv; peak RSS of that child alone (os.wait4), wall time; stopped at limit_s with SIGINT (SIGKILL
    30 s later), reported partial with the audio its temporary output holds by then."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile() as err:
        # SIGINT back to its default in the child: a benchmark started in the background (`&`, nohup) ignores it,
        # children inherit that, and the stop below would then always end in SIGKILL
        p = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        stopped, done = None, None
        while True:
            pid, status, ru = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            now = time.perf_counter()
            if stopped is None and now - t0 > limit_s:
                done = sum(max(0, q.stat().st_size - 44) for q in out.parent.glob(".tmp-*.wav")) / 2 / SR
                p.send_signal(signal.SIGINT)
                stopped = now
            elif stopped is not None and now - stopped > 30:
                p.kill()
            time.sleep(0.2)
        p.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        lines = err.read().decode(errors="replace").strip().splitlines()
    row = {"peak_rss_mib": round(ru.ru_maxrss / 1024, 1), "wall_s": round(time.perf_counter() - t0, 1),
           "cpu_s": round(ru.ru_utime + ru.ru_stime, 1), "exit": p.returncode}
    if stopped is not None and not (p.returncode == 0 and out.is_file()):    # (finished as it was stopped: whole)
        row.update(partial=True, enhanced_s=round(done, 1))
    elif p.returncode != 0:
        row["error"] = lines[-1] if lines else "?"
    return row


def memory_rows(models: dict, lengths: list[float], whole_max_s: float, limits: dict, tmp: Path) -> list[dict]:
    rows = []
    for label, ck in models.items():
        rows.append({"model": label, "input_s": 0, "path": "baseline",
                     **run_child([sys.executable, "-c", BASELINE, str(ck)], tmp / "none.wav", limits[label])})
        print(rows[-1], flush=True)
    for seconds in lengths:
        wav = tmp / f"in-{seconds:g}s.wav"
        make_wav(wav, seconds)
        for label, ck in models.items():
            paths = [("chunked", [sys.executable, "-m", "hwkd", "-q", "enhance", str(ck), str(wav)])]
            if seconds <= whole_max_s:
                paths.append(("whole-file (before)", [sys.executable, "-c", WHOLE, str(ck), str(wav)]))
            for how, argv in paths:
                out = tmp / "out" / f"{label}-{how[:5]}-{seconds:g}.wav"
                out.parent.mkdir(exist_ok=True)
                row = {"model": label, "input_s": seconds, "path": how,
                       **run_child(argv + [str(out)], out, limits[label])}
                if "partial" not in row and row["exit"] == 0:
                    row["rtf"] = round(row["wall_s"] / seconds, 3)
                    row["cpu_s_per_audio_s"] = round(row["cpu_s"] / seconds, 3)
                rows.append(row)
                print(row, flush=True)
                out.unlink(missing_ok=True)
        wav.unlink()
    return rows


def _si_sdr(est, ref, bounds=None):
    """SI-SDR over the whole signal, or (bounds) the mean over the utterances it concatenates."""
    from hwkd.metrics.quality import si_sdr
    if bounds is None:
        return round(si_sdr(est, ref), 3)
    return round(float(np.mean([si_sdr(est[a:b], ref[a:b]) for a, b in zip(bounds[:-1], bounds[1:])])), 3)


def _scores(y, clean, bounds, whole=None) -> dict:
    row = {"si_sdr_db": _si_sdr(y, clean), "utterance_mean_si_sdr_db": _si_sdr(y, clean, bounds)}
    if whole is not None:
        row["delta_vs_whole_db"] = round(row["si_sdr_db"] - whole["si_sdr_db"], 3)
        row["utterance_mean_delta_vs_whole_db"] = round(row["utterance_mean_si_sdr_db"]
                                                        - whole["utterance_mean_si_sdr_db"], 3)
    return row


def quality(teacher_ck: Path, causal_ck: Path, seconds: float, windows: list[float], overlap_s: float) -> dict:
    import torch

    import hwkd.models.enhancer as E
    from hwkd.audio.io import read_audio
    from hwkd.data.datasets import split_pairs
    from hwkd.data.layouts import scan
    from hwkd.data.synth import default_dataset
    from hwkd.models.checkpoint import load_model
    data = default_dataset(1, progress=False)
    s = scan(data, channels=1)
    noisy, clean, used = [], [], 0
    for p in split_pairs(s, "test"):
        x, _ = read_audio(p.noisy, 16000)
        c, _ = read_audio(p.clean, 16000)
        k = min(x.shape[1], c.shape[1])
        noisy.append(x[:, :k])
        clean.append(c[0, :k])
        used += 1
        if sum(len(q) for q in clean) >= seconds * SR:
            break
    bounds = np.cumsum([0] + [len(q) for q in clean])
    noisy, clean = np.concatenate(noisy, axis=1), np.concatenate(clean)
    out = {"data": f"{data} [test], {used} utterances concatenated", "seconds": round(len(clean) / SR, 2),
           "noisy": _scores(noisy[0], clean, bounds)}
    teacher, _ = load_model(teacher_ck)
    enh = E.Enhancer(teacher).eval()
    with torch.no_grad():
        t0 = time.perf_counter()
        whole = enh.enhance_array(noisy)
        ref = out["teacher_whole_file"] = {**_scores(whole, clean, bounds), "s": round(time.perf_counter() - t0, 1)}
        out["teacher_windows"] = []
        for w in windows:
            t0 = time.perf_counter()
            y = np.concatenate(list(E.overlap_blocks(enh, [noisy], round(w * SR), round(overlap_s * SR))))
            out["teacher_windows"].append({"window_s": w, "overlap_s": overlap_s, **_scores(y, clean, bounds, ref),
                                           "si_sdr_vs_whole_file_db": _si_sdr(y, whole),
                                           "s": round(time.perf_counter() - t0, 1)})
            print(out["teacher_windows"][-1], flush=True)
        student, _ = load_model(causal_ck)
        enh = E.Enhancer(student).eval()
        whole = enh.enhance_array(noisy)
        y = np.concatenate(list(enh.enhance_blocks([noisy])))
        out["causal_chunked_vs_whole_max_abs"] = float(np.abs(y - whole).max())
        out["causal_chunk_s"] = E.CAUSAL_CHUNK_S
    out["default_window_s"] = E.NONCAUSAL_CHUNK_S
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lengths", default="10,60,600,3600", help="input lengths in seconds")
    ap.add_argument("--whole-max-s", type=float, default=60, help="also run the whole-file path up to this length")
    ap.add_argument("--max-run-s", type=float, default=3600, help="stop a point after this long (reported partial)")
    ap.add_argument("--teacher-max-run-s", type=float, default=300,
                    help="the same for the non-causal teacher (RTF ~1.5 on 2 loaded cores: an hour would take 1.5 h)")
    ap.add_argument("--models", default="causal,teacher", help="causal (cpu-student-causal), teacher (cpu-teacher)")
    ap.add_argument("--quality-s", type=float, default=60)
    ap.add_argument("--windows", default="10,20,30", help="non-causal window lengths compared (s)")
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--name", default="enhance_memory")
    ap.add_argument("--merge", action="store_true",
                    help="replace the same points (model, length, path) in results/NAME.json and keep the rest, e.g. "
                         "to rerun one point with a longer --max-run-s")
    a = ap.parse_args()
    teacher = ROOT / "hwkd" / "assets" / "teacher-cpu-mono.pt"          # hwkd.models.teacher.embedded_teacher_path()
    load0 = os.getloadavg()
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="hwkd-enhance-memory-") as tmp:
        tmp = Path(tmp)
        causal = tmp / "cpu-student-causal.pt"
        subprocess.run([sys.executable, "-c", MAKE_CAUSAL, str(causal)], cwd=ROOT, check=True)
        models = {"cpu-student-causal": causal, "cpu-teacher (shipped)": teacher}
        models = {k: v for k, v in models.items() if ("causal" if "causal" in k else "teacher") in a.models}
        result = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M"), "machine": fingerprint(),
                  "load_avg_at_start": load0, "max_run_s": a.max_run_s, "teacher_max_run_s": a.teacher_max_run_s}
        limits = {k: a.teacher_max_run_s if "teacher" in k else a.max_run_s for k in models}
        # memory first: this process must stay small while it spawns the measured children (see the doc)
        result["memory"] = memory_rows(models, [float(x) for x in a.lengths.split(",")], a.whole_max_s,
                                       limits, tmp)
        if not a.merge:
            save(a.name, result)
        if not a.skip_quality:
            from hwkd.models.enhancer import NONCAUSAL_OVERLAP_S
            result["noncausal_chunking"] = quality(teacher, causal, a.quality_s,
                                                   [float(w) for w in a.windows.split(",")], NONCAUSAL_OVERLAP_S)
    result["load_avg_at_end"] = os.getloadavg()
    result["benchmark_s"] = round(time.time() - t0)
    old = RESULTS / f"{a.name}.json"
    if a.merge and old.is_file():
        base = json.loads(old.read_text())
        key = ("model", "input_s", "path")
        new = {tuple(r[k] for k in key): r for r in result["memory"]}
        base["memory"] = [new.pop(tuple(r[k] for k in key), r) for r in base["memory"]] + list(new.values())
        if "noncausal_chunking" in result:
            base["noncausal_chunking"] = result["noncausal_chunking"]
        meta = {k: v for k, v in result.items() if k not in ("memory", "noncausal_chunking")}
        points = [[r[k] for k in key] for r in result["memory"]]
        base.setdefault("merged_runs", []).append({**meta, "points": points})
        result = base
    save(a.name, result)


if __name__ == "__main__":
    main()
