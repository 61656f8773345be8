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

Versions (a run records its version and a resumed run keeps it, so it sees the data it started with):

- 1: a crop starts in [0, len(clip) - segment], so a segment as long as the stored clips (4 s) always
  starts at 0: the targets never change, only the noise does.
- 2 (the default): a crop starts anywhere in its clip and continues with the speaker's other clips; the
  split's recorded voices (the asterisk actors; train: 2 of its speakers, 47 % of its clips) speak half of
  their crops from their whole prompt packs (~27 min each, where the stored clips hold ~9); every speech crop,
  target and babble talker alike, is sped up or slowed down by one of 0.9, 0.95, 1, 1.05, 1.1 (tempo and
  pitch, polyphase resampling; Kaldi-style speed perturbation), so the split's voices become more voices.
- 3 (the default): version 2, and each Ambisonics mixture's sound field is turned about the vertical axis by a
  uniform random angle, mirrored left-right for half of the items (Y -> -Y): first-order Ambisonics turns
  exactly (X' = cos a·X - sin a·Y, Y' = sin a·X + cos a·Y; W, Z and the dry target unchanged; the FOA-domain
  rotations of sound-event localisation, Mazzon et al. 2019). The room pool holds 128 rooms, so version 2
  showed a network 128 speech directions; a network that uses the direction (a `filter-sum` mask) learned
  them (train SI-SDR far above val). Mono mixtures are the same as version 2's.

Cost (benchmarks/mixing_cost.py): a few milliseconds per 2-s item, in the training process.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import Dataset

from hwkd.data import MIX_VERSION, MIX_VERSIONS
from hwkd.data.synth import SETS, SR, active_rms, level_and_peak, scale_noise_to_snr, spatialise
from hwkd.errors import HwkdError

log = logging.getLogger("hwkd")
MIX_TAG = 7919          # separates the mixing generators' seeds from the static corpus's clip seeds
ROOM_POOL = 128         # Ambisonics rooms per (seed, split), simulated lazily and kept
# v2 speed perturbation: factor -> (up, down) of the polyphase resampling (played at 16 kHz: tempo x factor)
SPEEDS = {0.9: (10, 9), 0.95: (20, 19), 1.0: (1, 1), 1.05: (20, 21), 1.1: (10, 11)}
PACK_SHARE = 0.5        # v2: share of a recorded voice's crops spoken from its whole prompt pack


def corpus_of(set_dir: str | Path) -> Path | None:
    """The corpus root when set_dir is a set of an hwkd corpus (ROOT/mono or ROOT/foa), else None."""
    p = Path(set_dir)
    if p.name in SETS and (p.parent / "corpus.json").is_file():
        return p.parent
    return None


class Mixtures(Dataset):
    """Items {"noisy": float32 [C, N], "clean": float32 [N], "id": str}, mixed anew by `mix(epoch, index)`."""

    ID_PREFIX = "mix"
    seed: int
    epoch: int
    length: int

    def mix(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        raise NotImplementedError

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _set_version(self, version: int) -> None:
        if version not in MIX_VERSIONS:
            raise HwkdError(f"mixing version {version!r}", f"use one of {MIX_VERSIONS}")
        self.version = version

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, k: int) -> dict:
        noisy, clean, _ = self.mix(self.epoch, k)
        return {"noisy": torch.from_numpy(noisy), "clean": torch.from_numpy(clean),
                "id": f"{self.ID_PREFIX}-{self.seed}-{self.epoch}-{k}"}


