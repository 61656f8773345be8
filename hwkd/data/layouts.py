"""Recognise and validate dataset layouts: DNS Challenge, VoiceBank-DEMAND, L3DAS23 Task 1, the hwkd corpus,
a generic paired folder (noisy/ + clean/ with matching names) and a CSV manifest (columns noisy, clean).

`scan(path)` reads only headers, so checking tens of hours takes seconds. Every problem is reported with
the file it concerns; nothing is fixed or deleted.
"""

from __future__ import annotations

import csv
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from hwkd import SAMPLE_RATE
from hwkd.audio.io import AUDIO_EXTENSIONS, AudioInfo, audio_info, wav_truncation
from hwkd.errors import HwkdError

LAYOUTS = ("hwkd-corpus", "dns", "voicebank-demand", "l3das23", "paired-folder", "split-folders", "csv")
_FILEID = re.compile(r"fileid_(\d+)")


@dataclass
class Pair:
    noisy: Path
    clean: Path
    id: str
    split: str | None = None


@dataclass
class Problem:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass
class Scan:
    layout: str
    root: Path
    pairs: list[Pair] = field(default_factory=list)          # every complete pair found
    problems: list[Problem] = field(default_factory=list)
    info: dict[Path, AudioInfo] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def bad_files(self) -> set[Path]:
        return {Path(p.path) for p in self.problems}

    def good_pairs(self, pairs: list[Pair] | None = None) -> list[Pair]:
        """The pairs (default: all found) whose two files have no problem."""
        bad = self.bad_files
        return [p for p in (self.pairs if pairs is None else pairs) if p.noisy not in bad and p.clean not in bad]

    def splits(self) -> list[str | None]:
        return sorted({p.split for p in self.pairs}, key=lambda s: (s is None, s or ""))

    def summary(self) -> list[dict]:
        rows = []
        for split in self.splits():
            pairs = [p for p in self.pairs if p.split == split]
            noisy = [self.info[p.noisy] for p in pairs if p.noisy in self.info]
            clean = [self.info[p.clean] for p in pairs if p.clean in self.info]
            rows.append({
                "split": split or "-",
                "pairs": len(pairs),
                "hours": round(sum(i.duration_s for i in noisy) / 3600, 3),
                "noisy_rates": dict(Counter(i.sample_rate for i in noisy)),
                "noisy_channels": dict(Counter(i.channels for i in noisy)),
                "clean_rates": dict(Counter(i.sample_rate for i in clean)),
                "clean_channels": dict(Counter(i.channels for i in clean)),
            })
        return rows


def _audio_files(d: Path) -> list[Path]:
    """Audio files of a folder; hidden files (such as hwkd's .tmp-* partial writes) are not data."""
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir()
                  if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in AUDIO_EXTENSIONS)


def _match_by_name(noisy_dir: Path, clean_dir: Path, split: str | None, problems: list[Problem],
                   key=lambda p: p.name) -> list[Pair]:
    """Pair files of two folders by key(path); a file whose key is None is reported, not paired."""
    def keyed(d: Path) -> dict:
        out = {}
        for p in _audio_files(d):
            k = key(p)
            if k is None:
                problems.append(Problem(str(p), "file name without 'fileid_N': cannot be matched (DNS layout)"))
            else:
                out[k] = p
        return out

    noisy, clean = keyed(noisy_dir), keyed(clean_dir)
    pairs = []
    for k, p in noisy.items():
        if k in clean:
            pairs.append(Pair(p, clean[k], str(k), split))
        else:
            problems.append(Problem(str(p), f"missing partner: no clean file for it in {clean_dir}"))
    for k, p in clean.items():
        if k not in noisy:
            problems.append(Problem(str(p), f"missing partner: no noisy file for it in {noisy_dir}"))
    return pairs


def _dns_key(p: Path):
    m = _FILEID.search(p.stem)
    return f"fileid_{m.group(1)}" if m else None


def _vb_splits(root: Path) -> list[tuple[str, Path, Path]]:
    out = []
    for nd in sorted(root.glob("noisy_*_wav")):
        tag = nd.name[len("noisy_"):-len("_wav")]
        cd = root / f"clean_{tag}_wav"
        split = "test" if tag.startswith("test") else "train"
        out.append((split if tag in ("trainset_28spk", "testset", "trainset_56spk") else tag, nd, cd))
    return out


