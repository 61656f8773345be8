"""Noise for the embedded corpus: seeded synthetic noises, babble, and CC0 ambient loops (sonic-pi-samples)."""

from __future__ import annotations

import functools
import os
from pathlib import Path

import numpy as np
import soundfile as sf

from hwkd import SAMPLE_RATE as SR
from hwkd.audio.io import resample

# where Debian's sonic-pi-samples puts them; HWKD_SONIC_PI_DIR for a machine without the package (a GPU machine the
# loops were carried to: training/gpu/kit.py)
SONIC_PI_DIR = Path(os.environ.get("HWKD_SONIC_PI_DIR", "/usr/share/sonic-pi/samples"))
# Ambient-like CC0 loops; percussive one-shots and musical riffs are left out.
AMBIENT_NAMES = ("ambi_choir", "ambi_dark_woosh", "ambi_drone", "ambi_glass_hum", "ambi_glass_rub",
                 "ambi_haunted_hum", "ambi_lunar_land", "ambi_piano", "ambi_sauna", "ambi_soft_buzz",
                 "ambi_swoosh", "loop_3d_printer", "loop_drone_g_97", "loop_electric", "loop_industrial",
                 "vinyl_hiss")

NOISE_KINDS = ("white", "pink", "brown", "blue", "hum", "fan", "clicks", "babble", "ambient")
NOISE_WEIGHTS = (0.08, 0.12, 0.08, 0.05, 0.1, 0.12, 0.1, 0.15, 0.2)

# The out-of-domain split's noises: families no other split has. Music (sonic-pi loops left out of AMBIENT_NAMES),
# impulsive one-shots (doors, impacts, snaps, a till, a crow) over a quiet floor, pink noise whose level swings
# at 0.5-4 Hz (non-stationary), and babble of the split's own (out-of-domain) voices.
OOD_NOISE_KINDS = ("music", "impulsive", "modulated", "babble")
OOD_NOISE_WEIGHTS = (0.3, 0.25, 0.2, 0.25)
MUSIC_NAMES = ("loop_amen", "loop_breakbeat", "loop_compus", "loop_garzul", "loop_mika", "loop_safari",
               "loop_tabla", "loop_weirdo", "loop_mehackit1", "loop_mehackit2", "guit_em9", "guit_e_fifths")
IMPULSE_NAMES = ("perc_door", "perc_impact1", "perc_impact2", "perc_snap", "perc_snap2", "perc_till", "perc_bell",
                 "misc_crow", "misc_cineboom", "drum_heavy_kick", "drum_snare_hard", "drum_cymbal_hard")


def ambient_files() -> list[Path]:
    return [p for n in AMBIENT_NAMES if (p := SONIC_PI_DIR / f"{n}.flac").is_file()]


def ambient_split(split: str) -> list[Path]:
    """Ambient files are split too (3/5 train, 1/5 val, 1/5 test) so test noise is unseen."""
    files = ambient_files()
    want = {"train": (0, 1, 2), "val": (3,), "test": (4,)}[split]
    return [f for i, f in enumerate(files) if i % 5 in want]


@functools.lru_cache(maxsize=64)
def _load_ambient(path: Path) -> np.ndarray:
    x, sr = sf.read(str(path), dtype="float32", always_2d=True)
    return resample(x.mean(1), sr, SR)


def colored(rng: np.random.Generator, n: int, beta: float) -> np.ndarray:
    """Gaussian noise with power spectrum ~ 1/f^beta (0 white, 1 pink, 2 brown, -1 blue)."""
    spec = np.fft.rfft(rng.standard_normal(n))
    f = np.fft.rfftfreq(n, 1 / SR)
    f[0] = f[1]
    spec *= f ** (-beta / 2)
    x = np.fft.irfft(spec, n)
    return (x / (x.std() + 1e-12)).astype(np.float32)


def hum(rng: np.random.Generator, n: int) -> np.ndarray:
    f0 = rng.choice([50.0, 60.0]) * rng.uniform(0.995, 1.005)
    t = np.arange(n) / SR
    x = np.zeros(n)
    for k in range(1, int(rng.integers(4, 12))):
        x += rng.uniform(0.1, 1.0) / k ** rng.uniform(0.3, 1.0) * np.sin(2 * np.pi * k * f0 * t + rng.uniform(0, 6.3))
    x += 0.05 * colored(rng, n, 1.0)
    return (x / x.std()).astype(np.float32)


def fan(rng: np.random.Generator, n: int) -> np.ndarray:
    from scipy.signal import butter, sosfilt
    cutoff = rng.uniform(300, 2500)
    sos = butter(2, cutoff, fs=SR, output="sos")
    x = sosfilt(sos, rng.standard_normal(n))
    t = np.arange(n) / SR
    blade = rng.uniform(80, 400)
    x = x / x.std() + rng.uniform(0.1, 0.6) * np.sin(2 * np.pi * blade * t) * (1 + 0.2 * np.sin(2 * np.pi * 3 * t))
    return (x / x.std()).astype(np.float32)


