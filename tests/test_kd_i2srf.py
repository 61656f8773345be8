"""Property tests of I²SRF-TFCKD on tiny student/teacher pairs."""

import pytest
import torch

from hwkd.kd import KD_SCHEMES, create_distiller
from hwkd.kd.i2srf import Calibration
from hwkd.kd.maths import frame_matrix, freq_distribution, gram_freq, gram_time, jeffreys, time_distribution
from hwkd.models import create_model

T, B = 6, 3


STUDENT = dict(channels=8, layers=1, depth=2, heads=2)
TEACHER = dict(channels=12, layers=3, depth=3, heads=2)     # wider and deeper than the student


def _pair(mics=1, student=STUDENT, teacher=TEACHER):
    torch.manual_seed(0)
    s = create_model(dict(student, in_channels=mics))
    t = create_model(dict(teacher, in_channels=mics)).eval()
    for p in t.parameters():
        p.requires_grad_(False)
    x = torch.randn(B, 2 * mics, T, 257)
    _, st = s(x, return_taps=True)
    with torch.no_grad():
        _, tt = t(x, return_taps=True)
    return s, t, st, tt


def test_distributions_and_jeffreys():
    m = torch.randn(B, T, 20)
    pt, pf = time_distribution(m), freq_distribution(m)
    assert pt.shape == (B, T, T) and pf.shape == (B, T, B)
    assert torch.allclose(pt.sum(-1), torch.ones(B, T)) and torch.allclose(pf.sum(-1), torch.ones(B, T))
    assert torch.all(jeffreys(pt, pt) == 0) and torch.all(jeffreys(pf, pf) == 0)
    other = time_distribution(torch.randn(B, T, 20))
    assert torch.all(jeffreys(pt, other) >= 0) and jeffreys(pt, other).sum() > 0


def test_calibration_weights_sum_to_one_over_teacher_taps():
    cal = Calibration(2, 4, T, B)
    ms = [torch.randn(B, T, 10) for _ in range(2)]
    mk = [torch.randn(B, T, 30) for _ in range(4)]
    a_time, a_freq = cal([(gram_time(m), gram_freq(m)) for m in ms], [(gram_time(m), gram_freq(m)) for m in mk])
    for a in (a_time, a_freq):
        assert a.shape == (B, T, 2, 4)
        assert torch.allclose(a.sum(-1), torch.ones(B, T, 2), atol=1e-6)   # every student tap, sample, frame


def test_identical_taps_give_zero_divergence():
    s, _, st, _ = _pair()
    kd = create_distiller("i2srf-tfckd", st, st, inter=False)
    loss, parts = kd(st, {k: [x.detach().clone() for x in v] for k, v in st.items()})
    # each student tap meets itself among the teacher taps (zero) and its set-mates (not zero); with a
    # one-tap set the loss must vanish exactly
    one = {k: v[:1] for k, v in st.items()}
    kd1 = create_distiller("i2srf-tfckd", one, one, inter=False)
    loss1, _ = kd1(one, {k: [x.detach().clone() for x in v] for k, v in one.items()})
    assert float(loss1.detach()) == pytest.approx(0.0, abs=1e-6) and float(loss.detach()) > 0


@pytest.mark.parametrize("mics", [1, 4])
def test_gradient_routing_and_mismatched_sizes(mics):
    s, t, st, tt = _pair(mics)
    kd = create_distiller("i2srf-tfckd", st, tt)
    loss, parts = kd(st, tt)
    assert torch.isfinite(loss) and set(parts) >= {"kd_enc", "kd_mid", "kd_dec", "kd_inter", "kd"}
    loss.backward()
    assert all(p.grad is None for p in t.parameters())                       # teacher network: no gradient
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.parameters())
    t_fuse = [p for p in kd.t_fuse.parameters()]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in t_fuse)   # through the keys ...
    keys = [p for n, p in kd.calib["inter"].named_parameters() if n.startswith("k_")]
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in keys)


def test_teacher_fusion_gets_no_gradient_without_calibration_keys():
    s, t, st, tt = _pair()
    kd = create_distiller("i2srf-uniform", st, tt)
    loss, _ = kd(st, tt)
    loss.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in kd.t_fuse.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in kd.s_fuse.parameters())


