"""Students that learn: identity start, budget-aware schedule, balanced KD weights, on-the-fly mixing."""

import json

import numpy as np
import pytest
import torch

from hwkd.errors import HwkdError
from hwkd.models import create_model
from hwkd.models.enhancer import Enhancer
from hwkd.train.losses import neg_si_sdr
from hwkd.train.trainer import TrainConfig, _lr_lambda, check_budget, warmup_steps

TINY = dict(channels=8, layers=1, depth=2, heads=2)


def _speechlike(n, seed):
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n) / 16000
    env = (torch.sin(2 * torch.pi * 3 * t) > 0).float()
    clean = 0.1 * env * torch.sin(2 * torch.pi * (200 + 50 * torch.sin(2 * torch.pi * t)) * t)
    return clean, clean + 0.03 * torch.randn(n, generator=g)


@pytest.mark.parametrize("compress", [1.0, 0.3])
@pytest.mark.parametrize("mics", [1, 4])
@pytest.mark.parametrize("causal", [False, True])
def test_untrained_model_passes_its_reference_channel_through(mics, causal, compress):
    torch.manual_seed(0)
    extra = dict(causal=True, time_attention="causal") if causal else {}
    e = Enhancer(create_model(dict(TINY, in_channels=mics, input_compress=compress, **extra))).eval()
    clean, noisy = _speechlike(24000, 1)
    x = torch.stack([noisy] + [0.05 * torch.randn(24000) for _ in range(mics - 1)])[None]   # W is channel 0
    ref = -float(neg_si_sdr(noisy, clean))
    with torch.no_grad():
        outs = [e(x)[0]] + ([e.stream(x)[0]] if causal else [])
    for y in outs:                                       # offline, and hop by hop for a causal model
        assert abs(-float(neg_si_sdr(y, clean)) - ref) < 0.1
        assert 0.7 < float(y.norm() / noisy.norm()) < 0.8  # the gain tanh(1) = 0.76


def test_default_pytorch_init_would_destroy_the_input():
    """What identity_start fixes: with the mask layer's default init the output is far below the input."""
    torch.manual_seed(0)
    m = create_model(TINY)
    m.dec2.reset_parameters()
    clean, noisy = _speechlike(24000, 2)
    with torch.no_grad():
        y = Enhancer(m).eval()(noisy[None, None])[0]
    assert -float(neg_si_sdr(y, clean)) < -float(neg_si_sdr(noisy, clean)) - 3


def test_warmup_is_a_fraction_of_the_planned_steps_then_cosine():
    cfg = TrainConfig(warmup_frac=0.1, min_lr_ratio=0.05)
    for total in (24, 100, 5000):
        f = _lr_lambda(cfg, total)
        w = warmup_steps(cfg, total)
        assert w == max(1, round(0.1 * total))
        assert f(w - 1) == pytest.approx(1.0)                     # peak at the end of warm-up
        assert all(f(k) < f(k + 1) for k in range(w - 1))          # rising
        assert all(f(k) >= f(k + 1) for k in range(w, total - 1))  # then decaying
        assert f(total - 1) == pytest.approx(0.05)                 # down to the floor at the last step
    assert warmup_steps(TrainConfig(warmup_frac=0.0), 100) == 0


@pytest.mark.parametrize("field,value", [("epochs", 0), ("max_steps_per_epoch", 0), ("batch_size", 0), ("lr", 0.0),
                                         ("lr", float("nan")), ("segment_s", 0.0), ("warmup_frac", 1.0),
                                         ("threads", 0)])
def test_impossible_budgets_are_refused(field, value):
    with pytest.raises(HwkdError, match="impossible training budget"):
        check_budget(TrainConfig(**{field: value}))


@pytest.mark.parametrize("lam", [-1.0, float("inf"), float("nan")])
def test_search_config_refuses_a_kd_weight_that_is_not_one(lam):
    from hwkd.search.config import SearchConfig
    from hwkd.search.run import check_search_budget
    with pytest.raises(HwkdError, match="not a KD weight"):
        check_search_budget(SearchConfig(lam=lam))
    check_search_budget(SearchConfig(lam=0.0))


