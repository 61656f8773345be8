"""The embedded teacher: a cpu-teacher DPDCRN trained on the embedded corpus (mono), shipped in the package.

Why shipped rather than trained on first use: its recipe (80 epochs) takes 8 minutes on an H100 GPU and about
11 hours on a 2-core CPU, far beyond the 20-minute budget of the embedded `hwkd search`; the file is 1.5 MB.
Its exact recipe is `TEACHER_RECIPE` (also in README), and a test runs that recipe at tiny scale.
"""

from __future__ import annotations

from pathlib import Path

from hwkd.errors import HwkdError

ASSET = Path(__file__).resolve().parents[1] / "assets" / "teacher-cpu-mono.pt"
TEACHER_PRESET = "cpu-teacher"
TEACHER_ARGS = f"--model {TEACHER_PRESET} --epochs 80 --batch-size 16 --segment-s 2 --lr 2e-3 --val-pesq-clips 0"
TEACHER_RECIPE = f"hwkd train {TEACHER_ARGS} --device cuda --out RUN && python -m hwkd.models.teacher RUN/best.pt"


def embedded_teacher_path() -> Path:
    if not ASSET.is_file():
        raise HwkdError(f"the embedded teacher is missing ({ASSET})",
                        f"reinstall hwkd, or train one: {TEACHER_RECIPE} and pass --teacher RUN/best.pt")
    return ASSET


def teacher_sha256(path: str | Path | None = None) -> str:
    """The SHA-256 of a teacher checkpoint file (default: the embedded teacher): which teacher a result used."""
    import hashlib
    return hashlib.sha256(Path(path or embedded_teacher_path()).read_bytes()).hexdigest()


if __name__ == "__main__":
    import sys

    from hwkd.models.checkpoint import slim_checkpoint
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m hwkd.models.teacher RUN/best.pt   (installs it as the embedded teacher)")
    slim_checkpoint(sys.argv[1], ASSET)
    print(f"wrote {ASSET} ({ASSET.stat().st_size / 2 ** 20:.2f} MiB)")
