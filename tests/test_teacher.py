"""The embedded teacher: its recipe runs (at tiny scale) and the shipped file is what the recipe makes."""

import shlex
from pathlib import Path

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


@pytest.mark.parametrize("channels", [1, 4])
def test_shipped_teacher_is_the_recipe(channels):
    """Each shipped teacher (mono, Ambisonics) was trained by its recipe and is its run's best val epoch."""
    from hwkd.models.teacher import ASSET_FOA, FOA_TEACHER_ARGS
    asset, args = (ASSET, TEACHER_ARGS) if channels == 1 else (ASSET_FOA, FOA_TEACHER_ARGS)
    model, ck = load_model(asset)
    recipe = build_parser().parse_args(["train", *args.split(), "--out", "RUN"])
    assert model.cfg == resolve_config(TEACHER_PRESET, in_channels=recipe.in_channels, mask_mode=recipe.mask_mode,
                                       spatial_features=recipe.spatial_features)
    assert model.cfg.in_channels == channels
    # the recorded command is the recipe: the same training options (data, device and run folder aside)
    recorded = build_parser().parse_args(shlex.split(ck["meta"]["command"])[1:])
    for k in ("model", "epochs", "batch_size", "segment_s", "lr", "seed", "val_pesq_clips", "init", "in_channels",
              "mask_mode", "spatial_features"):
        assert getattr(recorded, k) == getattr(recipe, k), k
    # its training data: a checkpoint made before on-the-fly mixing records no train_data (the static clips)
    mixed = ck["meta"].get("train_data") == "on-the-fly mixing"
    assert mixed == (recipe.mixing == "on"), (ck["meta"].get("train_data"), recipe.mixing)
    if mixed:
        assert ck["meta"].get("mixing_version") == recipe.mixing_version
    assert ck["train"]["config"]["epochs"] == recipe.epochs
    # best.pt: the epoch with the best val SI-SDR, with the history up to it
    best = max(ck["train"]["history"], key=lambda h: h["val_si_sdr_db"])
    assert len(ck["train"]["history"]) == ck["train"]["epoch"] == best["epoch"]
    assert asset.stat().st_size < 5 * 2 ** 20


@pytest.mark.slow
def test_ambisonics_teacher_recipe_runs_at_tiny_scale(tmp_path, tiny_foa):
    from hwkd.models.teacher import FOA_TEACHER_ARGS
    args = FOA_TEACHER_ARGS.split()
    args[args.index("--epochs") + 1] = "1"   # tiny scale: one epoch of one step
    r = run_cli("-q", "train", *args, "--data", tiny_foa, "--max-steps-per-epoch", "1", "--batch-size", "2",
                "--val-pesq-clips", "1", "--out", tmp_path / "t")
    assert r.returncode == 0, r.stderr[-2000:]
    model, _ = load_model(tmp_path / "t" / "best.pt")
    assert model.cfg == resolve_config(TEACHER_PRESET, in_channels=4, mask_mode="steered", spatial_features=True)


def test_each_student_gets_the_embedded_teacher_for_its_input_channels(tmp_path, monkeypatch):
    """Ambisonics students: the Ambisonics teacher once it is shipped, until then the mono one (W channel);
    installing a checkpoint puts it in the slot of its input channels."""
    from hwkd.errors import HwkdError
    from hwkd.experiments.compare import CompareConfig, settings_of
    from hwkd.models import create_model
    from hwkd.models import teacher as t
    from hwkd.models.checkpoint import save_checkpoint
    foa = tmp_path / "teacher-cpu-foa.pt"
    monkeypatch.setattr(t, "ASSET_FOA", foa)
    assert t.embedded_teacher_path(4) == t.ASSET == t.embedded_teacher_path(1)        # not shipped yet: mono
    cc = CompareConfig(schemes=["none"], students=["kd-small", str(tmp_path / "foa.yaml")], seeds=1)
    (tmp_path / "foa.yaml").write_text("channels: 8\nlayers: 1\ndepth: 1\nheads: 0\nin_channels: 4\n")
    assert "teacher_foa_sha256" not in settings_of(cc, None)
    run = tmp_path / "foa-run.pt"
    save_checkpoint(run, create_model(resolve_config(TEACHER_PRESET, in_channels=4)))
    assert t.install(run, {1: tmp_path / "mono.pt", 4: foa}) == foa and foa.is_file()
    assert t.embedded_teacher_path(4) == foa and t.embedded_teacher_path(1) == t.ASSET
    s = settings_of(cc, None)
    assert s["teacher_foa"] == str(foa) and s["teacher_sha256"] != s["teacher_foa_sha256"]
    assert "teacher_foa" not in settings_of(cc, t.ASSET)                               # --teacher: one for all
    two = tmp_path / "two.pt"
    save_checkpoint(two, create_model(resolve_config(TEACHER_PRESET, in_channels=2)))
    with pytest.raises(HwkdError, match="2 input channels"):
        t.install(two, {1: tmp_path / "mono.pt", 4: foa})


