"""Speech sources for the embedded corpus, all from Debian packages (nothing is downloaded or committed).

- real recorded speech: the asterisk G.722 prompt packs, one professional voice actor per pack;
- TTS: espeak-ng (voice variants x English accents) and flite (4 voices).

Speaker-disjoint splits: real actors are split by actor, espeak-ng by voice variant, flite by voice.

The out-of-domain split ("ood") uses voices no other split has, from a synthesiser the corpus never uses
otherwise: Festival's diphone voices (an American English man; an Italian and a Czech woman reading the English
sentences with their own phonetics), so a model is scored on voices, engine and accents it never trained on.
"""

from __future__ import annotations

import functools
import hashlib
import io
import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

from hwkd import SAMPLE_RATE as SR
from hwkd.audio.io import resample
from hwkd.errors import HwkdError

ASTERISK_DIR = Path("/usr/share/asterisk/sounds")
SPLITS = ("train", "val", "test")
OOD_SPLIT = "ood"
# Festival voices of the out-of-domain split: voice name -> its Debian package (never used by other splits)
FESTIVAL_OOD = {"ked_diphone": "festvox-kdlpc16k", "lp_diphone": "festvox-italp16k",
                "czech_dita": "festvox-czech-dita"}
FESTIVAL_PACKAGES = ["festival", *FESTIVAL_OOD.values()]

# One voice actor per asterisk pack (the folder name carries language, sex and name).
ASTERISK_SPLIT = {
    "en_US_f_Allison": "train",
    "it_IT_m_Carlo": "train",
    "ru_RU_f_IvrvoiceRU": "val",
    "fr_CA_f_June": "test",
}
ASTERISK_PACKAGES = [f"asterisk-core-sounds-{lang}-g722" for lang in ("en", "fr", "it", "ru")]

FLITE_SPLIT = {"awb": "train", "rms": "train", "slt": "val", "kal16": "test"}

ESPEAK_ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-gbcwmd",
                  "en-gb-x-rp", "en-029")
# Variants that are not plausible speech (robots, whisper, effects) are left out.
_ESPEAK_EXCLUDE = ("whisper", "robo", "robot", "demonic", "tweaky", "unirobot", "croak")

DEBIAN_PACKAGES = ASTERISK_PACKAGES + ["espeak-ng", "espeak-ng-data", "flite", "sonic-pi-samples"] + FESTIVAL_PACKAGES


@dataclass(frozen=True)
class Speaker:
    id: str        # e.g. "asterisk:en_US_f_Allison", "espeak-ng:f3", "flite:awb"
    source: str    # "asterisk-g722" | "espeak-ng" | "flite" | "festival"
    name: str

    @property
    def kind(self) -> str:
        return "real" if self.source == "asterisk-g722" else "tts"


def _hash_split(name: str) -> str:
    h = int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) % 100
    return "train" if h < 70 else ("val" if h < 85 else "test")


def festival_voices() -> list[str]:
    """The out-of-domain Festival voices installed (their folders under /usr/share/festival/voices)."""
    root = Path("/usr/share/festival/voices")
    return [v for v in FESTIVAL_OOD if any((d / v).is_dir() for d in root.glob("*"))] if root.is_dir() else []


@functools.lru_cache(maxsize=1)
def espeak_variants() -> tuple[str, ...]:
    out = subprocess.run(["espeak-ng", "--voices=variant"], capture_output=True, text=True,
                         check=True).stdout
    names = []
    for line in out.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 5 and parts[4].startswith("!v/"):
            v = parts[4][3:]
            if not any(x in v.lower() for x in _ESPEAK_EXCLUDE):
                names.append(v)
    return tuple(sorted(set(names)))


