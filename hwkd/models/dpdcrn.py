"""DPDCRN: dual-path dilated convolutional recurrent network (L3DAS23 SE track winner), one configurable net.

Implemented from ../shared/spec/dpdcrn-and-i2srf-tfckd.md §1. Input: stacked real/imag STFT channels
[B, 2M, T, 257] (M microphones or Ambisonic channels); output: a 2-channel complex mask [B, 2, T, 257]
applied in polar form to the reference channel (see `apply_mask`), or with `mask_mode: filter-sum` one such mask
per input channel [B, 2M, T, 257], the masked channels summed (a learned beamformer; see DPDCRNConfig), or with
`mask_mode: steered` (first-order Ambisonics) the polar mask and four beam weights [B, 6, T, 257]: the mask applies
to a hypercardioid steered where the network's speech-presence weights say the talker is (`DPDCRN.steer`).
STFT/iSTFT stay outside the network.

Encoder: conv (1,3)/2 -> conv (1,3)/2 -> dilated dense block; dual-path block with L layers of parallel
intra-frame (along frequency) and inter-frame (along time) "attention + GRU" paths; decoder: dilated
dense block -> transposed conv -> transposed conv (mask). No skip connections.

Causal variant (`causal=True`): the conv norms normalise over frequency (per channel) and the dual-path
GroupNorm over (channels, frequency), with statistics over all frames so far (`causal_norm: cumulative`,
the default, the spec's "cumulative normalisation") or over each frame alone (`frame`, what hwkd used
until 2026-11-30 and what older checkpoints load as); the time path uses a causal attention mask or no
attention. Such a model runs hop by hop with `init_state` / `step`, carrying the dense-block caches, the
time-GRU states, the time-attention key/value inputs, the cumulative norms' running sums and (`mask_mode:
steered`) the beam's running sums.
Why cumulative: a frame-wise norm hides each frame's level, so a quiet noise-only frame and a loud speech
frame look alike to the network; at equal steps (200, a 47k-parameter student) the cumulative norm
reached a higher val SI-SDR (benchmarks/results/tq_diag_*.json, README "Time to quality").

Identity start: the mask layer is initialised so that an untrained network outputs its reference-channel
input up to a gain tanh(1) (`DPDCRN.identity_start`); with PyTorch's default init an untrained DPDCRN outputs
about −20 dB SI-SDR from a +7 dB input, and a short training run spent itself climbing back to the input.

Feature taps (for distillation, returned by `forward(x, return_taps=True)`):
  enc: [enc-1 (129 bins), enc-2 (64), enc-3 (64)]; mid: [O_1 .. O_L] (64 bins); dec: [dec-1 (64),
  dec-2 (129), mask (257)]; each [B, C_k, T, W_k].
"""

from __future__ import annotations

import numbers
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

N_BINS = 257
IDENTITY_BIAS = 1.0       # mask real part at initialisation: gain tanh(1) = 0.76 (see DPDCRN.identity_start)
IDENTITY_SCALE = 1e-2     # the mask layer's default-init weights times this
HYPERCARDIOID = 0.25      # steered beam: HYPERCARDIOID·W + (1 - HYPERCARDIOID)·u·(Y, Z, X), the most directive
                          # first-order pattern (SN3D channels, the corpus's)
STEER_FLOOR = 0.05        # steered beam: the direction's length is |v| / (|v| + STEER_FLOOR·e): below that
                          # coherence (a diffuse field) the beam fades to omni


# config fields added after checkpoints were shipped, with the value those checkpoints were trained with
LEGACY_FIELDS = {"causal_norm": "frame", "input_compress": 1.0}
# fields added later whose default is what every earlier config meant: a config's dict carries them only when
# set otherwise, so the dicts (and hashes) of earlier runs, checkpoints, searches and KD matrices stay equal to
# today's and they resume
QUIET_DEFAULTS = {"mask_mode": "reference", "spatial_features": False}
# integer fields: (lowest, highest). The upper bounds are far above any model of this family (the paper's
# teacher: channels 128, layers 4, depth 4) and stop a typo from allocating tens of GB: channels 6400 builds
# ~10^10 weights, depth 40 a dilation cache of 2^39 frames.
INT_RANGES = {"channels": (4, 1024), "layers": (1, 32), "depth": (1, 12), "heads": (0, 512),
              "gru_hidden": (1, 4096), "in_channels": (1, 64), "n_fft": (512, 512), "hop": (1, 511)}