def _l3das_dirs(root: Path) -> list[tuple[str, Path]]:
    if (root / "data").is_dir() and (root / "labels").is_dir():
        return [(_l3das_split(root.name), root)]
    return [(_l3das_split(d.name), d) for d in sorted(root.glob("L3DAS23_Task1_*"))
            if (d / "data").is_dir()]


def _l3das_split(name: str) -> str:
    n = name.lower()
    for tag in ("train100", "train360", "dev", "test"):
        if tag in n:
            return tag
    return name


def _find_l3das(root: Path, mic: str, problems: list[Problem]) -> list[Pair]:
    pairs = []
    for split, d in _l3das_dirs(root):
        labels = {p.stem: p for p in _audio_files(d / "labels")}
        used = set()
        for p in _audio_files(d / "data"):
            m = re.fullmatch(r"(.+)_([AB])", p.stem)
            if not m:
                problems.append(Problem(str(p), "L3DAS23 data file not named <id>_A.wav or <id>_B.wav"))
                continue
            cid, which = m.groups()
            if cid in labels:
                used.add(cid)
                if which == mic:
                    pairs.append(Pair(p, labels[cid], cid, split))
            else:
                problems.append(Problem(str(p), f"missing partner: no label {cid}.wav in {d / 'labels'}"))
        for cid, p in labels.items():
            if cid not in used:
                problems.append(Problem(str(p), f"missing partner: no data file {cid}_A.wav in {d / 'data'}"))
    return pairs


def _find_csv(path: Path, problems: list[Problem]) -> list[Pair]:
    try:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise HwkdError(f"cannot read CSV manifest {path} ({exc})", "give a UTF-8 CSV with columns noisy,clean") \
            from None
    if not rows or not {"noisy", "clean"} <= set(rows[0].keys()):
        raise HwkdError(f"CSV manifest {path} needs a header with columns 'noisy' and 'clean'",
                        "add the header line: noisy,clean[,split]")
    pairs = []
    for i, r in enumerate(rows, start=2):
        n, c = (path.parent / (r["noisy"] or "")).resolve(), (path.parent / (r["clean"] or "")).resolve()
        if not r["noisy"] or not r["clean"]:
            problems.append(Problem(f"{path}:{i}", "empty noisy or clean column"))
            continue
        for p in (n, c):
            if not p.is_file():
                problems.append(Problem(str(p), f"listed in {path} line {i} but not found (missing partner)"))
        if n.is_file() and c.is_file():
            pairs.append(Pair(n, c, n.stem, r.get("split") or None))
    return pairs


def _split_dirs(path: Path) -> list[Path]:
    """Sub-folders that are paired folders, e.g. ROOT/{train,val,test}/{noisy,clean} (one hwkd corpus set)."""
    return sorted(d for d in path.iterdir() if d.is_dir() and (d / "noisy").is_dir() and (d / "clean").is_dir())


def detect_layout(path: Path) -> str:
    if path.is_file() and path.suffix.lower() == ".csv":
        return "csv"
    if path.is_file():
        raise HwkdError(f"dataset {path} is a file, not a folder or a .csv manifest",
                        "give a dataset folder or a CSV manifest (a .csv file)")
    if not path.is_dir():
        raise HwkdError(f"dataset path not found: {path}", "give a dataset folder or a CSV manifest")
    if (path / "corpus.json").is_file():
        return "hwkd-corpus"
    if list(path.glob("noisy_*_wav")):
        return "voicebank-demand"
    if _l3das_dirs(path):
        return "l3das23"
    if (path / "noisy").is_dir() and (path / "clean").is_dir():
        names = [p.name for p in _audio_files(path / "noisy")[:50]]
        if names and all(_FILEID.search(n) for n in names):
            return "dns"
        return "paired-folder"
    if _split_dirs(path):
        return "split-folders"
    raise HwkdError(
        f"no dataset layout recognised at {path} (no audio pairs found)",
        "expected noisy/ + clean/ (DNS or paired folder), noisy_*_wav + clean_*_wav (VoiceBank-DEMAND), "
        "L3DAS23_Task1_*/data + labels, an hwkd corpus (hwkd data synth), or a CSV with noisy,clean columns")


