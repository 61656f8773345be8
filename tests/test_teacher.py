"""The embedded teacher: its recipe runs (at tiny scale) and the shipped file is what the recipe makes."""

import shlex

import pytest

from hwkd.cli import build_parser
from hwkd.models.checkpoint import load_model
from hwkd.models.registry import resolve_config
from hwkd.models.teacher import ASSET, TEACHER_ARGS, TEACHER_PRESET

from conftest import run_cli


@pytest.mark.slow
def test_teacher_recipe_runs_at_tiny_scale(tmp_path, tiny_corpus):
    args = TEACHER_ARGS.split()
    args[args.index("--epochs") + 1] = "1"   # tiny scale: one epoch of one step
    r = run_cli("-q", "train", *args, "--data", tiny_corpus, "--max-steps-per-epoch", "1", "--batch-size", "2",
                "--val-pesq-clips", "1", "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr[-2000:]
    model, ck = load_model(tmp_path / "t" / "best.pt")
    assert model.cfg == resolve_config(TEACHER_PRESET)


def test_shipped_teacher_is_the_recipe():
    model, ck = load_model(ASSET)
    assert model.cfg == resolve_config(TEACHER_PRESET)
    # the recorded command is the recipe: the same training options (data, device and run folder aside)
    recorded = build_parser().parse_args(shlex.split(ck["meta"]["command"])[1:])
    recipe = build_parser().parse_args(["train", *TEACHER_ARGS.split(), "--out", "RUN"])
    for k in ("model", "epochs", "batch_size", "segment_s", "lr", "seed", "val_pesq_clips", "init"):
        assert getattr(recorded, k) == getattr(recipe, k), k
    assert ck["train"]["config"]["epochs"] == recipe.epochs
    # best.pt: the epoch with the best val SI-SDR, with the history up to it
    best = max(ck["train"]["history"], key=lambda h: h["val_si_sdr_db"])
    assert len(ck["train"]["history"]) == ck["train"]["epoch"] == best["epoch"]
    assert ASSET.stat().st_size < 5 * 2 ** 20
