"""One latency protocol for every runtime: torch, ONNX Runtime and OpenVINO (CPU; CUDA where present).

A measurement runs a prepared model call repeatedly: warm-up calls first, then timed calls until both
`runs` calls and `min_s` seconds are done. Two modes:

- "hop": the streaming step model, one STFT hop of audio per call, the states carried from call to call
  (a growing attention cache is reset every `reset_hops` hops so long runs stay bounded);
- "offline": the whole-utterance model on `audio_s` seconds of frames per call.

Latency per call is timed around the call (perf_counter) for torch and ONNX Runtime; for OpenVINO it is the
runtime's own request latency (measured in C++ around the inference, what `benchmark_app` reports), with
the wall time including the Python call overhead kept as `wall_p50_ms`. Every result carries
p50/p90/p99/min/max/mean latency, the audio each call covers, the RTF (p50 / audio),
whether p90 meets real time (hop mode), peak resident memory, threads, runtime and version, the
device fingerprint and the CPU time other processes used meanwhile. A run during which others used more
than `busy_load` of the machine is measured once more; if it is still busy it is flagged `busy: true`.

GPU runtimes (torch-cuda, torch-cuda-graph, onnxruntime-cuda, onnxruntime-trt) are timed the same way, the wall
time taken after the call's work has finished on the device (torch: a CUDA event waited on; ONNX Runtime returns
host arrays). torch GPU calls are also timed by CUDA events recorded on the stream around the call, an
independent timer kept as `event_p50_ms` beside the wall figure (`timer_agreement`: wall / events - 1). A
measurement has a precision (fp32, or fp16 on GPU runtimes) and a batch: `batch` streams advanced by one call
in hop mode (torch runtimes: the exported step graphs carry one stream), `batch` utterances per call offline;
the RTF divides by all the audio a call covers. Peak device memory: torch's allocator peak (`peak_device_mib`)
and, where NVML can tell, the process's whole device memory, CUDA context included (`device_mib_nvml`).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from hwkd import SAMPLE_RATE as SR
from hwkd.errors import HwkdError
from hwkd.hw.gpu import ORT_GPU, TORCH_GPU, gpu_fingerprint, is_gpu, process_device_mib, runtime_problem
from hwkd.hw.runtimes import (
    MODES,
    OV_CONFIG,
    PRECISIONS,
    RUNTIMES,
    ort_options,
    ov_core,
    runtime_config,
    runtime_version,
)
from hwkd.sysinfo import LoadMeter, fingerprint

N_BINS = 257               # this module imports no torch unless the torch runtime is measured
RUN_QUANTILE = 10          # a run's figure for the latency predictor (`p10_ms`; hwkd.hw.predict says why)


@dataclass
class Protocol:
    warmup: int = 30
    runs: int = 200
    min_s: float = 1.0
    audio_s: float = 1.0          # offline mode: seconds of audio per call
    reset_hops: int = 1000        # hop mode: reset states this often (bounds a growing attention cache)
    busy_load: float = 0.10       # other processes' share of the machine that flags a measurement

    @classmethod
    def named(cls, name: str) -> Protocol:
        if name == "quick":
            return cls(warmup=10, runs=60, min_s=0.3)
        if name == "default":
            return cls()
        if name == "mlperf":          # MLPerf single-stream: >= 1024 queries and >= 60 s
            return cls(warmup=100, runs=1024, min_s=60.0)
        raise HwkdError(f"unknown protocol {name!r}", "use quick, default or mlperf")


@dataclass
class Measurement:
    runtime: str
    version: str
    mode: str
    threads: int
    device: str
    runs: int
    warmup: int
    audio_ms_per_call: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    min_ms: float
    max_ms: float
    mean_ms: float
    rtf: float
    realtime: bool | None
    peak_rss_mib: float | None
    other_load: float | None
    busy: bool
    attempts: int
    how: str = "measured"
    timer: str = "wall (perf_counter around the call)"
    wall_p50_ms: float | None = None     # including the Python call overhead
    fingerprint: dict = field(default_factory=dict)
    runtime_config: dict = field(default_factory=dict)   # the runtime's settings (threads, streams, spinning)
    precision: str = "fp32"
    batch: int = 1                       # streams per hop call, or utterances per offline call
    event_p50_ms: float | None = None    # torch GPU runtimes: CUDA events around each call (independent timer)
    timer_agreement: float | None = None  # p50 wall / p50 events - 1
    peak_device_mib: float | None = None  # torch GPU runtimes: the caching allocator's peak (tensors)
    device_mib_nvml: float | None = None  # GPU runtimes: the process's device memory by NVML (context included)
    gpu: dict | None = None              # GPU fingerprint (model, driver, CUDA, cuDNN, runtime versions)
    p10_ms: float | None = None          # the RUN_QUANTILE-th percentile: the latency predictor's figure of a run

    def as_dict(self) -> dict:
        return asdict(self)


# -- memory ---------------------------------------------------------------------------------------
def _status_kib(key: str) -> int | None:
    try:
        for line in open("/proc/self/status"):
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                          # resets VmHWM to the current RSS (Linux >= 4.0)
        return True
    except OSError:
        return False


# -- what can be measured ----------------------------------------------------------------------------
def variant_problem(runtime: str, mode: str, precision: str = "fp32", batch: int = 1, cfg=None) -> str | None:
    """Why (runtime, mode, precision, batch) is not a measurement hwkd makes, or None. `cfg`: the model's
    DPDCRNConfig, for what depends on the model (whether it streams, a streaming state that grows every hop with
    causal time attention, cumulative norms or a steered beam whose running sums overflow fp16 unless kept in fp32)."""
    growing = cfg is not None and cfg.causal and cfg.time_attention != "none"
    cumulative = cfg is not None and cfg.causal and cfg.causal_norm == "cumulative"
    steered = cfg is not None and cfg.mask_mode == "steered"
    if runtime not in RUNTIMES:
        return f"unknown runtime {runtime!r} (known: {', '.join(RUNTIMES)})"
    if mode not in MODES:
        return f"unknown mode {mode!r} (known: {', '.join(MODES)})"
    if precision not in PRECISIONS:
        return f"unknown precision {precision!r} (known: {', '.join(PRECISIONS)})"
    if not (isinstance(batch, int) and batch >= 1):
        return f"batch must be a whole number >= 1, not {batch!r}"
    if precision == "fp16" and not is_gpu(runtime):
        return "fp16 is measured on GPU runtimes only (the CPU runtimes here compute in fp32)"
    if batch > 1 and mode == "hop" and not runtime.startswith("torch"):
        return "the exported step graph carries one stream: batched streams are measured with torch runtimes"
    if batch > 1 and runtime == "openvino":
        return "the OpenVINO IR is measured at batch 1"
    if runtime == "torch-cuda-graph" and mode == "hop" and growing:
        return "a CUDA graph replays fixed shapes, and this model's attention cache grows every hop"
    if runtime == "onnxruntime-trt" and mode == "hop" and growing:
        return "TensorRT builds an engine per input shape, and this model's attention cache grows every hop"
    if runtime == "onnxruntime-cuda" and precision == "fp16" and (cumulative or steered):
        what = "the cumulative norms' running sums" if cumulative else "the steered beam's energy and intensity sums"
        return (f"onnxruntime's fp16 converter would run {what} in fp16, where they overflow (hwkd's torch model "
                "keeps them fp32)")
    if cfg is not None and mode == "hop" and not cfg.causal:
        return "a non-causal model cannot stream: it is measured offline"
    return None


# -- runners --------------------------------------------------------------------------------------
class Runner:
    """call() runs the model once on its prepared input; hop mode carries the states."""

    def __init__(self, runtime: str, mode: str, threads: int, net=None, onnx: Path | None = None,
                 ir: Path | None = None, audio_s: float = 1.0, reset_hops: int = 1000, in_channels: int = 1,
                 hop: int = 256, precision: str = "fp32", batch: int = 1):
        self.runtime, self.mode, self.threads, self.reset_hops = runtime, mode, threads, reset_hops
        self.precision, self.batch = precision, batch
        self.calls = 0
        self.device = "cpu"
        self._events = None              # (start, end) CUDA events around each call (torch GPU runtimes)
        self.last_event_ms = None
        rng = np.random.default_rng(0)
        if mode != "block":
            problem = variant_problem(runtime, mode, precision, batch, net.cfg if net is not None else None)
            if problem:
                raise HwkdError(f"{runtime} {mode} {precision} batch {batch}: {problem}", "measure another variant")
            if is_gpu(runtime) and (problem := runtime_problem(runtime)):
                raise HwkdError(problem, "measure on a CPU runtime here")
        if mode == "offline":
            # 1 s = SR // hop frames, the convention of the MACs figures
            self.frames = max(1, round(audio_s * (SR // hop)))
            self.x = rng.standard_normal((batch, 2 * in_channels, self.frames, N_BINS)).astype(np.float32)
        if mode == "block":                  # any exported graph with static inputs, random data (calibration)
            self._init_block(runtime, onnx, ir)
        elif runtime.startswith("torch"):
            self._init_torch(net, runtime in TORCH_GPU, runtime == "torch-cuda-graph")
        elif runtime.startswith("onnxruntime"):
            self._init_ort(onnx, net)
        elif runtime == "openvino":
            self._init_ov(ir)
        else:
            raise HwkdError(f"unknown runtime {runtime!r}", f"use one of: {', '.join(RUNTIMES)}")

    def _init_block(self, runtime: str, onnx: Path, ir: Path | None):
        rng = np.random.default_rng(0)
        if runtime == "onnxruntime":
            import onnxruntime as ort
            sess = ort.InferenceSession(str(onnx), ort_options(self.threads), providers=["CPUExecutionProvider"])
            feeds = {i.name: rng.standard_normal(i.shape).astype(np.float32) for i in sess.get_inputs()}
            self._call = lambda: sess.run(None, feeds)
        elif runtime == "openvino":
            import openvino as ov
            comp = ov_core().compile_model(str(ir), "CPU", OV_CONFIG(self.threads))
            req = comp.create_infer_request()
            for i, p in enumerate(comp.inputs):
                req.set_input_tensor(i, ov.Tensor(rng.standard_normal(list(p.get_shape())).astype(np.float32)))
            self._ov_req = req
            self._call = lambda: req.infer()
        else:
            raise HwkdError(f"calibration runs onnxruntime or openvino, not {runtime!r}", "pick one of those")

    # torch -------------------------------------------------------------------------------------
    def _init_torch(self, net, cuda: bool, graph: bool):
        import torch
        if net is None:
            raise HwkdError("the torch runtime needs the model itself", "profile a checkpoint or preset")
        torch.set_num_threads(self.threads)
        dev = torch.device("cuda" if cuda else "cpu")
        dtype = torch.float16 if self.precision == "fp16" else torch.float32
        self.device = torch.cuda.get_device_name(0) if cuda else "cpu"
        self._torch, self._cuda = torch, cuda
        net = net.eval().to(dev, dtype)
        if self.mode == "offline":
            x = torch.from_numpy(self.x).to(dev, dtype)
            fn = lambda: net(x)                                   # noqa: E731
        else:
            from hwkd.models.streaming import StepModel, fp32_state, state_names
            step = StepModel(net).eval()
            frame = torch.randn(self.batch, 2 * net.cfg.in_channels, 1, N_BINS, device=dev, dtype=dtype)
            # running sums (cumulative norms, a steered beam) stay fp32 in half precision
            init = [s.to(dev, torch.float32 if fp32_state(n) else dtype)
                    for s, n in zip(step.initial_states(self.batch), state_names(net))]
            if graph:                     # the states advance in place, inside the graph
                states = [s.clone() for s in init]

                def fn():
                    for s, new in zip(states, step(frame, *states)[1:]):
                        s.copy_(new)
            else:
                self._hop_loop(init, lambda states: step(frame, *states)[1:])
                fn = self._call
        if graph:
            fn = self._capture(fn)
        self._call = _no_grad(torch, fn)
        if cuda:
            self._events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))

    def _capture(self, fn):
        """`fn` captured once as a CUDA graph (after warm-up calls on a side stream, as torch's documentation
        asks); each call then replays it: one launch, no Python per kernel."""
        torch = self._torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.no_grad(), torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        try:
            with torch.no_grad(), torch.cuda.graph(g):
                fn()
        except RuntimeError as e:
            raise HwkdError(f"torch-cuda-graph: the call could not be captured as a CUDA graph "
                            f"({str(e).splitlines()[0]})", "measure torch-cuda instead") from None
        self._graph = g
        return g.replay

    # onnxruntime -------------------------------------------------------------------------------
    def _init_ort(self, onnx: Path, net=None):
        import onnxruntime as ort
        so = ort_options(self.threads)
        if self.mode == "offline" and self.batch > 1:      # the exported graph has batch 1: one with a batch axis
            onnx = self._batched_onnx(net)
        if self.precision == "fp16" and self.runtime == "onnxruntime-cuda":
            onnx = self._fp16_onnx(onnx)
        providers = ["CPUExecutionProvider"]
        if self.runtime == "onnxruntime-cuda":
            providers = ["CUDAExecutionProvider", "CPUExecutionProvider"]
        elif self.runtime == "onnxruntime-trt":
            trt = {"trt_fp16_enable": self.precision == "fp16", "trt_engine_cache_enable": True,
                   "trt_engine_cache_path": str(self._scratch("hwkd-trt-"))}
            providers = [("TensorrtExecutionProvider", trt), "CUDAExecutionProvider", "CPUExecutionProvider"]
        sess = ort.InferenceSession(str(onnx), so, providers=providers)
        if self.runtime in ORT_GPU and ORT_GPU[self.runtime] not in sess.get_providers():
            raise HwkdError(f"{self.runtime}: the session fell back to {', '.join(sess.get_providers())}",
                            "check the provider's libraries (CUDA, cuDNN, TensorRT) on this machine")
        self.providers = sess.get_providers()
        self.device = "cuda" if self.runtime in ORT_GPU else "cpu"
        if self.mode == "offline":
            feeds = {"features": self.x}
            self._call = lambda: sess.run(None, feeds)
        else:
            names, init = _step_inputs(sess.get_inputs())
            frame = np.random.default_rng(1).standard_normal((1, names[0][1], 1, N_BINS)).astype(np.float32)
            state_names = [n for n, _ in names[1:]]
            self._hop_loop(init, lambda states: sess.run(None, {"frame": frame, **dict(zip(state_names, states))})[1:])

    def _scratch(self, prefix: str) -> Path:
        """A temporary folder that goes with this runner (removed when the runner is collected or the process
        exits): batched and fp16 exports and TensorRT's engine cache do not pile up in /tmp. A hop runner's call
        refers back to it, so its folder goes at the next garbage collection; a measuring child killed at its
        timeout leaves its folder behind."""
        import shutil
        import tempfile
        import weakref
        d = tempfile.mkdtemp(prefix=prefix)
        weakref.finalize(self, shutil.rmtree, d, True)
        return Path(d)

    def _batched_onnx(self, net) -> Path:
        if net is None:
            raise HwkdError("an offline batch above 1 on ONNX Runtime needs the model itself (to export a batch "
                            "axis)", "profile a checkpoint or preset")
        from hwkd.hw.export import export_offline_onnx
        return export_offline_onnx(net.float(), self._scratch("hwkd-batch-") / "offline.onnx",
                                   batch_axis=True)

    def _fp16_onnx(self, onnx: Path) -> Path:
        """The graph's weights and arithmetic in fp16, its inputs and outputs kept fp32 (onnxruntime's own
        converter): what an fp16 deployment on ONNX Runtime's CUDA provider runs. (TensorRT takes the fp32
        graph and its fp16 flag.)"""
        import onnx as onnx_lib
        from onnxruntime.transformers.float16 import convert_float_to_float16
        model = convert_float_to_float16(onnx_lib.load(str(onnx)), keep_io_types=True)
        out = self._scratch("hwkd-fp16-") / onnx.name
        onnx_lib.save(model, str(out))
        return out

    # openvino ----------------------------------------------------------------------------------
    def _init_ov(self, ir: Path):
        import openvino as ov
        if ir is None:
            raise HwkdError("no OpenVINO IR for this model", "the export refused it; see the parity report")
        core = ov_core()
        model = core.read_model(str(ir))
        if self.mode == "offline":           # a fixed-length chunk: compile for that static shape
            model.reshape({model.inputs[0].get_any_name(): list(self.x.shape)})
        # one stream, N threads, f32: what `benchmark_app -hint none -nstreams 1 -nthreads N -infer_precision f32`
        # configures (benchmarks/ov_fidelity.py compares the two)
        comp = core.compile_model(model, "CPU", OV_CONFIG(self.threads))
        req = comp.create_infer_request()
        self.device = "CPU"
        self._ov_req = req
        if self.mode == "offline":
            req.set_input_tensor(ov.Tensor(self.x))
            self._call = lambda: req.infer()
        else:
            ins = [(p.get_any_name(), p.get_partial_shape()) for p in comp.inputs]
            names, init = _step_inputs_ov(ins)
            frame = np.random.default_rng(1).standard_normal((1, names[0][1], 1, N_BINS)).astype(np.float32)
            state_names = [n for n, _ in names[1:]]
            if all(shape.is_static for _, shape in ins):
                self._call = self._ov_pingpong(comp, req, frame, state_names, init)
                return
            self._hop_loop(init, lambda states: [np.array(v, copy=True) for v in list(
                req.infer({"frame": frame, **dict(zip(state_names, states))}).values())[1:]])

    def _hop_loop(self, init: list, advance) -> None:
        """Hop mode: each call runs one hop, `advance(states) -> new states`, the states carried from call to call
        and reset to `init` every `reset_hops` calls (a growing attention cache stays bounded)."""
        self._states = list(init)

        def call():
            if self.calls % self.reset_hops == 0:
                self._states = list(init)
            self._states = advance(self._states)
        self._call = call

    def _ov_pingpong(self, comp, req_a, frame, state_names, init):
        """Static-shape states carried without copies: each state has two buffers; request A reads buffer 0
        and writes buffer 1, request B the reverse, and the two are called in turn (what a C++ streaming
        loop does). `last_mask()` returns the latest mask frame."""
        import openvino as ov
        req_b = comp.create_infer_request()
        frame_t = ov.Tensor(frame)
        for req in (req_a, req_b):
            req.set_tensor("frame", frame_t)
        for name, st in zip(state_names, init):
            buf0, buf1 = ov.Tensor(st.copy()), ov.Tensor(np.zeros_like(st))
            req_a.set_tensor(name, buf0)
            req_a.set_tensor(f"new_{name}", buf1)
            req_b.set_tensor(name, buf1)
            req_b.set_tensor(f"new_{name}", buf0)
        reqs = (req_a, req_b)
        self._ov_reqs = reqs
        self.frame = frame
        self.last_mask = lambda: np.array(reqs[(self.calls - 1) % 2].get_tensor("mask").data, copy=True)

        def call():
            reqs[self.calls % 2].infer()
        return call

    def runtime_latency_ms(self) -> float | None:
        """The runtime's own timing of the last call, where it has one (OpenVINO: InferRequest.latency,
        measured around the inference in C++, what benchmark_app reports); else None."""
        if self.runtime != "openvino":
            return None
        reqs = getattr(self, "_ov_reqs", None)
        req = reqs[(self.calls - 1) % 2] if reqs else self._ov_req
        return req.latency

    def __call__(self):
        if self._events is not None:          # torch on a GPU: wait for the call's work, time it by events too
            start, end = self._events
            start.record()
            self._call()
            end.record()
            end.synchronize()
            self.last_event_ms = start.elapsed_time(end)
        else:
            self._call()
        self.calls += 1


def _no_grad(torch, fn):
    """`fn` run without autograd (a deployed model records no graph)."""
    def call():
        with torch.no_grad():
            return fn()
    return call


def _zeros_for(name: str, dims: list) -> np.ndarray:
    # the growing attention cache starts empty; every other state has a fixed shape
    return np.zeros([0 if not isinstance(d, int) or d < 0 else d for d in dims], np.float32)


def _step_inputs(inputs) -> tuple[list, list]:
    names = [(inputs[0].name, inputs[0].shape[1])]
    init = []
    for i in inputs[1:]:
        names.append((i.name, None))
        init.append(_zeros_for(i.name, list(i.shape)))
    return names, init


def _step_inputs_ov(ins) -> tuple[list, list]:
    names = [(ins[0][0], ins[0][1][1].get_length())]
    init = []
    for name, shape in ins[1:]:
        names.append((name, None))
        init.append(_zeros_for(name, [d.get_length() if d.is_static else -1 for d in shape]))
    return names, init


# -- protocol -------------------------------------------------------------------------------------
def timed(runner: Runner, proto: Protocol) -> tuple[np.ndarray, np.ndarray | None, LoadMeter]:
    """-> (wall ms per call, the runtime's own ms per call or None, load); the CUDA-event ms per call of a torch
    GPU runner are left in `runner.event_ms` (None for other runners)."""
    for _ in range(proto.warmup):
        runner()
    wall, own, events = [], [], []
    with LoadMeter() as load:
        t_end = time.perf_counter() + proto.min_s
        while len(wall) < proto.runs or time.perf_counter() < t_end:
            t0 = time.perf_counter()
            runner()
            wall.append(time.perf_counter() - t0)
            own.append(runner.runtime_latency_ms())
            events.append(runner.last_event_ms)
    own_ms = None if own[0] is None else np.array(own, dtype=float)
    runner.event_ms = None if events[0] is None else np.array(events, dtype=float)
    return np.array(wall) * 1e3, own_ms, load


def measure(runtime: str, mode: str, threads: int, *, net=None, onnx: Path | None = None, ir: Path | None = None,
            hop: int = 256, in_channels: int = 1, protocol: Protocol | None = None, precision: str = "fp32",
            batch: int = 1) -> Measurement:
    """Measure one (runtime, mode, threads, precision, batch) on this machine with the protocol above."""
    proto = protocol or Protocol()
    if mode not in ("hop", "offline", "block"):
        raise ValueError("mode is 'hop', 'offline' or 'block'")
    rss0 = _status_kib("VmRSS")
    peak_ok = _reset_peak_rss()
    torch_gpu = runtime in TORCH_GPU and runtime_problem(runtime) is None
    if torch_gpu:                     # the previous variant of this process gone first: a clean allocator peak
        import gc

        import torch
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    runner = Runner(runtime, mode, threads, net=net, onnx=onnx, ir=ir, audio_s=proto.audio_s,
                     reset_hops=proto.reset_hops, in_channels=in_channels, hop=hop, precision=precision, batch=batch)
    audio_ms = runner.frames * hop / SR * 1e3 if mode == "offline" else hop / SR * 1e3
    attempts = 0
    while True:
        attempts += 1
        wall_ms, own_ms, load = timed(runner, proto)
        event_ms = runner.event_ms
        t_ms = own_ms if own_ms is not None else wall_ms
        busy = load.other_load is not None and load.other_load > proto.busy_load
        if not busy or attempts >= 2:
            break
    peak = _status_kib("VmHWM") if peak_ok else None
    p50, p90, p99 = (float(np.percentile(t_ms, q)) for q in (50, 90, 99))
    event_p50 = float(np.percentile(event_ms, 50)) if event_ms is not None else None
    cfg = runtime_config(runtime, threads)
    if torch_gpu:                     # "fp32" convolutions may run as TF32 on Ampere and later (torch's defaults)
        cfg.update(cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    if getattr(runner, "providers", None):
        cfg["providers"] = runner.providers
    return Measurement(
        runtime=runtime, version=runtime_version(runtime), mode=mode, threads=threads, device=runner.device,
        runs=len(t_ms), warmup=proto.warmup, audio_ms_per_call=round(audio_ms, 3),
        p50_ms=p50, p90_ms=p90, p99_ms=p99, min_ms=float(t_ms.min()), max_ms=float(t_ms.max()),
        mean_ms=float(t_ms.mean()), rtf=p50 / (audio_ms * batch), realtime=(p90 < audio_ms) if mode == "hop" else None,
        peak_rss_mib=None if peak is None or rss0 is None else round((peak - rss0) / 1024, 1),
        other_load=load.other_load, busy=busy, attempts=attempts,
        timer="runtime (InferRequest.latency)" if own_ms is not None else (
            "wall (perf_counter around the call, after a CUDA event on its end was reached)" if torch_gpu
            else "wall (perf_counter around the call)"),
        wall_p50_ms=float(np.percentile(wall_ms, 50)), fingerprint=fingerprint(), runtime_config=cfg,
        precision=precision, batch=batch, event_p50_ms=event_p50, p10_ms=float(np.percentile(t_ms, RUN_QUANTILE)),
        timer_agreement=None if event_p50 is None else p50 / event_p50 - 1,
        peak_device_mib=round(torch.cuda.max_memory_allocated() / 2 ** 20, 1) if torch_gpu else None,
        device_mib_nvml=process_device_mib() if is_gpu(runtime) else None,
        gpu=gpu_fingerprint() if is_gpu(runtime) else None)


def threads_available() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


# -- isolation: one measurement per fresh process ----------------------------------------------------
def measure_isolated(runtime: str, mode: str, threads: int, *, ckpt: Path | None = None, onnx: Path | None = None,
                     ir: Path | None = None, hop: int = 256, in_channels: int = 1,
                     protocol: Protocol | None = None, timeout_s: float = 600, precision: str = "fp32",
                     batch: int = 1) -> Measurement:
    """`measure` in a child process: clean peak memory, no state shared with earlier measurements."""
    spec = _spec(runtime, mode, threads, ckpt, onnx, ir, hop, in_channels, protocol, precision, batch)
    r = _run_child({"batch": [spec]}, timeout_s, f"measuring {runtime} ({mode}, {threads} threads)")
    return Measurement(**json.loads(r.stdout.strip().splitlines()[-1]))


def measure_isolated_many(specs: list[dict], timeout_s: float = 600) -> list[Measurement | str]:
    """Several measurements of one model and runtime in one child process (each spec: `measure`'s keyword
    arguments plus ckpt, onnx, ir), in order; a measurement that fails gives its one-line reason instead (the
    others go on). For GPU variants, where starting a CUDA process costs more than a measurement."""
    full = [_spec(**s) for s in specs]
    r = _run_child({"batch": full, "keep_going": True}, timeout_s * len(full),
                   f"measuring {specs[0]['runtime']} ({len(specs)} variants)")
    out = []
    for line in r.stdout.strip().splitlines()[-len(full):]:
        d = json.loads(line)
        out.append(d["error"] if "error" in d else Measurement(**d))
    return out


def _spec(runtime, mode, threads, ckpt=None, onnx=None, ir=None, hop=256, in_channels=1, protocol=None,
          precision="fp32", batch=1) -> dict:
    return {"runtime": runtime, "mode": mode, "threads": threads, "ckpt": ckpt and str(ckpt),
            "onnx": onnx and str(onnx), "ir": ir and str(ir), "hop": hop, "in_channels": in_channels,
            "protocol": asdict(protocol or Protocol()), "precision": precision, "batch": batch}


def _run_child(spec: dict, timeout_s: float, what: str):
    import subprocess
    import sys
    import tempfile
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        r = subprocess.run([sys.executable, "-m", "hwkd.hw.measure", f.name], capture_output=True, text=True,
                           timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise HwkdError(f"{what} took over {timeout_s:.0f} s", "use --protocol quick or a smaller model") from None
    finally:
        os.unlink(f.name)
    if r.returncode != 0:
        tail = (r.stderr.strip().splitlines() or ["no output"])[-1]
        raise HwkdError(f"{what} failed: {tail}", "check that the runtime is installed and the exported model loads")
    return r


def _measure_spec(spec: dict) -> Measurement:
    net = None
    if spec["runtime"].startswith("torch") or (spec["mode"] == "offline" and spec.get("batch", 1) > 1):
        from hwkd.models.checkpoint import load_model
        if not spec.get("ckpt"):
            raise HwkdError(f"{spec['runtime']} {spec['mode']} batch {spec.get('batch', 1)} needs the model's "
                            "checkpoint", "give ckpt")
        net, _ = load_model(spec["ckpt"])
    return measure(spec["runtime"], spec["mode"], spec["threads"], net=net,
                   onnx=spec.get("onnx") and Path(spec["onnx"]), ir=spec.get("ir") and Path(spec["ir"]),
                   hop=spec["hop"], in_channels=spec["in_channels"], protocol=Protocol(**spec["protocol"]),
                   precision=spec.get("precision", "fp32"), batch=spec.get("batch", 1))


def _main(spec_path: str) -> None:
    """One spec -> one JSON line; {"batch": [specs]} -> one JSON line per spec, in order; with "keep_going", a
    spec that fails prints {"error": its one-line reason} and the next one runs."""
    spec = json.loads(Path(spec_path).read_text())
    # a list under "batch" is several specs; a spec's own "batch" is its batch size
    for one in spec["batch"] if isinstance(spec.get("batch"), list) else [spec]:
        try:
            line = _measure_spec(one).as_dict()
        except Exception as exc:
            if not spec.get("keep_going"):
                raise
            line = {"error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    import sys
    try:
        _main(sys.argv[1])
    except HwkdError as exc:
        raise SystemExit(str(exc)) from None