@pytest.mark.slow
def test_ablations_are_registered_and_run():
    s, t, st, tt = _pair()
    for name in ("i2srf-intra-only", "i2srf-inter-only", "i2srf-no-fusion", "i2srf-time-only",
                 "i2srf-freq-only", "i2srf-uniform", "i2srf-unpooled"):
        assert name in KD_SCHEMES
        loss, parts = create_distiller(name, st, tt)(st, tt)
        assert torch.isfinite(loss) and float(loss.detach()) > 0, name
    assert "kd_inter" not in create_distiller("i2srf-intra-only", st, tt)(st, tt)[1]
    assert "kd_enc" not in create_distiller("i2srf-inter-only", st, tt)(st, tt)[1]


def test_fixed_frames_and_batch_are_enforced():
    s, t, st, tt = _pair()
    kd = create_distiller("i2srf-tfckd", st, tt)
    short = {k: [x[:, :, :4] for x in v] for k, v in st.items()}
    short_t = {k: [x[:, :, :4] for x in v] for k, v in tt.items()}
    with pytest.raises(ValueError, match="built for 6 frames x batch 3"):
        kd(short, short_t)


def test_frame_matrix_layout():
    f = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    m = frame_matrix(f)
    assert m.shape == (2, 4, 15) and torch.equal(m[1, 2], f[1, :, 2, :].reshape(-1))


@pytest.mark.slow
def test_baseline_schemes_train_the_student_only():
    for name in ("response", "fitnet", "at", "pkt-frame", "semckd", "reviewkd"):
        s, t, st, tt = _pair()
        kd = create_distiller(name, st, tt)
        loss, parts = kd(st, tt)
        assert torch.isfinite(loss) and float(loss.detach()) > 0 and "kd" in parts, name
        loss.backward()
        assert all(p.grad is None for p in t.parameters()), name
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.parameters()), name
        # identical taps: zero loss (schemes with learned adapters are left out here)
        if name in ("response", "at", "pkt-frame"):
            same, _ = kd(st, {k: [x.detach() for x in v] for k, v in st.items()})
            assert float(same.detach()) == pytest.approx(0.0, abs=1e-6), name


def test_shared_gram_distributions_equal_the_direct_cosine_ones():
    """One Gram matrix per tap serves similarity and calibration: the distributions built from it are the spec's."""
    import torch.nn.functional as F
    torch.manual_seed(0)
    m = torch.randn(B, T, 40)
    m[0, 2] = 0.0                                     # a silent frame: the eps guard of F.normalize
    n = F.normalize(m, dim=-1, eps=1e-8)

    def rows(s):
        s = (s + 1) / 2
        return s / s.sum(-1, keepdim=True)
    ref_time = rows(n @ n.transpose(1, 2))
    nt = n.transpose(0, 1)
    ref_freq = rows((nt @ nt.transpose(1, 2)).transpose(0, 1))
    assert torch.allclose(time_distribution(m), ref_time, atol=1e-6)
    assert torch.allclose(freq_distribution(m), ref_freq, atol=1e-6)


def test_fusion_chains_end_at_each_sides_own_width():
    s, t, st, tt = _pair()
    d = create_distiller("i2srf-tfckd", st, tt)
    assert d.s_fuse["enc"].units[-1].out[0].out_channels == STUDENT["channels"]
    assert d.t_fuse["dec"].units[-1].out[0].out_channels == TEACHER["channels"]
    assert d.s_fuse["mid"].units[0].inp[0].out_channels == 32            # the default mid width
    d = create_distiller("i2srf-tfckd", st, tt, fusion_mid=128, fusion_out=64)   # the spec's widths
    assert d.s_fuse["enc"].units[-1].out[0].out_channels == 64


