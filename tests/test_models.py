import numpy as np
import pytest
import torch

from hwkd.errors import HwkdError
from hwkd.models import DPDCRN, DPDCRNConfig, create_model
from hwkd.models.checkpoint import load_model, save_checkpoint
from hwkd.models.enhancer import Enhancer
from hwkd.models.registry import resolve_config

from conftest import full_mask

TINY = dict(channels=8, layers=2, depth=2, heads=2)


def _params(m):
    return sum(p.numel() for p in m.parameters())


def test_paper_parameter_counts_are_exact():
    t, s = create_model("paper-teacher"), create_model("paper-student")
    assert _params(t) == 3_218_118 and _params(s) == 595_494
    enc = sum(_params(x) for x in (t.enc1, t.enc2, t.enc_dense))
    dec = sum(_params(x) for x in (t.dec_dense, t.dec1, t.dec2))
    assert (enc, _params(t) - enc - dec, dec) == (1_036_032, 1_146_564, 1_035_522)


@pytest.mark.parametrize("mics", [1, 4])
def test_shapes_and_taps_mono_and_ambisonics(mics):
    m = create_model(dict(TINY, in_channels=mics))
    x = torch.randn(2, 2 * mics, 11, 257)
    mask, taps = m(x, return_taps=True)
    assert mask.shape == (2, 2, 11, 257)
    assert [t.shape[-1] for t in taps["enc"]] == [129, 64, 64]
    assert len(taps["mid"]) == 2 and all(t.shape == (2, 8, 11, 64) for t in taps["mid"])
    assert [t.shape[-1] for t in taps["dec"]] == [64, 129, 257] and taps["dec"][2] is mask
    y = Enhancer(m)(torch.randn(2, mics, 5000))
    assert y.shape == (2, 5000)


@pytest.mark.slow
@pytest.mark.parametrize("time_attention", ["none", "causal"])
def test_streaming_parity(time_attention):
    torch.manual_seed(0)
    m = full_mask(create_model(dict(TINY, causal=True, time_attention=time_attention))).eval()
    x = torch.randn(1, 2, 30, 257)
    with torch.no_grad():
        full = m(x)
        state, outs = m.init_state(1), []
        for t in range(30):
            y, state = m.step(x[:, :, t:t + 1], state)
            outs.append(y)
    assert (full - torch.cat(outs, 2)).abs().max() <= 1e-4
    # and end to end, waveform in, waveform out
    e = Enhancer(full_mask(create_model(dict(TINY, causal=True, time_attention=time_attention, hop=160)))).eval()
    w = 0.1 * torch.randn(1, 1, 7000)
    with torch.no_grad():
        assert (e(w) - e.stream(w)).abs().max() <= 1e-4


def test_causal_model_does_not_look_ahead():
    m = full_mask(create_model(dict(TINY, causal=True, time_attention="causal"))).eval()
    x = torch.randn(1, 2, 20, 257)
    x2 = x.clone()
    x2[:, :, 12:] = torch.randn(1, 2, 8, 257)
    with torch.no_grad():
        assert torch.allclose(m(x)[:, :, :12], m(x2)[:, :, :12], atol=1e-6)


def test_non_causal_model_refuses_streaming():
    with pytest.raises(ValueError, match="causal"):
        create_model(TINY).init_state()
    with pytest.raises(ValueError, match="causal"):
        DPDCRNConfig(causal=True, time_attention="full")


def test_checkpoint_rebuilds_the_model_alone(tmp_path):
    m = create_model(dict(TINY, in_channels=4, hop=128))
    save_checkpoint(tmp_path / "m.pt", m, meta={"note": "x"})
    # weights-only loading works on the raw file
    raw = torch.load(tmp_path / "m.pt", weights_only=True)
    assert raw["model"]["config"]["in_channels"] == 4
    m2, ck = load_model(tmp_path / "m.pt")
    assert m2.cfg == m.cfg and ck["meta"]["note"] == "x"
    x = torch.randn(1, 8, 5, 257)
    assert torch.equal(m.eval()(x), m2(x))


