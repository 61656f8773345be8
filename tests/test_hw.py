"""Hardware targets: MAC counts, export parity (and refusal), the latency protocol, targets, hwkd profile/bench."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hwkd.errors import HwkdError
from hwkd.hw.cost import cross_check, macs
from hwkd.hw.export import ExportMismatch, export_all
from hwkd.hw.measure import Protocol, measure_isolated
from hwkd.hw.targets import load_target
from hwkd.models.checkpoint import save_checkpoint
from hwkd.models.registry import create_model

from conftest import full_mask, run_cli

TINY = dict(channels=8, layers=1, depth=2, heads=2)


@pytest.mark.parametrize("preset,ref", [("paper-teacher", 13.0e9), ("paper-student", 2.4e9)])
def test_paper_macs_per_second(preset, ref):
    r = macs(create_model(preset))
    assert r["frames"] == 62                       # 1 s at hop 256, the reference convention
    assert abs(r["macs_per_s"] / ref - 1) < 0.02
    assert r["by_operator"]["gru"] > 0 and r["by_operator"]["attention"] > 0


def test_macs_at_hop_160_and_attention_term():
    net = create_model("paper-teacher", hop=160)
    r = macs(net)
    assert r["frames"] == 100 and abs(r["macs"] / 21.2e9 - 1) < 0.02
    # time-path attention: 2 T^2 (C/2) 64 per layer; frequency path: 2 * 64^2 (C/2) T per layer
    t, d, layers = 100, 64, 4
    assert r["by_operator"]["attention"] == layers * (2 * t * t * d * 64 + 2 * 64 * 64 * d * t)


@pytest.mark.slow
def test_macs_cross_check_with_flopcountermode():
    for spec in ("cpu-student", dict(TINY, causal=True, time_attention="causal", in_channels=4)):
        c = cross_check(create_model(spec))
        assert c["rel_diff"] < 1e-9, c


@pytest.mark.slow
def test_export_parity_offline_and_streaming(tmp_path):
    torch.manual_seed(0)
    net = full_mask(create_model(dict(TINY, causal=True, time_attention="none")))
    ex = export_all(net, tmp_path)
    assert ex.offline_onnx.is_file() and ex.offline_ir.is_file() and ex.step_onnx.is_file() and ex.step_ir.is_file()
    assert set(ex.parity["offline"]["onnxruntime"]) == {37, 101}          # two lengths, one dynamic axis
    for kind in ex.parity.values():
        for v in kind.values():
            assert (max(v.values()) if isinstance(v, dict) else v) < 1e-4
    assert ex.refused == {}


@pytest.mark.slow
def test_export_refuses_a_mismatch(tmp_path):
    net = create_model(TINY)
    with pytest.raises(ExportMismatch):
        export_all(net, tmp_path, tol=-1.0)           # every difference exceeds a negative tolerance
    assert not (tmp_path / "offline.onnx").exists()


@pytest.mark.parametrize("form", [{}, dict(mask_mode="steered")])
def test_ambisonics_export(tmp_path, form):
    """A non-causal Ambisonics model's offline graph matches torch (a steered one sums its beam's direction over
    the whole input)."""
    net = full_mask(create_model(dict(TINY, in_channels=4, **form)))
    ex = export_all(net, tmp_path, openvino=False)
    assert ex.step_onnx is None and max(ex.parity["offline"]["onnxruntime"].values()) < 1e-4


@pytest.mark.slow
@pytest.mark.parametrize("form", [dict(mask_mode="filter-sum", spatial_features=True), dict(mask_mode="steered")])
def test_a_beamforming_ambisonics_model_exports_and_the_standalone_script_applies_its_masks(tmp_path, form):
    """mask_mode filter-sum + spatial_features, and steered (its running sums a state of the step graph): both
    graphs (ONNX Runtime, OpenVINO) match torch, offline and hop by hop, and the pick folder's numpy
    enhance_onnx.py applies the masks as hwkd does (sums the per-channel masks; masks the steered beam)."""
    import importlib.util

    import onnxruntime as ort

    import hwkd
    from hwkd.models.enhancer import Enhancer
    torch.manual_seed(0)
    net = full_mask(create_model(dict(TINY, in_channels=4, causal=True, time_attention="none", **form))).eval()
    ex = export_all(net, tmp_path)
    for kind in ex.parity.values():
        for v in kind.values():
            assert (max(v.values()) if isinstance(v, dict) else v) < 1e-4
    spec = importlib.util.spec_from_file_location("enhance_onnx",
                                                  Path(hwkd.__file__).parent / "assets" / "enhance_onnx.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    x = 0.1 * np.random.default_rng(0).standard_normal((4, 6000))
    feats_spec = script.stft(x, 512, 256)
    sess = ort.InferenceSession(str(ex.offline_onnx), providers=["CPUExecutionProvider"])
    mask = sess.run(["mask"], {"features": script.features(feats_spec)})[0][0]
    got = script.istft(script.apply_mask(mask, feats_spec), x.shape[1], 512, 256)
    with torch.no_grad():
        want = Enhancer(net)(torch.from_numpy(x).float()[None])[0].numpy()
    assert np.abs(got - want).max() < 1e-4, np.abs(got - want).max()


@pytest.mark.slow
def test_measure_protocol_isolated(tmp_path):
    net = create_model(dict(TINY, causal=True, time_attention="none"))
    ex = export_all(net, tmp_path, openvino=False)
    proto = Protocol(warmup=3, runs=40, min_s=0.05)
    m = measure_isolated("onnxruntime", "hop", 1, onnx=ex.step_onnx, hop=256, protocol=proto)
    assert m.runs >= 40 and m.mode == "hop" and m.threads == 1 and m.how == "measured"
    assert 0 < m.min_ms <= m.p50_ms <= m.p90_ms <= m.p99_ms <= m.max_ms
    assert m.audio_ms_per_call == 16.0 and m.rtf == pytest.approx(m.p50_ms / 16.0)
    assert m.realtime == (m.p90_ms < 16.0)
    assert m.fingerprint["cpu"] and m.other_load is not None and m.peak_rss_mib is not None
    save_checkpoint(tmp_path / "m.pt", net)
    t = measure_isolated("torch", "offline", 1, ckpt=tmp_path / "m.pt", hop=256, protocol=proto)
    assert t.audio_ms_per_call == pytest.approx(62 * 16.0) and t.realtime is None


def test_measure_reports_a_missing_runtime_cleanly(tmp_path):
    with pytest.raises(HwkdError, match="measuring onnxruntime"):
        measure_isolated("onnxruntime", "hop", 1, onnx=tmp_path / "missing.onnx", protocol=Protocol.named("quick"))


def test_shipped_targets_load():
    for name in ("cpu", "cuda", "openvino-cpu", "rpi4", "rpi5"):
        t = load_target(name)
        assert t["runtimes"] and t["threads"]
    assert load_target("rpi4")["device"]["cpu"] == "Cortex-A72"


@pytest.mark.parametrize("body,field", [
    ("name: x\ndevice: {type: tpu}\n", "device.type"),
    ("name: x\ndevice: {}\nruntimes: [tensorrt]\n", "runtimes"),
    ("name: x\ndevice: {}\nthreads: [0]\n", "threads"),
    ("name: x\nkind: remote\ndevice: {}\nssh: {port: 99999}\n", "ssh.port"),
    ("name: x\nkind: remote\ndevice: {}\nssh: {port: true}\n", "ssh.port"),
    ("name: x\nkind: remote\ndevice: {}\nssh: {host: '-oProxyCommand=sh'}\n", "ssh.host"),
    ("name: x\nkind: remote\ndevice: {}\nssh: {host: pi, user: '-lroot'}\n", "ssh.user"),
    ("name: x\nkind: remote\ndevice: {}\nssh: {host: pi, proxy: x}\n", "ssh.proxy"),
    ("device: {}\n", "'name'"),
])
def test_bad_target_files(tmp_path, body, field):
    p = tmp_path / "t.yaml"
    p.write_text(body)
    with pytest.raises(HwkdError, match=field.replace(".", r"\.")):
        load_target(str(p))


@pytest.mark.slow
def test_cli_profile_and_bench(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("channels: 8\nlayers: 1\ndepth: 2\nheads: 2\ncausal: true\ntime_attention: none\n")
    r = run_cli("profile", cfg, "--target", "cpu", "--runtimes", "onnxruntime", "--threads", "1",
                "--protocol", "quick", "--out", tmp_path / "p")
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads((tmp_path / "p" / "profile.json").read_text())
    assert res["mode"] == "hop" and res["latency"][0]["runtime"] == "onnxruntime"
    assert res["macs_cross_check"]["rel_diff"] < 1e-9
    r = run_cli("bench", "--models", f"{cfg},cpu-student", "--targets", "openvino-cpu,rpi4", "--threads", "1",
                "--protocol", "quick", "--out", tmp_path / "b.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    import pandas as pd
    df = pd.read_csv(tmp_path / "b.csv")
    assert set(df["target"]) == {"openvino-cpu", "rpi4"}
    measured = df[df["how"] == "measured"]
    assert len(measured) == 2 and (measured["p50_ms"] > 0).all()            # one per model on openvino-cpu
    assert np.isfinite(measured["rtf"]).all()
    # rpi4 names no device: the causal model is predicted (and says so), the non-causal one is not predicted
    rpi = df[df["target"] == "rpi4"]
    assert set(rpi["how"]) == {"predicted (uncalibrated default)", "not measured"}
    assert not rpi["how"].str.startswith("measured").any()


@pytest.mark.slow
def test_cli_profile_bad_input(tmp_path):
    r = run_cli("profile", "cpu-student", "--target", "rpi9")
    assert r.returncode == 2 and "unknown target 'rpi9'" in r.stderr
    r = run_cli("profile", tmp_path / "missing.pt")
    assert r.returncode == 2 and "checkpoint not found" in r.stderr


ALTSTACK_PROBE = """
import gc, os, signal, sys
import numpy as np
import openvino as ov
import openvino.opset13 as ops
p = ops.parameter([1, 4], np.float32)
ov.save_model(ov.Model([ops.relu(p)], [p]), sys.argv[2])
if sys.argv[1] == "a-core-each":
    a, b = (ov.Core().compile_model(sys.argv[2], "CPU") for _ in range(2))
