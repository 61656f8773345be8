"""Export the network core (STFT/iSTFT stay outside) to ONNX and OpenVINO IR, with parity checks.

- offline model: features [1, 2M, T, 257] -> mask [1, 2, T, 257], dynamic T (TorchScript exporter:
  the dynamo exporter bakes the length into Reshape nodes, see ../shared/spec/measurement.md);
- streaming step model (causal models): one frame plus every state in, the mask frame plus every new
  state out; states are the dilated-dense caches, the time-GRU states and, with causal time
  attention, the past attention inputs (that one grows by a frame per hop);
- OpenVINO IR converted from the ONNX file.

Every export is checked: torch vs ONNX Runtime vs OpenVINO at two or more lengths (offline) and over a
run of frames (streaming); a mismatch above `tol` raises `ExportMismatch` and nothing is kept.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from hwkd.errors import HwkdError
from hwkd.hw.runtimes import ort_session, ov_compiled
from hwkd.models.dpdcrn import DPDCRN, N_BINS
from hwkd.models.streaming import StepModel, state_names

OPSET = 17
TOL = 1e-3            # max abs difference of mask values (fp32 runtimes reorder sums; seen ~1e-5)


class ExportMismatch(HwkdError):
    pass


# -- export -----------------------------------------------------------------------------------------
@dataclass
class Exported:
    offline_onnx: Path
    offline_ir: Path | None
    step_onnx: Path | None
    step_ir: Path | None
    parity: dict
    refused: dict


def _export_onnx(module: nn.Module, args: tuple, path: Path, input_names, output_names, dynamic_axes) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, args, str(path), input_names=input_names, output_names=output_names,
                          dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def export_offline_onnx(net: DPDCRN, path: Path, batch_axis: bool = False) -> Path:
    """`batch_axis`: the batch axis dynamic too (GPU batch measurements); hwkd's deployable export keeps batch 1."""
    x = torch.randn(2 if batch_axis else 1, 2 * net.cfg.in_channels, 20, N_BINS)
    axes = {2: "frames", **({0: "batch"} if batch_axis else {})}
    _export_onnx(net.eval(), (x,), path, ["features"], ["mask"], {"features": axes, "mask": dict(axes)})
    return path


def export_step_onnx(net: DPDCRN, path: Path) -> Path:
    step = StepModel(net.eval()).eval()
    states = step.initial_states()
    names = state_names(net)
    frame = torch.randn(1, 2 * net.cfg.in_channels, 1, N_BINS)
    # give a growing attention cache a non-empty example so its time axis is traced as dynamic
    states = [torch.randn(s.shape[0], 3, s.shape[2]) if n.startswith("attn_kv") else s for s, n in zip(states, names)]
    dyn = {n: {1: "past"} for n in names if n.startswith("attn_kv")}
    dyn.update({f"new_{n}": {1: "past_plus_1"} for n in names if n.startswith("attn_kv")})
    _export_onnx(step, (frame, *states), path, ["frame", *names], ["mask", *[f"new_{n}" for n in names]], dyn)
    return path


def to_openvino(onnx_path: Path, xml_path: Path) -> Path:
    import openvino as ov
    model = ov.convert_model(str(onnx_path))
    ov.save_model(model, str(xml_path), compress_to_fp16=False)
    return xml_path


# -- parity -----------------------------------------------------------------------------------------
def check_offline(net: DPDCRN, onnx_path: Path, ir_path: Path | None, lengths=(37, 101)) -> dict:
    """Max abs difference of the mask vs torch, per runtime and length: {"onnxruntime": {37: .., 101: ..}, ..}."""
    sess = ort_session(onnx_path)
    comp = ov_compiled(ir_path) if ir_path else None
    out: dict = {"onnxruntime": {}, **({"openvino": {}} if comp is not None else {})}
    g = torch.Generator().manual_seed(0)
    for t in lengths:
        x = torch.randn(1, 2 * net.cfg.in_channels, t, N_BINS, generator=g)
        with torch.no_grad():
            ref = net.eval()(x).numpy()
        got = {"onnxruntime": sess.run(None, {"features": x.numpy()})[0]}
        if comp is not None:
            got["openvino"] = comp(x.numpy())[0]
        for rt, y in got.items():
            out[rt][t] = float(np.abs(y - ref).max()) if y.shape == ref.shape else float("inf")
    return out


