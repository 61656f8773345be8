"""ONNX Runtime and OpenVINO settings and sessions: one configuration for every hwkd session, parity checks
(hwkd.hw.export, hwkd.hw.int8) and timing (hwkd.hw.measure) alike, so a checked export is the graph the timing
runs under the same settings. (Parity used OpenVINO's LATENCY performance hint before; with NUM_STREAMS 1 and
f32 precision set explicitly it is the same single-stream, full-precision execution.)"""

from __future__ import annotations

import os
import threading
from importlib import metadata
from pathlib import Path

# torch-cuda-graph: torch on CUDA with each call captured once as a CUDA graph and replayed (one launch per call);
# onnxruntime-trt: ONNX Runtime's TensorRT provider (CUDA, then CPU, for what TensorRT does not take)
RUNTIMES = ("torch", "onnxruntime", "openvino", "torch-cuda", "torch-cuda-graph", "onnxruntime-cuda", "onnxruntime-trt")
PRECISIONS = ("fp32", "fp16")     # fp16: GPU runtimes only (the CPU runtimes here compute in fp32)
MODES = ("hop", "offline")


def OV_CONFIG(threads: int) -> dict:  # noqa: N802
    return {"NUM_STREAMS": 1, "INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}


def ORT_CONFIG(threads: int) -> dict:  # noqa: N802
    """ONNX Runtime CPU settings of every hwkd measurement. Spin-waiting of the intra-op pool is off: on a
    shared host a spinning second thread made the per-hop latency of one model multi-modal (1.76, 2.00
    or 2.45 ms at 2 threads, from session to session and within one), without spinning it held 2.00 ms."""
    return {"intra_op_num_threads": threads, "inter_op_num_threads": 1, "session.intra_op.allow_spinning": "0"}


def ort_options(threads: int):
    import onnxruntime as ort
    so = ort.SessionOptions()
    cfg = ORT_CONFIG(threads)
    so.intra_op_num_threads, so.inter_op_num_threads = cfg["intra_op_num_threads"], cfg["inter_op_num_threads"]
    so.log_severity_level = 3
    so.add_session_config_entry("session.intra_op.allow_spinning", cfg["session.intra_op.allow_spinning"])
    return so


def runtime_config(runtime: str, threads: int) -> dict:
    if runtime == "openvino":
        return OV_CONFIG(threads)
    if runtime == "onnxruntime":
        return ORT_CONFIG(threads)
    return {"threads": threads}


def runtime_version(runtime: str) -> str:
    pkgs = {"openvino": ("openvino",)}.get(runtime) or (
        ("torch",) if runtime.startswith("torch") else ("onnxruntime", "onnxruntime-gpu"))
    for pkg in pkgs:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    return "not installed"


def ort_session(path: Path, threads: int = 1):
    """An ONNX Runtime CPU session of a model file with hwkd's settings."""
    import onnxruntime as ort
    return ort.InferenceSession(str(path), ort_options(threads), providers=["CPUExecutionProvider"])


_OV_CORES: dict[int, object] = {}
_OV_LOCK = threading.Lock()


def ov_core():
    """The process's one OpenVINO Core, kept to its end. Each Core's CPU plugin installs its own alternate signal
    stack on the calling thread and, when it is destroyed, puts back the one it found: Cores destroyed out of
    order (as garbage collection drops them) leave the thread on a stack already unmapped, and the next Python
    signal handler run there (SIGCHLD of a loader process, Ctrl-C) crashed the process (CI, 2026-12-01). One
    Core, created once, also saves the plugin's start-up on every measurement. Keyed by process: a child forked
    after it was made gets its own (the parent's plugin threads do not exist there), the inherited one kept
    until the child's own is gone."""
    import openvino as ov
    global _OV_CORES
    pid = os.getpid()
    with _OV_LOCK:
        if pid not in _OV_CORES:       # the newest first: at exit the dict is cleared in order, newest to oldest
            _OV_CORES = {pid: ov.Core(), **_OV_CORES}
        return _OV_CORES[pid]


def ov_compiled(path: Path, threads: int = 1):
    """An OpenVINO CPU compiled model of an IR (or ONNX) file with hwkd's settings."""
    return ov_core().compile_model(str(path), "CPU", OV_CONFIG(threads))
