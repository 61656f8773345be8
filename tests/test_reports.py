"""The HTML reports as a reader meets them: a real search's report with its listening set, opened in headless
Chromium with no network (plots render, no console error, no request leaves the folder, every audio loads, a click
selects a trial)."""

import json
import os

import pytest

import browser
from conftest import run_cli
from test_search import TINY_SPACE


@pytest.fixture(scope="module")
def searched(tmp_path_factory, tiny_corpus):
    """A finished tiny search (3 trials) and its report."""
    tmp = tmp_path_factory.mktemp("report")
    (tmp / "tiny.yaml").write_text(TINY_SPACE)
    env = {**os.environ, "HWKD_HOME": str(tmp / "home")}
    r = run_cli("-q", "search", "--target", "rpi4", "--space", tmp / "tiny.yaml", "--data", tiny_corpus, "--name",
                tmp / "runs" / "r1", "--trials", 3, "--steps", 2, "--promote-steps", 0, "--batch-size", 2,
                "--val-pesq-clips", 1, "--reports", tmp / "reports", env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return tmp / "runs" / "r1", tmp / "reports" / "r1", env, tiny_corpus


@pytest.mark.slow
def test_search_report_lets_the_front_be_heard_and_seen(searched):
    run, rep, env, _ = searched
    summ = json.loads((rep / "summary.json").read_text())
    page = (rep / "index.html").read_text()
    assert summ["listening"] and len(summ["listening"]) == 2                 # the first two val clips
    labels = set(summ["listening"][0]) - {"id"}
    assert {"noisy input", "clean reference"} <= labels
    assert {f"trial {m['trial']}" for m in summ["front"]} <= labels          # every front member is heard
    clips = sorted((rep / "clips").iterdir())
    assert any(p.suffix == ".flac" for p in clips) and any(p.suffix == ".jpg" for p in clips)
    for p in clips:
        assert f"clips/{p.name}" in page, p.name
    for m in summ["front"]:                                                  # the pick command of each member
        assert f"hwkd pick {run.name} --max-latency-ms" in page and f"<td>{m['trial']}</td>" in page
    assert "https://" not in page.split("<body>")[0].replace("https://github.com/bokeh", "")   # no CDN script
    size = sum(p.stat().st_size for p in rep.rglob("*") if p.is_file())
    assert size < 4 * 2 ** 20, size                                          # a few MB at most
    r = run_cli("report", run, "--reports", rep.parent / "again", "--clips", 0, env=env)   # no clips asked
    assert r.returncode == 0 and not (rep.parent / "again" / "r1" / "clips").exists(), r.stderr[-2000:]
    r = run_cli("report", run, "--clips", -1, env=env)
    assert r.returncode == 2 and "--clips" in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(not browser.available(), reason="no Chromium / chromium-driver / selenium (install.sh installs "
                                                     "them; HWKD_NO_BROWSER=1 skips)")
def test_search_report_renders_offline_in_a_real_browser(searched, tmp_path):
    _, rep, _, _ = searched
    res = browser.open_report(rep / "index.html", screenshot=tmp_path / "shot.png", select=0)
    assert res["console_errors"] == [] and res["external_requests"] == [], res
    assert res["bokeh_views"] >= 4 and res["canvases"] >= 4, res            # 3 front plots + hypervolume
    assert res["audio"] and all(a["ready"] >= 1 and a["duration"] > 0 and a["error"] is None for a in res["audio"])
    assert "pick it: " in res["selected"] and "hwkd pick" in res["selected"], res["selected"]
    assert (tmp_path / "shot.png").stat().st_size > 10_000


@pytest.mark.slow
def test_a_pick_runs_without_hwkd_and_its_card_shows_the_noisy_input_beside_it(searched, tmp_path):
    """The pick folder's enhance_onnx.py (numpy + onnxruntime only) gives what `hwkd enhance` gives, offline and
    hop by hop; the card puts every metric of the pick beside the noisy input's; its HTML plays its clips."""
    import subprocess
    import sys

    import numpy as np
    import soundfile as sf
    run, _, env, corpus = searched
    out = tmp_path / "pick"
    r = run_cli("pick", run, "--out", out, "--eval-clips", 3, "--clips", 1, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    card = json.loads((out / "card.json").read_text())
    ev = card["evaluation"]
    assert ev["utterances"] == 3 and set(ev["metrics"]) == {"pesq_wb", "stoi", "estoi", "si_sdr_db"}
    for v in ev["metrics"].values():
        assert v["noisy"]["mean"] is not None and abs(v["gain"] - (v["enhanced"]["mean"] - v["noisy"]["mean"])) < 1e-9
    md = (out / "model_card.md").read_text()
    assert "| si_sdr_db | " in md and "noisy input" in md and "`frame`" in md and "`mask`" in md
    src = sorted(corpus.rglob("noisy/*.wav"))[0]
    ref = tmp_path / "hwkd.wav"
    r = run_cli("enhance", out / "model.pt", src, ref, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    bare = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}       # the script imports no hwkd
    for extra in ((), ("--streaming",)):
        got = tmp_path / f"ort{len(extra)}.wav"
        p = subprocess.run([sys.executable, "-I", str(out / "enhance_onnx.py"), str(src), str(got), *extra],
                           capture_output=True, text=True, env=bare, timeout=300)
        assert p.returncode == 0, p.stderr[-2000:]
        a, b = sf.read(str(ref))[0], sf.read(str(got))[0]
        assert a.shape == b.shape and np.abs(a - b).max() <= 3 / 32768, (extra, np.abs(a - b).max())
    if browser.available():
        res = browser.open_report(out / "model_card.html")
        assert res["console_errors"] == [] and res["external_requests"] == [], res
        assert res["audio"] and all(a["ready"] >= 1 and a["error"] is None for a in res["audio"]), res["audio"]
