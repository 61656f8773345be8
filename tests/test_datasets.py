import logging

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from hwkd.data.datasets import SpeechPairs, collate_pad
from hwkd.errors import HwkdError

from conftest import tone, write


def test_segments_and_utterances(tmp_path):
    root = tmp_path / "d"
    write(root / "noisy" / "a.wav", tone(40000, seed=1))   # 2.5 s -> 2 segments of 1 s
    write(root / "clean" / "a.wav", tone(40000, seed=2))
    write(root / "noisy" / "b.wav", tone(8000, seed=3))    # 0.5 s -> 1 zero-padded segment
    write(root / "clean" / "b.wav", tone(8000, seed=4))
    ds = SpeechPairs(root, mode="segment", segment_s=1.0)
    assert len(ds) == 3
    items = [ds[i] for i in range(3)]
    assert all(it["noisy"].shape == (1, 16000) and it["clean"].shape == (16000,) for it in items)
    assert torch.all(items[2]["noisy"][0, 8000:] == 0)
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch["noisy"].shape == (3, 1, 16000)
    # epoch jitter is reproducible and stays inside the file
    ds.set_epoch(3)
    a = ds[1]["noisy"].clone()
    assert torch.equal(a, ds[1]["noisy"])

    ut = SpeechPairs(root, mode="utterance")
    assert len(ut) == 2 and ut[0]["noisy"].shape == (1, 40000)
    b = collate_pad([ut[0], ut[1]])
    assert b["noisy"].shape == (2, 1, 40000) and b["lengths"].tolist() == [40000, 8000]


def test_resampling_announced_once(tmp_path, caplog):
    root = tmp_path / "vb48"
    for i in range(4):
        write(root / "noisy" / f"x{i}.wav", tone(48000, sr=48000, seed=i), sr=48000)
        write(root / "clean" / f"x{i}.wav", tone(48000, sr=48000, seed=i), sr=48000)
    with caplog.at_level(logging.WARNING, logger="hwkd"):
        ds = SpeechPairs(root, mode="segment", segment_s=0.5)
        items = [ds[i] for i in range(len(ds))]
    assert len(items) == 8 and items[0]["noisy"].shape == (1, 8000)
    msgs = [r.getMessage() for r in caplog.records if "resampling" in r.getMessage()]
    assert len(msgs) == 1 and "48000 Hz to 16000 Hz" in msgs[0]
    # a 440 Hz tone stays a 440 Hz tone after resampling
    x = SpeechPairs(root, mode="utterance")[0]["clean"].numpy()
    f = np.argmax(np.abs(np.fft.rfft(x))) * 16000 / len(x)
    assert abs(f - 440) < 2


def test_multichannel_input_mono_target(tmp_path):
    root = tmp_path / "foa"
    write(root / "noisy" / "c.wav", tone(16000, ch=4))
    write(root / "clean" / "c.wav", tone(16000))
    ds = SpeechPairs(root, mode="segment", segment_s=0.5, channels=4)
    assert ds.channels == 4 and ds[0]["noisy"].shape == (4, 8000) and ds[0]["clean"].shape == (8000,)
    with pytest.raises(HwkdError, match="4-channel"):
        SpeechPairs(root, channels=1)


def test_bad_files_stop_the_dataset_with_their_names(paired):
    (paired / "noisy" / "broken.wav").write_bytes(b"not a wav at all")
    write(paired / "clean" / "broken.wav", tone(16000))
    with pytest.raises(HwkdError) as e:
        SpeechPairs(paired)
    assert "broken.wav" in str(e.value) and "hwkd data check" in str(e.value)


def test_unknown_split(paired):
    with pytest.raises(HwkdError, match="split 'nope' not found"):
        SpeechPairs(paired, split="nope")