@functools.cache
def speakers(split: str) -> dict[str, tuple[Speaker, ...]]:
    """Speakers of one split, grouped by source."""
    if split == OOD_SPLIT:
        return {"festival": tuple(Speaker(f"festival:{v}", "festival", v) for v in FESTIVAL_OOD)}
    real = tuple(Speaker(f"asterisk:{n}", "asterisk-g722", n)
                 for n, s in sorted(ASTERISK_SPLIT.items()) if s == split)
    esp = tuple(Speaker(f"espeak-ng:{v}", "espeak-ng", v) for v in espeak_variants()
                if _hash_split(v) == split)
    fl = tuple(Speaker(f"flite:{v}", "flite", v) for v, s in sorted(FLITE_SPLIT.items()) if s == split)
    return {"asterisk-g722": real, "espeak-ng": esp, "flite": fl}


@functools.cache
def _asterisk_files(actor: str) -> tuple[Path, ...]:
    files = tuple(sorted((ASTERISK_DIR / actor).rglob("*.g722")))
    if not files:
        raise HwkdError(f"no G.722 prompts under {ASTERISK_DIR / actor}",
                        "install asterisk-core-sounds-*-g722 (./install.sh)")
    return files


@functools.lru_cache(maxsize=1024)
def _decode_g722(path: Path) -> np.ndarray:
    import G722
    pcm = G722.G722(SR, 64000).decode(path.read_bytes())
    x = np.asarray(pcm, dtype=np.float32) / 32768.0
    return _trim(x)


def _trim(x: np.ndarray, thresh_db: float = -50.0) -> np.ndarray:
    """Cut leading/trailing frames more than -thresh_db below the loudest 10 ms frame."""
    hop = 160
    n = len(x) // hop
    if n < 2:
        return x
    e = (x[: n * hop].reshape(n, hop) ** 2).mean(1) + 1e-12
    db = 10 * np.log10(e / e.max())
    act = np.nonzero(db > thresh_db)[0]
    if len(act) == 0:
        return x
    return x[act[0] * hop: (act[-1] + 1) * hop]


# --- text for the TTS voices: a small seeded grammar -------------------------------------------

_SUBJ = ["the old man", "my sister", "a young doctor", "the teacher", "our neighbour", "the pilot",
         "a tired student", "the small child", "your friend", "the farmer", "the engineer",
         "a quiet woman", "the driver", "his brother", "the manager", "every visitor", "the baker",
         "a tall stranger", "the nurse", "the singer"]
_VERB = ["carried", "painted", "found", "opened", "repaired", "ordered", "described", "borrowed",
         "noticed", "cleaned", "followed", "measured", "wrapped", "collected", "moved", "counted",
         "delivered", "tested", "locked", "watched"]
_OBJ = ["a heavy box", "the blue door", "seven apples", "the broken clock", "an empty bottle",
        "the wooden chair", "a long letter", "the silver key", "three small stones", "the green coat",
        "a warm blanket", "the kitchen table", "the evening paper", "a bright lamp", "the garden gate",
        "twelve red cups", "a paper map", "the old piano", "a basket of bread", "the narrow bridge"]
_TAIL = ["before the rain started", "near the station", "in the early morning", "after dinner",
         "on a cold afternoon", "without a word", "at the end of the street", "for the third time",
         "while the radio played", "behind the house", "under the bright lights", "during the storm",
         "by the river", "next to the market", "as the bell rang", "in a hurry", "with great care",
         "last Tuesday", "at half past nine", "across the wide field"]
_Q = ["Did you see", "Who moved", "Where did they put", "Why is nobody watching", "Can you hold"]


def sentence(rng: np.random.Generator) -> str:
    c = rng.choice
    if rng.random() < 0.15:
        return f"{c(_Q)} {c(_OBJ)} {c(_TAIL)}?"
    s = f"{c(_SUBJ)} {c(_VERB)} {c(_OBJ)} {c(_TAIL)}"
    if rng.random() < 0.3:
        s += f", and {c(_SUBJ)} {c(_VERB)} {c(_OBJ)}"
    return s[0].upper() + s[1:] + "."


