"""Per-target latency prediction from DPDCRN building blocks, calibrated by micro-benchmarks.

What is predicted: the per-hop latency of a streaming (causal) DPDCRN step on a target's runtime and
thread count. A step is a chain of blocks, each measured alone as a small exported model on a grid of
sizes ("micro-benchmarks"):

    enc(M, C)            conv (1,3)/2 x2 + norms: 2M -> C channels, 257 -> 64 bins
    dense(C, D)          dilated dense block, one frame, caches in/out (used twice: encoder, decoder)
    mid(C)               the 1x1 convs into and out of the dual path (C -> C/2 -> C)
    dp(C, H, heads, bi)  one dual-path layer step: intra attention + GRU over 64 bins, time-GRU step
                         (measured along two lines, see below)
    dec(C)               transposed convs back to 257 bins
    call                 an almost empty model: the runtime's fixed cost per call

    blocks    = enc + 2 dense + mid + L dp + dec - (4 + L) call (each block's measurement includes one
                call's fixed cost; the whole step pays it once)
    predicted = a · blocks + b · parameters + s · state elements + c

A block measured alone runs with its weights hot in cache; in the whole step the weights of all blocks
are fetched again every hop, a cost that grows with the parameter count, and the step reads and writes all
its states (dense-block caches, GRU states) every hop. a, b, s and c are fitted by least squares on 16
"anchor" models built only from grid values (whole step models, also micro-benchmarks of the calibration);
the candidates a search predicts are in general off the grid. (Without the state term OpenVINO's deep
dense blocks were under-predicted by up to 22 %: the residual correlated 0.6-0.7 with the state size.)
With fewer than 8 anchors (a reduced grid) only a and c are fitted: four coefficients from four anchors
would interpolate the anchors' timing noise.

The grid steps C and H by 4 from 8 to 64. Runtimes vectorise over 8 fp32 lanes (AVX2, and NEON pairs),
so a width that is not a multiple of 8 can cost more than the next multiple: OpenVINO's GRU at H = 12
takes ~1.3x its time at H = 16 on this host, and its convolutions at C = 20 or 28 ~10-15 % more than the
log-linear interpolation between 16 and 24 or 24 and 32 says. A grid of multiples of 4 catches that for
the widths search spaces use; widths off it are interpolated linearly in log-latency over log C (log H).

A dual-path layer's cost is, within 1 % (median; 7 % worst, over a full 7 C x 6 H x 4 heads x 2 product
grid measured with ONNX Runtime and OpenVINO on this host), additive in a width-and-attention part and a
GRU-size part:

    dp(C, H, heads, bi) = dp(C, H0, heads, bi) + dp(C0, H, 0, bi) - dp(C0, H0, 0, bi)

so it is measured along those two lines (C0 = H0 = 32) instead of over the whole product grid. The
calibration records where it was measured (device fingerprint, runtime version, threads, date), and every
prediction carries that provenance and the label "predicted". Models with a growing time-attention cache
(time_attention: causal) or non-causal models are not predicted (their per-hop cost is not constant).

A target without a calibration may ship a default (`default_prediction`): MACs per hop divided by a
throughput derived from the chip's published figures (one core's clock and SIMD width) and an assumed
efficiency, labelled "uncalibrated default" until `hwkd calibrate --target T` replaces it. More threads are
not assumed faster (measured here, a small streaming step is slower at 2 threads than at 1 on both runtimes).

Every calibrated prediction carries an uncertainty band (`Predictor.predict_band`, from leave-one-out
residuals over the anchors); benchmarks/predictor_accuracy.py measures how often it covers the measured value.
"""

from __future__ import annotations

import itertools
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwkd.errors import HwkdError
from hwkd.hw.measure import RUN_QUANTILE
from hwkd.models.dpdcrn import DPDCRN, N_BINS, DPDCRNConfig, FrameNorm