def test_tap_bins_pools_every_tap_over_frequency():
    s, t, st, tt = _pair()
    d = create_distiller("i2srf-tfckd", st, tt)                  # the default: 8 bins
    assert d.tap_bins == 8 and create_distiller("i2srf-unpooled", st, tt).tap_bins is None
    seen = []
    real = d.set_loss
    d.set_loss = lambda sf, tf, *a, **k: (seen.extend(x.shape[3] for x in sf + tf), real(sf, tf, *a, **k))[1]
    loss, _ = d(st, tt)
    assert seen and max(seen) <= 8 and torch.isfinite(loss)
    loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.parameters())
    # taps already at or below the target are left as they are: the same loss as without pooling
    full = create_distiller("i2srf-tfckd", st, tt, inter=False, tap_bins=None)
    wide = create_distiller("i2srf-tfckd", st, tt, inter=False, tap_bins=257)
    state = full.state_dict()
    state["tap_bins_trained"] = torch.tensor(257)              # the same weights, pooling to 257 bins
    wide.load_state_dict(state)
    assert wide.tap_bins == 257 and torch.allclose(full(st, tt)[0], wide(st, tt)[0])
    with pytest.raises(ValueError, match="tap_bins"):
        create_distiller("i2srf-tfckd", st, tt, tap_bins=0)


def test_a_resumed_distiller_pools_as_it_was_trained():
    _, _, st, tt = _pair()
    old = create_distiller("i2srf-tfckd", st, tt, tap_bins=None).state_dict()
    old.pop("tap_bins_trained")                       # a checkpoint written before the taps were pooled
    d = create_distiller("i2srf-tfckd", st, tt)
    d.load_state_dict(old)
    assert d.tap_bins is None
    d.load_state_dict(create_distiller("i2srf-tfckd", st, tt, tap_bins=16).state_dict())
    assert d.tap_bins == 16
    nf = create_distiller("i2srf-no-fusion", st, tt)  # its set mean follows the pooled taps' bins
    assert nf.s_fuse["enc"](nf._pooled(st)["enc"]).shape[3] == 8 and torch.isfinite(nf(st, tt)[0])
    with pytest.raises(ValueError, match="tap_bins"):
        create_distiller("i2srf-tfckd", st, tt, tap_bins=8.0)


@pytest.mark.parametrize("form,tap", [("filter-sum", 8), ("steered", 3)])
def test_a_beamforming_teacher_teaches_a_reference_student_by_features_and_response_kd_says_why_not(form, tap):
    """An Ambisonics teacher with one mask per channel (mask_mode filter-sum) or a steered beam, and a student with
    the spec's one mask: every feature scheme builds and gives the student a gradient; response KD (mask against
    mask) refuses the pair in one line that names the fix; the bounded mask is per channel pair."""
    from hwkd.errors import HwkdError
    from hwkd.kd.baselines import bounded_mask
    s, t, st, tt = _pair(4, teacher=dict(TEACHER, mask_mode=form))
    assert tt["dec"][-1].shape[1] == tap and st["dec"][-1].shape[1] == 2
    for name in sorted(KD_SCHEMES):
        if name in ("none", "response"):
            continue
        kd = create_distiller(name, st, tt)
        loss, _ = kd(st, tt)
        assert torch.isfinite(loss) and float(loss.detach()) > 0, name
    with pytest.raises(HwkdError, match="mask_mode.*feature scheme"):
        create_distiller("response", st, tt)
    m = torch.randn(2, 8, 3, 5)
    b = bounded_mask(m)
    for k in range(4):
        assert torch.allclose(b[:, 2 * k: 2 * k + 2], bounded_mask(m[:, 2 * k: 2 * k + 2]))


def test_steered_teacher_and_student_response_kd_compares_masks_and_speech_weights():
    """Response KD between two steered models compares the bounded mask and the speech-presence weight that aims
    the beam (the 'mask' tap, 3 channels); a steered teacher and a reference student are refused in one line."""
    from hwkd.errors import HwkdError
    from hwkd.kd.baselines import bounded_mask, response_target
    s, t, st, tt = _pair(4, teacher=dict(TEACHER, mask_mode="steered"), student=dict(STUDENT, mask_mode="steered"))
    assert tt["dec"][-1].shape[1] == 3 and st["dec"][-1].shape[1] == 3
    kd = create_distiller("response", st, tt)
    loss, _ = kd(st, tt)
    loss.backward()
    assert torch.isfinite(loss) and float(loss.detach()) > 0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in s.dec2.parameters())
    m = torch.randn(2, 3, 4, 5)
    r = response_target(m)
    assert torch.equal(r[:, :2], bounded_mask(m[:, :2])) and torch.equal(r[:, 2:], torch.sigmoid(m[:, 2:]))
    _, _, st_ref, _ = _pair(4)
    with pytest.raises(HwkdError, match="mask_mode"):
        create_distiller("response", st_ref, tt)
