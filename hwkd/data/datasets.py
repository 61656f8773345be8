"""Torch datasets over any recognised layout (see hwkd.data.layouts) and the synthetic corpus.

- `mode="segment"`: fixed-length training segments (a file yields floor(duration / segment) segments,
  at least one; short files are zero-padded). `set_epoch(e)` jitters segment offsets reproducibly.
- `mode="utterance"`: whole files for evaluation (use `collate_pad` to batch them).

Audio is resampled to 16 kHz when needed (announced once per dataset, not per file). Input is mono or
multi-channel ([C, N]); the target is always mono ([N]).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from hwkd import SAMPLE_RATE as SR
from hwkd.audio.io import read_audio, resample
from hwkd.data.layouts import Pair, Scan, scan
from hwkd.errors import HwkdError

log = logging.getLogger("hwkd")


def segments_in(frames: int, sample_rate: int, segment: int) -> int:
    """How many training segments of `segment` samples at 16 kHz a file of `frames` at `sample_rate` holds (>= 1)."""
    return max(1, frames * SR // sample_rate // segment)


def select_pairs(s: Scan, split: str | None) -> list[Pair]:
    if split is None:
        return s.pairs
    splits = s.splits()
    chosen = [p for p in s.pairs if p.split == split]
    if not chosen:  # "test" in an hwkd corpus: mono/test and foa/test
        chosen = [p for p in s.pairs if (p.split or "").endswith("/" + split)]
        if len({p.split for p in chosen}) > 1:
            raise HwkdError(f"split {split!r} is ambiguous in {s.root}",
                            f"choose one of: {', '.join(sorted({str(p.split) for p in chosen}))}")
    if not chosen and not any(x is not None for x in splits):
        raise HwkdError(f"split {split!r} not found in {s.root}: it has no splits (a plain paired folder)",
                        "use a dataset with split folders (e.g. train/, val/, test/), or one whose command "
                        "takes the whole folder (evaluate, metrics without --split)")
    if not chosen:
        raise HwkdError(f"split {split!r} not found in {s.root}",
                        f"choose one of: {', '.join(str(x) for x in splits if x is not None)}")
    return chosen


def has_split(source: str | Path | Scan, split: str, channels: int | None = None) -> bool:
    """Whether a dataset has the split (as select_pairs finds it: "ood", or "mono/ood" in an hwkd corpus)."""
    s = source if isinstance(source, Scan) else scan(source, channels=channels)
    return any(x == split or (x or "").endswith("/" + split) for x in s.splits())


def split_pairs(source: str | Path | Scan, split: str | None, channels: int | None = None,
                limit: int | None = None) -> list[Pair]:
    """The usable pairs of one split of a dataset folder, manifest or Scan (split None: every pair): those no file
    problem touches (`hwkd data check` lists the others), the first `limit` of them when given."""
    s = source if isinstance(source, Scan) else scan(source, channels=channels)
    pairs = s.good_pairs(select_pairs(s, split))
    return pairs[:limit] if limit else pairs


class SpeechPairs(Dataset):
    """Noisy/clean pairs. Items: {"noisy": float32 [C, N], "clean": float32 [N], "id": str}."""

    def __init__(self, source: str | Path | Scan, split: str | None = None, mode: str = "segment",
                 segment_s: float = 4.0, channels: int | None = None, seed: int = 0, limit: int | None = None):
        """`limit`: only the first `limit` pairs of the split (in file order; a fixed validation subset)."""
        if mode not in ("segment", "utterance"):
            raise ValueError("mode must be 'segment' or 'utterance'")
        s = source if isinstance(source, Scan) else scan(source, channels=channels)
        pairs = select_pairs(s, split)
        # problems on the chosen files, and unpaired files in the chosen folders, stop the dataset
        folders = {q.noisy.parent for q in pairs} | {q.clean.parent for q in pairs}
        problems = [p for p in s.problems if Path(p.path).parent in folders]
        if problems:
            head = "; ".join(str(p) for p in problems[:3])
            more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
            raise HwkdError(f"{len(problems)} problem(s) in {s.root}: {head}{more}",
                            f"run `hwkd data check {s.root}` for the full list and fix or remove those files")
        self.pairs = s.good_pairs(pairs)[:limit]
        self.info = s.info
        self.root = s.root
        self.mode = mode
        self.seed = seed
        self.epoch = 0
        self.segment = int(round(segment_s * SR))
        self.channels = self.info[self.pairs[0].noisy].channels
        if channels is not None and self.channels != channels:
            raise HwkdError(f"{s.root} holds {self.channels}-channel input, expected {channels}",
                            "choose the matching dataset or model input channels")
        rates = sorted({self.info[p.noisy].sample_rate for p in self.pairs} - {SR})
        if rates:
            log.warning("%s: resampling %s Hz to 16000 Hz while reading", s.root,
                        ", ".join(str(r) for r in rates))
        self.index: list[tuple[int, int]] = []
        for i, p in enumerate(self.pairs):
            info = self.info[p.noisy]
            k = segments_in(info.frames, info.sample_rate, self.segment) if mode == "segment" else 1
            self.index += [(i, j) for j in range(k)]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.index)

    def _read(self, path: Path, start: int | None, frames: int | None) -> np.ndarray:
        info = self.info[path]
        if start is None:
            x, _ = read_audio(path, sample_rate=SR)
            return x
        sr = info.sample_rate
        s0 = start * sr // SR
        n0 = int(np.ceil(frames * sr / SR))
        data, _ = sf.read(str(path), start=s0, frames=n0, dtype="float32", always_2d=True)
        x = resample(np.ascontiguousarray(data.T), sr, SR)
        if x.shape[1] < frames:
            x = np.pad(x, ((0, 0), (0, frames - x.shape[1])))
        return x[:, :frames]

    def __getitem__(self, k: int) -> dict:
        i, j = self.index[k]
        p = self.pairs[i]
        if self.mode == "utterance":
            noisy = self._read(p.noisy, None, None)
            clean = self._read(p.clean, None, None)
            n = min(noisy.shape[1], clean.shape[1])
            noisy, clean = noisy[:, :n], clean[:, :n]
        else:
            info = self.info[p.noisy]
            dur = info.frames * SR // info.sample_rate
            start = j * self.segment
            slack = dur - self.segment * segments_in(info.frames, info.sample_rate, self.segment)
            if self.epoch and slack > 0:
                rng = np.random.default_rng([self.seed, self.epoch, k])
                start += int(rng.integers(0, slack + 1))
            noisy = self._read(p.noisy, start, self.segment)
            clean = self._read(p.clean, start, self.segment)
        return {"noisy": torch.from_numpy(noisy), "clean": torch.from_numpy(clean[0]), "id": p.id}


def collate_pad(items: list[dict]) -> dict:
    """Batch whole utterances: zero-pad to the longest, with `lengths` in samples."""
    n = max(it["clean"].shape[-1] for it in items)
    noisy = torch.stack([torch.nn.functional.pad(it["noisy"], (0, n - it["noisy"].shape[-1])) for it in items])
    clean = torch.stack([torch.nn.functional.pad(it["clean"], (0, n - it["clean"].shape[-1])) for it in items])
    lengths = torch.tensor([it["clean"].shape[-1] for it in items])
    return {"noisy": noisy, "clean": clean, "lengths": lengths, "id": [it["id"] for it in items]}