def scan(path: str | Path, channels: int | None = None, mic: str = "A") -> Scan:
    """Find all pairs under path and validate their headers.

    channels: expected noisy channel count; by default the most common count in the set.
    """
    root = Path(path).expanduser()
    layout = detect_layout(root)
    problems: list[Problem] = []
    if layout == "hwkd-corpus":
        pairs = []
        for set_dir in sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith(".")):
            for split_dir in sorted(d for d in set_dir.iterdir() if d.is_dir()):
                for p in _match_by_name(split_dir / "noisy", split_dir / "clean", None, problems):
                    pairs.append(Pair(p.noisy, p.clean, p.id, f"{set_dir.name}/{split_dir.name}"))
    elif layout == "voicebank-demand":
        pairs = []
        for split, nd, cd in _vb_splits(root):
            pairs += _match_by_name(nd, cd, split, problems)
    elif layout == "l3das23":
        pairs = _find_l3das(root, mic, problems)
    elif layout == "dns":
        pairs = _match_by_name(root / "noisy", root / "clean", None, problems, key=_dns_key)
    elif layout == "split-folders":
        pairs = []
        for d in _split_dirs(root):
            pairs += _match_by_name(d / "noisy", d / "clean", d.name, problems)
    elif layout == "paired-folder":
        pairs = _match_by_name(root / "noisy", root / "clean", None, problems)
    else:
        pairs = _find_csv(root, problems)
    result = Scan(layout, root, pairs, problems)
    _validate(result, channels)
    if not result.pairs:
        raise HwkdError(f"no audio pairs found at {root} (layout: {layout})"
                        + (f"; first problem: {problems[0]}" if problems else ""),
                        "check that noisy and clean files exist and are matched by name")
    return result


def _validate(s: Scan, channels: int | None) -> None:
    for p in s.pairs:
        for f in (p.noisy, p.clean):
            if f in s.info:
                continue
            try:
                s.info[f] = audio_info(f)
            except HwkdError as exc:
                s.problems.append(Problem(str(f), exc.what.replace(f" {f}", "").strip()))
    # expected channel count per split (sets like hwkd-corpus hold mono and 4-channel splits)
    for split in s.splits():
        infos = [s.info[p.noisy] for p in s.pairs if p.split == split and p.noisy in s.info]
        if not infos:
            continue
        want = channels or Counter(i.channels for i in infos).most_common(1)[0][0]
        for i in infos:
            if i.channels != want:
                s.problems.append(Problem(str(i.path), f"{i.channels}-channel file in a {want}-channel set"
                                          " (channel mismatch)"))
    for p in s.pairs:
        n, c = s.info.get(p.noisy), s.info.get(p.clean)
        if not n or not c:
            continue
        if c.channels != 1:
            s.problems.append(Problem(str(p.clean), f"clean target has {c.channels} channels; targets must be mono"))
        if n.sample_rate != c.sample_rate:
            s.problems.append(Problem(str(p.noisy), f"sample rate {n.sample_rate} Hz but its clean partner "
                                      f"{p.clean.name} is {c.sample_rate} Hz (rate mismatch)"))
        elif n.frames != c.frames:
            s.problems.append(Problem(str(p.noisy), f"{n.frames} samples but its clean partner {p.clean.name} "
                                      f"has {c.frames} (length mismatch)"))
    rates = Counter(i.sample_rate for i in s.info.values())
    if any(r != SAMPLE_RATE for r in rates):
        s.notes.append("sample rates " + ", ".join(f"{r} Hz" for r in sorted(rates))
                       + ": hwkd resamples to 16 kHz when reading")


def check_samples(s: Scan, progress=None) -> int:
    """Read every sample of every file of the scan (in blocks): NaN or infinite samples and files that hold
    fewer samples than their header says (truncated) become problems. Returns the number of files read."""
    import soundfile as sf
    files = [f for f in s.info if not any(p.path == str(f) for p in s.problems)]
    for k, f in enumerate(files):
        got, finite = 0, True
        try:
            for block in sf.blocks(str(f), blocksize=1 << 16, dtype="float32", always_2d=True):
                got += len(block)
                finite = finite and bool(np.isfinite(block).all())
        except Exception as exc:  # noqa: BLE001 -- libsndfile's messages vary by format
            s.problems.append(Problem(str(f), f"unreadable after {got} samples ({str(exc).splitlines()[0][:120]})"))
            continue
        if not finite:
            s.problems.append(Problem(str(f), "NaN or infinite samples"))
        cut = wav_truncation(f)
        if cut is not None:
            s.problems.append(Problem(str(f), f"truncated: the header declares {cut[0]} samples, the file holds "
                                              f"{cut[1]}"))
        elif got < s.info[f].frames:
            s.problems.append(Problem(str(f), f"truncated: the header says {s.info[f].frames} samples, the file "
                                              f"holds {got}"))
        if progress and (k + 1) % 500 == 0:
            progress(k + 1, len(files))
    return len(files)

