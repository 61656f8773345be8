"""Training data that does not run out: pairs mixed on the fly from an hwkd corpus set's own sources.

A static corpus gives every epoch the same 600 mixtures, and a network that trains long enough learns them
(the embedded teacher ended at 16.4 dB SI-SDR on train against 13.0 dB on val). `OnTheFlyMix` draws a new
mixture for every (seed, epoch, index) instead, with the corpus's own recipe (hwkd.data.synth):

- speech: a random crop of the split's clean clips (the split's speakers only; a crop longer than a clip
  continues with other clips of the same speaker), level-equalised;
- noise: the corpus's generators and weights (white, pink, brown, blue, hum, fan, clicks, ambient loops of
  the split's ambient files) and babble of 3-7 crops of the split's *other* speakers (the static corpus
  synthesises babble with TTS; crops of the split's own speech cost ~100x less and keep the split);
- SNR, level and peak handling from the corpus's settings (corpus.json); for Ambisonics, a room from a pool
  of rooms simulated per (seed, room index) once and kept in memory (a room costs ~0.05 s to simulate).

Every item is a pure function of (corpus, seed, epoch, index): its generator is seeded with that tuple
alone, so a killed and resumed run sees the same data, and workers agree. Val and test stay the fixed
synthesised clips (`SpeechPairs`). An epoch has as many items as the static split has segments.

Cost (benchmarks/mixing_cost.py): a few milliseconds per 2-s item, in the training process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from hwkd.data.synth import SETS, SR, active_rms, level_and_peak, scale_noise_to_snr, spatialise
from hwkd.errors import HwkdError

log = logging.getLogger("hwkd")
MIX_TAG = 7919          # separates the mixing generators' seeds from the static corpus's clip seeds
ROOM_POOL = 128         # Ambisonics rooms per (seed, split), simulated lazily and kept


def corpus_of(set_dir: str | Path) -> Path | None:
    """The corpus root when set_dir is a set of an hwkd corpus (ROOT/mono or ROOT/foa), else None."""
    p = Path(set_dir)
    if p.name in SETS and (p.parent / "corpus.json").is_file():
        return p.parent
    return None


class OnTheFlyMix(Dataset):
    """Items {"noisy": float32 [C, N], "clean": float32 [N], "id": str}, mixed anew per (seed, epoch, index)."""

    def __init__(self, set_dir: str | Path, split: str = "train", segment_s: float = 4.0, seed: int = 0,
                 length: int | None = None):
        from hwkd.data.datasets import SpeechPairs
        root = corpus_of(set_dir)
        if root is None:
            raise HwkdError(f"{set_dir} is not a set of an hwkd corpus (no corpus.json beside it)",
                            "on-the-fly mixing needs the embedded corpus; real datasets train on their pairs")
        info = json.loads((root / "corpus.json").read_text())
        ident = info["identity"]
        self.set_name = Path(set_dir).name
        self.split = split
        self.snr_db, self.level_dbfs = tuple(ident["snr_db"]), tuple(ident["level_dbfs"])
        self.corpus_seed = int(ident["seed"])
        self.seed, self.epoch = seed, 0
        self.segment = int(round(segment_s * SR))
        static = SpeechPairs(set_dir, split=split, mode="segment", segment_s=segment_s)
        self.channels = static.channels
        self.length = length or len(static)
        # the split's clean speech, in memory (600 4-s clips: 150 MB as float32), with its speakers
        meta = {}
        man = Path(set_dir) / split / "manifest.jsonl"
        if man.is_file():
            for line in man.read_text().splitlines():
                r = json.loads(line)
                meta[r["id"]] = r.get("speaker", r["id"])
        self.speech, self.speakers = [], []
        for p in static.pairs:
            x = static._read(p.clean, None, None)[0]
            if active_rms(x) > 0:
                self.speech.append(x.astype(np.float32))
                self.speakers.append(meta.get(Path(p.clean).stem, p.id))   # manifest ids are file stems
        if not self.speech:
            raise HwkdError(f"{set_dir}/{split} has no clean speech to mix", "rebuild the corpus: hwkd data synth")
        self.by_speaker: dict[str, list[int]] = {}
        for i, s in enumerate(self.speakers):
            self.by_speaker.setdefault(s, []).append(i)
        self._rooms: dict[int, object] = {}

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.length

    # -- sources ------------------------------------------------------------------------------------
    def _speech(self, rng: np.random.Generator, n: int, clip: int | None = None) -> tuple[np.ndarray, str]:
        """n samples of one speaker's speech, from a random offset, continuing with the speaker's other clips."""
        i = int(rng.integers(len(self.speech))) if clip is None else clip
        spk = self.speakers[i]
        x = self.speech[i]
        out = x[int(rng.integers(0, max(1, len(x) - n + 1))):]
        while len(out) < n:
            j = self.by_speaker[spk][int(rng.integers(len(self.by_speaker[spk])))]
            out = np.concatenate([out, self.speech[j]])
        out = out[:n]
        return out / (active_rms(out) + 1e-9) * 0.05, spk

    def _babble(self, rng: np.random.Generator, n: int, talker: str) -> np.ndarray:
        others = [i for i, s in enumerate(self.speakers) if s != talker] or list(range(len(self.speech)))
        x = np.zeros(n, np.float32)
        for _ in range(int(rng.integers(3, 8))):
            x += self._speech(rng, n, others[int(rng.integers(len(others)))])[0] * rng.uniform(0.5, 1.0)
        return x / (x.std() + 1e-9)

    def _noise(self, rng: np.random.Generator, n: int, talker: str) -> tuple[np.ndarray, str]:
        from hwkd.data.noise import NOISE_KINDS, NOISE_WEIGHTS, make_noise
        kind = NOISE_KINDS[int(rng.choice(len(NOISE_KINDS), p=np.array(NOISE_WEIGHTS) / sum(NOISE_WEIGHTS)))]
        if kind == "babble":
            return self._babble(rng, n, talker), kind
        return make_noise(kind, rng, n, self.split, talker)[0], kind

    def _room(self, k: int):
        from hwkd.data.rooms import simulate_room
        if k not in self._rooms:
            from hwkd.data.synth import SPLIT_IDS
            rng = np.random.default_rng([self.corpus_seed, MIX_TAG, SPLIT_IDS.get(self.split, 0), 1000 + k])
            self._rooms[k] = simulate_room(rng)
        return self._rooms[k]

    # -- items --------------------------------------------------------------------------------------
    def mix(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        rng = np.random.default_rng([self.corpus_seed, MIX_TAG, self.seed, epoch, index])
        n = self.segment
        speech, spk = self._speech(rng, n)
        snr = float(rng.uniform(*self.snr_db))
        level = float(rng.uniform(*self.level_dbfs))
        if self.set_name == "mono":
            noise, kind = self._noise(rng, n, spk)
            noisy = (speech + scale_noise_to_snr(noise, speech, snr))[None, :]
            clean = speech
        else:
            room = self._room(int(rng.integers(ROOM_POOL)))
            rir_len = max(len(r) for r in room.rirs[1])
            noise, kind = self._noise(rng, n + rir_len, spk)
            noisy, clean, _ = spatialise(room, speech, noise, snr, n)
        noisy, clean = level_and_peak(noisy, clean, level)
        return noisy.astype(np.float32), clean.astype(np.float32), {"speaker": spk, "noise_kind": kind,
                                                                   "snr_db": snr}

    def __getitem__(self, k: int) -> dict:
        noisy, clean, _ = self.mix(self.epoch, k)
        return {"noisy": torch.from_numpy(noisy), "clean": torch.from_numpy(clean),
                "id": f"mix-{self.seed}-{self.epoch}-{k}"}
