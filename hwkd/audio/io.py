"""WAV I/O with errors that name the file, atomic writes, and polyphase resampling, whole or in blocks."""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.signal import resample_poly

from hwkd.errors import HwkdError

AUDIO_EXTENSIONS = (".wav", ".flac")
# sample rates hwkd reads: a header outside this range is a broken file, not audio to resample (a WAV whose
# header says 1 Hz asked the 16 kHz resampler for 16000x its samples: 119 GiB for a 4-MB file)
MIN_RATE = 4000
MAX_RATE = 768000


def check_rate(path: Path, sample_rate: int) -> None:
    """HwkdError naming the file when its header's sample rate is outside MIN_RATE..MAX_RATE."""
    if not MIN_RATE <= sample_rate <= MAX_RATE:
        raise HwkdError(f"{path}: its header says {sample_rate} Hz, outside the {MIN_RATE}-{MAX_RATE} Hz hwkd reads",
                        "fix the header or re-export the audio at 16 kHz (e.g. sox IN.wav -r 16000 OUT.wav)")


@dataclass(frozen=True)
class AudioInfo:
    path: Path
    sample_rate: int
    channels: int
    frames: int

    @property
    def duration_s(self) -> float:
        return self.frames / self.sample_rate if self.sample_rate else 0.0


def audio_info(path: str | os.PathLike) -> AudioInfo:
    """Header-only look at an audio file. Raises HwkdError naming the file if it cannot be read."""
    p = Path(path)
    if not p.is_file():
        raise HwkdError(f"audio file not found: {p}", "check the path")
    try:
        info = sf.info(str(p))
    except Exception as exc:  # libsndfile's messages vary by format
        raise HwkdError(f"unreadable audio file {p} ({_short(exc)})",
                        "re-export it as PCM WAV or remove it from the set") from None
    if info.frames <= 0:
        raise HwkdError(f"empty audio file {p} (0 samples)", "re-export it or remove it from the set")
    check_rate(p, int(info.samplerate))
    return AudioInfo(p, int(info.samplerate), int(info.channels), int(info.frames))


def read_audio(path: str | os.PathLike, sample_rate: int | None = None,
               channels: int | None = None) -> tuple[np.ndarray, int]:
    """Read audio as float32 [channels, samples].

    sample_rate: if given, resample to it. channels: if given, the file must have exactly that many.
    """
    p = Path(path)
    audio_info(p)                      # missing, unreadable, or a header that cannot be audio (e.g. 1 Hz): refused
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as exc:
        raise HwkdError(f"unreadable audio file {p} ({_short(exc)})",
                        "re-export it as PCM WAV or remove it from the set") from None
    if data.shape[0] == 0:
        raise HwkdError(f"empty audio file {p} (0 samples)", "re-export it or remove it from the set")
    x = np.ascontiguousarray(data.T)
    if channels is not None and x.shape[0] != channels:
        raise HwkdError(f"{p} has {x.shape[0]} channel(s), expected {channels}",
                        "give a file with the expected channel count or choose the matching model input")
    if not np.all(np.isfinite(x)):
        raise HwkdError(f"{p} contains NaN or infinite samples", "re-export the file")
    if sample_rate is not None and sr != sample_rate:
        x = resample(x, sr, sample_rate)
        sr = sample_rate
    return x, int(sr)


