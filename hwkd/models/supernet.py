"""A weight-sharing DPDCRN supernet: every sub-network of a search space is a slice of the largest network.

Design (../shared/research/supernet.md: OFA's and HAT's weight slicing, written for DPDCRN's layers):
the supernet holds ONE plain `DPDCRN` at the largest configuration (`max_cfg`). A sub-network (any config
that fits, `check`) is run as the plain `DPDCRN` module of its own config whose parameters are slices of
the largest network's (`torch.func.functional_call`): the sub-network IS that DPDCRN, so what it computes,
exports, streams and profiles is what `extract` hands out as an ordinary checkpoint, and gradients reach
only the sliced entries of the shared weights. No dynamic copies of the layers are written, and none of
NNI's one-shot machinery is used: NNI 3.0's mixed operations have no GRU, ConvTranspose2d or instance norm
(the research note, §4), and its one-shot strategies need Lightning; slicing the plain module keeps one
definition of the network.

What is sliced (sub sizes c, d = c/2, h, D, L against the largest C, C/2, H, D_max, L_max):
- convolutions, transposed convolutions, norms' affine parameters, PReLUs, LayerNorms: the first c (or d)
  channels on each axis (a prefix);
- the dense blocks' layer i sees the concatenation [out_{i-1} .. out_0, input], i + 1 blocks of c channels:
  input columns are taken block by block, ∪_k [k·C, k·C + c), so each block keeps its meaning;
- GRUs: the 3 gate blocks (r, z, n) of the input, recurrent and bias rows are sliced gate by gate,
  ∪_g [g·H, g·H + h) (a plain prefix [:3h] would mix gates), input columns [:d], recurrent columns [:h];
  a unidirectional intra GRU uses the forward direction's weights; the Linear after a bidirectional GRU
  takes its columns as [fwd h | bwd h] = [0, h) ∪ [H, H + h);
- attention: q, k and v rows sliced each in its third, ∪_j [j·C/2, j·C/2 + d), input columns [:d]; the
  head count only changes how the d features are split (HAT's rule), heads = 0 drops the block;
- depth: dense layers and dual-path layers keep the first D and L (the others are skipped).
Fixed across the supernet (a space that varies them cannot share weights): input channels, STFT, causality,
the causal norm, the kind of time attention (a sub-network may drop it), input compression.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import replace

import torch
from torch import Tensor, nn
from torch.func import functional_call

from hwkd.models.dpdcrn import DPDCRN, DPDCRNConfig

SLICED = ("channels", "layers", "depth", "gru_hidden", "heads", "intra_bidirectional")   # may vary
SHARED = ("in_channels", "n_fft", "hop", "causal", "causal_norm", "input_compress",        # must be equal
          "mask_mode", "spatial_features")
TEMPLATES = 64     # sub-network modules kept (one per config; a module is built in milliseconds)

_DENSE_IN = re.compile(r"(enc|dec)_dense\.convs\.(\d+)\.weight$")
_GRU = re.compile(r"\.gru\.(weight|bias)_(ih|hh)_l0(_reverse)?$")
_IN_PROJ = re.compile(r"\.mha\.in_proj_(weight|bias)$")
_FC_AFTER_GRU = re.compile(r"\.(intra|inter)\.fc\.weight$")


def largest(configs: list[DPDCRNConfig]) -> DPDCRNConfig:
    """The smallest configuration that holds all of `configs` (their elementwise maximum); they must agree on
    the SHARED fields. Heads: the largest count that divides the largest width's C/2 among those asked."""
    if not configs:
        raise ValueError("no configurations")
    first = configs[0]
    for c in configs[1:]:
        for f in SHARED:
            if getattr(c, f) != getattr(first, f):
                raise ValueError(f"a supernet needs one {f} for all its sub-networks, got "
                                 f"{getattr(first, f)!r} and {getattr(c, f)!r}")
    channels = max(c.channels for c in configs)
    heads = max((c.heads for c in configs if c.heads and (channels // 2) % c.heads == 0), default=0)
    attn = sorted({c.time_attention for c in configs if c.time_attention != "none"})
    if len(attn) > 1:
        raise ValueError(f"a supernet needs one kind of time attention for its sub-networks, got {attn}")
    return replace(first, channels=channels, layers=max(c.layers for c in configs),
                   depth=max(c.depth for c in configs), gru_hidden=max(c.hidden for c in configs),
                   heads=heads or max(c.heads for c in configs),
                   intra_bidirectional=any(c.intra_bidirectional for c in configs),
                   time_attention=attn[0] if attn else "none")


class Supernet(nn.Module):
    """The largest DPDCRN (`self.net`) and the slicing that runs any sub-network of it."""

    def __init__(self, max_cfg: DPDCRNConfig):
        super().__init__()
        self.max_cfg = max_cfg
        self.net = DPDCRN(max_cfg)
        self._templates: OrderedDict = OrderedDict()
        self._index_cache: dict = {}

    # -- what fits -----------------------------------------------------------------------------------
    def check(self, cfg: DPDCRNConfig) -> None:
        """Raises ValueError naming the field when `cfg` is not a sub-network of this supernet."""
        m = self.max_cfg
        for f in SHARED:
            if getattr(cfg, f) != getattr(m, f):
                raise ValueError(f"{f} {getattr(cfg, f)!r} differs from the supernet's {getattr(m, f)!r}")
        for f, v, hi in (("channels", cfg.channels, m.channels), ("layers", cfg.layers, m.layers),
                         ("depth", cfg.depth, m.depth), ("gru_hidden", cfg.hidden, m.hidden)):
            if v > hi:
                raise ValueError(f"{f} {v} is larger than the supernet's {hi}")
        if cfg.intra_bidirectional and not m.intra_bidirectional:
            raise ValueError("a bidirectional intra GRU needs a supernet with one")
        if cfg.heads and not m.heads:
            raise ValueError("attention (heads > 0) needs a supernet with attention")
        if cfg.time_attention != "none" and cfg.time_attention != m.time_attention:
            raise ValueError(f"time_attention {cfg.time_attention!r} differs from the supernet's "
                             f"{m.time_attention!r}")

    def fits(self, cfg: DPDCRNConfig) -> bool:
        try:
            self.check(cfg)
            return True
        except ValueError:
            return False

    # -- slicing -------------------------------------------------------------------------------------
    def _template(self, cfg: DPDCRNConfig) -> DPDCRN:
        t = self._templates.get(cfg)
        if t is None:
            self.check(cfg)
            with torch.device("meta"):                  # shapes only: the weights come from the supernet
                t = DPDCRN(cfg)
            self._templates[cfg] = t
            if len(self._templates) > TEMPLATES:
                self._templates.popitem(last=False)
        else:
            self._templates.move_to_end(cfg)
        t.train(self.training)
        return t

    def _units(self, name: str, cfg: DPDCRNConfig, dim: int) -> tuple[int, int] | None:
        """(unit in the largest network, unit in the sub-network) when axis `dim` of parameter `name` is made
        of repeated blocks that must be sliced block by block; None for a plain prefix."""
        m = self.max_cfg
        if dim == 1 and _DENSE_IN.search(name):
            return m.channels, cfg.channels
        if dim == 0 and _GRU.search(name):
            return m.hidden, cfg.hidden
        if dim == 0 and _IN_PROJ.search(name):
            return m.channels // 2, cfg.channels // 2
        if dim == 1 and _FC_AFTER_GRU.search(name):
            return m.hidden, cfg.hidden
        return None

    def _index(self, name: str, cfg: DPDCRNConfig, dim: int, size: int, device="cpu") -> Tensor | None:
        units = self._units(name, cfg, dim)
        if units is None or units[0] == units[1]:
            return None
        key = (name, dim, size, units, str(device))
        idx = self._index_cache.get(key)
        if idx is None:
            big, small = units
            idx = torch.cat([torch.arange(k * big, k * big + small) for k in range(size // small)]).to(device)
            self._index_cache[key] = idx
        return idx

    def sub_parameters(self, cfg: DPDCRNConfig) -> dict[str, Tensor]:
        """The sub-network's parameters, name -> slice of the largest network's tensor (differentiable)."""
        full = dict(self.net.named_parameters())
        out = {}
        for name, p in self._template(cfg).named_parameters():
            w = full[name]
            for dim, size in enumerate(p.shape):
                if w.shape[dim] == size:
                    continue
                idx = self._index(name, cfg, dim, size, w.device)
                w = w.narrow(dim, 0, size) if idx is None else w.index_select(dim, idx)
            if w.shape != p.shape:
                raise RuntimeError(f"slicing {name}: got {tuple(w.shape)}, the sub-network needs {tuple(p.shape)}")
            out[name] = w
        return out

    def forward(self, cfg: DPDCRNConfig, x: Tensor, return_taps: bool = False):
        """Sub-network `cfg` on STFT features x [B, 2M, T, 257] -> mask (and taps), as DPDCRN(cfg) would."""
        return functional_call(self._template(cfg), self.sub_parameters(cfg), (x,), {"return_taps": return_taps})

    def sub(self, cfg: DPDCRNConfig) -> SubNetwork:
        """A module view of one sub-network (for Enhancer, losses and the KD objectives): shares weights."""
        return SubNetwork(self, cfg)

    @torch.no_grad()
    def extract(self, cfg: DPDCRNConfig) -> DPDCRN:
        """The sub-network as a plain DPDCRN with its own copy of the inherited weights."""
        model = DPDCRN(cfg)
        model.load_state_dict({k: v.detach().clone() for k, v in self.sub_parameters(cfg).items()})
        return model.train(self.training)

    @torch.no_grad()
    def embed(self, model: DPDCRN) -> None:
        """Write a plain DPDCRN's weights into the supernet at its sub-network's slices (the inverse of
        `extract`: e.g. to start the largest network from a trained model)."""
        cfg = model.cfg
        self.check(cfg)
        full = dict(self.net.named_parameters())
        for name, p in model.named_parameters():
            view = full[name]
            index = []
            for dim, size in enumerate(p.shape):
                idx = self._index(name, cfg, dim, size, view.device) if view.shape[dim] != size else None
                index.append(idx if idx is not None else torch.arange(size, device=view.device))
            grid = torch.meshgrid(*index, indexing="ij")
            view[grid] = p.detach().to(view)


class SubNetwork(nn.Module):
    """One sub-network as a module: `forward` is DPDCRN(cfg)'s on the supernet's shared weights."""

    def __init__(self, supernet: Supernet, cfg: DPDCRNConfig):
        super().__init__()
        supernet.check(cfg)
        self.cfg = cfg
        self.supernet = supernet

    def forward(self, x: Tensor, return_taps: bool = False):
        return self.supernet(self.cfg, x, return_taps=return_taps)
