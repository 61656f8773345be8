"""The weight-sharing supernet: sub-networks are slices of the largest DPDCRN and extract as plain models."""

import json
import math

import pytest
import torch

from hwkd.models.checkpoint import load_model, save_checkpoint
from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig
from hwkd.models.enhancer import Enhancer
from hwkd.models.supernet import Supernet, largest

CAUSAL = dict(causal=True, time_attention="none")
BIG = DPDCRNConfig(channels=16, layers=2, depth=3, heads=2, gru_hidden=12, **CAUSAL)
SUBS = [DPDCRNConfig(channels=8, layers=1, depth=1, heads=0, gru_hidden=4, intra_bidirectional=False, **CAUSAL),
        DPDCRNConfig(channels=12, layers=2, depth=2, heads=1, gru_hidden=8, **CAUSAL),
        DPDCRNConfig(channels=16, layers=1, depth=3, heads=2, gru_hidden=12, intra_bidirectional=False, **CAUSAL),
        BIG]


@pytest.fixture(scope="module")
def supernet():
    torch.manual_seed(0)
    return Supernet(BIG)


@pytest.mark.parametrize("cfg", SUBS, ids=lambda c: f"C{c.channels}L{c.layers}D{c.depth}H{c.hidden}h{c.heads}")
def test_a_sub_network_is_the_extracted_plain_model(supernet, cfg):
    x = torch.randn(2, 2, 7, 257)
    model = supernet.extract(cfg)
    assert type(model) is DPDCRN and model.cfg == cfg
    with torch.no_grad():
        # the same numbers up to float rounding (a slice and its contiguous copy may sum in another order)
        assert torch.allclose(supernet(cfg, x), model(x), atol=1e-5)
        m_sn, taps_sn = supernet(cfg, x, return_taps=True)
        m_pl, taps_pl = model(x, return_taps=True)
    assert [t.shape for t in taps_sn["enc"] + taps_sn["mid"]] == [t.shape for t in taps_pl["enc"] + taps_pl["mid"]]
    # and it streams hop by hop like any causal DPDCRN
    e = Enhancer(model).eval()
    wav = 0.1 * torch.randn(1, 1, 4000)
    with torch.no_grad():
        assert torch.allclose(e(wav), e.stream(wav), atol=1e-5)


def test_non_causal_sub_networks_with_time_attention_slice_the_same_way():
    big = DPDCRNConfig(channels=16, layers=2, depth=2, heads=2, gru_hidden=12, time_attention="full")
    torch.manual_seed(0)
    sn = Supernet(big)
    x = torch.randn(2, 2, 7, 257)
    for cfg in (DPDCRNConfig(channels=12, layers=1, depth=1, heads=1, gru_hidden=8, time_attention="full"),
                DPDCRNConfig(channels=8, layers=2, depth=2, heads=2, gru_hidden=4, time_attention="none",
                             intra_bidirectional=False)):
        with torch.no_grad():
            assert torch.allclose(sn(cfg, x), sn.extract(cfg)(x), atol=1e-5)
    with pytest.raises(ValueError, match="time_attention"):
        sn.check(DPDCRNConfig(channels=8, layers=1, depth=1, heads=2, gru_hidden=8, time_attention="causal"))
    with pytest.raises(ValueError, match="one kind of time attention"):
        largest([DPDCRNConfig(channels=8, time_attention="causal"), DPDCRNConfig(channels=16, time_attention="full")])


def test_the_largest_sub_network_is_the_supernet_itself(supernet):
    x = torch.randn(1, 2, 5, 257)
    with torch.no_grad():
        assert torch.equal(supernet(BIG, x), supernet.net(x))