def test_a_search_over_an_ambisonics_space_takes_the_ambisonics_teacher_once_shipped(tmp_path, monkeypatch,
                                                                                     tiny_foa):
    from hwkd.models import create_model
    from hwkd.models import teacher as t
    from hwkd.models.checkpoint import save_checkpoint
    from hwkd.search.config import SearchConfig
    from hwkd.search.run import Search

    def settled(**kw):
        s = Search.__new__(Search)
        s.progress = False
        sc = SearchConfig(target="rpi4", space="foa", data=str(tiny_foa), **kw)
        s._settle(sc)
        return sc.teacher
    monkeypatch.setattr(t, "ASSET_FOA", tmp_path / "teacher-cpu-foa.pt")
    assert settled() == str(t.ASSET)                                   # not shipped: the mono teacher (W channel)
    save_checkpoint(t.ASSET_FOA, create_model(resolve_config(TEACHER_PRESET, in_channels=4)))
    assert settled() == str(t.ASSET_FOA)
    assert settled(teacher=str(t.ASSET)) == str(t.ASSET)              # --teacher is kept


def test_a_run_resumed_elsewhere_finds_its_embedded_teacher_by_file_name(tmp_path):
    """A search started on another machine names that machine's copy of the embedded teacher: resumed here it
    gets this machine's copy of the same file (not the teacher for its channels, which may be another one)."""
    from dataclasses import asdict

    from hwkd.models.teacher import ASSET
    from hwkd.search.config import SearchConfig
    from hwkd.search.run import resume_config
    settings = {**asdict(SearchConfig(teacher=f"/elsewhere/venv/hwkd/assets/{ASSET.name}", space="foa")),
                "storage": f"sqlite:///{tmp_path / 'study.db'}"}
    sc, _ = resume_config(tmp_path, settings)
    assert sc.teacher == str(ASSET)