@pytest.mark.parametrize("lam", [-1.0, float("inf"), float("nan")])
def test_library_training_refuses_a_kd_weight_that_is_not_one(tmp_path, lam):
    """train_model (through its objective) and the supernet refuse a bad λ before any data or teacher work."""
    from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig
    from hwkd.train.recipe import KDSpec, make_objective
    from hwkd.train.supernet import train_supernet
    cfg = DPDCRNConfig(channels=8, layers=1, depth=1, heads=1, gru_hidden=8)
    with pytest.raises(HwkdError, match="not a KD weight"):
        make_objective(DPDCRN(cfg), KDSpec("response", DPDCRN(cfg), lam), TrainConfig(), [], tmp_path)
    with pytest.raises(HwkdError, match="not a KD weight"):
        train_supernet([cfg], tmp_path / "sn", TrainConfig(), teacher=DPDCRN(cfg), lams={"k": lam})
    assert not (tmp_path / "sn").exists()


@pytest.mark.slow
def test_cli_refuses_zero_steps(tmp_path, tiny_corpus):
    from conftest import run_cli
    r = run_cli("train", "--model", "cpu-student", "--data", tiny_corpus, "--out", tmp_path / "r",
                "--max-steps-per-epoch", "0")
    assert r.returncode == 2 and "impossible training budget" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "r" / "last.pt").exists()


@pytest.mark.slow
@pytest.mark.parametrize("flag, what", [(["--steps", "-1"], "impossible training budget"),
                                        (["--from-scratch", "--steps", "0"], "impossible training budget"),
                                        (["--batch-size", "0"], "impossible training budget"),
                                        (["--promote-steps", "-1"], "impossible training budget"),
                                        (["--promote-share", "1.5"], "--promote-share 1.5: not a share"),
                                        (["--promote-share", "nan"], "--promote-share nan: not a share"),
                                        (["--finetune-lr", "nan"], "--finetune-lr nan: not a learning rate"),
                                        (["--lam", "-1"], "argument --lam")])       # refused when parsed
def test_search_refuses_budgets_that_cannot_train(tmp_path, flag, what):
    import os

    from conftest import run_cli
    r = run_cli("search", "--target", "rpi4", *flag, env={**os.environ, "HWKD_HOME": str(tmp_path)})
    assert r.returncode == 2 and what in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "runs").exists()          # nothing started, no run name taken


# -- balanced KD weights -----------------------------------------------------------------------------

def _batches(n=2, b=2, seg=8000):
    out = []
    for k in range(n):
        clean = torch.stack([_speechlike(seg, 10 * k + i)[0] for i in range(b)])
        noisy = torch.stack([_speechlike(seg, 10 * k + i)[1] for i in range(b)])
        out.append({"noisy": noisy[:, None], "clean": clean})
    return out


def test_the_median_rule_is_not_moved_by_a_batch_whose_se_gradient_spikes():
    """λ balanced on the median of per-batch gradient norms: a batch whose ‖∇L_SE‖ is far above the others' (at
    the identity start, one high-SNR item does that to one batch in five) moves the mean, not the median."""
    import statistics

    from hwkd.train.objective import KDObjective
    torch.manual_seed(0)
    teacher = create_model(dict(channels=8, layers=1, depth=1, heads=0))
    student = create_model(TINY)
    obj = KDObjective(teacher, student, "fitnet", 2, 8000)
    batches = _batches(3)
    rec = obj.balance(Enhancer(student), batches, ratio=0.5, statistic="median")
    se, kd = rec["batch_grad_norms_se"], rec["batch_grad_norms_kd"]
    assert rec["statistic"] == "median" and rec["batches"] == 3 and len(se) == len(kd) == 3
    assert rec["grad_norm_se"] == pytest.approx(statistics.median(se), rel=1e-3)
    assert rec["grad_norm_kd"] == pytest.approx(statistics.median(kd), rel=1e-3)
    # the same batches, the third one's SE loss scaled ×50 (as a spike scales ‖∇L_SE‖)
    orig = obj.losses
    calls = []

    def losses(enh, b):
        l_se, l_kd, parts = orig(enh, b)
        calls.append(1)
        return (l_se * 50 if len(calls) == 3 else l_se), l_kd, parts
    obj.losses = losses
    median = obj.balance(Enhancer(student), batches, ratio=0.5, statistic="median")
    calls.clear()
    mean = obj.balance(Enhancer(student), batches, ratio=0.5, statistic="mean")
    assert median["lam"] < rec["lam"] * 1.5 < mean["lam"] / 5     # the median barely moves, the mean many-fold
    with pytest.raises(ValueError, match="statistic"):
        obj.balance(Enhancer(student), batches, statistic="mode")