def test_embed_then_extract_gives_the_same_weights_and_a_loadable_checkpoint(tmp_path):
    sn = Supernet(BIG)
    torch.manual_seed(3)
    small = DPDCRN(SUBS[1])
    sn.embed(small)
    got = sn.extract(SUBS[1])
    for (k, a), (_, b) in zip(small.state_dict().items(), got.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
    save_checkpoint(tmp_path / "sub.pt", got)
    loaded, _ = load_model(tmp_path / "sub.pt")
    x = torch.randn(1, 2, 5, 257)
    with torch.no_grad():
        assert torch.allclose(loaded(x), small.eval()(x), atol=1e-5)


def test_gradients_reach_only_the_slices_gate_by_gate():
    torch.manual_seed(0)
    sn = Supernet(BIG)
    cfg = SUBS[0]                                           # C 8, L 1, D 1, H 4, unidirectional, no attention
    sn(cfg, torch.randn(2, 2, 6, 257)).pow(2).mean().backward()
    net = sn.net
    gru = net.dp_layers[0].intra.gru
    rows = (gru.weight_hh_l0.grad.abs().sum(1) > 0).nonzero().flatten().tolist()
    assert rows == [g * 12 + j for g in range(3) for j in range(4)]      # r, z, n: the first 4 units of each
    assert (gru.weight_hh_l0.grad[:, 4:] == 0).all() and (gru.weight_ih_l0.grad[:, 4:] == 0).all()
    assert gru.weight_hh_l0_reverse.grad is None                         # a unidirectional sub-network
    assert net.dp_layers[1].intra.gru.weight_ih_l0.grad is None          # layer 2 skipped
    assert net.enc_dense.convs[1].weight.grad is None                    # dense layer 2 skipped
    assert net.dp_layers[0].intra.mha.in_proj_weight.grad is None        # heads 0: no attention
    g = net.enc1[0].weight.grad
    assert (g[:8] != 0).any() and (g[8:] == 0).all()
    # the fc after a bidirectional GRU reads [fwd h | bwd h]
    sn.zero_grad()
    sn(SUBS[1], torch.randn(2, 2, 6, 257)).pow(2).mean().backward()
    cols = (net.dp_layers[0].intra.fc.weight.grad.abs().sum(0) > 0).nonzero().flatten().tolist()
    assert cols == list(range(8)) + list(range(12, 20))
    # the dense block's layer 2 input is [out_1 | out_0 | input], each sliced in its own block of 16
    cols = (net.enc_dense.convs[1].weight.grad.abs().sum((0, 2, 3)) > 0).nonzero().flatten().tolist()
    assert cols == list(range(12)) + list(range(16, 28))


def test_what_does_not_fit_is_refused():
    sn = Supernet(DPDCRNConfig(channels=16, layers=1, depth=2, heads=0, gru_hidden=8, intra_bidirectional=False,
                               **CAUSAL))
    for bad, field in ((dict(channels=24), "channels"), (dict(layers=2), "layers"), (dict(gru_hidden=16), "gru_hidden"),
                       (dict(heads=2), "heads"), (dict(intra_bidirectional=True), "bidirectional"),
                       (dict(hop=128), "hop"), (dict(in_channels=4), "in_channels")):
        cfg = DPDCRNConfig(**{**dict(channels=8, layers=1, depth=1, heads=0, gru_hidden=8, intra_bidirectional=False,
                                     **CAUSAL), **bad})
        assert not sn.fits(cfg)
        with pytest.raises(ValueError, match=field):
            sn.check(cfg)
    with pytest.raises(ValueError, match="hop"):
        largest([BIG, DPDCRNConfig(channels=8, hop=128, **CAUSAL)])
    top = largest(SUBS[:3])
    assert (top.channels, top.layers, top.depth, top.hidden, top.heads, top.intra_bidirectional) == (16, 2, 3, 12, 2,
                                                                                                     True)


def _tiny_space():
    import itertools
    out = []
    for c, layers, depth, h, bi in itertools.product((8, 12), (1, 2), (1, 2), (4, 8), (True, False)):
        out.append(DPDCRNConfig(channels=c, layers=layers, depth=depth, heads=2, gru_hidden=h,
                                intra_bidirectional=bi, **CAUSAL))
    return out


def _tcfg(**kw):
    from hwkd.train.trainer import TrainConfig
    return TrainConfig(**{**dict(epochs=1, batch_size=2, segment_s=0.5, lr=2e-3, threads=1, val_pesq_clips=0,
                                 max_steps_per_epoch=4, ckpt_every=2), **kw})


def test_the_width_free_kd_parts_are_shared_by_every_size():
    """One calibration (per set) and one teacher fusion serve all sizes: a one-layer student uses the first
    middle-tap MLP of the two-layer one's, and its loss trains only what it used."""
    from hwkd.models import create_model
    from hwkd.train.supernet import SandwichObjective
    torch.manual_seed(0)
    teacher = create_model(dict(channels=12, layers=2, depth=2, heads=2))
    space = _tiny_space()
    sn = Supernet(largest(space))
    obj = SandwichObjective(sn, space, teacher, "i2srf-tfckd", 2, 8000)
    d = obj.state.distillers
    assert set(d) == {"c8l1", "c8l2", "c12l1", "c12l2"}
    for k in d:
        assert d[k].calib is d["c12l2"].calib and d[k].t_fuse is d["c12l2"].t_fuse
    assert d["c8l1"].s_fuse is not d["c12l1"].s_fuse                  # sized by the student's width
    assert len(d["c8l1"].calib["mid"].q_time) == 2                     # the two-layer one's, serving one tap too
    shared = sum(p.numel() for p in obj.state.parameters())
    per_size = sum(p.numel() for k in d for p in d[k].parameters())   # counted once per size
    assert shared < per_size / 2
    x = torch.randn(2, 2, 32, 257)
    with torch.no_grad():
        _, tt = teacher(x, return_taps=True)
    cfg = next(c for c in space if c.layers == 1 and c.channels == 8)
    _, st = sn(cfg, x, return_taps=True)
    loss, logs = d["c8l1"](st, tt)
    assert math.isfinite(float(loss.detach())) and "kd_mid" in logs
    loss.backward()
    mid = d["c8l1"].calib["mid"].q_time
    assert mid[0][0].weight.grad is not None and mid[0][0].weight.grad.abs().sum() > 0
    assert mid[1][0].weight.grad is None                               # the second layer's MLP: unused here
    from hwkd.train.supernet import share_width_free
    odd = {"a": torch.nn.Module(), "b": torch.nn.Module()}           # a part whose shape depends on the student
    odd["a"].t_fuse, odd["b"].t_fuse = torch.nn.Linear(2, 3), torch.nn.Linear(4, 3)
    with pytest.raises(ValueError, match="t_fuse of the distillers differs"):
        share_width_free(odd)
    with pytest.raises(ValueError, match="serves up to 1 student"):    # never silently fewer MLPs than taps
        from hwkd.kd.i2srf import Calibration
        grams = [(torch.rand(2, 32, 32), torch.rand(2, 32, 2))] * 2
        Calibration(1, 2, 32, 2)(grams, grams)


@pytest.mark.slow
def test_supernet_training_sandwich_kd_resume_and_load(tmp_path, tiny_corpus):
    from hwkd.models import create_model
    from hwkd.train.supernet import SandwichObjective, load_supernet, train_supernet
    teacher = create_model(dict(channels=12, layers=2, depth=2, heads=2))
    space = _tiny_space()
    res = train_supernet(space, tmp_path / "a", _tcfg(), teacher=teacher, data=tiny_corpus, progress=False)
    h = res["history"][-1]
    for k in ("train_neg_si_sdr_max", "train_neg_si_sdr_min", "train_neg_si_sdr_rand", "train_kd_max",
              "val_si_sdr_db", "val_si_sdr_db_min"):
        assert k in h and math.isfinite(h[k]), k
    lam = json.loads((tmp_path / "a" / "kd_weight.json").read_text())
    assert set(lam["lams"]) == {"c8l1", "c8l2", "c12l1", "c12l2"} and all(v > 0 for v in lam["lams"].values())
    # the step count rides in the checkpoint; the sandwich of a step is a function of (seed, step)
    from hwkd.models.checkpoint import read_checkpoint
    ck = read_checkpoint(tmp_path / "a" / "last.pt")
    assert int(ck["objective_state"]["0.steps"]) == 4
    sn, configs = load_supernet(tmp_path / "a", "last")
    assert configs == space and sn.max_cfg == DPDCRNConfig(channels=12, layers=2, depth=2, heads=2, gru_hidden=8,
                                                            **CAUSAL)
    obj = SandwichObjective(sn, space, None, "none", 2, 8000)
    assert obj.sample(3) == obj.sample(3) and obj.sample(3)[:2] == [sn.max_cfg, obj.bottom]
    assert obj.bottom == DPDCRNConfig(channels=8, layers=1, depth=1, heads=2, gru_hidden=4, intra_bidirectional=False,
                                      **CAUSAL)
    # killed in its third step (after the step-2 checkpoint), resumed: the same weights as the uninterrupted run
    real_call = SandwichObjective.__call__

    def dying(self, enhancer, batch):
        if int(self.state.steps) == 2:
            raise KeyboardInterrupt
        return real_call(self, enhancer, batch)

    def killed_in_step_3(out):
        SandwichObjective.__call__ = dying
        try:
            with pytest.raises(KeyboardInterrupt):
                train_supernet(space, out, _tcfg(), teacher=teacher, data=tiny_corpus, progress=False)
        finally:
            SandwichObjective.__call__ = real_call
    killed_in_step_3(tmp_path / "b")
    train_supernet(space, tmp_path / "b", _tcfg(), teacher=teacher, data=tiny_corpus, progress=False)
    a, _ = load_supernet(tmp_path / "a", "last")
    b, _ = load_supernet(tmp_path / "b", "last")
    for (k, x), (_, y) in zip(a.net.state_dict().items(), b.net.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-6), k
    # the same from training/save.sh's portable copy (Adam's moments in bfloat16): smaller, and it resumes
    from hwkd.models.checkpoint import portable_checkpoint
    killed_in_step_3(tmp_path / "c")
    full = tmp_path / "c" / "last.pt"
    portable_checkpoint(full, tmp_path / "p.pt")
    assert (tmp_path / "p.pt").stat().st_size < 0.85 * full.stat().st_size      # 2.0 vs 2.6 MB here
    moments = read_checkpoint(tmp_path / "p.pt")["train"]["optimizer"]["state"][0]
    assert moments["exp_avg"].dtype == torch.bfloat16 and moments["step"].dtype == torch.float32
    (tmp_path / "p.pt").replace(full)
    train_supernet(space, tmp_path / "c", _tcfg(), teacher=teacher, data=tiny_corpus, progress=False)
    c, _ = load_supernet(tmp_path / "c", "last")
    for (k, x), (_, y) in zip(a.net.state_dict().items(), c.net.state_dict().items(), strict=True):
        assert torch.allclose(x, y, atol=1e-4), k
    assert read_checkpoint(full)["train"]["optimizer"]["state"][0]["exp_avg"].dtype == torch.float32
    # a run whose distillers were per size (before they shared their width-free parts) is refused in one line
    desc = json.loads((tmp_path / "c" / "supernet.json").read_text())
    assert desc["kd_shared"] == ["calib", "t_fuse"]
    del desc["kd_shared"]
    (tmp_path / "c" / "supernet.json").write_text(json.dumps(desc))
    with pytest.raises(Exception, match="share nothing, this hwkd shares"):
        train_supernet(space, tmp_path / "c", _tcfg(epochs=2), teacher=teacher, data=tiny_corpus, progress=False)
    with pytest.raises(Exception, match="another space"):
        train_supernet(space[:3], tmp_path / "a", _tcfg(), teacher=teacher, data=tiny_corpus, progress=False)


def _fake_trained_supernet(run, space_name="wide"):
    """A run folder as `hwkd supernet train` leaves it (random weights): supernet.json and best.pt."""
    from hwkd.search.space import load_space
    space = load_space(space_name)
    configs = space.configs()
    top = largest(configs)
    run.mkdir(parents=True)
    (run / "supernet.json").write_text(json.dumps({"max": top.to_dict(), "configs": [c.to_dict() for c in configs],
                                                   "kd_shared": ["calib", "t_fuse"]}))
    save_checkpoint(run / "best.pt", Supernet(top).net, train={"epoch": 1, "history": [{"epoch": 1}]},
                    meta={"space": space.as_dict(), "command": "hwkd supernet train --space wide --out RUN"})
    return configs


def test_a_shipped_supernet_is_where_a_search_starts_when_it_covers_the_space(tmp_path, monkeypatch):
    from hwkd.cli.search import candidate_start
    from hwkd.errors import HwkdError
    from hwkd.train import supernet as s
    monkeypatch.setattr(s, "ASSET_DIR", tmp_path / "assets" / "supernet")
    assert s.shipped_supernet() is None
    assert candidate_start(None, None, False)[:2] == ("default", None)               # nothing shipped: as before
    _fake_trained_supernet(tmp_path / "run")
    (tmp_path / "empty").mkdir()
    with pytest.raises(HwkdError, match="not a trained supernet"):
        s.install_supernet(tmp_path / "empty", tmp_path / "x")
    out = s.install_supernet(tmp_path / "run")
    assert out == s.ASSET_DIR and s.shipped_supernet() == out
    ck = torch.load(out / "best.pt", weights_only=True)
    assert "optimizer" not in ck["train"] and "objective_state" not in ck             # the network alone
    space, sn, why = candidate_start(None, None, False)
    assert (space, sn) == ("wide", out) and "shipped supernet" in why
    assert candidate_start("wide", None, True)[1] is None                            # --from-scratch
    assert candidate_start("default", None, False)[1] == out                         # a part of wide: covered
    space, sn, why = candidate_start("foa", None, False)                              # not covered: from scratch
    assert sn is None and "does not cover space foa" in why and "in_channels 4" in why
    assert candidate_start(None, tmp_path / "run", False)[:2] == ("wide", tmp_path / "run")   # its own space
    with pytest.raises(HwkdError, match="contradict"):
        candidate_start(None, tmp_path / "run", True)


def test_the_supernet_recipe_is_the_background_runs_and_the_shipped_ones():
    """training/supernet/ (what resume.sh runs across sessions) is SUPERNET_RECIPE; a shipped supernet was made
    by it."""
    import shlex
    from pathlib import Path

    from hwkd.cli import build_parser
    from hwkd.train.supernet import SUPERNET_ARGS, SUPERNET_RECIPE, shipped_supernet
    here = Path(__file__).resolve().parents[1] / "training" / "supernet"
    assert (here / "args").read_text().split() == SUPERNET_ARGS.split()
    assert f"hwkd {(here / 'command').read_text().strip()} {SUPERNET_ARGS}" in SUPERNET_RECIPE
    recipe = build_parser().parse_args(["supernet", "train", *SUPERNET_ARGS.split(), "--out", "RUN"])
    shipped = shipped_supernet()
    if shipped is None:
        return                                # not shipped yet: the recipe above is all there is to check
    ck = torch.load(shipped / "best.pt", weights_only=True)
    recorded = build_parser().parse_args(shlex.split(ck["meta"]["command"])[1:])
    for k in ("space", "epochs", "batch_size", "segment_s", "lr", "seed", "random", "kd", "val_pesq_clips"):
        assert getattr(recorded, k) == getattr(recipe, k), k


def test_in_place_distillation_adds_the_largest_output_as_a_reference_for_the_others():
    from hwkd.train.supernet import SandwichObjective
    torch.manual_seed(0)
    space = _tiny_space()
    sn = Supernet(largest(space))
    batch = {"noisy": torch.randn(2, 1, 4000) * 0.1, "clean": torch.randn(2, 1, 4000) * 0.1}
    losses = {}
    for w in (0.0, 0.5):
        obj = SandwichObjective(sn, space, None, "none", 2, 4000, inplace_kd=w)
        losses[w], parts = obj(None, batch)
        assert ("inplace_min" in parts and "inplace_rand" in parts and "inplace_max" not in parts) == (w > 0)
    # the same sub-networks (step 0): one more term for each but the largest, in the mean over the 4
    extra = 0.5 * (parts["inplace_min"] + 2 * parts["inplace_rand"]) / 4
    gained = float(losses[0.5].detach()) - float(losses[0.0].detach())
    assert gained == pytest.approx(extra, rel=1e-4, abs=1e-5) and extra != 0
    losses[0.5].backward()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in sn.parameters())
    with pytest.raises(ValueError, match="in-place"):
        SandwichObjective(sn, space, None, "none", 2, 4000, inplace_kd=-1)