class OnTheFlyMix(Mixtures):
    """Items {"noisy": float32 [C, N], "clean": float32 [N], "id": str}, mixed anew per (seed, epoch, index)."""

    def __init__(self, set_dir: str | Path, split: str = "train", segment_s: float = 4.0, seed: int = 0,
                 length: int | None = None, version: int = MIX_VERSION):
        from hwkd.data.datasets import SpeechPairs
        self._set_version(version)
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
        split_dir = Path(set_dir) / split
        if (split_dir / "noisy").is_dir():
            static = SpeechPairs(set_dir, split=split, mode="segment", segment_s=segment_s)
            self.channels = static.channels
            count = len(static)
            clips = [(p.clean, p.id, lambda p=p: static._read(p.clean, None, None)[0]) for p in static.pairs]
        else:
            # the clean side alone (a corpus carried to a GPU machine without its static training mixtures,
            # which on-the-fly mixing never reads): the same clips in the same order, the same epoch length
            from hwkd.audio.io import read_audio
            from hwkd.data.datasets import segments_in
            from hwkd.data.layouts import _audio_files
            files = _audio_files(split_dir / "clean")
            if not files:
                raise HwkdError(f"{split_dir} has neither noisy/ nor clean/ audio", "rebuild the corpus: hwkd data "
                                "synth (or carry the split's clean/ folder)")
            self.channels = int(info["channels"][self.set_name])
            count = sum(segments_in(h.frames, h.samplerate, self.segment) for h in map(sf.info, map(str, files)))
            clips = [(f, f.name, lambda f=f: read_audio(f, sample_rate=SR)[0][0]) for f in files]   # ids as scan's
        self.length = length or count
        # the split's clean speech, in memory (600 4-s clips: 150 MB as float32), with its speakers
        meta = {}
        man = split_dir / "manifest.jsonl"
        if man.is_file():
            for line in man.read_text().splitlines():
                r = json.loads(line)
                meta[r["id"]] = r.get("speaker", r["id"])
        self.speech, self.speakers = [], []
        for path, ident, read in clips:
            x = read()
            if active_rms(x) > 0:
                self.speech.append(x.astype(np.float32))
                self.speakers.append(meta.get(Path(path).stem, ident))   # manifest ids are file stems
        if not self.speech:
            raise HwkdError(f"{set_dir}/{split} has no clean speech to mix", "rebuild the corpus: hwkd data synth")
        self.by_speaker: dict[str, list[int]] = {}
        for i, s in enumerate(self.speakers):
            self.by_speaker.setdefault(s, []).append(i)
        self._rooms: dict[int, object] = {}
        self.packs = self._packs() if version >= 2 else {}

    def _packs(self) -> dict:
        """The split's recorded voices whose prompt packs are installed: speaker id -> Speaker (v2)."""
        from hwkd.data.speech import SPLITS, _asterisk_files, speakers
        if self.split not in SPLITS:
            return {}
        out = {}
        for spk in speakers(self.split)["asterisk-g722"]:
            if spk.id not in self.by_speaker:
                continue
            try:
                _asterisk_files(spk.name)
                import G722  # noqa: F401
            except (HwkdError, ImportError):
                log.warning("mixing: %s's prompt pack is not installed here; its crops come from the stored clips "
                            "alone (./install.sh installs it)", spk.id)
                continue
            out[spk.id] = spk
        return out

    # -- sources ------------------------------------------------------------------------------------
    def _speech(self, rng: np.random.Generator, n: int, clip: int | None = None) -> tuple[np.ndarray, str]:
        """n samples of one speaker's speech, from a random offset, continuing with the speaker's other clips
        (v2: from anywhere in the clip, half of a recorded voice's crops from its prompt pack, speed-perturbed)."""
        i = int(rng.integers(len(self.speech))) if clip is None else clip
        spk = self.speakers[i]
        x = self.speech[i]
        if self.version == 1:
            out = x[int(rng.integers(0, max(1, len(x) - n + 1))):]
        else:
            speed = list(SPEEDS)[int(rng.integers(len(SPEEDS)))]
            up, down = SPEEDS[speed]
            want, n = n, int(np.ceil(n * down / up)) + 1       # samples to read before the speed change
            from_pack = rng.random() < PACK_SHARE      # drawn for every crop: the stream never depends on
            if from_pack and spk in self.packs:           # which packs are installed
                from hwkd.data.speech import speech_segment
                out = speech_segment(self.packs[spk], rng, n)
            else:
                out = x[int(rng.integers(len(x))):]
        while len(out) < n:
            j = self.by_speaker[spk][int(rng.integers(len(self.by_speaker[spk])))]
            out = np.concatenate([out, self.speech[j]])
        out = out[:n]
        if self.version >= 2:
            if up != down:
                from scipy.signal import resample_poly
                out = resample_poly(out, up, down).astype(np.float32)
            out = out[:want]
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

    def prepare(self) -> None:
        """Simulate the whole room pool now (Ambisonics), e.g. before loader processes fork, which then share it
        instead of each simulating the rooms it meets."""
        if self.set_name != "mono":
            for k in range(ROOM_POOL):
                self._room(k)

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
            if self.version >= 3:
                noisy = turn_foa(noisy, float(rng.uniform(0, 2 * np.pi)), bool(rng.random() < 0.5))
        noisy, clean = level_and_peak(noisy, clean, level)
        return noisy.astype(np.float32), clean.astype(np.float32), {"speaker": spk, "noise_kind": kind,
                                                                   "snr_db": snr}


def turn_foa(x: np.ndarray, angle: float, mirror: bool = False) -> np.ndarray:
    """First-order Ambisonics [W, Y, Z, X] with its sound field mirrored left-right (Y -> -Y) when asked,
    then turned by `angle` radians about the vertical axis (a source at azimuth φ moves to φ + angle): an exact
    linear map of the X and Y dipoles; W and Z are unchanged."""
    w, y, z, xx = x[0], (-x[1] if mirror else x[1]), x[2], x[3]
    c, s = np.cos(angle), np.sin(angle)
    return np.stack([w, s * xx + c * y, z, c * xx - s * y]).astype(x.dtype)


# -- real datasets that ship their noise separately (DNS Challenge style) --------------------------------
NOISE_DIR = "noise"