def _kit(*args):
    import subprocess
    import sys
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    return subprocess.run([sys.executable, str(root / "training" / "gpu" / "kit.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=root, timeout=600)


def test_gpu_kit_carries_what_on_the_fly_training_reads(tmp_path, tiny_foa, monkeypatch):
    """training/gpu/kit.py: the Ambisonics set's train clean clips and val split travel as FLAC and come back
    with the same samples; training mixes the same items from the carried corpus as from the built one."""
    import json

    import numpy as np
    import soundfile as sf

    from hwkd.data.mixing import OnTheFlyMix
    from hwkd.data.noise import ambient_files
    r = _kit("build", "--sets", "foa", "--corpus", tiny_foa.parent, "--out", tmp_path / "kit")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "kit" / "corpus" / "foa" / "train" / "noisy").exists()
    r = _kit("unpack", tmp_path / "kit", tmp_path / "corpus", "--sonic-pi-dir", tmp_path / "sonic")
    assert r.returncode == 0 and "every one equal to what was packed" in r.stdout, r.stderr
    for f in (tiny_foa / "val" / "noisy").glob("*.wav"):
        a, b = sf.read(str(f), dtype="int16"), sf.read(str(tmp_path / "corpus" / "foa" / "val" / "noisy" / f.name),
                                                       dtype="int16")
        assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert sorted(p.name for p in (tmp_path / "sonic").iterdir()) == sorted(p.name for p in ambient_files())
    # every item of an epoch, the carried corpus reading the carried loops (from where unpack put them)
    import hwkd.data.noise as noise
    here, there = OnTheFlyMix(tiny_foa, segment_s=0.5, seed=0), OnTheFlyMix(tmp_path / "corpus" / "foa", segment_s=0.5)
    assert len(here) == len(there)
    kinds = set()
    for k in range(len(here)):
        a = here.mix(1, k)
        monkeypatch.setattr(noise, "SONIC_PI_DIR", tmp_path / "sonic")
        b = there.mix(1, k)
        monkeypatch.undo()
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
        kinds.add(a[2]["noise_kind"])
    assert "ambient" in kinds
    # a clip that decodes to other samples than were packed is named, and the exit is non-zero
    digests = json.loads((tmp_path / "kit" / "sha256.json").read_text())
    key = next(iter(digests))
    digests[key] = "0" * 64
    (tmp_path / "kit" / "sha256.json").write_text(json.dumps(digests))
    r = _kit("unpack", tmp_path / "kit", tmp_path / "again", "--sonic-pi-dir", tmp_path / "sonic")
    assert r.returncode == 2 and key in r.stderr
    # a kit split for two device calls: both halves give the corpus back; the second alone is named short
    r = _kit("build", "--sets", "foa", "--corpus", tiny_foa.parent, "--out", tmp_path / "two", "--split")
    assert r.returncode == 0 and (tmp_path / "two-a" / "corpus" / "foa" / "train").is_dir(), r.stderr
    assert not (tmp_path / "two" / "corpus" / "foa" / "train").exists() and not (tmp_path / "two" / "ambient").exists()
    r = _kit("unpack", tmp_path / "two", tmp_path / "c2", "--sonic-pi-dir", tmp_path / "s2")
    assert r.returncode == 2 and "missing" in r.stderr and "both halves" in r.stderr
    r = _kit("unpack", tmp_path / "two", tmp_path / "two-a", tmp_path / "c3", "--sonic-pi-dir", tmp_path / "s3")
    assert r.returncode == 0, r.stderr
    r = _kit("unpack", tmp_path / "gone", tmp_path / "two", tmp_path / "c4")
    assert r.returncode == 2 and "not here" in r.stderr


@pytest.mark.slow
def test_gpu_teacher_script_runs_on_cpu_at_tiny_scale(tmp_path, tiny_foa):
    """training/gpu/teachers.sh, the device call for the Ambisonics teacher, run here on the CPU: kit unpacked,
    the recipe trained one step with loader processes, its checkpoints and log left in $OUT."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from hwkd.data.noise import ambient_files
    root = Path(__file__).resolve().parents[1]
    kit = root / "teacher-kit"
    if kit.exists():
        pytest.skip("a teacher-kit/ is already in the checkout (a GPU session's); not overwritten by the test")
    r = _kit("build", "--sets", "foa", "--corpus", tiny_foa.parent, "--out", kit)
    try:
        assert r.returncode == 0, r.stderr
        env = {**os.environ, "OUT": str(tmp_path / "out"), "PYTHON": sys.executable, "DEVICE": "cpu",
               "LOADERS": "2", "KIT_CORPUS": str(tmp_path / "corpus"), "HWKD_SONIC_PI_DIR": str(tmp_path / "sonic"),
               "RUN": str(tmp_path / "run"), "LIMIT_S": "400"}
        p = subprocess.run(["bash", "training/gpu/teachers.sh", "--epochs", "1", "--max-steps-per-epoch", "1",
                            "--batch-size", "2", "--threads", "1"], cwd=root, env=env, capture_output=True,
                           text=True, timeout=600)
        log = (tmp_path / "out" / "teacher-foa.log").read_text()
        assert "exit 0" in log and p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
        assert sorted(f.name for f in (tmp_path / "sonic").iterdir()) == sorted(f.name for f in ambient_files())
        assert {"best.pt", "last.pt", "history.jsonl"} <= {f.name for f in (tmp_path / "out").iterdir()}
        model, ck = load_model(tmp_path / "out" / "best.pt")
        assert model.cfg == resolve_config(TEACHER_PRESET, in_channels=4, mask_mode="steered", spatial_features=True)
        assert "--loader-workers 2" in ck["meta"]["command"] and ck["meta"]["train_data"] == "on-the-fly mixing"
    finally:
        import shutil
        shutil.rmtree(kit, ignore_errors=True)


def test_the_ambisonics_teacher_background_run_is_its_recipe():
    """training/teacher-foa/ (what training/resume.sh runs across sessions) trains FOA_TEACHER_ARGS; its process
    settings (workers, threads) change how fast, not what is learnt."""
    from hwkd.models.teacher import FOA_TEACHER_ARGS
    here = Path(__file__).resolve().parents[1] / "training" / "teacher-foa"
    assert (here / "args").read_text().split() == FOA_TEACHER_ARGS.split()
    command = (here / "command").read_text().split()
    assert command[0] == "train"
    import shlex

    import torch
    runs = {"command": build_parser().parse_args([*command, *FOA_TEACHER_ARGS.split(), "--out", "RUN"])}
    # the state saved between sessions (training/save.sh) was trained by that command
    for name in ("last.pt", "best.pt"):
        if (here / name).is_file():
            ck = torch.load(here / name, weights_only=True, map_location="cpu")
            runs[name] = build_parser().parse_args([*shlex.split(ck["meta"]["command"])[1:-2], "--out", "RUN"])
    recipe = build_parser().parse_args(["train", *FOA_TEACHER_ARGS.split(), "--out", "RUN"])
    for what, got in runs.items():
        for k, v in vars(recipe).items():
            if k not in ("workers", "threads"):
                assert getattr(got, k) == v, (what, k)