def clicks(rng: np.random.Generator, n: int) -> np.ndarray:
    """Poisson train of damped resonances (keyboard, dishes, footsteps)."""
    x = 0.02 * rng.standard_normal(n)
    rate = rng.uniform(2, 12)  # events per second
    k = rng.poisson(rate * n / SR)
    L = int(0.05 * SR)
    t = np.arange(L) / SR
    for start in rng.integers(0, n, size=k):
        f = rng.uniform(500, 6000)
        ev = np.sin(2 * np.pi * f * t) * np.exp(-t * rng.uniform(80, 400)) * rng.uniform(0.3, 1.0)
        end = min(n, start + L)
        x[start:end] += ev[: end - start]
    return (x / x.std()).astype(np.float32)


def ambient(rng: np.random.Generator, n: int, split: str) -> tuple[np.ndarray, str]:
    files = ambient_split(split)
    return _looped(files, rng, n)


def _looped(files: list[Path], rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """One of the files, looped from a random phase to n samples, unit RMS; (audio, the file's stem)."""
    path = files[int(rng.integers(len(files)))]
    src = _load_ambient(path)
    reps = int(np.ceil((n + len(src)) / len(src)))
    loop = np.tile(src, reps)
    start = int(rng.integers(len(src)))
    x = loop[start:start + n]
    return (x / (x.std() + 1e-9)).astype(np.float32), path.stem


def babble(rng: np.random.Generator, n: int, split: str, exclude: str) -> tuple[np.ndarray, str]:
    from hwkd.data.speech import pick_speaker, speech_segment
    k = int(rng.integers(3, 8))
    x = np.zeros(n, np.float32)
    for _ in range(k):
        # mostly recorded voices: cheaper than TTS and more realistic babble
        spk = pick_speaker(split, rng, weights=(("asterisk-g722", 0.8), ("espeak-ng", 0.15), ("flite", 0.05)),
                           exclude=(exclude,))          # (the out-of-domain split: its own voices)
        x += speech_segment(spk, rng, n) * rng.uniform(0.5, 1.0)
    return x / (x.std() + 1e-9), f"{k} talkers"


def _sample_files(names: tuple[str, ...]) -> list[Path]:
    return [p for n in names if (p := SONIC_PI_DIR / f"{n}.flac").is_file()]


def music(rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    return _looped(_sample_files(MUSIC_NAMES), rng, n)


def impulsive(rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """One-shots at Poisson times (0.5-3 per second) over pink noise 30 dB below them."""
    files = _sample_files(IMPULSE_NAMES)
    x = colored(rng, n, 1.0) * 0.03
    rate = rng.uniform(0.5, 3.0)
    for start in rng.integers(0, n, size=max(1, rng.poisson(rate * n / SR))):
        ev = _load_ambient(files[int(rng.integers(len(files)))])
        ev = ev / (np.abs(ev).max() + 1e-9) * rng.uniform(0.3, 1.0)
        end = min(n, start + len(ev))
        x[start:end] += ev[: end - start]
    return (x / (x.std() + 1e-9)).astype(np.float32), f"{rate:.1f}/s"


def modulated(rng: np.random.Generator, n: int) -> tuple[np.ndarray, str]:
    """Pink noise whose level swings at 0.5-4 Hz by 10-30 dB."""
    f = rng.uniform(0.5, 4.0)
    depth_db = rng.uniform(10, 30)
    t = np.arange(n) / SR
    env = 10 ** (depth_db / 20 * 0.5 * (np.sin(2 * np.pi * f * t + rng.uniform(0, 6.3)) - 1))
    x = colored(rng, n, 1.0) * env
    return (x / (x.std() + 1e-9)).astype(np.float32), f"{f:.1f} Hz, {depth_db:.0f} dB"


def make_noise(kind: str, rng: np.random.Generator, n: int, split: str, talker: str) -> tuple[np.ndarray, str]:
    """Returns (noise with unit RMS, detail string for the manifest)."""
    if kind in ("white", "pink", "brown", "blue"):
        beta = {"white": 0.0, "pink": 1.0, "brown": 2.0, "blue": -1.0}[kind]
        return colored(rng, n, beta), f"1/f^{beta:g}"
    if kind == "hum":
        return hum(rng, n), "mains"
    if kind == "fan":
        return fan(rng, n), "lowpass+blade"
    if kind == "clicks":
        return clicks(rng, n), "poisson"
    if kind == "babble":
        return babble(rng, n, split, talker)
    if kind == "ambient":
        return ambient(rng, n, split)
    if kind == "music":
        return music(rng, n)
    if kind == "impulsive":
        return impulsive(rng, n)
    if kind == "modulated":
        return modulated(rng, n)
    raise ValueError(f"unknown noise kind {kind!r}")