GRID_C = tuple(range(8, 65, 4))
GRID_H = tuple(range(8, 65, 4))
GRID_D = (1, 2, 3, 4)
GRID_HEADS = (0, 1, 2, 4)
GRID_M = (1, 4)
CALIB_VERSION = 7
# Each micro-benchmark is measured in PASSES short runs spread in time (pass k over the whole list before pass
# k + 1); a run's figure is the RUN_QUANTILE-th percentile of its per-call times, the micro-benchmark's the smallest
# over the passes. Why (measured 2026-12-01 on the 2-core VM, nothing else running): the same model's per-hop
# median is bimodal in time, ~1.0x or ~1.9x for seconds at a stretch, in about a quarter of 0.1-s runs; /proc/stat
# shows none of it (the hypervisor's other tenants). Two estimates of the same 10 candidates, each over 5 passes
# 4 s apart, agreed within 5 % for 70 % of them with this figure (p90 disagreement 8 %), 70 % with the smallest
# median (p90 11 %), 45 % with version 6's smaller median of two passes (p90 24 %)
# (benchmarks/timing_repeatability.py, results/timing_repeatability.json). The figure is the machine's
# uncontended latency, a few % under a single run's median on a quiet host.
PASSES = 5
PASS_PROTOCOL = dict(warmup=10, runs=50, min_s=0.1)
# anchors: (channels, layers, depth, heads, gru_hidden, intra_bidirectional, in_channels), all on the grid
ANCHORS = ((8, 1, 1, 0, 8, True, 1), (16, 2, 2, 1, 32, False, 1), (32, 1, 4, 2, 20, True, 4),
           (64, 1, 2, 4, 64, True, 1), (60, 3, 3, 2, 36, False, 1), (32, 3, 1, 0, 64, True, 1),
           (16, 1, 3, 4, 12, False, 4), (64, 2, 4, 1, 8, True, 4), (20, 2, 3, 2, 24, True, 1),
           (48, 1, 1, 1, 52, False, 1), (12, 3, 4, 2, 44, True, 1), (44, 2, 2, 0, 16, False, 4),
           (28, 1, 4, 0, 24, False, 4), (56, 3, 2, 4, 56, True, 1), (8, 2, 3, 1, 40, False, 4),
           (40, 1, 3, 2, 12, True, 1))


def anchor_configs() -> list[DPDCRNConfig]:
    return [DPDCRNConfig(channels=c, layers=L, depth=d, heads=k, gru_hidden=h, intra_bidirectional=bi, causal=True,
                         time_attention="none", in_channels=m) for c, L, d, k, h, bi, m in ANCHORS]


# -- blocks as exportable modules -------------------------------------------------------------------
class _Streaming(nn.Module):
    """A block that streams as it does inside `DPDCRN.step`: its cumulative norms take their running sums as
    inputs and return the new ones (the state reads and writes are part of a block's cost per hop)."""

    n_in = 1                                          # tensor inputs before the norm states

    def norms(self) -> list[FrameNorm]:
        return [m for m in self.modules() if isinstance(m, FrameNorm) and m.cumulative]

    def forward(self, *args):
        norms = self.norms()
        for n, st in zip(norms, args[self.n_in:], strict=True):
            n.stream = st
        try:
            out = self.run(*args[:self.n_in])
            out = out if isinstance(out, tuple) else (out,)
            return (*out, *[n.stream_out for n in norms])
        finally:
            for n in norms:
                n.stream = n.stream_out = None


class _Enc(_Streaming):
    def __init__(self, net: DPDCRN):
        super().__init__()
        self.enc1, self.enc2 = net.enc1, net.enc2

    def run(self, x):
        return self.enc2(self.enc1(x))


class _Dense(_Streaming):
    def __init__(self, net: DPDCRN):
        super().__init__()
        self.block = net.enc_dense
        self.n_in = 1 + net.cfg.depth

    def run(self, x, *caches):
        out, new = self.block.step(x, list(caches))
        return (out, *new)


class _Mid(_Streaming):
    def __init__(self, net: DPDCRN):
        super().__init__()
        self.dp_in, self.dp_out = net.dp_in, net.dp_out

    def run(self, x):
        return self.dp_out(self.dp_in(x))


class _DP(_Streaming):
    n_in = 2

    def __init__(self, net: DPDCRN):
        super().__init__()
        self.layer, self.k1, self.k2 = net.dp_layers[0], net.k1, net.k2

    def run(self, u, h):
        intra, inter, new = self.layer.step(u, {"h": h})
        return u + self.k1 * intra + self.k2 * inter, new["h"]


class _Dec(_Streaming):
    def __init__(self, net: DPDCRN):
        super().__init__()
        self.dec1, self.dec2 = net.dec1, net.dec2

    def run(self, x):
        return self.dec2(self.dec1(x))[..., :N_BINS]


