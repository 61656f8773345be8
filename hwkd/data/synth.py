"""The embedded default corpus: mono DNS-like pairs and 4-channel FOA (L3DAS23-like) mixtures.

Every clip is a pure function of (seed, set, split, index): the clip's random generator is seeded with
that tuple and nothing else, so shards, reruns and parallel builds are identical. A clip is finished
when its metadata file exists (written last, atomically); a rerun skips finished clips, so an
interrupted build resumes.

Layout (each split is a generic paired folder, readable by `hwkd data check`):

    ROOT/corpus.json                         settings, sizes, package versions
    ROOT/{mono,foa}/{train,val,test}/noisy/clip_000000.wav   (1 or 4 channels: W,Y,Z,X)
    ROOT/{mono,foa}/{train,val,test}/clean/clip_000000.wav   (mono target)
    ROOT/{mono,foa}/{train,val,test}/manifest.jsonl
    ROOT/{mono,foa}/ood/...                  the out-of-domain split (below)

The out-of-domain split ("ood") is built from material no other split has, so a model can be judged on
what it never trained on, beside the in-domain test split: voices of a synthesiser the corpus does not use
otherwise (Festival: an American man, an Italian and a Czech woman reading English; hwkd.data.speech), noise
families no split has (music loops, impulsive one-shots, level-modulated pink noise, babble of those voices;
hwkd.data.noise), SNRs over OOD_SNR_DB (5 dB past the training range on each side) and levels over
OOD_LEVEL_DBFS. Ambisonics clips use rooms drawn as for the other splits.
"""

from __future__ import annotations

import fcntl
import json
import os
import platform
import subprocess
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from importlib import metadata
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from scipy.signal import fftconvolve

from hwkd import SAMPLE_RATE as SR
from hwkd.audio.io import write_text_atomic, write_wav_atomic
from hwkd.config import changed_settings
from hwkd.errors import HwkdError

GENERATOR_VERSION = 1
SETS = {"mono": 1, "foa": 4}           # set name -> input channels
SET_IDS = {"mono": 1, "foa": 2}
SPLIT_IDS = {"train": 1, "val": 2, "test": 3, "ood": 4}
SPLITS = ("train", "val", "test")
ALL_SPLITS = SPLITS + ("ood",)           # sizes are (train, val, test) or (train, val, test, ood)
OOD_SNR_DB = (-10.0, 25.0)
OOD_LEVEL_DBFS = (-45.0, -10.0)


@dataclass(frozen=True)
class CorpusSpec:
    seed: int = 0
    clip_s: float = 4.0
    sizes: dict = field(default_factory=lambda: {"mono": (600, 100, 100, 100), "foa": (240, 40, 40, 40)})
    snr_db: tuple = (-5.0, 20.0)
    level_dbfs: tuple = (-35.0, -15.0)

    def identity(self) -> dict:
        """What must match for an existing corpus to be extended or resumed."""
        return {"generator_version": GENERATOR_VERSION, "seed": self.seed, "clip_s": self.clip_s,
                "snr_db": list(self.snr_db), "level_dbfs": list(self.level_dbfs)}


def clip_name(index: int) -> str:
    return f"clip_{index:06d}"


def clip_rng(seed: int, set_name: str, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, SET_IDS[set_name], SPLIT_IDS[split], index])


def active_rms(x: np.ndarray, frame: int = 320, floor_db: float = -40.0) -> float:
    """RMS over active frames: 20 ms frames within floor_db of the loudest frame."""
    n = len(x) // frame
    if n == 0:
        return float(np.sqrt(np.mean(x ** 2)))
    e = (x[: n * frame].reshape(n, frame) ** 2).mean(1)
    act = e > e.max() * 10 ** (floor_db / 10)
    return float(np.sqrt(e[act].mean())) if act.any() else 0.0


def _rms(x: np.ndarray) -> float:
    return float(np.sqrt(np.mean(x ** 2)) + 1e-12)


def scale_noise_to_snr(noise: np.ndarray, speech: np.ndarray, snr_db: float, ref: np.ndarray | None = None):
    """noise scaled so that active-speech RMS / RMS(ref, default the noise itself) is snr_db."""
    return noise * (active_rms(speech) / 10 ** (snr_db / 20) / _rms(noise if ref is None else ref))


def level_and_peak(noisy: np.ndarray, clean: np.ndarray, level_dbfs: float) -> tuple[np.ndarray, np.ndarray]:
    """Both scaled so the reference channel of noisy sits at level_dbfs, then down together if a peak > 0.99."""
    gain = 10 ** (level_dbfs / 20) / _rms(noisy[0])
    noisy, clean = noisy * gain, clean * gain
    peak = max(np.abs(noisy).max(), np.abs(clean).max())
    if peak > 0.99:
        noisy, clean = noisy * (0.99 / peak), clean * (0.99 / peak)
    return noisy, clean