def _wav_bytes_to_float(raw: bytes) -> tuple[np.ndarray, int]:
    """espeak-ng --stdout writes a streaming WAV header with a bogus length; parse it by hand."""
    idx = raw.find(b"data")
    if raw[:4] != b"RIFF" or idx < 0:
        raise RuntimeError("TTS produced no WAV data")
    sr = int.from_bytes(raw[24:28], "little")
    pcm = np.frombuffer(raw[idx + 8:][: (len(raw) - idx - 8) // 2 * 2], dtype="<i2")
    return pcm.astype(np.float32) / 32768.0, sr


def _tts(spk: Speaker, text: str, rng: np.random.Generator) -> np.ndarray:
    if spk.source == "festival":
        import tempfile
        with tempfile.TemporaryDirectory() as d:
            out = Path(d) / "u.wav"
            # Festival's Italian voice fails on "?" (SIOD error, exit 0, empty file): questions end with "."
            r = subprocess.run(["text2wave", "-eval", f"(voice_{spk.name})", "-o", str(out)],
                               input=text.replace("?", ".").encode(), capture_output=True, check=True, timeout=60)
            if not out.is_file() or out.stat().st_size < 100:
                raise RuntimeError(f"Festival voice {spk.name} produced no audio for {text!r}: "
                                   f"{r.stderr.decode(errors='replace').strip()[-200:]}")
            x, sr = sf.read(str(out), dtype="float32")
        if x.ndim > 1:
            x = x.mean(1)
    elif spk.source == "espeak-ng":
        accent = ESPEAK_ACCENTS[int(rng.integers(len(ESPEAK_ACCENTS)))]
        speed = int(rng.integers(135, 186))
        pitch = int(rng.integers(25, 76))
        cmd = ["espeak-ng", "-v", f"{accent}+{spk.name}", "-s", str(speed), "-p", str(pitch), "--stdout",
               text]
        raw = subprocess.run(cmd, capture_output=True, check=True, timeout=60).stdout
        x, sr = _wav_bytes_to_float(raw)
    else:
        raw = subprocess.run(["flite", "-voice", spk.name, "-t", text, "-o", "/dev/stdout"],
                             capture_output=True, check=True, timeout=60).stdout
        data, sr = sf.read(io.BytesIO(raw), dtype="float32")
        x = data
    return _trim(resample(x, sr, SR))


def utterance(spk: Speaker, rng: np.random.Generator) -> np.ndarray:
    """One utterance (a prompt or a sentence) of the speaker at 16 kHz, silence-trimmed."""
    if spk.source == "asterisk-g722":
        files = _asterisk_files(spk.name)
        return _decode_g722(files[int(rng.integers(len(files)))])
    return _tts(spk, sentence(rng), rng)


def speech_segment(spk: Speaker, rng: np.random.Generator, n: int) -> np.ndarray:
    """n samples of continuous speech: utterances joined by 0.1-0.5 s pauses, random start."""
    parts, total = [], 0
    lead = int(rng.uniform(0.0, 0.3) * SR)
    parts.append(np.zeros(lead, np.float32))
    total += lead
    while total < n:
        u = utterance(spk, rng)
        u = u / (np.sqrt(np.mean(u ** 2)) + 1e-9) * 0.05  # equalise prompt levels
        parts.append(u)
        pause = np.zeros(int(rng.uniform(0.1, 0.5) * SR), np.float32)
        parts.append(pause)
        total += len(u) + len(pause)
    x = np.concatenate(parts)
    return x[:n].astype(np.float32)


def pick_speaker(split: str, rng: np.random.Generator,
                 weights=(("asterisk-g722", 0.5), ("espeak-ng", 0.35), ("flite", 0.15)),
                 exclude: tuple[str, ...] = ()) -> Speaker:
    groups = speakers(split)
    if split == OOD_SPLIT:                      # one source: its voices, evenly
        weights = (("festival", 1.0),)
    names = [k for k, _ in weights]
    w = np.array([p if groups[k] else 0.0 for k, p in weights])
    src = names[int(rng.choice(len(names), p=w / w.sum()))]
    pool = [s for s in groups[src] if s.id not in exclude] or \
           [s for g in groups.values() for s in g if s.id not in exclude]
    return pool[int(rng.integers(len(pool)))]