class _Call(nn.Module):
    def forward(self, x):
        return x + 1.0


def _cfg(c=8, h=None, d=1, heads=0, bi=True, m=1) -> DPDCRNConfig:
    return DPDCRNConfig(channels=c, layers=1, depth=d, heads=heads, gru_hidden=h, intra_bidirectional=bi,
                        causal=True, time_attention="none", in_channels=m)


def _valid_c(heads: int) -> tuple:
    """Grid widths whose dual-path width C/2 the number of heads divides."""
    return tuple(c for c in GRID_C if heads == 0 or (c // 2) % heads == 0)


def _ref(grid: tuple, want: int = 32) -> int:
    """The reference width of the dual-path lines: the grid value nearest `want`."""
    return min(grid, key=lambda g: (abs(g - want), g))


def block_specs() -> list[dict]:
    """Every micro-benchmark of the calibration grid: {"block", params...}."""
    specs = [{"block": "call"}]
    specs += [{"block": "enc", "m": m, "c": c} for m in GRID_M for c in GRID_C]
    specs += [{"block": "dense", "c": c, "d": d} for c in GRID_C for d in GRID_D]
    specs += [{"block": "mid", "c": c} for c in GRID_C]
    specs += [{"block": "dec", "c": c} for c in GRID_C]
    c0, h0 = _ref(GRID_C), _ref(GRID_H)
    specs += [{"block": "dp", "c": c, "h": h0, "heads": k, "bi": bi}
              for k, bi in itertools.product(GRID_HEADS, (True, False)) for c in _valid_c(k)]
    specs += [{"block": "dp", "c": c0, "h": h, "heads": 0, "bi": bi}
              for h, bi in itertools.product(GRID_H, (True, False)) if h != h0]
    return specs


def _block_module(spec: dict) -> tuple[nn.Module, tuple, list[str]]:
    module, args, names = _block_core(spec)
    if isinstance(module, _Streaming):
        norms = module.norms()
        args = (*args, *[n.init_state(1) for n in norms])
        names = names + [f"norm{i}" for i in range(len(norms))]
    return module, args, names


def _block_core(spec: dict) -> tuple[nn.Module, tuple, list[str]]:
    torch.manual_seed(0)
    b = spec["block"]
    if b == "call":
        return _Call(), (torch.randn(1, 2, 1, N_BINS),), ["x"]
    if b == "enc":
        net = DPDCRN(_cfg(c=spec["c"], m=spec["m"]))
        return _Enc(net), (torch.randn(1, 2 * spec["m"], 1, N_BINS),), ["x"]
    if b == "dense":
        net = DPDCRN(_cfg(c=spec["c"], d=spec["d"]))
        caches = net.enc_dense.init_state((1, spec["c"], 1, 64))
        return _Dense(net), (torch.randn(1, spec["c"], 1, 64), *caches), \
            ["x"] + [f"cache{i}" for i in range(spec["d"])]
    if b == "mid":
        return _Mid(DPDCRN(_cfg(c=spec["c"]))), (torch.randn(1, spec["c"], 1, 64),), ["x"]
    if b == "dec":
        return _Dec(DPDCRN(_cfg(c=spec["c"]))), (torch.randn(1, spec["c"], 1, 64),), ["x"]
    if b == "dp":
        net = DPDCRN(_cfg(c=spec["c"], h=spec["h"], heads=spec["heads"], bi=spec["bi"]))
        return _DP(net), (torch.randn(1, spec["c"] // 2, 1, 64), torch.zeros(1, 64, spec["h"])), ["u", "h"]
    raise ValueError(b)


def spec_key(spec: dict) -> str:
    return ",".join(f"{k}={spec[k]}" for k in sorted(spec))


def export_block(spec: dict, path: Path) -> Path:
    import warnings
    module, args, names = _block_module(spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module.eval(), args, str(path), input_names=names, opset_version=17, dynamo=False)
    return path


# -- calibration ------------------------------------------------------------------------------------
CHUNK = 32                                           # micro-benchmarks per chunk of a calibration pass
CHUNK_TIMEOUT_S = 600                                # a device's deadline per chunk


def run_figure(ms) -> float:
    """One measuring run's figure: the RUN_QUANTILE-th percentile of its per-call times (ms)."""
    return float(np.percentile(np.asarray(ms, dtype=float), RUN_QUANTILE))


def calibrate(runtime: str, threads: int, device=None, progress=print, protocol=None, partial: Path | None = None,
              chunk: int = CHUNK, chunk_timeout: float = CHUNK_TIMEOUT_S, passes: int = PASSES) -> dict:
    """Run every micro-benchmark (the block grid and the anchors) with `runtime` and `threads`, here or on
    `device` (a `hwkd.hw.remote.Device`); returns the calibration table.

    The work goes in chunks of `chunk` micro-benchmarks (on a device: one SSH session each, with a deadline of
    `chunk_timeout` s). After each chunk the figures so far are written to `partial` (when given); a rerun with
    the same settings resumes from it, so a chunk that fails or runs out of time loses only itself.
    `save_calibration` removes the partial file of a finished calibration. `passes`: runs per micro-benchmark,
    spread in time, its figure the smallest of the runs' low percentiles (PASSES above says why)."""
    from hwkd.audio.io import write_text_atomic
    from hwkd.hw.export import export_step_onnx, to_openvino
    from hwkd.hw.measure import Protocol
    from hwkd.hw.remote import DeviceTimeout
    from hwkd.hw.runtimes import runtime_version
    from hwkd.sysinfo import LoadMeter, fingerprint
    if runtime not in ("onnxruntime", "openvino"):
        raise HwkdError(f"calibration runs onnxruntime or openvino, not {runtime!r}", "pick one of those")
    if chunk < 1 or passes < 1:
        raise ValueError(f"chunk {chunk}, passes {passes}")
    proto = protocol or Protocol(**PASS_PROTOCOL)
    specs, cfgs = block_specs(), anchor_configs()
    n = len(specs) + len(cfgs)
    where = "local" if device is None else f"{device.name} over SSH ({device.where})"
    identity = {"version": CALIB_VERSION, "runtime": runtime, "threads": threads, "protocol": proto.__dict__,
                "passes": passes, "where": where, "items": [spec_key(sp) for sp in specs] + [c.to_dict() for c in cfgs]}
    identity = json.loads(json.dumps(identity))      # as read back from the file (tuples become lists)
    partial = None if partial is None else Path(partial)
    state = _load_partial(partial, identity, progress)
    # `passes` passes over the whole list, each block's figure the smallest of its runs' figures (run_figure): a
    # slow stretch of the host (another tenant, a page fault storm) does not end up in the table
    chunks = [(rep, lo, min(lo + chunk, n)) for rep in range(passes) for lo in range(0, n, chunk)]
    done = [all(v is not None for v in state["passes"][rep][lo:hi]) for rep, lo, hi in chunks]
    if progress and any(done):
        progress(f"  calibrate {runtime} {threads} thr: resuming, {sum(done)} of {len(chunks)} chunks kept "
                 f"from {partial}")
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        exported: dict[int, list[Path]] = {}

        def files_of(i: int) -> list[Path]:
            """Item i exported (once; every pass uses it): a block of the grid, then the anchors."""
            if i not in exported:
                if i < len(specs):
                    onnx = export_block(specs[i], Path(tmp) / f"b{i}.onnx")
                else:
                    torch.manual_seed(i - len(specs))
                    onnx = export_step_onnx(DPDCRN(cfgs[i - len(specs)]).eval(), Path(tmp) / f"a{i}.onnx")
                if runtime == "openvino":
                    xml = to_openvino(onnx, onnx.with_suffix(".xml"))
                    exported[i] = [xml, xml.with_suffix(".bin")]
                else:
                    exported[i] = [onnx]
            return exported[i]

        if progress:
            progress(f"  calibrate {runtime} {threads} thr: {n} micro-benchmarks x {passes} passes in {len(chunks)} "
                     "chunks, measuring " + ("here" if device is None else f"on {device.name}"))
        with LoadMeter() as load:
            for k, ((rep, lo, hi), finished) in enumerate(zip(chunks, done)):
                if finished:
                    continue
                modes = ["block" if i < len(specs) else "hop" for i in range(lo, hi)]
                if device is None:
                    from hwkd.hw.measure import Runner, timed
                    lat = []
                    for i, mode in zip(range(lo, hi), modes):
                        f = files_of(i)[0]
                        wall, own, _ = timed(Runner(runtime, mode, threads, onnx=None if runtime == "openvino"
                                                      else f, ir=f if runtime == "openvino" else None), proto)
                        lat.append(run_figure(own if own is not None else wall))
                    state["fingerprint"] = state["fingerprint"] or fingerprint()
                else:
                    items = [(mode, files_of(i)) for i, mode in zip(range(lo, hi), modes)]
                    try:
                        ms = device.measure_batch(runtime, threads, items, hop=256, in_channels=1, protocol=proto,
                                                  timeout=chunk_timeout)
                    except DeviceTimeout as e:
                        kept = (f"{sum(done)} of {len(chunks)} chunks are done and kept in {partial}"
                                if partial is not None else "nothing is kept (no partial file given)")
                        raise HwkdError(f"device {device.name} ({device.where}): calibration chunk {k + 1}/"
                                        f"{len(chunks)} (pass {rep + 1}/{passes}, micro-benchmarks {lo + 1}-{hi}) "
                                        f"took over {chunk_timeout:.0f} s; its worker was stopped and {kept}",
                                        "check the device's load, then rerun the same command: it resumes from "
                                        "the kept chunks") from e
                    lat = [m.p10_ms if m.p10_ms is not None else m.p50_ms for m in ms]
                    state["fingerprint"] = ms[0].fingerprint
                state["passes"][rep][lo:hi] = lat
                done[k] = True
                if partial is not None:
                    partial.parent.mkdir(parents=True, exist_ok=True)
                    write_text_atomic(partial, json.dumps(state))
                if progress:
                    progress(f"  calibrate {runtime} {threads} thr: chunk {k + 1}/{len(chunks)} done "
                             f"(pass {rep + 1}/{passes}, {hi}/{n})")
    lat = [min(v) for v in zip(*state["passes"])]
    anchor_params = [sum(p.numel() for p in DPDCRN(cfg).parameters()) for cfg in cfgs]
    table = {spec_key(spec): v for spec, v in zip(specs, lat)}
    anchors = [{"config": cfg.to_dict(), "params": n_p, "measured_ms": v}
               for cfg, n_p, v in zip(cfgs, anchor_params, lat[len(specs):])]
    return {"version": CALIB_VERSION, "runtime": runtime, "version_runtime": runtime_version(runtime)
            if device is None else device.check_runtime(runtime), "threads": threads, "table_ms": table,
            "anchors": anchors, "protocol": proto.__dict__, "fingerprint": state["fingerprint"], "where": where,
            "passes": passes, "seconds": round(time.perf_counter() - t0, 1),
            "other_load": load.other_load if device is None else None, "how": "micro-benchmarks"}


def _load_partial(partial: Path | None, identity: dict, progress) -> dict:
    """The figures a killed or timed-out calibration with the same settings kept, else an empty state."""
    fresh = {"identity": identity, "passes": [[None] * len(identity["items"]) for _ in range(identity["passes"])],
             "fingerprint": None}
    if partial is None or not partial.is_file():
        return fresh
    try:
        state = json.loads(partial.read_text())
        ok = state["identity"] == identity and all(len(p) == len(identity["items"]) for p in state["passes"])
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        if progress:
            progress(f"  {partial}: figures of other settings (or unreadable), starting over")
        return fresh
    return state


# -- prediction -------------------------------------------------------------------------------------
def _interp1(xs, ys, x) -> float:
    """Piecewise-linear interpolation of log y over log x, extrapolated linearly at the ends."""
    lx, ly = np.log(xs), np.log(ys)
    v = math.log(x)
    i = int(np.clip(np.searchsorted(lx, v) - 1, 0, len(xs) - 2))
    w = (v - lx[i]) / (lx[i + 1] - lx[i])
    return float(math.exp(ly[i] + w * (ly[i + 1] - ly[i])))


def _fit(a: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least-squares coefficients (blocks, params, states, constant) from anchor features `a` and latencies `y`."""
    if len(y) >= 2 * a.shape[1]:
        return np.linalg.lstsq(a, y, rcond=None)[0]
    # too few anchors for four coefficients (a reduced grid): with as many anchors as unknowns the fit
    # interpolates the anchors' timing noise exactly and extrapolates it (a CI run predicted 1.9 ms for
    # a 1.1 ms candidate from 4 anchors); fit the block sum's scale and the constant only
    sub = np.linalg.lstsq(a[:, [0, 3]], y, rcond=None)[0]
    return np.array([sub[0], 0.0, 0.0, sub[1]])


class Predictor:
    """Predicted per-hop latency with an uncertainty band.

    The band comes from leave-one-out over the anchors: each anchor is predicted by a fit on the others (an
    anchor is then a candidate the fit never saw), and the band is the 90th percentile of those relative
    errors (the largest one with fewer than 10 anchors). A prediction p with band b says the measured value
    lies in [p / (1 + b), p / (1 - b)] (relative error p / measured - 1 within ±b);
    benchmarks/predictor_accuracy.py checks how often that holds on held-out candidates.
    """

    def __init__(self, calib: dict):
        self.calib = calib
        self.t = calib["table_ms"]
        a = np.array([self._features(DPDCRNConfig.from_dict(r["config"])) for r in calib["anchors"]])
        y = np.array([r["measured_ms"] for r in calib["anchors"]])
        self.coef = _fit(a, y)
        floor = self._get(block="call")
        loo = []
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            loo.append(max(float(_fit(a[keep], y[keep]) @ a[i]), floor) / y[i] - 1)
        self.loo_rel_err = loo
        self.band = float(np.quantile(np.abs(loo), 0.9) if len(loo) >= 10 else np.max(np.abs(loo)))

    def _features(self, cfg: DPDCRNConfig) -> np.ndarray:
        params, states = model_sizes(cfg)
        return np.array([self.blocks_ms(cfg), params / 1e6, states / 1e6, 1.0])

    def _get(self, **spec) -> float:
        return self.t[spec_key(spec)]

    def _over_c(self, c, **fixed) -> float:
        grid = _valid_c(fixed["heads"]) if fixed.get("block") == "dp" else GRID_C
        return _interp1(grid, [self._get(c=g, **fixed) for g in grid], c)

    def block_ms(self, cfg: DPDCRNConfig) -> dict:
        c, h = cfg.channels, cfg.hidden
        heads = cfg.heads
        if heads not in GRID_HEADS:
            raise HwkdError(f"no calibration for {heads} attention heads", f"use one of {GRID_HEADS}")
        m = cfg.in_channels
        bi = cfg.intra_bidirectional
        c0, h0 = _ref(GRID_C), _ref(GRID_H)
        dp_c = self._over_c(c, block="dp", h=h0, heads=heads, bi=bi)       # width and attention, at H0
        dp_h = _interp1(GRID_H, [self._get(block="dp", c=c0, h=g, heads=0, bi=bi) for g in GRID_H], h)
        dp = dp_c + dp_h - self._get(block="dp", c=c0, h=h0, heads=0, bi=bi)
        return {"call": self._get(block="call"), "enc": self._over_c(c, block="enc", m=m),
                "dense": _interp_d(self, c, cfg.depth), "mid": self._over_c(c, block="mid"),
                "dp": dp, "dec": self._over_c(c, block="dec")}

    def blocks_ms(self, cfg: DPDCRNConfig) -> float:
        b = self.block_ms(cfg)
        return b["enc"] + 2 * b["dense"] + b["mid"] + cfg.layers * b["dp"] + b["dec"] - (4 + cfg.layers) * b["call"]

    def predict_hop_ms(self, cfg: DPDCRNConfig) -> float:
        if not cfg.causal or cfg.time_attention != "none":
            raise HwkdError("per-hop prediction covers streaming models without time attention",
                            "measure this model instead (its per-hop cost grows with the attention cache)")
        if cfg.mask_mode != "reference" or cfg.spatial_features:
            raise HwkdError(f"per-hop prediction is calibrated on the spec's output form (one mask, no spatial "
                            f"features), not mask_mode {cfg.mask_mode!r} / spatial_features {cfg.spatial_features}",
                            "measure this model instead (hwkd bench)")
        # a step costs at least one call of the runtime (a fit on noisy anchors can extrapolate below it)
        return max(float(self.coef @ self._features(cfg)), self._get(block="call"))

    def predict_band(self, cfg: DPDCRNConfig) -> dict:
        """{"p50_ms", "lo_ms", "hi_ms", "band"}: the prediction and the interval the measured value should lie in."""
        p = self.predict_hop_ms(cfg)
        b = min(self.band, 0.95)
        return {"p50_ms": p, "lo_ms": p / (1 + b), "hi_ms": p / (1 - b), "band": self.band}

    def provenance(self) -> str:
        c = self.calib
        fp = c.get("fingerprint", {})
        return (f"predicted from {len(self.t)} block micro-benchmarks and {len(c['anchors'])} anchors "
                f"({c['runtime']} {c['version_runtime']}, "
                f"{c['threads']} threads) on {fp.get('cpu', '?')} ({c.get('where', 'local')}) on "
                f"{fp.get('date', '?')}; band ±{self.band:.0%} (leave-one-out over the anchors)")


def model_sizes(cfg: DPDCRNConfig) -> tuple[int, int]:
    """(parameters, state elements of the streaming step) of a configuration."""
    from hwkd.models.streaming import StepModel
    net = DPDCRN(cfg)
    return (sum(p.numel() for p in net.parameters()),
            sum(s.numel() for s in StepModel(net).initial_states()))


def _interp_d(p: Predictor, c: int, d: int) -> float:
    if d in GRID_D:
        return p._over_c(c, block="dense", d=d)
    raise HwkdError(f"no calibration for dense depth {d}", f"use a depth in {GRID_D}")


# -- storage ----------------------------------------------------------------------------------------
def calibration_path(target: str, runtime: str, threads: int) -> Path:
    from hwkd.paths import hwkd_home
    return hwkd_home() / "calibration" / f"{target}-{runtime}-{threads}t.json"


def partial_path(target: str, runtime: str, threads: int) -> Path:
    """Where `hwkd calibrate` keeps the chunks of an unfinished calibration."""
    p = calibration_path(target, runtime, threads)
    return p.with_name(p.stem + ".partial.json")


def save_calibration(calib: dict, target: str) -> Path:
    """Write the calibration (atomically), then drop the partial file it may have been resumed from."""
    from hwkd.audio.io import write_text_atomic
    p = calibration_path(target, calib["runtime"], calib["threads"])
    p.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(p, json.dumps(calib, indent=1))
    partial_path(target, calib["runtime"], calib["threads"]).unlink(missing_ok=True)
    return p


def load_predictor(target: str, runtime: str, threads: int) -> Predictor | None:
    p = calibration_path(target, runtime, threads)
    if not p.is_file():
        return None
    try:
        calib = json.loads(p.read_text())
    except json.JSONDecodeError:
        raise HwkdError(f"calibration file {p} is corrupt", f"delete it and rerun hwkd calibrate --target {target}") \
            from None
    if calib.get("version") != CALIB_VERSION or len(calib.get("table_ms", {})) != len(block_specs()):
        raise HwkdError(f"calibration file {p} is from another hwkd version",
                        f"rerun hwkd calibrate --target {target}")
    return Predictor(calib)


def default_prediction(target: dict, cfg: DPDCRNConfig, threads: int, macs_per_hop: float,
                       efficiency: float = 0.15) -> dict:
    """Uncalibrated default: MACs per hop / (one core x clock x SIMD fp32 lanes x 2 FMA pipes x efficiency).

    One core whatever `threads` says: a small streaming step does not get faster with more threads on any
    runtime measured here (cpu-student-causal per hop, 1 -> 2 threads: OpenVINO 0.44 -> 1.50 ms, ONNX Runtime
    0.56 -> 0.73 ms; the synchronisation costs more than the work shared), so the default no longer divides
    by the core count (it predicted the rpi4 at 4 threads 4x faster than at 1). A calibration measures it.
    """
    dev = target["device"]
    if not all(k in dev for k in ("freq_ghz", "simd_bits")):
        raise HwkdError(f"target {target['name']} has no published chip figures (device.freq_ghz, simd_bits)",
                        f"calibrate it: hwkd calibrate --target {target['name']}")
    lanes = dev["simd_bits"] // 32
    peak = dev["freq_ghz"] * 1e9 * lanes * 2
    ms = macs_per_hop / (peak * efficiency) * 1e3
    more = (f"; the 1-thread figure for {threads} threads (more threads are not assumed faster for a streaming "
            f"step)") if threads > 1 else ""
    return {"p50_ms": ms, "how": "predicted (uncalibrated default)",
            "provenance": f"MACs per hop / (1 core x {dev['freq_ghz']} GHz x {lanes} fp32 lanes x 2 FMA pipes x "
                          f"{efficiency:.0%} assumed efficiency), from the chip's published figures "
                          f"({dev.get('cpu', '?')}){more}; not calibrated, no uncertainty band — run "
                          f"hwkd calibrate --target {target['name']}"}
