"""The GPU column of the lab: measurement variants (precision, batch, mode), GPU runtimes that are absent
here (rows that say why), the fp16 quality delta, benchmarks/gpu_lab.py's summary. The CUDA paths themselves
(torch eager and CUDA graphs, CUDA events, device memory) run where torch sees a GPU and skip elsewhere."""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hwkd.errors import HwkdError
from hwkd.hw.export import export_offline_onnx
from hwkd.hw.gpu import gpu_fingerprint, runtime_problem
from hwkd.hw.measure import Protocol, measure, measure_isolated, measure_isolated_many, variant_problem
from hwkd.hw.profile import bench_rows, profile
from hwkd.hw.targets import load_target
from hwkd.models.checkpoint import save_checkpoint
from hwkd.models.registry import create_model

from conftest import run_cli

TINY = dict(channels=8, layers=1, depth=2, heads=2)
TINY_CAUSAL = dict(TINY, causal=True, time_attention="none")
QUICK = Protocol(warmup=2, runs=8, min_s=0.01)
CUDA = torch.cuda.is_available()
BENCH = Path(__file__).resolve().parents[1] / "benchmarks"


def _lab():
    sys.path.insert(0, str(BENCH))
    spec = importlib.util.spec_from_file_location("gpu_lab", BENCH / "gpu_lab.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("args,why", [
    (("torch", "hop", "fp16", 1), "fp16 is measured on GPU runtimes only"),
    (("onnxruntime", "hop", "fp32", 4), "the exported step graph carries one stream"),
    (("openvino", "offline", "fp32", 4), "OpenVINO IR is measured at batch 1"),
    (("torch", "offline", "fp64", 1), "unknown precision"),
    (("torch", "stream", "fp32", 1), "unknown mode"),
    (("torch", "offline", "fp32", 0), "batch must be a whole number"),
    (("tensorflow", "offline", "fp32", 1), "unknown runtime"),
])
def test_variants_hwkd_does_not_measure_say_why(args, why):
    assert why in variant_problem(*args)


def test_variants_hwkd_measures():
    assert variant_problem("torch", "hop", "fp32", 8) is None
    assert variant_problem("torch-cuda", "offline", "fp16", 64) is None
    assert variant_problem("onnxruntime", "offline", "fp32", 4) is None
    assert variant_problem("torch-cuda-graph", "hop", "fp32", 1) is None
    growing = create_model(dict(TINY, causal=True, time_attention="causal")).cfg
    assert "attention cache grows" in variant_problem("torch-cuda-graph", "hop", "fp32", 1, growing)
    assert "cumulative norms" in variant_problem("onnxruntime-cuda", "offline", "fp16", 1,
                                                 create_model(TINY_CAUSAL).cfg)
    steered = create_model(dict(TINY, in_channels=4, mask_mode="steered")).cfg          # offline, frame norms
    assert "steered beam's energy" in variant_problem("onnxruntime-cuda", "offline", "fp16", 1, steered)
    assert variant_problem("onnxruntime-cuda", "offline", "fp32", 1, steered) is None
    assert "cannot stream" in variant_problem("torch", "hop", "fp32", 1, create_model(TINY).cfg)


@pytest.mark.skipif(CUDA, reason="checks what a machine without a GPU reports")
def test_gpu_runtimes_absent_here_name_the_fix():
    assert "sees no CUDA device" in runtime_problem("torch-cuda")
    assert "install onnxruntime-gpu" in runtime_problem("onnxruntime-cuda")
    assert "TensorrtExecutionProvider" in runtime_problem("onnxruntime-trt")
    assert runtime_problem("onnxruntime") is None and gpu_fingerprint() is None
    with pytest.raises(HwkdError, match="sees no CUDA device"):
        measure("torch-cuda", "offline", 1, net=create_model(TINY), protocol=QUICK)