@pytest.mark.slow
@pytest.mark.parametrize("scheme", ["response", "at", "pkt-frame", "i2srf-tfckd"])
def test_balanced_lambda_records_and_meets_its_measured_ratio(scheme):
    from hwkd.train.objective import KDObjective
    torch.manual_seed(0)
    teacher = create_model(dict(channels=12, layers=2, depth=2, heads=2))
    student = create_model(TINY)
    obj = KDObjective(teacher, student, scheme, 2, 8000)
    rec = obj.balance(Enhancer(student), _batches(), ratio=0.5)
    assert rec["rule"] == "grad-ratio" and rec["target_ratio"] == 0.5 and rec["batches"] == 2
    assert rec["lam"] == pytest.approx(0.5 * rec["grad_norm_se"] / rec["grad_norm_kd"])
    g_se, g_kd = obj.grad_norms(Enhancer(student), _batches())
    assert obj.lam * g_kd / g_se == pytest.approx(0.5, rel=1e-4)   # the same batches: exactly the target


@pytest.mark.slow
def test_distill_records_lambda_and_a_resumed_run_reads_it_back(tmp_path, tiny_corpus):
    from hwkd.models.checkpoint import read_checkpoint, save_checkpoint

    from conftest import run_cli
    save_checkpoint(tmp_path / "teacher.pt", create_model(dict(channels=12, layers=2, depth=2, heads=2)))

    def distill(out, epochs, *extra, kd="response"):
        return run_cli("-q", "distill", "--teacher", tmp_path / "teacher.pt", "--student", "kd-small", "--kd",
                       kd, "--data", tiny_corpus, "--out", out, "--epochs", epochs, "--batch-size", "2",
                       "--segment-s", "1", "--max-steps-per-epoch", "2", "--val-pesq-clips", "0", "--threads", "1",
                       *extra)
    r = distill(tmp_path / "run", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "run" / "kd_weight.json").read_text())
    assert rec["rule"] == "grad-ratio" and rec["lam"] > 0 and rec["scheme"] == "response"
    # the default rule: the median of the per-batch norms over the first 8 batches (as many as the set holds)
    assert rec["balance"] == "median-8" and rec["statistic"] == "median"
    assert 1 <= rec["batches"] <= 8 and len(rec["batch_grad_norms_se"]) == rec["batches"]
    assert "λ" in r.stdout and "on-the-fly mixing" in r.stdout
    assert read_checkpoint(tmp_path / "run" / "last.pt")["meta"]["kd_weight"]["lam"] == rec["lam"]
    (tmp_path / "run" / "kd_weight.json").write_text(json.dumps({**rec, "lam": 123.0}))
    r = distill(tmp_path / "run", 2)                      # resumes: λ is read back, not measured again
    assert r.returncode == 0, r.stderr[-2000:]
    assert read_checkpoint(tmp_path / "run" / "last.pt")["meta"]["kd_weight"]["lam"] == 123.0
    r = distill(tmp_path / "fixed", 1, "--lam", "0.3")
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads((tmp_path / "fixed" / "kd_weight.json").read_text()) == {"lam": 0.3, "rule": "fixed",
                                                                               "scheme": "response", "options": {}}
    # resuming under another scheme, or other scheme options, is refused with nothing in the run rewritten
    record = (tmp_path / "run" / "kd_weight.json").read_text()
    before = (tmp_path / "run" / "last.pt").read_bytes()
    for extra in ((), ("--lam", "0.1")):
        r = distill(tmp_path / "run", 3, *extra, kd="fitnet")
        assert r.returncode == 2 and "was trained with objective 'response', not 'fitnet'" in r.stderr, r.stderr
        assert "--kd response" in r.stderr
    (tmp_path / "run" / "kd_weight.json").write_text(json.dumps({**json.loads(record), "options": {"x": 1}}))
    r = distill(tmp_path / "run", 3)
    assert r.returncode == 2 and "was distilled with response {'x': 1}, not response" in r.stderr, r.stderr[-2000:]
    assert (tmp_path / "run" / "last.pt").read_bytes() == before
    # a record left by a start that never checkpointed is balanced afresh, not reused
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "kd_weight.json").write_text(json.dumps({**rec, "lam": 123.0, "scheme": "fitnet"}))
    r = distill(tmp_path / "new", 1)
    assert r.returncode == 0, r.stderr[-2000:]
    new = json.loads((tmp_path / "new" / "kd_weight.json").read_text())
    assert new["scheme"] == "response" and new["lam"] != 123.0 and new["rule"] == "grad-ratio"


