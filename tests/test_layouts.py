"""Layout recognition and validation, including the bad inputs a user gives."""

import json

import numpy as np
import pytest

from hwkd.data.layouts import scan
from hwkd.errors import HwkdError

from conftest import run_cli, tone, write


def test_paired_folder_ok(paired):
    s = scan(paired)
    assert s.layout == "paired-folder"
    assert len(s.pairs) == 3 and not s.problems
    row = s.summary()[0]
    assert row["pairs"] == 3 and row["noisy_rates"] == {16000: 3} and row["noisy_channels"] == {1: 3}
    assert row["hours"] == pytest.approx(3 / 3600, abs=1e-3)


def test_dns_layout_matches_by_fileid(tmp_path):
    root = tmp_path / "dns"
    for i in (0, 1, 7):
        write(root / "noisy" / f"book_0{i}_snr{i}_fileid_{i}.wav", tone(8000, seed=i))
        write(root / "clean" / f"clean_fileid_{i}.wav", tone(8000, seed=i))
    write(root / "clean" / "clean_fileid_99.wav", tone(8000))
    s = scan(root)
    assert s.layout == "dns"
    assert sorted(p.id for p in s.pairs) == ["fileid_0", "fileid_1", "fileid_7"]
    assert any("clean_fileid_99.wav" in p.path and "missing partner" in p.message for p in s.problems)


def test_voicebank_demand_layout_48k(tmp_path):
    root = tmp_path / "vb"
    for tag in ("trainset_28spk", "testset"):
        for name in ("p232_001", "p232_002"):
            write(root / f"noisy_{tag}_wav" / f"{name}.wav", tone(4800, sr=48000), sr=48000)
            write(root / f"clean_{tag}_wav" / f"{name}.wav", tone(4800, sr=48000), sr=48000)
    s = scan(root)
    assert s.layout == "voicebank-demand"
    assert {p.split for p in s.pairs} == {"train", "test"} and len(s.pairs) == 4
    assert not s.problems
    assert any("48000 Hz" in n and "resamples" in n for n in s.notes)


def test_l3das23_layout(tmp_path):
    root = tmp_path / "L3DAS23"
    for split in ("train100", "dev"):
        d = root / f"L3DAS23_Task1_{split}"
        for cid in ("100-121669-0000", "100-121669-0001"):
            write(d / "data" / f"{cid}_A.wav", tone(8000, ch=4))
            write(d / "data" / f"{cid}_B.wav", tone(8000, ch=4))
            write(d / "labels" / f"{cid}.wav", tone(8000))
    s = scan(root)
    assert s.layout == "l3das23"
    assert len(s.pairs) == 4 and {p.split for p in s.pairs} == {"train100", "dev"}
    assert all(s.info[p.noisy].channels == 4 for p in s.pairs) and not s.problems
    assert all(p.noisy.name.endswith("_A.wav") for p in s.pairs)
    assert all(p.noisy.name.endswith("_B.wav") for p in scan(root, mic="B").pairs)


def test_csv_manifest(tmp_path, paired):
    csv = tmp_path / "list.csv"
    csv.write_text("noisy,clean,split\n" + "".join(
        f"paired/noisy/u{i}.wav,paired/clean/u{i}.wav,{'train' if i < 2 else 'test'}\n" for i in range(3))
        + "paired/noisy/gone.wav,paired/clean/u0.wav,test\n")
    s = scan(csv)
    assert s.layout == "csv" and len(s.pairs) == 3
    assert any("gone.wav" in p.path for p in s.problems)


def test_csv_without_header_is_clear(tmp_path):
    csv = tmp_path / "bad.csv"
    csv.write_text("a.wav;b.wav\n")
    with pytest.raises(HwkdError, match="columns 'noisy' and 'clean'"):
        scan(csv)


@pytest.mark.slow
def test_every_bad_input_is_named(paired):
    # corrupt wav, wrong-rate file, 4-channel file in a mono set, missing partner
    (paired / "noisy" / "corrupt.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunkjunk")
    write(paired / "clean" / "corrupt.wav", tone(16000))
    write(paired / "noisy" / "rate.wav", tone(8000, sr=8000), sr=8000)
    write(paired / "clean" / "rate.wav", tone(16000))
    write(paired / "noisy" / "multi.wav", tone(16000, ch=4))
    write(paired / "clean" / "multi.wav", tone(16000))
    write(paired / "noisy" / "alone.wav", tone(16000))
    s = scan(paired)
    msgs = {p.path.rsplit("/", 1)[-1]: p.message for p in s.problems}
    assert "unreadable" in msgs["corrupt.wav"]
    assert "rate mismatch" in msgs["rate.wav"]
    assert "4-channel file in a 1-channel set" in msgs["multi.wav"]
    assert "missing partner" in msgs["alone.wav"]
    # the good pairs are still all there
    assert {p.id for p in s.good_pairs()} == {"u0.wav", "u1.wav", "u2.wav"}

    r = run_cli("data", "check", paired)
    assert r.returncode == 1
    for name in ("corrupt.wav", "rate.wav", "multi.wav", "alone.wav"):
        assert name in r.stdout
    assert "Traceback" not in r.stderr
    j = json.loads(run_cli("data", "check", paired, "--json").stdout)
    assert len(j["problems"]) == 4 and j["layout"] == "paired-folder"


def test_length_mismatch(paired):
    write(paired / "clean" / "u0.wav", tone(12000))
    s = scan(paired)
    assert any("u0.wav" in p.path and "length mismatch" in p.message for p in s.problems)


def test_empty_folder_and_missing_path(tmp_path):
    (tmp_path / "empty").mkdir()
    for path in (tmp_path / "empty", tmp_path / "nowhere"):
        r = run_cli("data", "check", path)
        assert r.returncode == 2
        assert str(path) in r.stderr and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) == 1
    (tmp_path / "e2" / "noisy").mkdir(parents=True)
    (tmp_path / "e2" / "clean").mkdir()
    with pytest.raises(HwkdError, match="no audio pairs found"):
        scan(tmp_path / "e2")


def test_nan_samples_named(paired):
    import soundfile as sf
    x = tone(16000).astype(np.float32)
    x[100] = np.nan
    sf.write(str(paired / "noisy" / "u1.wav"), x, 16000, subtype="FLOAT")
    from hwkd.audio.io import read_audio
    with pytest.raises(HwkdError, match="u1.wav contains NaN"):
        read_audio(paired / "noisy" / "u1.wav")


def test_data_check_reads_samples_nan_and_truncated(paired):
    """`hwkd data check` finds NaN samples and truncated files (it said "no problems found" on a NaN file)."""
    import soundfile as sf
    x = tone(16000).astype(np.float32)
    x[100] = np.nan
    sf.write(str(paired / "noisy" / "u1.wav"), x, 16000, subtype="FLOAT")
    cut = paired / "clean" / "u2.wav"
    cut.write_bytes(cut.read_bytes()[:-8000])               # the header still says 16000 samples
    r = run_cli("data", "check", paired)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert "u1.wav: NaN or infinite samples" in r.stdout and "u2.wav: truncated" in r.stdout
    r = run_cli("data", "check", paired, "--headers-only")
    assert "NaN" not in r.stdout and "truncated" not in r.stdout
