"""The embedded teachers: cpu-teacher DPDCRNs trained on the embedded corpus, shipped in the package: the mono
teacher (teacher-cpu-mono.pt) and, once trained, the Ambisonics one (teacher-cpu-foa.pt, 4-channel input, the same
network otherwise). A student with 4 input channels is taught by the Ambisonics teacher when it is shipped, else by
the mono teacher from its W channel (hwkd.train.objective.check_teacher).

Why shipped rather than trained on first use: its recipe (80 epochs with on-the-fly mixing) took about 16 hours of
training on a 2-core CPU (2 data-parallel workers, across sessions; its predecessor on the static clips took 8
minutes on an H100), far beyond the 15-minute budget of the embedded `hwkd search`; the file is 1.5 MB.
Its exact recipe is `TEACHER_RECIPE` (also in README), and a test runs that recipe at tiny scale.
"""

from __future__ import annotations

from pathlib import Path

from hwkd.errors import HwkdError

ASSET = Path(__file__).resolve().parents[1] / "assets" / "teacher-cpu-mono.pt"
ASSET_FOA = ASSET.with_name("teacher-cpu-foa.pt")
ASSETS = {1: ASSET, 4: ASSET_FOA}                 # input channels -> the shipped file
TEACHER_PRESET = "cpu-teacher"
# trained with on-the-fly mixing, version 1 (the version of its time; a resumed run keeps its version)
TEACHER_ARGS = (f"--model {TEACHER_PRESET} --epochs 80 --batch-size 16 --segment-s 2 --lr 2e-3 --mixing on "
                "--mixing-version 1 --val-pesq-clips 10")
TEACHER_RECIPE = (f"hwkd train --workers 2 --threads 2 {TEACHER_ARGS} --out RUN "
                  "&& python -m hwkd.models.teacher RUN/best.pt")
# the Ambisonics teacher: the same network with 4 input channels, on the Ambisonics set with on-the-fly rooms (their
# sound fields turned: mixing version 3), its mask on a hypercardioid it steers at the talker, with the channels'
# cross-spectra as input, since a mask on W alone cannot reach the goal: with W's phase even the ideal gain gains
# +4.8 dB SI-SDR on the test split, the ideal gain on a beam at the speech-weighted direction +9.3 dB
# (benchmarks/foa_oracles.py); a mask per channel summed (filter-sum) did not learn to beamform in 1,000 steps
# (benchmarks/foa_output_forms.py, README "The Ambisonics teacher's slot")
FOA_TEACHER_ARGS = (f"--model {TEACHER_PRESET} --in-channels 4 --mask-mode steered --spatial-features --epochs 80 "
                    "--batch-size 16 --segment-s 2 --lr 2e-3 --mixing on --mixing-version 3 --val-pesq-clips 0")
FOA_TEACHER_RECIPE = (f"hwkd train {FOA_TEACHER_ARGS} --out RUN && python -m hwkd.models.teacher RUN/best.pt")


def embedded_teacher_path(in_channels: int = 1) -> Path:
    """The shipped teacher for students with `in_channels` inputs: the Ambisonics teacher for 4 when it is shipped,
    else the mono teacher (it teaches an Ambisonics student from the W channel)."""
    if in_channels == 4 and ASSET_FOA.is_file():
        return ASSET_FOA
    if not ASSET.is_file():
        raise HwkdError(f"the embedded teacher is missing ({ASSET})",
                        f"reinstall hwkd, or train one: {TEACHER_RECIPE} and pass --teacher RUN/best.pt")
    return ASSET


def teacher_sha256(path: str | Path | None = None) -> str:
    """The SHA-256 of a teacher checkpoint file (default: the embedded teacher): which teacher a result used."""
    import hashlib
    return hashlib.sha256(Path(path or embedded_teacher_path()).read_bytes()).hexdigest()


def install(ckpt: str | Path, assets: dict | None = None) -> Path:
    """Ship a trained checkpoint as the embedded teacher for its input channels (mono or Ambisonics), without its
    optimizer state; returns the file written."""
    from hwkd.models.checkpoint import load_model, slim_checkpoint
    assets = ASSETS if assets is None else assets
    channels = load_model(ckpt)[0].cfg.in_channels
    if channels not in assets:
        raise HwkdError(f"{ckpt} has {channels} input channels; the embedded teachers are mono (1) or Ambisonics (4)",
                        "train it with --in-channels 1 or 4")
    slim_checkpoint(ckpt, assets[channels])
    return assets[channels]


if __name__ == "__main__":
    import sys
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m hwkd.models.teacher RUN/best.pt   (installs it as the embedded teacher "
                         "for its input channels: mono or Ambisonics)")
    try:
        dst = install(sys.argv[1])
    except HwkdError as e:
        raise SystemExit(f"hwkd: error: {e}") from None
    print(f"wrote {dst} ({dst.stat().st_size / 2 ** 20:.2f} MiB)")