# -- on-the-fly mixing -------------------------------------------------------------------------------

def test_on_the_fly_mixing_is_deterministic_and_new_each_epoch(tiny_corpus):
    from hwkd.data.mixing import OnTheFlyMix
    a = OnTheFlyMix(tiny_corpus, segment_s=0.5, seed=3)
    b = OnTheFlyMix(tiny_corpus, segment_s=0.5, seed=3)
    assert len(a) == 40 * 2
    for k in (0, 7, 79):
        a.set_epoch(2)
        b.set_epoch(2)
        x, y = a[k], b[k]
        assert torch.equal(x["noisy"], y["noisy"]) and torch.equal(x["clean"], y["clean"])
        assert x["noisy"].shape == (1, 8000) and x["clean"].shape == (8000,)
        b.set_epoch(3)
        assert not torch.equal(x["noisy"], b[k]["noisy"])            # another epoch, another mixture
    c = OnTheFlyMix(tiny_corpus, segment_s=0.5, seed=4)
    c.set_epoch(2)
    assert not torch.equal(a[0]["noisy"], c[0]["noisy"])
    # the SNR is the one drawn: noisy - clean is the noise
    noisy, clean, meta = a.mix(0, 5)
    snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy[0] - clean) ** 2))
    assert -6 < meta["snr_db"] < 21 and np.isfinite(snr) and np.abs(noisy).max() <= 0.99 + 1e-6


def test_on_the_fly_mixing_keeps_the_splits(tiny_corpus):
    from hwkd.data.mixing import OnTheFlyMix
    speakers = {}
    for split in ("train", "val"):
        lines = (tiny_corpus / split / "manifest.jsonl").read_text().splitlines()
        speakers[split] = {json.loads(x)["speaker"] for x in lines}
    mix = OnTheFlyMix(tiny_corpus, segment_s=0.5, seed=0)
    assert set(mix.speakers) <= speakers["train"] and not set(mix.speakers) & speakers["val"]
    for k in range(20):
        spk = mix.mix(1, k)[2]["speaker"]
        assert spk in speakers["train"]
    from hwkd.data.noise import ambient_split
    assert not set(ambient_split("train")) & set(ambient_split("val"))   # ambient noise files split as well


def test_mixing_version_2_moves_full_length_crops_and_adds_voices(tiny_corpus):
    """Version 1 crops a segment as long as the stored clips (1 s here) from offset 0, so its targets are the
    stored clips themselves; version 2 starts anywhere (continuing with the speaker's clips), speaks half of a
    recorded voice's crops from its prompt pack and speed-perturbs every crop."""
    from hwkd.data.mixing import OnTheFlyMix

    def stored(m, clean):
        return any(len(s) == len(clean) and np.allclose(s / np.abs(s).max(), clean / np.abs(clean).max(), atol=1e-4)
                   for s in m.speech)
    v1 = OnTheFlyMix(tiny_corpus, segment_s=1.0, seed=0, version=1)
    v2 = OnTheFlyMix(tiny_corpus, segment_s=1.0, seed=0, version=2)
    assert v2.version == 2 and v2.packs
    assert sorted(v2.packs) == sorted(s for s in set(v2.speakers) if s.startswith("asterisk:"))
    assert all(stored(v1, v1.mix(e, k)[1]) for e in (0, 1) for k in range(6))
    assert not any(stored(v2, v2.mix(e, k)[1]) for e in (0, 1) for k in range(6))
    x, y = v2.mix(4, 9), OnTheFlyMix(tiny_corpus, segment_s=1.0, seed=0, version=2).mix(4, 9)
    assert np.array_equal(x[0], y[0]) and np.array_equal(x[1], y[1])       # still a function of (seed, epoch, index)
    assert x[1].shape == (16000,) and np.isfinite(x[0]).all()
    v3 = OnTheFlyMix(tiny_corpus, segment_s=1.0, seed=0)                  # the default; mono: version 2's items
    assert v3.version == 3 and all(np.array_equal(a, b) for a, b in zip(v3.mix(4, 9)[:2], x[:2]))
    with pytest.raises(HwkdError, match="mixing version"):
        OnTheFlyMix(tiny_corpus, segment_s=1.0, version=4)


