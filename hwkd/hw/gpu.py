"""The GPU side of a measurement: which GPU runtimes this machine can run (and why not), the device fingerprint
(GPU model, driver, CUDA, cuDNN, runtime versions) and the device memory a process holds.

Stdlib-only at import (a remote device gets this file with hw/measure.py); torch, onnxruntime and NVML
(nvidia-ml-py) are imported where they are asked about.
"""

from __future__ import annotations

import os
from importlib import metadata

TORCH_GPU = ("torch-cuda", "torch-cuda-graph")
ORT_GPU = {"onnxruntime-cuda": "CUDAExecutionProvider", "onnxruntime-trt": "TensorrtExecutionProvider"}
GPU_RUNTIMES = TORCH_GPU + tuple(ORT_GPU)


def is_gpu(runtime: str) -> bool:
    return runtime in GPU_RUNTIMES


def runtime_problem(runtime: str) -> str | None:
    """Why `runtime` cannot run on this machine (one line naming the fix), or None when it can."""
    if runtime in ("openvino", "onnxruntime"):
        from importlib.util import find_spec
        return None if find_spec(runtime) else f"{runtime} is not installed here (pip install {runtime})"
    if runtime in TORCH_GPU:
        try:
            import torch
        except ImportError:
            return "torch is not installed"
        if not torch.cuda.is_available():
            return (f"{runtime}: torch {torch.__version__} sees no CUDA device (a CPU build, or no NVIDIA GPU); "
                    "measure on a machine with an NVIDIA GPU and a CUDA build of torch")
        return None
    if runtime in ORT_GPU:
        try:
            import onnxruntime as ort
        except ImportError:
            return "onnxruntime is not installed"
        provider = ORT_GPU[runtime]
        if provider not in ort.get_available_providers():
            wheel = "onnxruntime-gpu" if runtime == "onnxruntime-cuda" else "onnxruntime-gpu with TensorRT's libraries"
            return (f"{runtime}: this onnxruntime ({ort.__version__}) has no {provider} (it has "
                    f"{', '.join(ort.get_available_providers())}); install {wheel} on a machine with an NVIDIA GPU")
        return None
    return None


def _nvml():
    try:
        import pynvml
        pynvml.nvmlInit()
        return pynvml
    except Exception:            # no nvidia-ml-py, no driver, or a sandbox without NVML
        return None


def nvml_handle(nv):
    """NVML's handle of the GPU that CUDA calls device 0 in this process (the one hwkd times). NVML numbers every
    GPU of the machine and ignores CUDA_VISIBLE_DEVICES, so index 0 can be another GPU on a multi-GPU machine:
    matched by UUID through torch where torch has started CUDA, else by the first entry of CUDA_VISIBLE_DEVICES
    (a GPU-/MIG- UUID, or an index: NVML's order is PCI bus order, CUDA's only with CUDA_DEVICE_ORDER=PCI_BUS_ID),
    else 0."""
    import sys
    torch = sys.modules.get("torch")
    # only where torch has started CUDA already: asking it would start CUDA in a process that times onnxruntime
    if torch is not None and torch.cuda.is_initialized():
        try:
            uuid = str(torch.cuda.get_device_properties(0).uuid)      # bare hex; NVML names GPUs and MIG slices
            for name in ((uuid,) if uuid.startswith(("GPU-", "MIG-")) else (f"GPU-{uuid}", f"MIG-{uuid}")):
                try:
                    return nv.nvmlDeviceGetHandleByUUID(name)
                except Exception:
                    pass
        except Exception:        # an older torch without .uuid
            pass
    first = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
    if first.startswith(("GPU-", "MIG-")):
        return nv.nvmlDeviceGetHandleByUUID(first)
    return nv.nvmlDeviceGetHandleByIndex(int(first) if first.isdigit() else 0)


def gpu_fingerprint() -> dict | None:
    """The first CUDA device as far as timings go, or None where there is none: model, memory, compute
    capability, driver, CUDA runtime and cuDNN of torch, onnxruntime's version and providers, TensorRT."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    p = torch.cuda.get_device_properties(0)
    fp = {"gpu": p.name, "gpu_memory_gib": round(p.total_memory / 2 ** 30, 1),
          "compute_capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count,
          "torch": torch.__version__, "torch_cuda": torch.version.cuda,
          "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
          "driver": None, "gpu_clock_mhz": None}
    nv = _nvml()
    if nv is not None:
        try:
            fp["driver"] = _text(nv.nvmlSystemGetDriverVersion())
            h = nvml_handle(nv)
            fp["gpu_clock_mhz"] = nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM)
            fp["gpu_max_clock_mhz"] = nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM)
        except Exception:
            pass
    for pkg in ("onnxruntime", "onnxruntime-gpu", "tensorrt"):
        try:
            fp[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            pass
    try:
        import onnxruntime as ort
        fp["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    return fp


def _text(v) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


def process_device_mib() -> float | None:
    """Device memory this process holds on CUDA's device 0 (NVML's per-process figure: every allocator and the
    CUDA context included), or None where NVML cannot tell (no nvidia-ml-py, or a sandbox that hides it)."""
    nv = _nvml()
    if nv is None:
        return None
    try:
        h = nvml_handle(nv)
        for proc in nv.nvmlDeviceGetComputeRunningProcesses(h):
            if proc.pid == os.getpid() and proc.usedGpuMemory is not None:
                return round(proc.usedGpuMemory / 2 ** 20, 1)
    except Exception:
        pass
    return None