def spatialise(room, speech: np.ndarray, noise: np.ndarray, snr_db: float, n: int) -> tuple:
    """Speech and a noise point source in a simulated room -> (noisy [4, n], clean [n], target delay).

    `noise` has n + the noise RIRs' length samples (the head is dropped so the noise is stationary). The
    target is the dry speech as it arrives by the direct path (delay and 1/d gain), as in L3DAS23."""
    rir_len = max(len(r) for r in room.rirs[1])
    rev = np.stack([fftconvolve(speech, h)[:n] for h in room.rirs[0]])
    nse = np.stack([fftconvolve(noise, h)[rir_len: rir_len + n] for h in room.rirs[1]])
    noisy = rev + scale_noise_to_snr(nse, rev[0], snr_db, ref=nse[0])
    d = int(round(room.direct_delay))
    clean = np.zeros(n, np.float64)
    clean[d:] = speech[: n - d] * room.direct_gain
    return noisy, clean, d


def make_clip(spec: CorpusSpec, set_name: str, split: str, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """Build one clip. Returns noisy [C, N], clean [N] and its manifest record."""
    from hwkd.data.noise import NOISE_KINDS, NOISE_WEIGHTS, OOD_NOISE_KINDS, OOD_NOISE_WEIGHTS, make_noise
    from hwkd.data.speech import pick_speaker, speech_segment

    rng = clip_rng(spec.seed, set_name, split, index)
    n = int(round(spec.clip_s * SR))
    spk = pick_speaker(split, rng)
    kinds, weights = (OOD_NOISE_KINDS, OOD_NOISE_WEIGHTS) if split == "ood" else (NOISE_KINDS, NOISE_WEIGHTS)
    kind = kinds[int(rng.choice(len(kinds), p=np.array(weights) / sum(weights)))]
    snr = float(rng.uniform(*(OOD_SNR_DB if split == "ood" else spec.snr_db)))
    level = float(rng.uniform(*(OOD_LEVEL_DBFS if split == "ood" else spec.level_dbfs)))
    speech = speech_segment(spk, rng, n)
    meta = {"id": clip_name(index), "index": index, "set": set_name, "split": split,
            "seed": [spec.seed, SET_IDS[set_name], SPLIT_IDS[split], index],
            "speaker": spk.id, "source": spk.source, "speech_kind": spk.kind, "noise_kind": kind}

    if set_name == "mono":
        noise, detail = make_noise(kind, rng, n, split, spk.id)
        noisy = (speech + scale_noise_to_snr(noise, speech, snr))[None, :]
        clean = speech
    else:
        from hwkd.data.rooms import simulate_room
        room = simulate_room(rng)
        rir_len = max(len(r) for r in room.rirs[1])
        noise_dry, detail = make_noise(kind, rng, n + rir_len, split, spk.id)
        noisy, clean, d = spatialise(room, speech, noise_dry, snr, n)
        meta["room"] = room.meta
        meta["target_delay_samples"] = d

    noisy, clean = level_and_peak(noisy, clean, level)
    meta.update({
        "noise_detail": detail,
        "snr_db": round(snr, 3),
        "level_dbfs": round(20 * np.log10(_rms(noisy[0])), 3),
        "channels": int(noisy.shape[0]),
        "duration_s": n / SR,
        "noisy": f"noisy/{clip_name(index)}.wav",
        "clean": f"clean/{clip_name(index)}.wav",
    })
    return noisy.astype(np.float32), clean.astype(np.float32), meta


def _meta_path(split_dir: Path, index: int) -> Path:
    return split_dir / ".meta" / f"{clip_name(index)}.json"


def _is_done(split_dir: Path, index: int) -> bool:
    return (_meta_path(split_dir, index).is_file()
            and (split_dir / "noisy" / f"{clip_name(index)}.wav").is_file()
            and (split_dir / "clean" / f"{clip_name(index)}.wav").is_file())


def _build_one(job: tuple) -> str:
    spec, root, set_name, split, index = job
    split_dir = Path(root) / set_name / split
    noisy, clean, meta = make_clip(spec, set_name, split, index)
    write_wav_atomic(split_dir / meta["noisy"], noisy, SR)
    write_wav_atomic(split_dir / meta["clean"], clean, SR)
    write_text_atomic(_meta_path(split_dir, index), json.dumps(meta))  # last: marks the clip finished
    return meta["id"]


def package_versions() -> dict:
    from hwkd.data.speech import DEBIAN_PACKAGES
    py = {}
    for name in ("hwkd", "numpy", "scipy", "soundfile", "pyroomacoustics", "G722"):
        try:
            py[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            py[name] = None
    deb = {}
    for pkg in DEBIAN_PACKAGES:
        try:
            out = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", pkg], capture_output=True,
                                 text=True, timeout=10)
            deb[pkg] = out.stdout.strip() or None
        except (OSError, subprocess.TimeoutExpired):
            deb[pkg] = None
    return {"python": platform.python_version(), "python_packages": py, "debian_packages": deb}


def _check_identity(root: Path, spec: CorpusSpec) -> None:
    cfg = root / "corpus.json"
    if not cfg.is_file():
        return
    try:
        old = json.loads(cfg.read_text())["identity"]
    except (ValueError, KeyError):
        raise HwkdError(f"{cfg} is not a valid hwkd corpus file",
                        "delete it (finished clips are kept and re-checked) or choose another --out") from None
    new = spec.identity()
    diff = changed_settings(old, new)
    if diff:
        raise HwkdError(f"the corpus at {root} was built with other settings ({'; '.join(diff)})",
                        "use the same settings to resume or extend it, or choose another --out")


def write_manifests(root: Path, spec: CorpusSpec) -> dict:
    counts = {}
    for set_name, sizes in spec.sizes.items():
        for split, n in zip(ALL_SPLITS, sizes):
            split_dir = root / set_name / split
            lines = [_meta_path(split_dir, i).read_text() for i in range(n) if _is_done(split_dir, i)]
            write_text_atomic(split_dir / "manifest.jsonl", "".join(line + "\n" for line in lines))
            counts[f"{set_name}/{split}"] = len(lines)
    return counts


@contextmanager
def _build_lock(root: Path, progress: bool):
    """An exclusive lock on ROOT/.build.lock (flock: released by the kernel when its holder exits, kill -9
    included), held for a whole build."""
    path = root / ".build.lock"
    try:
        f = open(path, "a+")
    except OSError as e:
        raise HwkdError(f"cannot create the corpus lock {path}: {e.strerror}",
                        "build the corpus in a folder you can write (--out, or HWKD_HOME)") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "?"
            if progress:
                print(f"hwkd data synth: {root} is being built by another process (pid {holder}); waiting for it",
                      file=sys.stderr, flush=True)
            fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        yield                                  # closing the file releases the lock


def check_sources(ood: bool = False) -> None:
    """Fail with one clear message when the Debian packages the corpus uses are missing (`ood`: also those of
    the out-of-domain split)."""
    import shutil

    from hwkd.data.noise import ambient_files
    from hwkd.data.speech import (
        ASTERISK_DIR,
        ASTERISK_PACKAGES,
        ASTERISK_SPLIT,
        FESTIVAL_OOD,
        FESTIVAL_PACKAGES,
        festival_voices,
    )
    missing = []
    if ood and (shutil.which("text2wave") is None or len(festival_voices()) < len(FESTIVAL_OOD)):
        missing += FESTIVAL_PACKAGES
    if not all((ASTERISK_DIR / name).is_dir() for name in ASTERISK_SPLIT):
        missing += ASTERISK_PACKAGES
    for tool, pkg in (("espeak-ng", "espeak-ng"), ("flite", "flite")):
        if shutil.which(tool) is None:
            missing.append(pkg)
    if not ambient_files():
        missing.append("sonic-pi-samples")
    if missing:
        raise HwkdError("the corpus needs Debian packages that are not installed: " + " ".join(missing),
                        "run ./install.sh (or: apt-get install " + " ".join(missing) + ")")


def _sizes_record(spec: CorpusSpec) -> dict:
    """corpus.json's `sizes`: {set: {split: clips}}."""
    return {k: dict(zip(ALL_SPLITS, v)) for k, v in spec.sizes.items()}


def _complete(root: Path, spec: CorpusSpec) -> dict | None:
    """The manifests' clip counts when the corpus at root is this spec's and holds every clip with its manifest
    written; else None (something to build, resume or check)."""
    try:
        info = json.loads((root / "corpus.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or info.get("identity") != spec.identity() \
            or info.get("sizes") != _sizes_record(spec):
        return None
    counts = {}
    for set_name, sizes in spec.sizes.items():
        for split, n in zip(ALL_SPLITS, sizes):
            split_dir = root / set_name / split
            try:
                lines = (split_dir / "manifest.jsonl").read_text().count("\n")
            except OSError:
                return None
            if lines != n or not all(_is_done(split_dir, i) for i in range(n)):
                return None
            counts[f"{set_name}/{split}"] = n
    return counts


def build_corpus(root: str | os.PathLike, spec: CorpusSpec = CorpusSpec(), jobs: int | None = None,
                 progress: bool = True) -> dict:
    """Build (or resume, or extend) a corpus. Returns a summary dict."""
    for set_name, sizes in spec.sizes.items():
        if len(sizes) not in (3, 4) or min(sizes) < 0:
            raise HwkdError(f"corpus sizes for {set_name}: {sizes}", "give TRAIN,VAL,TEST[,OOD] clip counts >= 0")
    root = Path(root)
    done = _complete(root, spec)
    if done is not None:        # nothing to build: read only (a shared or read-only corpus stays untouched)
        return {"root": str(root), "built": 0, "skipped": sum(done.values()), "seconds": 0.0, "counts": done,
                "spec": asdict(spec)}
    check_sources(ood=any(len(v) > 3 and v[3] > 0 for v in spec.sizes.values()))
    root.mkdir(parents=True, exist_ok=True)
    # one builder at a time per corpus: another waits here, then finds the clips built (and skips them);
    # without it, its clean-up below deletes the partial writes of a build in progress
    with _build_lock(root, progress):
        _check_identity(root, spec)
        for stale in root.glob("*/*/*/.tmp-*"):  # partial writes of a killed build
            stale.unlink(missing_ok=True)
        todo, skipped = [], 0
        for set_name, sizes in spec.sizes.items():
            if set_name not in SETS:
                raise HwkdError(f"unknown corpus set {set_name!r}", f"use one of {', '.join(SETS)}")
            for split, n in zip(ALL_SPLITS, sizes):
                split_dir = root / set_name / split
                for i in range(n):
                    if _is_done(split_dir, i):
                        skipped += 1
                    else:
                        todo.append((spec, str(root), set_name, split, i))
        write_text_atomic(root / "corpus.json", json.dumps({
            "format": "hwkd-corpus", "identity": spec.identity(),
            "sizes": _sizes_record(spec),
            "channels": {k: SETS[k] for k in spec.sizes}, "sample_rate": SR,
            "versions": package_versions(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z")}, indent=2))

        jobs = jobs or os.cpu_count() or 1
        t0 = time.perf_counter()
        done = 0
        bar = None
        if progress and todo:
            from tqdm import tqdm
            bar = tqdm(total=len(todo), unit="clip", desc="hwkd data synth", dynamic_ncols=True)
            if skipped:
                bar.write(f"resuming: {skipped} finished clips kept, {len(todo)} to build")
        try:
            if jobs == 1:
                for job in todo:
                    _build_one(job)
                    done += 1
                    if bar:
                        bar.update()
            elif todo:
                # fork: workers inherit the loaded modules; each clip is seeded by its own tuple anyway. A worker
                # exits when this process dies (kill -9 included): its clips resume on the next build
                from hwkd.sysinfo import exit_with_parent
                with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("fork"), initializer=exit_with_parent,
                                         initargs=(os.getpid(),)) as pool:
                    pending = set()
                    it = iter(todo)
                    for job in it:
                        pending.add(pool.submit(_build_one, job))
                        if len(pending) >= 4 * jobs:
                            break
                    while pending:
                        finished, pending = wait(pending, return_when=FIRST_COMPLETED)
                        for f in finished:
                            f.result()
                            done += 1
                            if bar:
                                bar.update()
                            nxt = next(it, None)
                            if nxt is not None:
                                pending.add(pool.submit(_build_one, nxt))
        finally:
            if bar:
                bar.close()
            counts = write_manifests(root, spec)
        elapsed = time.perf_counter() - t0
        return {"root": str(root), "built": done, "skipped": skipped, "seconds": round(elapsed, 2),
                "counts": counts, "spec": asdict(spec)}


def build_default_corpus(jobs: int | None = None, progress: bool = True) -> dict:
    """Build (or resume) the embedded default corpus at $HWKD_HOME/corpus/default."""
    from hwkd.paths import default_corpus_dir
    return build_corpus(default_corpus_dir(), CorpusSpec(), jobs=jobs, progress=progress)


def default_dataset(in_channels: int, jobs: int | None = None, progress: bool = True):
    """The embedded corpus's mono or Ambisonics set, built first if needed."""
    root = Path(build_default_corpus(jobs=jobs, progress=progress)["root"])
    return root / ("foa" if in_channels == 4 else "mono")