def test_runs_record_their_mixing_version(tiny_corpus, tmp_path):
    """What resuming relies on: train_model writes the version into the checkpoints (None on static pairs)."""
    from hwkd.models.checkpoint import read_checkpoint
    from hwkd.train.recipe import train_model
    tcfg = TrainConfig(epochs=1, batch_size=2, segment_s=0.5, max_steps_per_epoch=1, val_clips=1, val_pesq_clips=0)
    for mixing, asked, want in (("on", None, 3), ("on", 1, 1), ("off", None, None)):
        run = tmp_path / f"{mixing}-{asked}"
        res = train_model(create_model(TINY).cfg, run, tcfg, data=tiny_corpus, mixing=mixing, progress=False,
                          mix_version=asked)
        assert res["mixing_version"] == want
        assert read_checkpoint(run / "last.pt")["meta"]["mixing_version"] == want


def test_a_resumed_run_keeps_its_mixing_version(tmp_path):
    from hwkd.models.checkpoint import save_checkpoint
    from hwkd.train.recipe import mix_version_of
    assert mix_version_of(tmp_path / "new") == 3 and mix_version_of(tmp_path / "new", 1) == 1
    net = create_model(TINY)
    old = tmp_path / "old"                         # a run from before versions: mixed with version 1
    old.mkdir()
    save_checkpoint(old / "last.pt", net, meta={"train_data": "on-the-fly mixing"})
    assert mix_version_of(old) == 1 and mix_version_of(old, 1) == 1
    with pytest.raises(HwkdError, match="mixing version 1"):
        mix_version_of(old, 2)
    static = tmp_path / "static"                   # a run on static pairs: no version applies, none is refused
    static.mkdir()
    save_checkpoint(static / "last.pt", net, meta={"train_data": "static pairs", "mixing_version": None})
    assert mix_version_of(static, 1) == 1 and mix_version_of(static) == 3
    new = tmp_path / "v2"
    new.mkdir()
    save_checkpoint(new / "last.pt", net, meta={"train_data": "on-the-fly mixing", "mixing_version": 2})
    assert mix_version_of(new) == 2
    with pytest.raises(HwkdError, match="--mixing-version 5"):
        mix_version_of(tmp_path / "x", 5)


def test_on_the_fly_mixing_ambisonics(tiny_foa):
    from hwkd.data.mixing import OnTheFlyMix
    mix = OnTheFlyMix(tiny_foa, segment_s=0.5, seed=0)
    it = mix[3]
    assert it["noisy"].shape == (4, 8000) and torch.isfinite(it["noisy"]).all()
    assert torch.equal(mix[3]["noisy"], it["noisy"])


def test_mixing_version_3_turns_the_ambisonics_field_and_keeps_the_rest(tiny_foa):
    """Version 3: each Ambisonics item is version 2's with its field turned about the vertical axis (and mirrored
    for some): W, Z and the target as version 2's (up to the one level gain), X² + Y² per sample kept, the turn
    different from item to item; the turn is exact (a turned source equals the source simulated turned)."""
    from hwkd.data.mixing import OnTheFlyMix, turn_foa
    v2, v3 = (OnTheFlyMix(tiny_foa, segment_s=0.5, seed=0, version=v) for v in (2, 3))
    angles = []
    for k in range(6):
        (a, ca, _), (b, cb, _) = v2.mix(1, k), v3.mix(1, k)
        g = float(np.dot(b[0], a[0]) / np.dot(a[0], a[0]))                 # a peak may rescale the item
        assert np.allclose(b[[0, 2]], g * a[[0, 2]], atol=1e-6) and np.allclose(cb, g * ca, atol=1e-6)
        assert np.allclose(b[1] ** 2 + b[3] ** 2, g ** 2 * (a[1] ** 2 + a[3] ** 2), atol=1e-6)
        angles.append(float(np.dot(b[3], a[3]) / (g * np.dot(a[3], a[3]) + 1e-12)))
        assert not np.allclose(b[[1, 3]], g * a[[1, 3]], atol=1e-4)
    assert len({round(x, 3) for x in angles}) == 6
    s = np.random.default_rng(0).standard_normal(64)

    def field(az, el=0.3):
        return np.stack([s, np.cos(el) * np.sin(az) * s, np.sin(el) * s, np.cos(el) * np.cos(az) * s])
    assert np.allclose(turn_foa(field(1.1), 0.7), field(1.8))
    assert np.allclose(turn_foa(field(1.1), 0, True), field(-1.1))