class FakeNvml:
    """NVML's handle lookups, the handle naming how it was found; `known`: the UUIDs NVML knows (None: any)."""

    def __init__(self, known=None):
        self.known = known

    def nvmlDeviceGetHandleByIndex(self, i):  # noqa: N802
        return ("index", i)

    def nvmlDeviceGetHandleByUUID(self, u):  # noqa: N802
        if self.known is not None and u not in self.known:
            raise RuntimeError("NVML_ERROR_NOT_FOUND")
        return ("uuid", u)


@pytest.mark.parametrize("visible, want", [(None, ("index", 0)), ("3,1", ("index", 3)),
                                           ("GPU-5c1e-aa", ("uuid", "GPU-5c1e-aa")), ("MIG-9f", ("uuid", "MIG-9f"))])
def test_nvml_reads_the_gpu_cuda_times(monkeypatch, visible, want):
    """NVML numbers every GPU of the machine and ignores CUDA_VISIBLE_DEVICES: the handle follows CUDA's device 0
    (here, with no CUDA device for torch to name, through CUDA_VISIBLE_DEVICES)."""
    from hwkd.hw.gpu import nvml_handle

    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    if torch.cuda.is_available():
        pytest.skip("a CUDA device: the handle is matched by torch's UUID instead")
    assert nvml_handle(FakeNvml()) == want


def test_nvml_follows_torchs_device_when_torch_has_started_cuda(monkeypatch):
    """Where torch has started CUDA, its device 0 is matched in NVML by UUID (torch prints it bare; NVML names a
    whole GPU GPU-… and a MIG slice MIG-…); where it has not, torch is not asked (it would start CUDA)."""
    import types

    from hwkd.hw.gpu import nvml_handle

    started = {"yes": True}
    cuda = types.SimpleNamespace(is_initialized=lambda: started["yes"],
                                 get_device_properties=lambda i: types.SimpleNamespace(uuid="5c1e-aa"))
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(cuda=cuda))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    assert nvml_handle(FakeNvml({"GPU-5c1e-aa"})) == ("uuid", "GPU-5c1e-aa")
    assert nvml_handle(FakeNvml({"MIG-5c1e-aa"})) == ("uuid", "MIG-5c1e-aa")
    assert nvml_handle(FakeNvml(set())) == ("index", 2)          # NVML does not know it: CUDA_VISIBLE_DEVICES
    started["yes"] = False
    assert nvml_handle(FakeNvml({"GPU-5c1e-aa"})) == ("index", 2)


def test_batches_cover_all_their_audio(tmp_path):
    """Batch B: B streams per hop call and B utterances per offline call, the RTF over all of that audio;
    ONNX Runtime's offline batch runs a graph exported with a batch axis."""
    net = create_model(TINY_CAUSAL)
    hop = measure("torch", "hop", 1, net=net, protocol=QUICK, batch=3)
    assert hop.batch == 3 and hop.audio_ms_per_call == 16.0 and hop.rtf == pytest.approx(hop.p50_ms / (16.0 * 3))
    off = measure("torch", "offline", 1, net=net, protocol=QUICK, batch=2)
    assert off.rtf == pytest.approx(off.p50_ms / (off.audio_ms_per_call * 2)) and off.precision == "fp32"
    save_checkpoint(tmp_path / "m.pt", net)
    onnx = export_offline_onnx(net, tmp_path / "offline.onnx")
    m = measure_isolated("onnxruntime", "offline", 1, ckpt=tmp_path / "m.pt", onnx=onnx, protocol=QUICK, batch=2)
    assert m.batch == 2 and m.runs >= 8 and m.peak_device_mib is None and m.gpu is None