else:
    from hwkd.hw.runtimes import ov_compiled
    a, b = ov_compiled(sys.argv[2]), ov_compiled(sys.argv[2])
del a; gc.collect(); del b; gc.collect()          # dropped in the order they were made, not the reverse
signal.signal(signal.SIGUSR1, lambda *_: None)     # Python handlers run on the thread's alternate stack
os.kill(os.getpid(), signal.SIGUSR1)
print("alive")
"""


def test_openvino_models_dropped_in_any_order_leave_signals_working(tmp_path):
    """Each OpenVINO Core's CPU plugin swaps in its own alternate signal stack and puts the previous one back when
    it goes: two Cores dropped first-made-first left the thread on an unmapped stack, and the next Python signal
    handler (a loader process's SIGCHLD in CI) crashed the process. hwkd's one Core keeps it valid; the control
    (a Core each) shows the probe can fail."""
    import resource
    import signal
    import subprocess
    import sys
    run = [sys.executable, "-c", ALTSTACK_PROBE]
    ours = subprocess.run(run + ["hwkd", str(tmp_path / "m.xml")], capture_output=True, text=True, timeout=120)
    assert ours.returncode == 0 and "alive" in ours.stdout, (ours.returncode, ours.stderr[-1500:])
    control = subprocess.run(run + ["a-core-each", str(tmp_path / "c.xml")], capture_output=True, text=True,
                             timeout=120, cwd=tmp_path,       # no core file left behind
                             preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_CORE, (0, 0)))
    if control.returncode == 0 and "alive" in control.stdout:
        pytest.skip("this OpenVINO no longer leaves a stale signal stack: ov_core's reason is gone (keep it or not)")
    assert control.returncode == -signal.SIGSEGV, (control.returncode, control.stderr[-1500:])


@pytest.mark.slow
def test_openvino_hop_runner_carries_state(tmp_path):
    """The zero-copy streaming loop used for OpenVINO latency computes what torch computes hop by hop."""
    from hwkd.hw.measure import Runner
    from hwkd.models.streaming import StepModel
    torch.manual_seed(0)
    net = full_mask(create_model(dict(TINY, causal=True, time_attention="none")))
    ex = export_all(net, tmp_path)
    run = Runner("openvino", "hop", 1, ir=ex.step_ir)
    step = StepModel(net).eval()
    states = step.initial_states()
    frame = torch.from_numpy(run.frame)
    for _ in range(7):
        run()
        with torch.no_grad():
            mask, *states = step(frame, *states)
    assert np.abs(run.last_mask() - mask.numpy()).max() < 1e-4


@pytest.mark.slow
def test_predictor_calibrates_and_predicts(small_grid, tmp_path):
    from hwkd.hw.export import export_step_onnx
    from hwkd.hw.measure import Runner, timed
    from hwkd.hw.predict import calibrate, load_predictor, save_calibration
    from hwkd.models.dpdcrn import DPDCRNConfig
    proto = Protocol(warmup=10, runs=80, min_s=0.1)
    calib = calibrate("onnxruntime", 1, progress=None, protocol=proto, passes=2)
    assert len(calib["table_ms"]) == len(small_grid.block_specs()) and len(calib["anchors"]) == 6
    save_calibration(calib, "cpu")
    pred = load_predictor("cpu", "onnxruntime", 1)
    assert pred.provenance().startswith("predicted from")
    # a held-out candidate (a combination no anchor has; widths on the reduced grid): predicted within a factor
    # of 2 of measured. This catches a broken predictor (units, a block left out, a wild fit); its accuracy
    # (±10 %) is measured on a quiet machine over the full grid by benchmarks/predictor_accuracy.py, not here.
    # An off-grid width is not asked of this 2-point grid: widths that are not a multiple of 8 cost more than
    # the next multiple (module docstring) and a grid of 8 and 16 cannot see that (CI: C=12, H=12 predicted
    # 0.62 ms, measured 1.26 ms); the full grid steps by 4.
    cfg = DPDCRNConfig(channels=16, layers=1, depth=2, heads=0, gru_hidden=16, intra_bidirectional=False,
                       causal=True, time_attention="none")
    torch.manual_seed(0)
    onnx = export_step_onnx(create_model(cfg), tmp_path / "c.onnx")
    # measured as the calibration measures (the smaller median of two passes: a load spike in one pass on a
    # shared machine does not decide the test)
    runner = Runner("onnxruntime", "hop", 1, onnx=onnx)
    measured = min(float(np.median(timed(runner, proto)[0])) for _ in range(2))
    assert 0.5 < pred.predict_hop_ms(cfg) / measured < 2.0, (pred.predict_hop_ms(cfg), measured)
    # the uncertainty band: leave-one-out over the 6 anchors, so 6 relative errors, the band their largest
    assert len(pred.loo_rel_err) == 6 and pred.band == pytest.approx(max(abs(e) for e in pred.loo_rel_err))
    b = pred.predict_band(cfg)
    assert b["lo_ms"] < b["p50_ms"] < b["hi_ms"] and "band ±" in pred.provenance()
    with pytest.raises(HwkdError, match="grows with the attention cache"):
        pred.predict_hop_ms(DPDCRNConfig(channels=12, causal=True, time_attention="causal", heads=2))


@pytest.mark.slow
def test_remote_target_without_device_is_predicted_and_labelled(tmp_path, monkeypatch):
    from hwkd.hw.profile import profile
    monkeypatch.setenv("HWKD_HOME", str(tmp_path / "home"))
    res = profile(create_model("cpu-student-causal"), "rpi4", tmp_path / "p", progress=lambda *a: None)
    assert res["latency"] and all(r["how"] == "predicted (uncalibrated default)" for r in res["latency"])
    assert all("not calibrated" in r["provenance"] and "Cortex-A72" in r["provenance"] for r in res["latency"])
    assert "predicted, not measured" in res["latency_note"]
    # more threads are not assumed faster (a small streaming step is slower at 2 threads than at 1 on every
    # runtime measured here), and the row says so; nothing is labelled measured
    one, four = res["latency"][:2]
    assert four["threads"] == 4 and four["p50_ms"] == one["p50_ms"] and "not assumed faster" in four["provenance"]
    assert not any(r["how"].startswith("measured") for r in res["latency"])


@pytest.mark.slow
def test_int8_variants_report_their_deltas(tmp_path, tiny_corpus):
    from hwkd.data.datasets import split_pairs
    from hwkd.hw.profile import profile
    pairs = split_pairs(tiny_corpus, "val", channels=1, limit=2)
    calib = split_pairs(tiny_corpus, "train", channels=1, limit=3)
    torch.manual_seed(0)
    res = profile(create_model(dict(TINY)), "cpu", tmp_path, runtimes=["onnxruntime"], threads=[1],
                  protocol=Protocol(warmup=2, runs=10, min_s=0.01), int8_pairs=pairs, int8_calib=calib,
                  progress=lambda *a: None)
    assert set(res["int8"]) == {"onnxruntime", "openvino-nncf"}
    assert (tmp_path / "offline-int8.onnx").is_file() and (tmp_path / "offline-int8.xml").is_file()
    # the NNCF model really is quantised: its IR holds FakeQuantize nodes, the FP32 IR none
    assert "FakeQuantize" in (tmp_path / "offline-int8.xml").read_text()
    assert "FakeQuantize" not in Path(res["export"]["offline_ir"]).read_text()
    for name, q in res["int8"].items():
        # quantised, so not identical; not broken (an all-zero output would give 1.0). The tiny model here is
        # untrained, its masks small, so the relative error is large; the trained teacher's is in README
        assert 0 < q["rel_mask_diff"] < 1.0, name
        assert q["latency_ratio_int8_over_fp32"] > 0 and q["quality"]["clips"] == 2
        assert np.isfinite(q["quality"]["delta"]["si_sdr_db"]) and np.isfinite(q["quality"]["fp32"]["pesq_wb"])
    assert len(res["int8"]["openvino-nncf"]["calibration_clips"]) == 3


def test_predictor_accuracy_benchmark_refuses_a_development_seed():
    """The accuracy figure is always on held-out candidates: a seed whose candidates shaped the predictor is
    refused before anything is calibrated or measured."""
    import subprocess
    import sys
    bench = Path(__file__).resolve().parents[1] / "benchmarks" / "predictor_accuracy.py"
    r = subprocess.run([sys.executable, str(bench), "--seeds", "101,2", "--n", "1"], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode != 0 and "development seeds" in r.stderr and "[2]" in r.stderr
    assert "Traceback" not in r.stderr