@pytest.mark.parametrize("which", ["mono", "foa"])
def test_loader_workers_prepare_the_same_batches(which, tiny_corpus, tiny_foa):
    """--loader-workers N: the batches prepared ahead in forked processes are the ones read in the step (items
    are functions of (seed, epoch, index)); the Ambisonics room pool is built once before the fork."""
    from hwkd.data.mixing import ROOM_POOL, OnTheFlyMix
    from hwkd.train.trainer import batch_items
    mix = OnTheFlyMix(tiny_corpus if which == "mono" else tiny_foa, segment_s=0.5, seed=1)
    mix.set_epoch(3)
    batches = [[5, 2], [0, 7], [3, 3], [1, 6]]
    here = list(batch_items(mix, batches, 0))
    if which == "foa":
        mix.prepare()
        assert len(mix._rooms) == ROOM_POOL
    ahead = list(batch_items(mix, batches, 2))
    assert len(ahead) == len(here) == 4
    for a, b in zip(here, ahead):
        for x, y in zip(a, b):
            assert torch.equal(x["noisy"], y["noisy"]) and torch.equal(x["clean"], y["clean"]) and x["id"] == y["id"]


def test_training_with_loader_workers_equals_training_without(tmp_path, tiny_corpus):
    from hwkd.models.checkpoint import load_model

    from conftest import run_cli
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("channels: 8\nlayers: 1\ndepth: 1\nheads: 0\n")

    def train(out, loaders):
        r = run_cli("train", "--model", cfg, "--data", tiny_corpus, "--out", tmp_path / out, "--epochs", "2",
                    "--batch-size", "2", "--segment-s", "0.5", "--max-steps-per-epoch", "3", "--threads", "1",
                    "--val-pesq-clips", "0", "--loader-workers", str(loaders))
        assert r.returncode == 0, r.stderr[-2000:]
        return load_model(tmp_path / out / "last.pt")[0].state_dict()
    a, b = train("plain", 0), train("ahead", 2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    from hwkd.models.checkpoint import read_checkpoint
    assert read_checkpoint(tmp_path / "ahead" / "last.pt")["train"]["config"]["loader_workers"] == 2
    bad = run_cli("train", "--model", cfg, "--data", tiny_corpus, "--out", tmp_path / "bad", "--loader-workers", "-1")
    assert bad.returncode == 2 and "--loader-workers" in bad.stderr and not (tmp_path / "bad").exists()
    # data-parallel workers are daemonic processes, which may not fork loaders: refused before any work
    both = run_cli("train", "--model", cfg, "--data", tiny_corpus, "--out", tmp_path / "both", "--batch-size", "2",
                   "--workers", "2", "--loader-workers", "1")
    assert both.returncode == 2 and "--loader-workers 1 with --workers 2" in both.stderr
    assert "Traceback" not in both.stderr and not (tmp_path / "both").exists()


def test_real_datasets_keep_their_pairs(paired):
    from hwkd.data.datasets import SpeechPairs
    from hwkd.train.recipe import training_set
    assert isinstance(training_set(paired, None, 0.5, 1, 0), SpeechPairs)
    with pytest.raises(HwkdError, match="not a set of an hwkd corpus"):
        training_set(paired, None, 0.5, 1, 0, mixing="on")


@pytest.fixture
def dns_style(tmp_path):
    """A real dataset whose splits ship clean speech and noise separately: DATA/{train,val}/{noisy,clean,noise}."""
    from conftest import tone, write
    root = tmp_path / "dns-style"
    rng = np.random.default_rng(0)
    for split, n in (("train", 4), ("val", 2)):
        for i in range(n):
            write(root / split / "clean" / f"{split}{i}.wav", tone(16000 + 4000 * i, f=200 + 50 * i, seed=i))
            write(root / split / "noisy" / f"{split}{i}.wav", tone(16000 + 4000 * i, f=200 + 50 * i, seed=9 + i))
        for j in range(3):
            write(root / split / "noise" / f"{split}-n{j}.wav", 0.05 * rng.standard_normal(6000 + 9000 * j))
    return root


def test_dns_style_dataset_mixes_its_split_on_the_fly(dns_style):
    from hwkd.data.mixing import FolderMix
    from hwkd.train.recipe import training_set
    ds = training_set(dns_style, "train", 0.5, 1, 3)
    assert isinstance(ds, FolderMix) and len(ds) == (16000 + 20000 + 24000 + 28000) // 8000
    ds.set_epoch(1)
    again = FolderMix(dns_style, "train", segment_s=0.5, seed=3)
    again.set_epoch(1)
    for k in range(len(ds)):
        a, b = ds[k], again[k]
        assert torch.equal(a["noisy"], b["noisy"]) and torch.equal(a["clean"], b["clean"])
        assert a["noisy"].shape == (1, 8000) and a["clean"].shape == (8000,)
    again.set_epoch(2)
    assert not torch.equal(ds[0]["noisy"], again[0]["noisy"])
    # only the train split's files, and the drawn SNR: noisy - clean is the scaled noise
    for k in range(12):
        noisy, clean, meta = ds.mix(0, k)
        assert all(s.startswith("train") for s in meta["speech"]) and meta["noise"].startswith("train-n")
        snr = 10 * np.log10(np.mean(clean ** 2) / np.mean((noisy[0] - clean) ** 2))
        assert np.isfinite(snr) and -6 < meta["snr_db"] < 21 and np.abs(noisy).max() <= 0.99 + 1e-6
    # a noise file shorter than the segment loops from a random point, not always from its start
    firsts = {float(n[0]) for n, name in (ds._noise(np.random.default_rng(i), 8000) for i in range(40))
              if name == "train-n0.wav"}
    assert len(firsts) > 3
    # --mixing off keeps the pairs; a split without noise/ keeps its pairs
    from hwkd.data.datasets import SpeechPairs
    assert isinstance(training_set(dns_style, "train", 0.5, 1, 0, mixing="off"), SpeechPairs)
    import shutil
    shutil.rmtree(dns_style / "train" / "noise")
    assert isinstance(training_set(dns_style, "train", 0.5, 1, 0), SpeechPairs)
    with pytest.raises(HwkdError, match="ships no train/noise/ folder"):
        training_set(dns_style, "train", 0.5, 1, 0, mixing="on")


def test_dns_style_noise_at_the_wrong_rate_is_named(dns_style):
    from hwkd.train.recipe import training_set

    from conftest import write
    bad = write(dns_style / "train" / "noise" / "bad.wav", np.zeros(8000) + 0.01, sr=8000)
    with pytest.raises(HwkdError, match=f"{bad.name} is 8000 Hz.*resample it to 16000 Hz"):
        training_set(dns_style, "train", 0.5, 1, 0)


@pytest.mark.slow
def test_cli_train_mixes_a_dns_style_dataset(dns_style, tmp_path):
    from conftest import run_cli
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("".join(f"{k}: {v}\n" for k, v in TINY.items()))
    r = run_cli("-q", "train", "--data", dns_style, "--model", cfg, "--out", tmp_path / "run", "--epochs", "1",
                "--batch-size", "2", "--segment-s", "0.5", "--max-steps-per-epoch", "2", "--val-pesq-clips", "0",
                "--threads", "1")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "on-the-fly mixing" in r.stdout and (tmp_path / "run" / "best.pt").is_file()


@pytest.mark.slow
def test_distill_with_two_data_parallel_workers(tmp_path, tiny_corpus):
    """I²SRF-TFCKD (a scheme that relates the items of a batch) with --workers 2: worker 0 balances λ, the
    spawned worker reads it back, each distils its share (the batch stream built for batch / workers)."""
    from hwkd.models.checkpoint import read_checkpoint, save_checkpoint

    from conftest import run_cli
    save_checkpoint(tmp_path / "teacher.pt", create_model(dict(channels=12, layers=2, depth=2, heads=2)))
    r = run_cli("-q", "distill", "--teacher", tmp_path / "teacher.pt", "--student", "kd-small", "--kd",
                "i2srf-tfckd", "--data", tiny_corpus, "--out", tmp_path / "run", "--epochs", "1", "--batch-size", "4",
                "--segment-s", "1", "--max-steps-per-epoch", "2", "--val-pesq-clips", "0", "--threads", "2",
                "--workers", "2")
    assert r.returncode == 0, r.stderr[-2000:]
    rec = json.loads((tmp_path / "run" / "kd_weight.json").read_text())
    ck = read_checkpoint(tmp_path / "run" / "last.pt")
    assert rec["lam"] > 0 and ck["meta"]["kd_weight"]["lam"] == rec["lam"]
    assert ck["train"]["history"][-1]["workers"] == 2 and ck["train"]["pos"] == 0 and ck["train"]["epoch"] == 1


@pytest.mark.parametrize("which", ["mono", "foa"])
def test_on_the_fly_mixing_needs_only_the_clean_side(which, tiny_corpus, tiny_foa, tmp_path):
    """A corpus carried without its static training mixtures (train/noisy/ left behind, as to a GPU machine)
    mixes the same items, with the same epoch length, as the whole corpus."""
    import shutil

    from hwkd.data.mixing import OnTheFlyMix
    src = tiny_corpus if which == "mono" else tiny_foa
    root = tmp_path / "carried"
    shutil.copytree(src.parent, root)
    shutil.rmtree(root / which / "train" / "noisy")
    whole = OnTheFlyMix(src, segment_s=0.5, seed=2)
    clean_only = OnTheFlyMix(root / which, segment_s=0.5, seed=2)
    assert len(clean_only) == len(whole) and clean_only.channels == whole.channels
    assert clean_only.speakers == whole.speakers
    for k in (0, 3, len(whole) - 1):
        whole.set_epoch(1)
        clean_only.set_epoch(1)
        assert torch.equal(whole[k]["noisy"], clean_only[k]["noisy"])
    # without the manifest the speakers fall back to the same file ids on both paths
    (root / which / "train" / "manifest.jsonl").unlink()
    bare = tmp_path / "bare"
    shutil.copytree(src.parent, bare)
    (bare / which / "train" / "manifest.jsonl").unlink()
    assert OnTheFlyMix(root / which, segment_s=0.5).speakers == OnTheFlyMix(bare / which, segment_s=0.5).speakers
    shutil.rmtree(root / which / "train" / "clean")
    with pytest.raises(HwkdError, match="neither noisy/ nor clean/"):
        OnTheFlyMix(root / which, segment_s=0.5)


class _Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, k):
        if k == 3:
            raise HwkdError("clip 3 cannot be read", "rebuild the corpus")
        return {"noisy": torch.zeros(1, 4), "clean": torch.zeros(4), "id": str(k)}