@pytest.mark.parametrize("form", [{}, dict(in_channels=4, mask_mode="steered")])
def test_half_precision_cumulative_norms_stay_finite_over_long_streams(form):
    """fp16 streaming: a cumulative norm's count passes fp16's 65504 after 65504 / (C/2 * 64) hops (256 here), a
    steered beam's energy sum sooner; running sums are kept in fp32, so 400 hops and 400 offline frames stay finite
    and close to fp32."""
    from hwkd.models.streaming import StepModel, fp32_state, state_names
    cfg = dict(TINY_CAUSAL, **form)
    net = create_model(cfg).eval()
    assert net.cumulative_norms()
    x = torch.randn(1, 2 * net.cfg.in_channels, 400, 257, generator=torch.Generator().manual_seed(0))
    if form:                    # a plane wave (Y, Z, X = u·W), so that the steered beam has a direction to lose
        x = x[:, :2].repeat(1, 4, 1, 1) * torch.tensor([1.0, 1.0, 0.6, 0.6, 0.0, 0.0, 0.8, 0.8])[None, :, None, None]
    half = create_model(cfg).eval()
    half.load_state_dict(net.state_dict())
    half = half.half()
    with torch.no_grad():
        ref = net(x)
        off = half(x.half()).float()
        step = StepModel(half).eval()
        states = [s.float() if fp32_state(n) else s.half() for s, n in zip(step.initial_states(), state_names(half))]
        assert sum(map(fp32_state, state_names(half))) == len(half.cumulative_norms()) + ("mask_mode" in form)
        hops = []
        for t in range(400):
            m, *new = step(x[:, :, t:t + 1].half(), *states)
            for s, n in zip(states, new):          # as a CUDA graph's buffers (measure.py): copied in place, so a
                s.copy_(n)                        # running sum held in fp16 would round and overflow there
            hops.append(m.float())
    hop = torch.cat(hops, 2)
    assert torch.isfinite(off).all() and torch.isfinite(hop).all()
    assert (off - ref).abs().max() < 0.05 and (hop - ref).abs().max() < 0.05