def test_bad_checkpoint_and_config_messages(tmp_path):
    with pytest.raises(HwkdError, match="checkpoint not found"):
        load_model(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    with pytest.raises(HwkdError, match="cannot read checkpoint"):
        load_model(tmp_path / "junk.pt")
    with pytest.raises(HwkdError, match="unknown model 'nope'"):
        resolve_config("nope")
    cfg = tmp_path / "m.yaml"
    cfg.write_text("channels: 7\n")
    with pytest.raises(HwkdError, match="invalid model config"):
        resolve_config(str(cfg))
    cfg.write_text("channels: [\n")
    with pytest.raises(HwkdError, match="malformed YAML"):
        resolve_config(str(cfg))
    cfg.write_text("model:\n  channels: 16\n  layers: 1\n")
    assert isinstance(DPDCRN(resolve_config(str(cfg))), DPDCRN)


def test_cumulative_norm_keeps_the_frame_level_and_streams():
    """Causal models normalise each frame by the statistics of all frames so far: a frame's level relative
    to the past survives (a frame-wise norm maps a frame and the same frame x10 to the same output)."""
    from hwkd.models.dpdcrn import FrameNorm
    torch.manual_seed(0)
    x = torch.randn(2, 6, 9, 64)
    louder = x.clone()
    louder[:, :, 5] *= 10
    frame, cum = FrameNorm(6, over_channels=False), FrameNorm(6, over_channels=False, cumulative=True)
    assert torch.allclose(frame(x)[:, :, 5], frame(louder)[:, :, 5], atol=1e-4)
    assert not torch.allclose(cum(x)[:, :, 5], cum(louder)[:, :, 5], atol=1e-2)
    assert torch.allclose(cum(x)[:, :, :5], cum(louder)[:, :, :5])            # the past does not see it
    assert torch.allclose(cum(x)[:, :, :1], frame(x)[:, :, :1], atol=1e-5)    # frame 0: its own statistics
    # hop by hop with the running sums as state == offline
    for over in (False, True):
        n = FrameNorm(6, over_channels=over, cumulative=True)
        st, outs = n.init_state(2), []
        for t in range(9):
            n.stream = st
            outs.append(n(x[:, :, t:t + 1]))
            st, n.stream = n.stream_out, None
        assert torch.allclose(torch.cat(outs, 2), n(x), atol=1e-5)
    # the model: cumulative by default for causal models, and the sums are named step states
    from hwkd.models.streaming import StepModel, state_names
    net = DPDCRN(DPDCRNConfig(**TINY, causal=True, time_attention="none"))
    assert net.cfg.causal_norm == "cumulative" and len(net.cumulative_norms()) == 3 + 2 * 2 + 2 * 2
    names = state_names(net)
    assert len(names) == len(StepModel(net).initial_states()) and names[-1] == "norm_sums10"


def test_checkpoints_from_before_the_cumulative_norm_load_frame_wise(tmp_path):
    m = DPDCRN(DPDCRNConfig(**TINY, causal=True, time_attention="none", causal_norm="frame"))
    save_checkpoint(tmp_path / "old.pt", m)
    ck = torch.load(tmp_path / "old.pt", weights_only=True)
    del ck["model"]["config"]["causal_norm"]                   # as written before the field existed
    torch.save(ck, tmp_path / "old.pt")
    m2, _ = load_model(tmp_path / "old.pt")
    assert m2.cfg.causal_norm == "frame" and not m2.cumulative_norms()
    x = torch.randn(1, 2, 7, 257)
    assert torch.equal(m.eval()(x), m2(x))


def test_input_compression_is_per_bin_power_law_and_checkpoints_from_before_it_load_raw(tmp_path):
    m = DPDCRN(DPDCRNConfig(**TINY, input_compress=0.3))
    x = torch.randn(2, 2, 5, 257)
    y = m.compress(x)
    mag_x, mag_y = torch.hypot(x[:, 0], x[:, 1]), torch.hypot(y[:, 0], y[:, 1])
    assert torch.allclose(mag_y, mag_x ** 0.3, rtol=1e-4)                            # |X|^c
    assert torch.allclose(torch.atan2(y[:, 1], y[:, 0]), torch.atan2(x[:, 1], x[:, 0]), atol=1e-4)  # phase kept
    assert torch.equal(DPDCRN(DPDCRNConfig(**TINY)).compress(x), x)                # c = 1: the raw STFT
    for bad in (0.0, 1.5, True, "0.3"):
        with pytest.raises(ValueError, match="input_compress"):
            DPDCRNConfig(**TINY, input_compress=bad)
    # a checkpoint written before the field existed was trained on the raw STFT, whatever today's default
    raw = DPDCRN(DPDCRNConfig(**TINY))
    save_checkpoint(tmp_path / "old.pt", raw)
    ck = torch.load(tmp_path / "old.pt", weights_only=True)
    del ck["model"]["config"]["input_compress"]
    torch.save(ck, tmp_path / "old.pt")
    m2, _ = load_model(tmp_path / "old.pt")
    assert m2.cfg.input_compress == 1.0 and torch.equal(raw.eval()(x), m2(x))


def test_filter_sum_masks_every_channel_starts_as_the_reference_and_streams(tmp_path):
    """mask_mode filter-sum: one bounded polar mask per input channel, the masked channels summed (a learned
    beamformer); an untrained model passes channel 0 through like the reference form; mono is refused; a
    checkpoint rebuilds it; hop by hop equals offline; the reference form is the old formula."""
    from hwkd.models.dpdcrn import apply_mask
    with pytest.raises(ValueError, match="filter-sum"):
        DPDCRNConfig(mask_mode="filter-sum")                         # one channel
    with pytest.raises(ValueError, match="mask_mode"):
        DPDCRNConfig(in_channels=4, mask_mode="beam")
    torch.manual_seed(0)
    spec = torch.randn(2, 4, 7, 257, dtype=torch.complex64)
    mask = torch.randn(2, 8, 7, 257)
    m = mask.reshape(2, 4, 2, 7, 257)
    mag = m.pow(2).sum(2).add(1e-8).sqrt()
    want = (spec * torch.tanh(mag) / mag * torch.complex(m[:, :, 0], m[:, :, 1])).sum(1)
    assert torch.allclose(apply_mask(mask, spec), want, atol=1e-5)
    ref = apply_mask(mask[:, :2], spec)                              # reference: channel 0 alone, as before
    mag0 = mask[:, :2].pow(2).sum(1).add(1e-8).sqrt()
    assert torch.allclose(ref, spec[:, 0] * torch.tanh(mag0) / mag0 * torch.complex(mask[:, 0], mask[:, 1]), atol=1e-5)
    assert torch.equal(apply_mask(mask[:, :2], spec[:, 0]), ref)

    cfg = dict(TINY, in_channels=4, mask_mode="filter-sum", causal=True, time_attention="causal")
    net = create_model(cfg).eval()
    assert net(torch.randn(1, 8, 5, 257)).shape == (1, 8, 5, 257)
    w = 0.1 * torch.randn(1, 4, 8000)
    e = Enhancer(net)
    with torch.no_grad():
        y = e(w)
        # identity start: the output is channel 0 up to the gain tanh(1)
        err = (y - torch.tanh(torch.tensor(1.0)) * w[:, 0]).pow(2).sum() / w[:, 0].pow(2).sum()
        assert err < 1e-2, float(err)
        full = Enhancer(full_mask(create_model(cfg)).eval())
        assert (full(w) - full.stream(w)).abs().max() <= 1e-4
    save_checkpoint(tmp_path / "fs.pt", net)
    back, _ = load_model(tmp_path / "fs.pt")
    assert back.cfg.mask_mode == "filter-sum" and back.dec2.out_channels == 8
    assert resolve_config("cpu-teacher").mask_mode == "reference"     # presets and old checkpoints: the spec's form
    # a config dict at these defaults is the dict written before the fields existed: runs, searches, matrices and
    # supernets started before them compare their recorded configs (and hash them) and resume
    from hwkd.models.checkpoint import read_checkpoint
    from hwkd.models.teacher import ASSET
    shipped = read_checkpoint(ASSET)["model"]["config"]
    assert "mask_mode" not in shipped and load_model(ASSET)[0].cfg.to_dict() == shipped
    assert back.cfg.to_dict()["mask_mode"] == "filter-sum" and DPDCRNConfig.from_dict(back.cfg.to_dict()) == back.cfg


def test_spatial_features_are_the_normalised_cross_spectra_with_channel_0_and_stream():
    """spatial_features: per bin conj(X_0)·X_m / Σ|X_k|² (real, imag) for m ≥ 1 beside the spectra (for
    Ambisonics the normalised active and reactive intensity); level-free; mono refused; hop by hop = offline."""
    with pytest.raises(ValueError, match="spatial_features"):
        DPDCRNConfig(spatial_features=True)
    net = create_model(dict(TINY, in_channels=4, spatial_features=True, causal=True, time_attention="none")).eval()
    assert net.enc1[0].in_channels == 8 + 6
    torch.manual_seed(1)
    spec = torch.randn(1, 4, 3, 257, dtype=torch.complex64)
    x = torch.stack([spec.real, spec.imag], 2).reshape(1, 8, 3, 257)
    feats = net.encoder_input(x)
    assert feats.shape == (1, 14, 3, 257) and torch.equal(feats[:, :8], x)
    want = spec[:, :1].conj() * spec[:, 1:] / spec.abs().pow(2).sum(1, keepdim=True)
    assert torch.allclose(feats[:, 8::2], want.real, atol=1e-5) and torch.allclose(feats[:, 9::2], want.imag, atol=1e-5)
    assert feats[:, 8:].abs().max() <= 1 and torch.allclose(net.encoder_input(100 * x)[:, 8:], feats[:, 8:], atol=1e-5)
    full = full_mask(net)
    with torch.no_grad():
        state, outs = full.init_state(1), []
        for t in range(3):
            y, state = full.step(x[:, :, t:t + 1], state)
            outs.append(y)
        assert (full(x) - torch.cat(outs, 2)).abs().max() <= 1e-4


def test_steered_masks_a_hypercardioid_aimed_by_the_networks_speech_weights_and_streams(tmp_path):
    """mask_mode steered (first-order Ambisonics): the decoder gives the polar mask and a speech-presence logit;
    the beam is 0.25·W + 0.75·u·(Y, Z, X) with u the presence-weighted active intensity's direction; the mask
    applies to the beam. A plane wave is found where it comes from; a diffuse field gives an omni beam; hop by hop
    equals offline (the running sums are state); a checkpoint rebuilds it; only 4 channels are accepted."""
    from hwkd.models.dpdcrn import HYPERCARDIOID, STEER_FLOOR, apply_mask
    for m in (1, 2):
        with pytest.raises(ValueError, match="steered"):
            DPDCRNConfig(in_channels=m, mask_mode="steered")
    torch.manual_seed(0)
    spec = torch.randn(2, 4, 7, 257, dtype=torch.complex64)
    mask = torch.randn(2, 6, 7, 257)
    mag = mask[:, :2].pow(2).sum(1).add(1e-8).sqrt()
    beam = (mask[:, 2:] * spec).sum(1)
    assert torch.allclose(apply_mask(mask, spec), beam * torch.tanh(mag) / mag * torch.complex(mask[:, 0], mask[:, 1]),
                          atol=1e-5)

    # one plane wave from azimuth 60°, elevation 20° (SN3D: W = s, (Y, Z, X) = u·s)
    az, el = torch.deg2rad(torch.tensor(60.0)), torch.deg2rad(torch.tensor(20.0))
    u = torch.stack([torch.cos(el) * torch.sin(az), torch.sin(el), torch.cos(el) * torch.cos(az)])   # Y, Z, X
    s = torch.randn(1, 1, 9, 257, dtype=torch.complex64)
    plane = torch.cat([s, u.view(1, 3, 1, 1) * s], 1)
    net = create_model(dict(TINY, in_channels=4, mask_mode="steered")).eval()
    raw = torch.zeros(1, 3, 9, 257)
    out, _ = net.steer(raw, torch.stack([plane.real, plane.imag], 2).reshape(1, 8, 9, 257))
    w = out[0, 2:, 0, 0]
    assert out.shape == (1, 6, 9, 257) and torch.allclose(out[0, 2:, :, :], w[:, None, None].expand(4, 9, 257))
    assert w[0] == HYPERCARDIOID
    assert torch.allclose(w[1:], (1 - HYPERCARDIOID) * u / (1 + STEER_FLOOR), atol=1e-4), w
    # two talkers in disjoint bins: the beam aims where the speech-presence logit (channel 2) says speech is
    ua = u.flip(0)                                                        # another direction (Y, Z, X swapped)
    two = plane.clone()
    two[:, 1:, :, 128:] = ua.view(1, 3, 1, 1) * s[..., 128:]
    feats = torch.stack([two.real, two.imag], 2).reshape(1, 8, 9, 257)
    for logit, want in ((10.0, u), (-10.0, ua)):
        pick = torch.zeros(1, 3, 9, 257)
        pick[:, 2, :, :128], pick[:, 2, :, 128:] = logit, -logit
        aim = net.steer(pick, feats)[0][0, 3:, 0, 0]
        assert torch.nn.functional.cosine_similarity(aim, want, dim=0) > 0.99, (aim, want)
    # a diffuse field (independent channels): the direction's length shrinks, the beam tends to omni
    diffuse = torch.randn(1, 8, 200, 257)
    wd = net.steer(torch.zeros(1, 3, 200, 257), diffuse)[0][0, 3:, 0, 0]
    assert wd.norm() < 0.25 * (1 - HYPERCARDIOID), wd

    cfg = dict(TINY, in_channels=4, mask_mode="steered", causal=True, time_attention="causal")
    full = Enhancer(full_mask(create_model(cfg)).eval())
    x = 0.1 * torch.randn(1, 4, 8000)
    with torch.no_grad():
        assert (full(x) - full.stream(x)).abs().max() <= 1e-4
        assert full.net(torch.randn(1, 8, 5, 257)).shape == (1, 6, 5, 257)
        # chunked offline enhancement (chunks of many frames, the running sums carried): the whole-file output
        blocks = list(full.enhance_blocks([x[0, :, :3000].numpy(), x[0, :, 3000:].numpy()]))
        assert abs(np.concatenate(blocks) - full(x)[0].numpy()).max() <= 1e-4
    save_checkpoint(tmp_path / "st.pt", full.net)
    back, _ = load_model(tmp_path / "st.pt")
    assert back.cfg.mask_mode == "steered" and back.dec2.out_channels == 3 and back.cfg.mask_channels == 6

    # a supernet of steered models: a sub-network's output is its extracted model's
    from hwkd.models.supernet import Supernet
    big = DPDCRNConfig(**dict(TINY, channels=16, in_channels=4, mask_mode="steered", spatial_features=True))
    small = DPDCRNConfig(**dict(TINY, in_channels=4, layers=1, mask_mode="steered", spatial_features=True))
    sn = Supernet(big).eval()
    f = torch.randn(1, 8, 6, 257)
    with torch.no_grad():
        assert sn(small, f).shape == (1, 6, 6, 257) and torch.allclose(sn(small, f), sn.extract(small)(f), atol=1e-6)
    # the CLI offers every form (it names them without importing torch)
    from hwkd.cli import build_parser
    from hwkd.models.dpdcrn import MASK_MODES
    opt = next(a for a in build_parser()._subparsers._group_actions[0].choices["train"]._actions
               if "--mask-mode" in a.option_strings)
    assert tuple(opt.choices) == MASK_MODES