def test_a_user_error_in_a_loader_process_keeps_its_one_line():
    from hwkd.train.trainer import batch_items
    got = batch_items(_Broken(), [[0, 1], [2, 3]], 1)
    assert next(got)[0]["id"] == "0"
    with pytest.raises(HwkdError) as e:
        next(got)
    assert str(e.value) == "clip 3 cannot be read — rebuild the corpus"


def test_a_step_budget_larger_than_one_pass_is_trained_in_full(tiny_corpus, tmp_path, capsys):
    """A budget of N steps is N steps (in whole equal epochs), not silently one pass over the training set."""
    from hwkd.train.recipe import plan_steps, train_model
    assert plan_steps(400, 150) == {"epochs": 3, "max_steps_per_epoch": 134}          # 402: at least the budget
    assert plan_steps(40, 600) == {"epochs": 1, "max_steps_per_epoch": 40}            # within a pass: as before
    assert plan_steps(150, 150) == {"epochs": 1, "max_steps_per_epoch": 150}
    for bad in (0, -3, 2.5):
        with pytest.raises(ValueError, match="step budget"):
            plan_steps(bad, 10)
    tcfg = TrainConfig(epochs=1, batch_size=8, segment_s=1.0, val_clips=1, val_pesq_clips=0, ckpt_every=0)
    res = train_model(create_model(TINY).cfg, tmp_path / "r", tcfg, data=tiny_corpus, mixing="off",
                      progress=False, steps=12)
    per_pass = 40 // 8                                 # 40 one-second clips, static pairs: 5 batches of 8
    assert len(res["history"]) == 3 and res["history"][-1]["steps"] == 12 >= 12 > per_pass
    # a per-epoch cap beyond one pass adds nothing, and says so
    from dataclasses import replace
    train_model(create_model(TINY).cfg, tmp_path / "cap", replace(tcfg, max_steps_per_epoch=50), data=tiny_corpus,
                mixing="off", progress=False)
    assert "the cap of 50 per epoch does not add steps" in capsys.readouterr().err