def test_batch_axis_export_matches_torch(tmp_path):
    import onnxruntime as ort
    net = create_model(TINY).eval()
    path = export_offline_onnx(net, tmp_path / "b.onnx", batch_axis=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(3, 2, 11, 257)
    with torch.no_grad():
        ref = net(x).numpy()
    assert np.abs(sess.run(None, {"features": x.numpy()})[0] - ref).max() < 1e-3


def test_fp16_conversion_for_onnxruntime_cuda(tmp_path):
    """onnxruntime-cuda fp16 runs the graph converted by onnxruntime's own float16 converter: weights in fp16,
    inputs and outputs fp32 (checked here on the file; the CUDA session runs where the provider is). The
    converted file lives in the runner's scratch folder, which goes with the runner."""
    import gc

    import onnx

    from hwkd.hw.measure import Runner
    path = export_offline_onnx(create_model(TINY), tmp_path / "offline.onnx")
    runner = Runner("onnxruntime", "offline", 1, onnx=path)
    out = runner._fp16_onnx(path)
    m = onnx.load(str(out))
    del runner
    gc.collect()
    assert not out.parent.exists()
    f16, f32 = onnx.TensorProto.FLOAT16, onnx.TensorProto.FLOAT
    assert {i.type.tensor_type.elem_type for i in list(m.graph.input) + list(m.graph.output)} == {f32}
    weights = [t for t in m.graph.initializer if len(t.dims) >= 2]
    assert weights and all(t.data_type == f16 for t in weights)


def test_many_variants_in_one_process_keep_going(tmp_path):
    net = create_model(TINY_CAUSAL)
    save_checkpoint(tmp_path / "m.pt", net)
    specs = [dict(runtime="torch", mode="hop", threads=1, ckpt=tmp_path / "m.pt", protocol=QUICK),
             dict(runtime="torch", mode="hop", threads=1, ckpt=tmp_path / "m.pt", protocol=QUICK, precision="fp16"),
             dict(runtime="torch", mode="offline", threads=1, ckpt=tmp_path / "m.pt", protocol=QUICK, batch=2)]
    a, b, c = measure_isolated_many(specs)
    assert a.mode == "hop" and a.batch == 1
    assert isinstance(b, str) and "fp16 is measured on GPU runtimes only" in b
    assert c.mode == "offline" and c.batch == 2


def test_a_single_spec_file_with_its_batch_size(tmp_path):
    """The worker's file format: a list under "batch" is several specs, a spec's own "batch" its batch size."""
    import subprocess
    from dataclasses import asdict
    net = create_model(TINY)
    save_checkpoint(tmp_path / "m.pt", net)
    spec = {"runtime": "torch", "mode": "offline", "threads": 1, "ckpt": str(tmp_path / "m.pt"), "hop": 256,
            "in_channels": 1, "protocol": asdict(QUICK), "precision": "fp32", "batch": 2}
    (tmp_path / "s.json").write_text(json.dumps(spec))
    r = subprocess.run([sys.executable, "-m", "hwkd.hw.measure", str(tmp_path / "s.json")], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout.strip().splitlines()[-1])["batch"] == 2


def test_profile_rows_for_every_variant_and_missing_runtime(tmp_path):
    """A target's modes, precisions and batches: each variant a row, measured or saying why not; a GPU runtime
    this machine lacks is one row naming the fix; the bench table carries the variant columns."""
    net = create_model(TINY_CAUSAL)
    target = dict(load_target("cpu"), runtimes=["torch", "onnxruntime-cuda"], threads=[1],
                  modes=["hop", "offline"], precisions=["fp32", "fp16"], batches=[1, 2])
    res = profile(net, target, tmp_path / "p", protocol=QUICK, progress=lambda *a: None)
    lat = res["latency"]
    torch_rows = [r for r in lat if r["runtime"] == "torch"]
    assert len(torch_rows) == 8
    measured = [r for r in torch_rows if "skipped" not in r]
    assert {(r["mode"], r["batch"]) for r in measured} == {("hop", 1), ("hop", 2), ("offline", 1), ("offline", 2)}
    assert all("fp16" in r["skipped"] for r in torch_rows if "skipped" in r)
    if not CUDA:
        (ort_row,) = [r for r in lat if r["runtime"] == "onnxruntime-cuda"]
        assert "install onnxruntime-gpu" in ort_row["skipped"]
    rows = bench_rows(res, "tiny", "cpu")
    assert {r["batch"] for r in rows if r["how"] == "measured"} == {1, 2}
    assert all(r["how"] == "not measured" and r["note"] for r in rows if r["how"] != "measured")


def test_cli_variant_flags(tmp_path):
    r = run_cli("bench", "--models", "cpu-student-causal", "--targets", "cpu", "--batches", "0", "--out",
                str(tmp_path / "b.csv"))
    assert r.returncode != 0 and "--batches 0" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("profile", "cpu-student-causal", "--precisions", "int4")
    assert r.returncode != 0 and "unknown 'int4'" in r.stderr and "fp32, fp16" in r.stderr


@pytest.mark.parametrize("body,field", [
    ("modes: [stream]", "'modes'"), ("precisions: []", "'precisions'"), ("batches: [0]", "'batches'"),
    ("batches: [true]", "'batches'")])
def test_bad_variant_fields_in_target_files(tmp_path, body, field):
    p = tmp_path / "t.yaml"
    p.write_text(f"name: t\ndevice: {{type: cpu}}\nruntimes: [torch]\n{body}\n")
    with pytest.raises(HwkdError, match=field):
        load_target(str(p))


def test_fp16_quality_delta_on_real_clips(tiny_corpus):
    """fp16 against fp32 on val clips, SI-SDR and eSTOI (and PESQ-WB): on the CPU here, the GPU in the lab."""
    from hwkd.data.datasets import select_pairs
    from hwkd.data.layouts import scan
    lab = _lab()
    net = create_model(TINY)
    pairs = select_pairs(scan(tiny_corpus, channels=1), "val")[:2]
    d = lab.fp16_delta(net, pairs, "cuda" if CUDA else "cpu")
    assert d["clips"] == 2 and set(d["delta"]) >= {"si_sdr_db", "estoi"}
    assert all(np.isfinite(v) for v in d["delta"].values())
    assert abs(d["delta"]["si_sdr_db"]) < 1.0          # half precision barely moves an untrained net's output


def test_lab_summary_and_cross_check():
    lab = _lab()
    base = dict(model="m", how="measured", threads=1, precision="fp32", batch=1, p90_ms=0.0)
    rows = [dict(base, runtime="onnxruntime", mode="hop", p50_ms=1.0, rtf=0.0625),
            dict(base, runtime="torch-cuda", mode="hop", p50_ms=4.0, rtf=0.25, timer_agreement=0.02),
            dict(base, runtime="torch-cuda", mode="hop", batch=64, p50_ms=6.4, rtf=0.00625, timer_agreement=-0.07),
            dict(base, runtime="onnxruntime", mode="offline", p50_ms=40.0, rtf=0.04),
            dict(base, runtime="torch-cuda", mode="offline", batch=64, p50_ms=64.0, rtf=0.001),
            dict(model="m", how="not measured", runtime="onnxruntime-cuda", note="absent")]
    s = lab.summarise(rows, 64)["m"]
    assert s["hop_torch-cuda_over_cpu"] == 4.0 and s["hop_torch-cuda_batch64_per_stream_ms"] == pytest.approx(0.1)
    assert s["offline_speedup_gpu_batch_over_cpu"] == pytest.approx(40.0)
    cc = lab.cross_check(rows)
    assert cc["rows"] == 2 and cc["worst_abs_disagreement"] == pytest.approx(0.07) and cc["within_goal"] is False
    assert "onnxruntime-cuda" not in lab.markdown(rows)
    front = lab.front_configs(Path(__file__).resolve().parents[1] / "reports" / "rpi4-20261130-125736" / "front.csv",
                              2)
    assert len(front) == 2 and all(cfg["causal"] is True for _, cfg in front)
    assert create_model(front[0][1]).cfg.channels == front[0][1]["channels"]


@pytest.mark.skipif(not CUDA, reason="needs a CUDA device")
def test_cuda_variants_measure_with_events_and_device_memory(tmp_path):
    net = create_model(TINY_CAUSAL)
    for rt in ("torch-cuda", "torch-cuda-graph"):
        for prec in ("fp32", "fp16"):
            m = measure(rt, "hop", 1, net=net, protocol=QUICK, precision=prec, batch=4)
            assert m.event_p50_ms > 0 and abs(m.timer_agreement) < 0.5 and m.peak_device_mib > 0
            assert m.gpu["gpu"] and m.device != "cpu"
    m = measure("torch-cuda-graph", "offline", 1, net=net, protocol=QUICK, batch=2)
    assert m.rtf > 0


@pytest.mark.slow
def test_gpu_lab_benchmark_runs(tmp_path):
    """The benchmark end to end on one small model: the CPU column measured, GPU rows measured or saying why."""
    import subprocess
    r = subprocess.run([sys.executable, str(BENCH / "gpu_lab.py"), "--models", "cpu-student-causal",
                        "--targets", "cpu,openvino-cpu,cuda", "--fp16-clips", "0", "--batch", "2",
                        "--name", "gpu_lab_test"],
                       cwd=BENCH, capture_output=True, text=True, timeout=900)
    out = BENCH / "results" / "gpu_lab_test.json"
    try:
        assert r.returncode == 0, r.stderr[-2000:]
        res = json.loads(out.read_text())
        measured = [x for x in res["rows"] if x["how"] == "measured"]
        assert {"onnxruntime", "openvino"} <= {x["runtime"] for x in measured}
        if not CUDA:
            assert all(x["how"] == "not measured" for x in res["rows"] if x["target"] == "cuda")
            assert res["gpu"] is None and res["cross_check"]["rows"] == 0
        assert "cpu-student-causal" in res["summary"]
    finally:
        out.unlink(missing_ok=True)