def read_blocks(path: str | os.PathLike, block_s: float = 10.0, sample_rate: int = 16000,
                channels: int | None = None) -> Iterator[np.ndarray]:
    """The audio of `path` as float32 [channels, n] blocks of about `block_s` seconds at `sample_rate`, read
    from the file block by block (memory bounded by the block, not by the file).

    Their concatenation equals `read_audio(path, sample_rate)` up to float rounding: a file at another rate is
    resampled block by block with the same polyphase filter, each block with enough input either side for the
    filter (the margins are multiples of the decimation factor, so every block lands on the whole-file grid).
    A NaN or infinite sample is an HwkdError naming the file when its block is reached.
    """
    info = audio_info(path)
    p = info.path
    if channels is not None and info.channels != channels:
        raise HwkdError(f"{p} has {info.channels} channel(s), expected {channels}",
                        "give a file with the expected channel count or choose the matching model input")
    sr = info.sample_rate
    frac = Fraction(sample_rate, sr)
    up, down = frac.numerator, frac.denominator
    # input samples either side that the filter reaches (resample_poly: 10 * max(up, down) taps at the upsampled
    # rate each side), in whole decimation periods
    margin = 0 if sr == sample_rate else down * math.ceil((10 * max(up, down) / up + 2) / down)
    block = down * max(1, round(block_s * sr / down))

    def finite(x: np.ndarray) -> np.ndarray:
        if not np.all(np.isfinite(x)):
            raise HwkdError(f"{p} contains NaN or infinite samples", "re-export the file")
        return x

    try:
        with sf.SoundFile(str(p)) as f:
            if not margin:
                while True:
                    data = f.read(block, dtype="float32", always_2d=True)
                    if not len(data):
                        return
                    yield finite(np.ascontiguousarray(data.T))
            buf = np.zeros((info.channels, 0), np.float32)     # input from `start` on
            start = pos = 0                                    # buf's first input sample; the next block's first
            eof = False
            while True:
                while not eof and start + buf.shape[1] < pos + block + margin:
                    data = f.read(block + margin, dtype="float32", always_2d=True)
                    eof = len(data) == 0
                    buf = np.concatenate([buf, finite(np.ascontiguousarray(data.T))], axis=1)
                end = start + buf.shape[1]
                if pos >= end:
                    return
                last = eof and end <= pos + block + margin
                seg = buf if last else buf[:, : pos + block + margin - start]
                y = resample(seg, sr, sample_rate)
                skip = (pos - start) * up // down
                yield y[:, skip:] if last else y[:, skip: skip + block * up // down]
                if last:
                    return
                pos += block
                cut = max(0, pos - margin - start)
                buf, start = buf[:, cut:], start + cut
    except HwkdError:
        raise
    except Exception as exc:  # libsndfile's messages vary by format
        raise HwkdError(f"unreadable audio file {p} ({_short(exc)})",
                        "re-export it as PCM WAV or remove it from the set") from None


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Polyphase resampling along the last axis (scipy's Kaiser-windowed FIR)."""
    if sr_in == sr_out:
        return x
    frac = Fraction(sr_out, sr_in)
    y = resample_poly(x, frac.numerator, frac.denominator, axis=-1)
    return y.astype(np.float32, copy=False)


def check_output(path: str | os.PathLike, folder: bool = False, what: str = "output") -> Path:
    """Refuse, before any work, an output that cannot be written: a file path that is a folder, a folder path
    that is a file, or a path under a file or an unwritable folder (one HwkdError naming it). Creates nothing."""
    p = Path(path)
    if not folder and p.is_dir():
        raise HwkdError(f"{what} {p} is a folder, not a file name",
                        f"give a file path to write, e.g. {p / 'out'}")
    if folder and p.exists() and not p.is_dir():
        raise HwkdError(f"{what} {p} is a file, not a folder", "give a folder (it is created if missing)")
    q = p if folder and p.is_dir() else p.parent
    while not q.exists():
        q = q.parent
    if not q.is_dir():
        raise HwkdError(f"cannot write {p} ({q} is a file)", "choose a folder you can write to")
    if not os.access(q, os.W_OK | os.X_OK):
        raise HwkdError(f"cannot write {p} (permission denied in {q})", "choose a folder you can write to")
    return p


def atomic_target(path: str | os.PathLike, suffix: str = "") -> tuple[Path, str]:
    """(path, a temporary file beside it) for an atomic write; a path that is a folder or cannot be written
    is one HwkdError naming it (was a traceback)."""
    p = Path(path)
    if p.is_dir():
        raise HwkdError(f"{p} is a folder, not a file name", f"give a file path to write, e.g. {p / ('out' + suffix)}")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=suffix, dir=p.parent)
    except OSError as exc:
        raise HwkdError(f"cannot write {p} ({exc.strerror or type(exc).__name__})",
                        "choose a folder you can write to") from None
    os.close(fd)
    return p, tmp


def publish(tmp: str, p: Path) -> None:
    """Rename the finished temporary file over p, with the mode a plain open() would give (mkstemp's 0600 made
    every output private)."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    os.replace(tmp, p)


@contextmanager
def wav_writer(path: str | os.PathLike, sample_rate: int, channels: int = 1, subtype: str = "PCM_16"):
    """Write a WAV progressively and atomically: yields write(x) for blocks x ([samples] or [channels,
    samples]); the file appears at `path` (replacing any old one) only when the block ends without an error,
    so an interrupted or failed writer never leaves a partial file and never loses the old one.
    PCM subtypes clip to [-1, 1]; FLOAT keeps the values as they are.
    """
    p, tmp = atomic_target(path, ".wav")
    clip = subtype.startswith("PCM")
    try:
        with sf.SoundFile(tmp, "w", sample_rate, channels, subtype=subtype, format="WAV") as f:
            def write(x: np.ndarray) -> None:
                data = x.T if x.ndim == 2 else x
                f.write(np.clip(data, -1.0, 1.0) if clip else data)
            yield write
        publish(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_wav_atomic(path: str | os.PathLike, x: np.ndarray, sample_rate: int) -> None:
    """Write PCM16 WAV via a temporary file and rename, so a killed writer never leaves a partial file.

    x: [samples] or [channels, samples], float in [-1, 1].
    """
    with wav_writer(path, sample_rate, x.shape[0] if x.ndim == 2 else 1) as write:
        write(x)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    p, tmp = atomic_target(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
        publish(tmp, p)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _short(exc: Exception) -> str:
    msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return msg[:160]


def wav_truncation(path: str | os.PathLike) -> tuple[int, int] | None:
    """(samples the WAV header declares, samples the file holds) when a RIFF/WAVE file is cut short, else None.

    libsndfile quietly reads what is there, so a truncated download or copy looks like a shorter file; the
    data chunk's declared size against the bytes present tells them apart. Not a WAV, or a streaming header
    (size 0 or 0xFFFFFFFF): None.
    """
    import struct
    p = Path(path)
    size = p.stat().st_size
    with open(p, "rb") as f:
        head = f.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        align = None
        while True:
            ch = f.read(8)
            if len(ch) < 8:
                return None
            cid, n = ch[:4], struct.unpack("<I", ch[4:])[0]
            if cid == b"fmt ":
                fmt = f.read(n + (n & 1))
                align = struct.unpack("<H", fmt[12:14])[0] if len(fmt) >= 14 else None
            elif cid == b"data":
                if not align or n in (0, 0xFFFFFFFF):
                    return None
                have = (size - f.tell()) // align
                return (n // align, have) if have < n // align else None
            else:
                f.seek(n + (n & 1), 1)