BOOL_FIELDS = ("intra_bidirectional", "causal", "spatial_features")
MASK_MODES = ("reference", "filter-sum", "steered")


@dataclass(frozen=True)
class DPDCRNConfig:
    channels: int = 64                 # C: encoder/decoder width; the dual path works at C/2
    layers: int = 1                    # L: dual-path layers
    depth: int = 4                     # D: dilated dense layers per block (dilations 1, 2, .., 2^(D-1))
    heads: int = 4                     # attention heads on both paths; 0 = no attention at all
    gru_hidden: int | None = None      # GRU hidden size (default C)
    intra_bidirectional: bool = True   # GRU along frequency bi- or unidirectional
    causal: bool = False               # streaming-causal variant (causal norms, see causal_norm)
    time_attention: str = "full"       # "full" | "causal" | "none" on the inter-frame path
    in_channels: int = 1               # M: 1 = mono, 4 = first-order Ambisonics (W, Y, Z, X)
    n_fft: int = 512
    hop: int = 256
    causal_norm: str = "cumulative"    # causal models: "cumulative" (stats of all frames so far) or "frame"
    input_compress: float = 1.0        # c: each input bin X -> |X|^c e^{j∠X} before the encoder (1 = raw STFT)
    mask_mode: str = "reference"       # "reference": one polar mask on channel 0 (the spec); "filter-sum": one
                                       # per input channel, summed (a learned beamformer; M > 1 only); "steered":
                                       # one on a hypercardioid the network steers (M = 4, Ambisonics only)
    spatial_features: bool = False     # M > 1: also feed conj(X_0)·X_m / Σ|X|² per bin (m ≥ 1; for Ambisonics the
                                       # normalised active and reactive intensity: where the sound comes from)

    def __post_init__(self):
        for name, (lo, hi) in INT_RANGES.items():
            v = getattr(self, name)
            if name == "gru_hidden" and v is None:
                continue
            if not isinstance(v, numbers.Integral) or isinstance(v, bool):   # YAML `true` is an int: refused
                raise ValueError(f"{name} must be a whole number, got {v!r}")
            object.__setattr__(self, name, int(v))                  # numpy integers from a sampler: plain int
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be from {lo} to {hi}, got {v}" if lo != hi else
                                 f"{name} is fixed at {lo} in this family, got {v}")
        for name in BOOL_FIELDS:
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        for name in ("time_attention", "causal_norm", "mask_mode"):
            if not isinstance(getattr(self, name), str):
                raise ValueError(f"{name} must be a string, got {getattr(self, name)!r}")
        if self.channels % 2 or self.channels < 4:
            raise ValueError(f"channels must be even and >= 4, got {self.channels}")
        if self.heads and (self.channels // 2) % self.heads:
            raise ValueError(f"channels/2 = {self.channels // 2} must be divisible by heads = {self.heads}")
        if self.time_attention not in ("full", "causal", "none"):
            raise ValueError("time_attention must be 'full', 'causal' or 'none'")
        if self.causal and self.time_attention == "full":
            raise ValueError("a causal model needs time_attention 'causal' or 'none'")
        if self.causal_norm not in ("cumulative", "frame"):
            raise ValueError("causal_norm must be 'cumulative' or 'frame'")
        if self.mask_mode not in MASK_MODES:
            raise ValueError(f"mask_mode must be one of {', '.join(repr(m) for m in MASK_MODES)}, "
                             f"got {self.mask_mode!r}")
        if self.mask_mode == "filter-sum" and self.in_channels == 1:
            raise ValueError("mask_mode 'filter-sum' needs in_channels > 1 (with one channel it is 'reference')")
        if self.mask_mode == "steered" and self.in_channels != 4:
            raise ValueError("mask_mode 'steered' needs in_channels 4 (first-order Ambisonics W, Y, Z, X: it steers "
                             f"a beam from their intensity), got {self.in_channels}")
        if self.spatial_features and self.in_channels == 1:
            raise ValueError("spatial_features needs in_channels > 1 (they relate each channel to channel 0)")
        c = self.input_compress
        if isinstance(c, bool) or not isinstance(c, numbers.Real) or not 0.05 <= c <= 1.0:
            raise ValueError(f"input_compress must be a number from 0.05 to 1, got {c!r}")
        object.__setattr__(self, "input_compress", float(c))

    @property
    def hidden(self) -> int:
        return self.gru_hidden or self.channels

    @property
    def mask_channels(self) -> int:
        """Channels of the network's output (what `apply_mask` takes): (real, imag) for the reference channel, or
        for each input channel (filter-sum), or (real, imag) and the beam's weight on each input channel (steered)."""
        return {"filter-sum": 2 * self.in_channels, "steered": 2 + self.in_channels}.get(self.mask_mode, 2)

    @property
    def decoder_channels(self) -> int:
        """Channels of the last transposed convolution (the 'mask' tap): the output's, except for `steered`,
        whose decoder gives (real, imag) and a speech-presence logit per bin and `DPDCRN.steer` the weights."""
        return 3 if self.mask_mode == "steered" else self.mask_channels

    @property
    def encoder_inputs(self) -> int:
        """Channels the first convolution sees: (real, imag) per input channel, and the spatial features."""
        return 2 * self.in_channels + (2 * (self.in_channels - 1) if self.spatial_features else 0)

    def to_dict(self) -> dict:
        d = asdict(self)
        for k, v in QUIET_DEFAULTS.items():
            if d[k] == v:
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DPDCRNConfig:
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown DPDCRN config field(s): {', '.join(sorted(unknown))}")
        return cls(**d)


class FrameNorm(nn.Module):
    """Causal norm over `dims` (frequency, or channels+frequency) with a per-channel affine.

    frame-wise (cumulative=False): each frame normalised by its own statistics. That hides the frame's level
    from the network: a quiet noise-only frame and a loud speech frame look alike after it.
    cumulative (cumulative=True, the default of causal models): each frame normalised by the statistics of
    every frame so far (t' <= t), the cumulative norm of streaming separation networks (Conv-TasNet's cLN);
    the frame's level relative to the past survives. Offline it is a cumulative sum along time; hop by hop the
    running sums are state, carried in `DPDCRN.step` (set on the module as `stream` for the step's duration,
    so the exported step graph takes and returns them like every other state).
    """

    def __init__(self, channels: int, over_channels: bool, eps: float = 1e-5, cumulative: bool = False):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.dims = (1, 3) if over_channels else (3,)
        self.channels = 1 if over_channels else channels
        self.eps = eps
        self.cumulative = cumulative
        self.stream: Tensor | None = None          # [B, C', 1, 3]: (sum, sum of squares, count) while stepping
        self.stream_out: Tensor | None = None

    def init_state(self, batch: int) -> Tensor:
        return torch.zeros(batch, self.channels, 1, 3)

    def forward(self, x: Tensor) -> Tensor:  # [B, C, T, F]
        if not self.cumulative:
            mean = x.mean(self.dims, keepdim=True)
            var = x.var(self.dims, keepdim=True, unbiased=False)
        else:
            # half precision: the running sums in fp32 (the count alone passes fp16's 65504 within ~100 frames;
            # the stepping state norm_sums stays fp32 too); an fp32 model's graph has no cast
            xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
            s1 = xs.sum(self.dims, keepdim=True)                   # [B, C', T, 1]
            s2 = (xs * xs).sum(self.dims, keepdim=True)
            per_frame = x.numel() // (x.shape[0] * x.shape[2] * s1.shape[1])
            if self.stream is not None:                            # stepping: the running sums carried in
                inc = torch.cat([s1, s2, torch.full_like(s1, per_frame)], dim=3)
                if x.shape[2] == 1:                                # one hop (the exported step graph)
                    st = self.stream + inc
                    self.stream_out = st
                else:                                              # a chunk of frames: sums up to each frame
                    st = self.stream + inc.cumsum(2)
                    self.stream_out = st[:, :, -1:]
                n = st[..., 2:3]
                mean = st[..., 0:1] / n
                var = st[..., 1:2] / n - mean * mean
            else:
                n = torch.arange(1, x.shape[2] + 1, device=x.device, dtype=xs.dtype).view(1, 1, -1, 1) * per_frame
                mean = s1.cumsum(2) / n
                var = s2.cumsum(2) / n - mean * mean
            var = var.clamp_min(0.0)
            if xs is not x:
                mean, var = mean.to(x.dtype), var.to(x.dtype)
        x = (x - mean) / torch.sqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def conv_norm(c: int, causal: bool, cumulative: bool = False) -> nn.Module:
    return FrameNorm(c, over_channels=False, cumulative=cumulative) if causal else nn.InstanceNorm2d(c, affine=True)


class DenseBlock(nn.Module):
    """Dilated dense block: layer i sees [input, out_0..out_{i-1}], kernel (2,3), time dilation 2^i (causal)."""

    def __init__(self, c: int, depth: int, causal: bool, cumulative: bool = False):
        super().__init__()
        self.depth = depth
        self.convs = nn.ModuleList(nn.Conv2d(c * (i + 1), c, (2, 3), dilation=(2 ** i, 1)) for i in range(depth))
        self.norms = nn.ModuleList(conv_norm(c, causal, cumulative) for _ in range(depth))
        self.acts = nn.ModuleList(nn.PReLU(c) for _ in range(depth))

    def forward(self, x: Tensor) -> Tensor:
        skip = x
        out = x
        for i in range(self.depth):
            d = 2 ** i
            out = self.acts[i](self.norms[i](self.convs[i](F.pad(skip, (1, 1, d, 0)))))
            skip = torch.cat([out, skip], dim=1)
        return out

    def init_state(self, x_frame_shape) -> list[Tensor]:
        b, c, _, f = x_frame_shape
        return [torch.zeros(b, c * (i + 1), 2 ** i, f) for i in range(self.depth)]

    def step(self, x: Tensor, state: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
        """x [B, C, T, F]: one frame (T = 1) or a chunk of frames; state[i]: the last 2^i frames of layer i's input."""
        skip = x
        out = x
        new = []
        t = x.shape[2]
        for i in range(self.depth):
            seq = torch.cat([state[i], skip], dim=2)            # [B, Ci, d+T, F]
            new.append(seq[:, :, t:])
            out = self.acts[i](self.norms[i](self.convs[i](F.pad(seq, (1, 1, 0, 0)))))
            skip = torch.cat([out, skip], dim=1)
        return out, new


class AttnGRU(nn.Module):
    """x <- LN(x + MHA(LN(x))); h = GRU(x); x <- LN(x + Linear(ReLU(h))). Sequences are [N, S, d]."""

    def __init__(self, d: int, hidden: int, heads: int, bidirectional: bool, attention: bool):
        super().__init__()
        self.attention = attention and heads > 0
        if self.attention:
            self.ln_in = nn.LayerNorm(d)
            self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
            self.ln_attn = nn.LayerNorm(d)
        self.gru = nn.GRU(d, hidden, batch_first=True, bidirectional=bidirectional)
        self.fc = nn.Linear(hidden * (2 if bidirectional else 1), d)
        self.ln_out = nn.LayerNorm(d)

    def _attend(self, q_in: Tensor, kv_in: Tensor, causal: bool, mask: Tensor | None = None) -> Tensor:
        """nn.MultiheadAttention's math on its own parameters, written with shapes taken from the input so
        that the exported graph keeps a dynamic sequence axis (the module's own forward bakes it in)."""
        mha = self.mha
        n, _, d = q_in.shape
        h = mha.num_heads
        w, b = mha.in_proj_weight, mha.in_proj_bias
        q = F.linear(q_in, w[:d], b[:d]).reshape(n, -1, h, d // h).transpose(1, 2)
        k = F.linear(kv_in, w[d:2 * d], b[d:2 * d]).reshape(n, -1, h, d // h).transpose(1, 2)
        v = F.linear(kv_in, w[2 * d:], b[2 * d:]).reshape(n, -1, h, d // h).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        return mha.out_proj(a.transpose(1, 2).reshape(n, -1, d))

    def forward(self, x: Tensor, causal_mask: bool = False) -> Tensor:
        if self.attention:
            q = self.ln_in(x)
            x = self.ln_attn(x + self._attend(q, q, causal_mask))
        h, _ = self.gru(x)
        return self.ln_out(x + self.fc(F.relu(h)))

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        """Time path, one step (x [N, 1, d]) or a chunk of T steps (x [N, T, d]); state {"h": GRU state,
        "kv": past LN(x) [N, t, d]}. In a chunk, step i attends to the past and to steps 0..i of the chunk."""
        new = {}
        if self.attention:
            q = self.ln_in(x)
            kv = torch.cat([state["kv"], q], dim=1)
            new["kv"] = kv
            t = x.shape[1]
            mask = None
            if t > 1:
                past = kv.shape[1] - t
                mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            x = self.ln_attn(x + self._attend(q, kv, False, mask))
        h, hn = self.gru(x, state["h"])
        new["h"] = hn
        return self.ln_out(x + self.fc(F.relu(h))), new


class DualPathLayer(nn.Module):
    def __init__(self, cfg: DPDCRNConfig):
        super().__init__()
        d = cfg.channels // 2
        self.intra = AttnGRU(d, cfg.hidden, cfg.heads, cfg.intra_bidirectional, attention=True)
        self.inter = AttnGRU(d, cfg.hidden, cfg.heads, False, attention=cfg.time_attention != "none")
        cum = cfg.causal_norm == "cumulative"
        self.intra_norm = FrameNorm(d, over_channels=True, cumulative=cum) if cfg.causal else nn.GroupNorm(1, d)
        self.inter_norm = FrameNorm(d, over_channels=True, cumulative=cum) if cfg.causal else nn.GroupNorm(1, d)
        self.causal_attention = cfg.time_attention == "causal"

    def _intra(self, u: Tensor) -> Tensor:
        b, d, t, f = u.shape
        x = u.permute(0, 2, 3, 1).reshape(b * t, f, d)
        y = self.intra(x).reshape(b, t, f, d).permute(0, 3, 1, 2)
        return self.intra_norm(y)

    def forward(self, u: Tensor) -> tuple[Tensor, Tensor]:
        b, d, t, f = u.shape
        intra = self._intra(u)
        x = u.permute(0, 3, 2, 1).reshape(b * f, t, d)
        y = self.inter(x, causal_mask=self.causal_attention).reshape(b, f, t, d).permute(0, 3, 2, 1)
        return intra, self.inter_norm(y)

    def step(self, u: Tensor, state: dict) -> tuple[Tensor, Tensor, dict]:
        b, d, t, f = u.shape
        intra = self._intra(u)
        x = u.permute(0, 3, 2, 1).reshape(b * f, t, d)
        y, new = self.inter.step(x, state)
        return intra, self.inter_norm(y.reshape(b, f, t, d).permute(0, 3, 2, 1)), new


class DPDCRN(nn.Module):
    def __init__(self, cfg: DPDCRNConfig | None = None, **kw):
        super().__init__()
        cfg = cfg or DPDCRNConfig(**kw)
        self.cfg = cfg
        c, causal = cfg.channels, cfg.causal
        cum = cfg.causal_norm == "cumulative"
        self.enc1 = nn.Sequential(nn.Conv2d(cfg.encoder_inputs, c, (1, 3), (1, 2), (0, 1)),
                                  conv_norm(c, causal, cum), nn.PReLU(c))
        self.enc2 = nn.Sequential(nn.Conv2d(c, c, (1, 3), (1, 2)), conv_norm(c, causal, cum), nn.PReLU(c))
        self.enc_dense = DenseBlock(c, cfg.depth, causal, cum)
        self.dp_in = nn.Sequential(nn.Conv2d(c, c // 2, 1), nn.PReLU())
        self.dp_layers = nn.ModuleList(DualPathLayer(cfg) for _ in range(cfg.layers))
        self.k1 = nn.Parameter(torch.ones(1))
        self.k2 = nn.Parameter(torch.ones(1))
        self.dp_out = nn.Sequential(nn.PReLU(), nn.Conv2d(c // 2, c, 1))   # shared by all layers
        self.dec_dense = DenseBlock(c, cfg.depth, causal, cum)
        self.dec1 = nn.Sequential(nn.ConvTranspose2d(c, c, (1, 3), (1, 2)), conv_norm(c, causal, cum), nn.PReLU(c))
        self.dec2 = nn.ConvTranspose2d(c, cfg.decoder_channels, (1, 3), (1, 2))
        self.identity_start()

    def identity_start(self, gain_bias: float = IDENTITY_BIAS, scale: float = IDENTITY_SCALE) -> None:
        """Initialise the mask layer so that the untrained network passes its reference channel through.

        The mask is (b + ε_r, ε_i) with ε small: |Ŝ| = tanh(b)·|X| and ∠Ŝ ≈ ∠X, i.e. the input up to a gain
        tanh(b) (0.76 at b = 1: on the steep part of tanh, so the magnitude still learns; b = 3 would
        saturate it). The weights are the default init scaled by `scale`, not zero, so every layer gets a
        gradient from the first step (Adam's steps do not depend on the gradient's scale). The default
        PyTorch init instead gives |M| ≈ 0.6 with random phase: about −20 dB SI-SDR from a +7 dB input.
        With `mask_mode: filter-sum` the reference channel's mask starts so and the other channels' at ~0: the sum
        starts as the reference channel alone. With `steered` the speech-presence logit starts at ~0 (weight 1/2
        everywhere): the beam starts at the input's mean intensity direction, the textbook estimate.
        An initialisation only: the architecture and parameter count are unchanged; loaded weights replace it.
        """
        with torch.no_grad():
            self.dec2.reset_parameters()
            self.dec2.weight.mul_(scale)
            self.dec2.bias.zero_()
            self.dec2.bias[0] = gain_bias

    def encoder_input(self, x: Tensor) -> Tensor:
        """What the first convolution sees: the (compressed) spectra, and with `spatial_features` per bin the
        cross-spectra of channel 0 with each other channel over the bin's total energy, conj(X_0)·X_m / Σ_k|X_k|²
        (real, imag; each within [-1/2, 1/2]). For first-order Ambisonics these are the normalised active and reactive
        sound intensity, the direction-of-arrival feature of the field, a product of channels that the linear
        first convolution cannot form itself. Parameter-free and per frame, like the compression."""
        z = self.compress(x)
        if not self.cfg.spatial_features:
            return z
        b, ch, t, f = x.shape
        xs = x.float() if x.dtype in (torch.float16, torch.bfloat16) else x   # fp16: 1e-10 is 0, squares overflow
        re, im = xs[:, 0::2], xs[:, 1::2]                              # [B, M, T, F]
        energy = (re.pow(2) + im.pow(2)).sum(1, keepdim=True) + 1e-10
        cross_re = (re[:, :1] * re[:, 1:] + im[:, :1] * im[:, 1:]) / energy
        cross_im = (re[:, :1] * im[:, 1:] - im[:, :1] * re[:, 1:]) / energy
        cross = torch.stack([cross_re, cross_im], 2).reshape(b, -1, t, f).to(x.dtype)
        return torch.cat([z, cross], 1)

    def compress(self, x: Tensor) -> Tensor:
        """Power-law compression of the input spectra, per bin: (re, im) -> |X|^(c-1)·(re, im), i.e. magnitude
        |X|^c, phase kept. The raw STFT spans ~80 dB between loud low bins and quiet high ones; compressed, the
        first convolution sees every bin at a usable scale (the DNS-challenge systems' c = 0.3). Parameter-free
        and per frame: streaming and export are unchanged. The mask still multiplies the raw spectrum."""
        c = self.cfg.input_compress
        if c == 1.0:
            return x
        b, ch, t, f = x.shape
        pairs = x.reshape(b, ch // 2, 2, t, f)
        scale = (pairs.pow(2).sum(2, keepdim=True) + 1e-12).pow((c - 1.0) / 2)
        return (pairs * scale).reshape(b, ch, t, f)

    # -- offline ---------------------------------------------------------------------------------
    def forward(self, x: Tensor, return_taps: bool = False):
        """x: [B, 2M, T, 257] -> mask [B, cfg.mask_channels, T, 257] (and the taps when return_taps)."""
        e1 = self.enc1(self.encoder_input(x))
        e2 = self.enc2(e1)
        e3 = self.enc_dense(e2)
        u = self.dp_in(e3)
        mids = []
        for i, layer in enumerate(self.dp_layers):
            intra, inter = layer(u)
            u = u + self.k1 * intra + self.k2 * inter
            if return_taps or i == len(self.dp_layers) - 1:   # O_1..O_{L-1} are taps only
                mids.append(self.dp_out(u))
        d1 = self.dec_dense(mids[-1])
        d2 = self.dec1(d1)
        raw = self.dec2(d2)[..., :N_BINS]
        mask = self.steer(raw, x)[0] if self.cfg.mask_mode == "steered" else raw
        if return_taps:
            return mask, {"enc": [e1, e2, e3], "mid": mids, "dec": [d1, d2, raw]}
        return mask

    def steer(self, raw: Tensor, x: Tensor, past: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """`mask_mode: steered`: decoder output raw [B, 3, T, F] (mask real, imag; speech-presence logit) and the
        input x [B, 8, T, F] (W, Y, Z, X) -> (output [B, 6, T, F]: the mask and the beam weights on W, Y, Z, X,
        the same in every bin; the running sums [B, 4]).

        The direction is the active intensity Re{conj(W)·(Y, Z, X)} summed over the bins weighted by
        p = sigmoid(logit): v = Σ p·I, and e = Σ p·(|W|² + |Y|² + |Z|² + |X|²)/2 (|I| <= e per bin, equal for
        one plane wave). u = v / (|v| + STEER_FLOOR·e) points at the talker when p picks the bins the talker
        dominates (oracle speech-dominance weights: median error 7°, 19° unweighted; benchmarks/foa_oracles.py) and
        shrinks to 0 (an omni beam) in a diffuse field. Sums over the whole input for a non-causal model, over
        the frames so far for a causal one (the running sums `past` are its streaming state; every past frame
        counts alike, so on a long stream a causal model follows a talker who moves ever more slowly: it trains
        on 2-s segments, where this never shows). The beam is
        HYPERCARDIOID·W + (1 − HYPERCARDIOID)·u·(Y, Z, X) in the channels' order, weights <= 1; the gradient
        reaches p through the beam from every bin."""
        xs, p = x.float(), torch.sigmoid(raw[:, 2:3].float())        # fp16: the energy sums overflow
        re, im = xs[:, 0::2], xs[:, 1::2]                              # [B, 4, T, F]
        inten = re[:, :1] * re[:, 1:] + im[:, :1] * im[:, 1:]          # [B, 3, T, F] (Y, Z, X)
        energy = 0.5 * (re.pow(2) + im.pow(2)).sum(1, keepdim=True)    # [B, 1, T, F]
        sums = (p * torch.cat([inten, energy], 1)).sum(-1)             # [B, 4, T]
        if self.cfg.causal:
            sums = sums.cumsum(-1) + (0 if past is None else past[..., None])
            last = sums[..., -1]
        else:
            last = sums.sum(-1)
            sums = last[..., None].expand_as(sums)
        v, e = sums[:, :3], sums[:, 3:]
        u = v / (v.norm(dim=1, keepdim=True) + STEER_FLOOR * e + 1e-8)
        weights = torch.cat([torch.full_like(e, HYPERCARDIOID), (1 - HYPERCARDIOID) * u], 1)   # [B, 4, T]
        beam = weights[..., None].expand(-1, -1, -1, raw.shape[-1]).to(raw.dtype)
        return torch.cat([raw[:, :2], beam], 1), last

    # -- streaming (causal models only) -----------------------------------------------------------
    def init_state(self, batch: int = 1) -> dict:
        if not self.cfg.causal:
            raise ValueError("hop-by-hop streaming needs a causal model (causal=True)")
        c, d = self.cfg.channels, self.cfg.channels // 2
        shape = (batch, c, 1, 64)
        layers = []
        for layer in self.dp_layers:
            st = {"h": torch.zeros(1, batch * 64, self.cfg.hidden)}
            if layer.inter.attention:
                st["kv"] = torch.zeros(batch * 64, 0, d)
            layers.append(st)
        state = {"enc": self.enc_dense.init_state(shape), "dec": self.dec_dense.init_state(shape), "dp": layers,
                 "norm": [n.init_state(batch) for n in self.cumulative_norms()]}
        if self.cfg.mask_mode == "steered":
            state["steer"] = torch.zeros(batch, 4)        # the steered beam's running sums (v, e)
        return state

    def cumulative_norms(self) -> list[FrameNorm]:
        """The cumulative norms, in a fixed order (their running sums are part of the streaming state)."""
        return [m for m in self.modules() if isinstance(m, FrameNorm) and m.cumulative]

    def step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        """STFT frames x [B, 2M, T, 257] -> mask frames [B, cfg.mask_channels, T, 257] and the new state.

        T = 1 is one hop (the exported step model); a chunk of T > 1 frames continues the stream exactly as T
        single steps would (up to float rounding), in one call: the chunked offline enhancement of long files
        (`Enhancer.enhance_blocks`) carries the state from chunk to chunk this way.
        """
        norms = self.cumulative_norms()
        for n, st in zip(norms, state.get("norm", []), strict=True):
            n.stream = st
        try:
            mask, new = self._step(x, state)
            new["norm"] = [n.stream_out for n in norms]
        finally:
            for n in norms:
                n.stream = n.stream_out = None
        return mask, new

    def _step(self, x: Tensor, state: dict) -> tuple[Tensor, dict]:
        e3, enc_state = self.enc_dense.step(self.enc2(self.enc1(self.encoder_input(x))), state["enc"])
        u = self.dp_in(e3)
        dp_state = []
        for layer, st in zip(self.dp_layers, state["dp"]):
            intra, inter, new = layer.step(u, st)
            u = u + self.k1 * intra + self.k2 * inter
            dp_state.append(new)
        d1, dec_state = self.dec_dense.step(self.dp_out(u), state["dec"])
        mask = self.dec2(self.dec1(d1))[..., :N_BINS]
        new = {"enc": enc_state, "dec": dec_state, "dp": dp_state}
        if self.cfg.mask_mode == "steered":
            mask, new["steer"] = self.steer(mask, x, state["steer"])
        return mask, new


def apply_mask(mask: Tensor, spec: Tensor, eps: float = 1e-8) -> Tensor:
    """Polar mask on the reference channel: |S| = tanh(|M|)|X|, angle(S) = angle(X) + angle(M).

    mask: [B, 2K, T, F] ((real, imag) per masked channel); spec: complex [B, M, T, F] (or [B, T, F]: the reference
    channel alone) -> complex [B, T, F]. K = 1 (`mask_mode: reference`) masks channel 0; K = M (`filter-sum`)
    masks every channel so and sums them: Ŝ = Σ_m tanh(|M_m|)·e^{j∠M_m}·X_m, a learned filter-and-sum
    beamformer (the output form of the L3DAS challenges' MIMO beamforming baselines), each gain bounded by 1.
    `steered` (mask [B, 2 + M, T, F], M = 4): the polar mask (channels 0, 1) on the beam Σ_m b_m·X_m, b the
    real weights in channels 2.. (`DPDCRN.steer`).
    """
    if spec.dim() == 3:
        spec = spec[:, None]
    if mask.shape[1] == spec.shape[1] + 2 == 6:                        # steered: mask the beam
        spec, mask = (mask[:, 2:] * spec).sum(1, keepdim=True), mask[:, :2]
    k = mask.shape[1] // 2
    if k > spec.shape[1]:
        raise ValueError(f"a mask for {k} channels needs {k} input channels, got {spec.shape[1]}")
    m = mask.reshape(mask.shape[0], k, 2, *mask.shape[2:])
    re, im = m[:, :, 0], m[:, :, 1]
    mag = torch.sqrt(re ** 2 + im ** 2 + eps)
    gain = torch.tanh(mag) / mag
    out = spec[:, :k] * gain * torch.complex(re, im)
    return out[:, 0] if k == 1 else out.sum(1)
