"""The embedded teacher: its recipe runs (at tiny scale) and the shipped file is what the recipe makes."""

from hwkd.models.checkpoint import load_model
from hwkd.models.registry import resolve_config
from hwkd.teacher import ASSET, TEACHER_ARGS, TEACHER_PRESET

from conftest import run_cli


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
    assert f"train {TEACHER_ARGS} --out" in ck["meta"]["command"]
    assert f"--epochs {ck['train']['config']['epochs']} " in TEACHER_ARGS
    # best.pt: the epoch with the best val SI-SDR, with the history up to it
    best = max(ck["train"]["history"], key=lambda h: h["val_si_sdr_db"])
    assert len(ck["train"]["history"]) == ck["train"]["epoch"] == best["epoch"]
    assert ASSET.stat().st_size < 5 * 2 ** 20
