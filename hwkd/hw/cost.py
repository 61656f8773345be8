"""Cost counting: parameters and MACs per second of audio, with GRU and attention counted.

fvcore's `FlopCountAnalysis` (1 "flop" = 1 multiply-accumulate) counts convolutions (transposed ones
once), linear layers and norms, but counts `aten::gru` and `aten::scaled_dot_product_attention` as
zero; hwkd adds handles for both:

- GRU: per step, per direction, per layer: 3·(I·H + H·H) MACs (the three gates' input and hidden
  products; I is the layer's input size); times batch × steps.
- attention: Q·Kᵀ and A·V, 2·N·heads·S_q·S_k·d_head MACs (the projections are linear layers).

Element-wise ops (activations, residual adds, gate products) are not MACs and are left out, as is
the usual convention. `torch.utils.flop_counter.FlopCounterMode` gives an independent count (÷2 for
MACs) used as a cross-check (`cross_check`). The STFT/iSTFT around the network are not counted.

The non-causal model's time attention makes the per-second cost depend on the utterance length
(quadratic in frames), so every figure says the frames it was counted at; by convention 1 s of audio
(62 frames at hop 256, as the reference figures).
"""

from __future__ import annotations

import math
from collections import Counter

import torch
from torch import nn

from hwkd import SAMPLE_RATE as SR
from hwkd.models.dpdcrn import DPDCRN, N_BINS


def frames_per_second(hop: int) -> int:
    """Frames in a 1-s input, as the reference MACs figures count it (62 at hop 256, 100 at hop 160)."""
    return SR // hop


def _shape(v):
    return v.type().sizes()


def _gru_handle(inputs, outputs) -> Counter:
    # aten::gru(input, hx, params, has_biases, num_layers, dropout, train, bidirectional, batch_first)
    x, params = inputs[0], inputs[2]
    num_layers = inputs[4].toIValue()
    bidirectional = inputs[7].toIValue()
    batch_first = inputs[8].toIValue()
    b, s, _ = _shape(x)
    if not batch_first:
        b, s = s, b
    weights = [p for p in params.node().inputs()]
    per_layer = 4 if inputs[3].toIValue() else 2            # w_ih, w_hh (, b_ih, b_hh) per direction
    dirs = 2 if bidirectional else 1
    macs = 0
    for layer in range(num_layers):
        for d in range(dirs):
            base = (layer * dirs + d) * per_layer
            w_ih, w_hh = _shape(weights[base]), _shape(weights[base + 1])
            macs += w_ih[0] * w_ih[1] + w_hh[0] * w_hh[1]     # [3H, I] and [3H, H]
    return Counter({"gru": macs * b * s})


def _sdpa_handle(inputs, outputs) -> Counter:
    q, k = _shape(inputs[0]), _shape(inputs[1])
    *lead, s_q, d = q
    s_k = k[-2]
    return Counter({"attention": 2 * math.prod(lead) * s_q * s_k * d})


def _analysis(model: nn.Module, x: torch.Tensor):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)     # fvcore scripts a helper with torch.jit.script
        from fvcore.nn import FlopCountAnalysis
        fa = FlopCountAnalysis(model, x)
    fa.set_op_handle("aten::gru", _gru_handle, "aten::scaled_dot_product_attention", _sdpa_handle)
    fa.unsupported_ops_warnings(False)
    fa.uncalled_modules_warnings(False)
    fa.tracer_warnings("none")
    return fa


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def macs(model: DPDCRN, frames: int | None = None) -> dict:
    """MACs of the network core for an input of `frames` STFT frames (default: 1 s at its hop).

    Returns total MACs for that input, MACs per second of audio (total scaled to SR // hop frames, the
    reference convention), by operator and by top-level module.
    """
    cfg = model.cfg
    frames = frames or frames_per_second(cfg.hop)
    x = torch.zeros(1, 2 * cfg.in_channels, frames, N_BINS)
    was_training = model.training
    model.eval()
    try:
        # not under no_grad: there nn.MultiheadAttention takes its fused fast path, which the tracer
        # records as one opaque op
        fa = _analysis(model, x)
        total = fa.total()
        by_op = dict(fa.by_operator())
        by_module = {k: v for k, v in fa.by_module().items() if k and "." not in k and v}
    finally:
        model.train(was_training)
    per_s = total * frames_per_second(cfg.hop) / frames
    return {"frames": frames, "hop": cfg.hop, "macs": int(total), "macs_per_s": per_s, "by_operator": by_op,
            "by_module": by_module,
            "counted_by": "fvcore FlopCountAnalysis + hwkd handles for aten::gru and scaled_dot_product_attention"}


def macs_flopcounter(model: DPDCRN, frames: int | None = None) -> int:
    """Independent count with torch's FlopCounterMode (FLOPs / 2): convolutions, linear layers, GRUs and,
    with the math attention kernel forced, the Q·Kᵀ / A·V products. It counts no norms; `cross_check`
    compares it with the same parts of the fvcore count.
    """
    from torch.utils.flop_counter import FlopCounterMode
    cfg = model.cfg
    frames = frames or frames_per_second(cfg.hop)
    x = torch.zeros(1, 2 * cfg.in_channels, frames, N_BINS)
    was_training = model.training
    with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH), FlopCounterMode(display=False) as fc:
        model.eval()(x)
    model.train(was_training)
    return fc.get_total_flops() // 2


def cross_check(model: DPDCRN, frames: int | None = None) -> dict:
    """fvcore (conv + linear + GRU + attention) vs FlopCounterMode on the same input; rel_diff should be ~0."""
    r = macs(model, frames)
    ours = sum(v for k, v in r["by_operator"].items() if k in ("conv", "linear", "gru", "attention"))
    theirs = macs_flopcounter(model, frames)
    return {"fvcore_without_norms": int(ours), "flopcountermode": int(theirs),
            "rel_diff": abs(ours - theirs) / max(theirs, 1)}