def check_step(net: DPDCRN, onnx_path: Path, ir_path: Path | None, frames=24) -> dict:
    """Hop-by-hop runs of the step model vs the offline torch forward: max abs difference per runtime."""
    step = StepModel(net.eval()).eval()
    names = state_names(net)
    sess = ort_session(onnx_path)
    x = torch.randn(1, 2 * net.cfg.in_channels, frames, N_BINS, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = net(x).numpy()
    runners = {"onnxruntime": lambda feeds: sess.run(None, feeds)}
    if ir_path:
        comp = ov_compiled(ir_path)
        # copies: OpenVINO's result arrays are views of buffers that the next call overwrites
        runners["openvino"] = lambda feeds: [np.array(v, copy=True) for v in comp(feeds).values()]
    err = {}
    with torch.no_grad():
        st_t = step.initial_states()
        torch_out = []
        for t in range(frames):
            m, *st_t = step(x[:, :, t:t + 1], *st_t)
            torch_out.append(m.numpy())
    err["torch"] = float(np.abs(np.concatenate(torch_out, 2) - ref).max())
    for rt, run in runners.items():
        states = [s.numpy() for s in step.initial_states()]
        outs = []
        for t in range(frames):
            res = run({"frame": np.ascontiguousarray(x[:, :, t:t + 1].numpy()), **dict(zip(names, states))})
            outs.append(res[0])
            states = list(res[1:])
        err[rt] = float(np.abs(np.concatenate(outs, 2) - ref).max())
    return err


def _worst(v) -> float:
    return max(v.values()) if isinstance(v, dict) else v


def export_all(net: DPDCRN, out_dir: Path, openvino: bool = True, streaming: bool | None = None,
               tol: float = TOL) -> Exported:
    """Offline ONNX (+IR) always; the step model (+IR) when the model is causal (or streaming=True).

    An OpenVINO IR whose outputs differ from torch by more than `tol` is refused: deleted, with the reason
    in `refused`. A mismatching ONNX file raises `ExportMismatch` (nothing is deployable then).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    net = net.eval()
    streaming = net.cfg.causal if streaming is None else streaming
    refused: dict = {}

    def judge(kind: str, onnx_path: Path, ir_path: Path | None, parity: dict):
        for rt, v in parity.items():
            if rt != "torch" and not _worst(v) <= tol:
                refused[f"{kind}-{rt}"] = f"max abs difference {_worst(v):.3g} > {tol:g}"
        if f"{kind}-onnxruntime" in refused:
            onnx_path.unlink(missing_ok=True)
            raise ExportMismatch(f"the exported {kind} ONNX model differs from torch "
                                 f"({refused[f'{kind}-onnxruntime']})",
                                 "the export is refused; report the model config")
        if ir_path is not None and f"{kind}-openvino" in refused:
            ir_path.unlink()
            ir_path.with_suffix(".bin").unlink(missing_ok=True)
            return None
        return ir_path

    off = export_offline_onnx(net, out_dir / "offline.onnx")
    off_ir = to_openvino(off, out_dir / "offline.xml") if openvino else None
    parity = {"offline": check_offline(net, off, off_ir)}
    off_ir = judge("offline", off, off_ir, parity["offline"])
    step = step_ir = None
    if streaming:
        step = export_step_onnx(net, out_dir / "step.onnx")
        step_ir = to_openvino(step, out_dir / "step.xml") if openvino else None
        parity["step"] = check_step(net, step, step_ir)
        step_ir = judge("step", step, step_ir, parity["step"])
    return Exported(off, off_ir, step, step_ir, parity, refused)