def noise_folder(data: str | Path, split: str | None) -> Path | None:
    """DATA/SPLIT/noise/ when a split of a real dataset ships its noise beside noisy/ and clean/, else None."""
    if split is None or corpus_of(data) is not None or not Path(data).is_dir():
        return None
    d = Path(data) / split / NOISE_DIR
    return d if d.is_dir() and (d.parent / "clean").is_dir() else None


class FolderMix(Mixtures):
    """On-the-fly mixtures for a real dataset whose split ships clean speech and noise separately.

    The DNS Challenge ships its training material as clean speech and noise clips, and its synthesiser mixes
    them; a split laid out as DATA/SPLIT/{noisy,clean,noise}/ trains the same way here: every item is a crop of
    the split's clean/ files (continued with other clips of the split when a clip is shorter than the
    segment) plus a crop of one of the split's noise/ files (looped when shorter; version 2 from a random
    point), at an SNR and a level drawn from the ranges of the embedded corpus (SNR -5..20 dB, -35..-15 dBFS;
    the DNS synthesiser's defaults are wider), peak-limited like the corpus. Files are read in crops
    (soundfile seeks), so the split can be large. Only that split's files are used, so speech and noise files
    stay in their split; val and test keep their static pairs. Deterministic per (seed, epoch, index). Mono:
    the noisy item is [1, N].
    An epoch has as many items as the split's clean speech has segments.
    """

    ID_PREFIX = "foldermix"

    def __init__(self, data: str | Path, split: str, segment_s: float = 4.0, seed: int = 0,
                 snr_db: tuple = (-5.0, 20.0), level_dbfs: tuple = (-35.0, -15.0), version: int = MIX_VERSION):
        from hwkd.audio.io import audio_info
        from hwkd.data.layouts import _audio_files
        self._set_version(version)
        d = Path(data) / split
        self.split, self.seed, self.epoch = split, seed, 0
        self.snr_db, self.level_dbfs = tuple(snr_db), tuple(level_dbfs)
        self.segment = int(round(segment_s * SR))
        self.channels = 1

        def files(sub: str) -> list[tuple[Path, int]]:
            out = []
            for p in _audio_files(d / sub):
                info = audio_info(p)
                if info.sample_rate != SR or info.channels != 1:
                    raise HwkdError(f"{p} is {info.sample_rate} Hz, {info.channels} channel(s); on-the-fly mixing "
                                    f"reads {SR} Hz mono {sub} files",
                                    f"resample it to {SR} Hz mono, remove it, or train on the pairs (--mixing off)")
                out.append((p, info.frames))
            if not out:
                raise HwkdError(f"{d / sub} holds no audio files to mix", "add files or train with --mixing off")
            return out
        self.speech, self.noise = files("clean"), files(NOISE_DIR)
        self.length = max(1, sum(n for _, n in self.speech) // self.segment)

    @staticmethod
    def _crop(path: Path, frames: int, start: int, n: int) -> np.ndarray:
        import soundfile as sf
        x, _ = sf.read(str(path), start=start, frames=min(n, frames - start), dtype="float32", always_2d=True)
        return x[:, 0]

    def _speech(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[str]]:
        parts, got, names = [], 0, []
        while got < n:                      # a crop, continued with other clips of the split
            path, frames = self.speech[int(rng.integers(len(self.speech)))]
            start = int(rng.integers(0, max(1, frames - (n - got) + 1))) if not parts else 0
            parts.append(self._crop(path, frames, start, n - got))
            got += len(parts[-1])
            names.append(path.name)
        return np.concatenate(parts)[:n], names

    def _noise(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
        path, frames = self.noise[int(rng.integers(len(self.noise)))]
        if frames < n:                      # a short noise clip loops (version 2: from a random point of it)
            start = int(rng.integers(frames)) if self.version >= 2 else 0
            return np.tile(self._crop(path, frames, 0, frames), -(-n // frames) + 1)[start:start + n], path.name
        return self._crop(path, frames, int(rng.integers(0, frames - n + 1)), n), path.name

    def mix(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray, dict]:
        rng = np.random.default_rng([MIX_TAG, 2, self.seed, epoch, index])
        n = self.segment
        for _ in range(20):                 # a silent crop (leading silence, a digital-zero file) is drawn again
            speech, names = self._speech(rng, n)
            noise, noise_name = self._noise(rng, n)
            if active_rms(speech) > 0 and np.any(noise):
                break
        else:
            raise HwkdError(f"20 silent crops in a row while mixing {self.split} (last: {names[0]} with {noise_name})",
                            "remove silent files from the split's clean/ and noise/ folders")
        snr = float(rng.uniform(*self.snr_db))
        level = float(rng.uniform(*self.level_dbfs))
        noisy = (speech + scale_noise_to_snr(noise, speech, snr))[None, :]
        noisy, clean = level_and_peak(noisy, speech, level)
        return noisy.astype(np.float32), clean.astype(np.float32), {"speech": names, "noise": noise_name,
                                                                   "snr_db": snr}
