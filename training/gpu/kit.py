"""The teachers' GPU kit: what a device machine needs to train them with on-the-fly mixing, as lossless FLAC.

  python training/gpu/kit.py build --sets foa [--out teacher-kit]      (here, where the corpus is built)
  python training/gpu/kit.py unpack teacher-kit /tmp/corpus            (there, before training)
  python training/gpu/kit.py build --sets mono --split --out teacher-kit-mono   (two halves, for two calls:
      the mono set's 600 train clips alone are 36 MiB as FLAC; the first call leaves teacher-kit-mono-a on the
      device machine, which keeps it while warm, ~30 s; the second carries teacher-kit-mono and trains)

A set travels as its corpus.json, its train split's clean clips alone (on-the-fly mixing reads nothing else of
it: hwkd.data.mixing.OnTheFlyMix) and its whole val split (noisy and clean: the fixed clips every epoch is scored
on), with the split manifests; the 16 ambient loops go along whole (the train split takes 3 of every 5 of them by
their order, so all must be there), as do SHA-256 digests of every clip's decoded samples and of every loop, which
`unpack` checks after writing them back. The device has no Debian packages: unpack puts the ambient loops where
hwkd reads them ($HWKD_SONIC_PI_DIR, else /usr/share/sonic-pi/samples). `size KIT...` checks that each kit folder
and the working tree fit one device call. Generated audio is never committed: the kit folders are ignored.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

CARRY_LIMIT = 64 * 2**20          # what one device call carries, the working tree included


def _digest(x: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(x).tobytes()).hexdigest()


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tree_size() -> int:
    """What the working tree sends with every device call: the tracked files (git ls-files)."""
    import subprocess
    root = Path(__file__).resolve().parents[2]
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return sum((root / n).stat().st_size for n in names.decode().split("\0") if n and (root / n).is_file())


def size(a) -> int:
    """Each kit folder (wheels included) beside the working tree must fit one call's carry."""
    tree = tree_size()
    ok = True
    for k in map(Path, a.kits):
        total = tree + _size(k)
        print(f"kit: {k} {_size(k) / 2**20:.1f} MiB + working tree {tree / 2**20:.1f} MiB = {total / 2**20:.1f} MiB "
              f"of the {CARRY_LIMIT // 2**20} MiB one device call carries")
        if total > CARRY_LIMIT:
            ok = False
            print(f"kit: {k} does not fit one device call; build it with --split (two calls) or fewer sets",
                  file=sys.stderr)
    return 0 if ok else 2


def build(a) -> int:
    from hwkd.data.noise import SONIC_PI_DIR, ambient_files
    from hwkd.data.synth import default_dataset
    root = Path(a.corpus) if a.corpus else default_dataset(1).parent
    lacking = [f"{root / name / split}" for name in a.sets.split(",") for split in ("train", "val")
               if not (root / name / split / "manifest.jsonl").is_file()]
    if lacking:
        print(f"kit: {lacking[0]} is not a split of the corpus (no manifest.jsonl); --sets takes mono and/or foa",
              file=sys.stderr)
        return 2
    out = Path(a.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "corpus").mkdir(parents=True)
    shutil.copy(root / "corpus.json", out / "corpus" / "corpus.json")
    digests = {}
    for name in a.sets.split(","):
        for split, subs in (("train", ("clean",)), ("val", ("noisy", "clean"))):
            src, dst = root / name / split, out / "corpus" / name / split
            dst.mkdir(parents=True)
            shutil.copy(src / "manifest.jsonl", dst / "manifest.jsonl")
            for sub in subs:
                (dst / sub).mkdir()
                for f in sorted((src / sub).glob("*.wav")):
                    x, sr = sf.read(str(f), dtype="int16", always_2d=True)
                    sf.write(str(dst / sub / (f.stem + ".flac")), x, sr, format="FLAC", subtype="PCM_16")
                    digests[f"{name}/{split}/{sub}/{f.name}"] = _digest(x)
    amb = ambient_files()
    if len(amb) != 16:
        print(f"kit: {len(amb)} of the 16 ambient loops are installed in {SONIC_PI_DIR}; ./install.sh installs "
              "sonic-pi-samples", file=sys.stderr)
        return 2
    (out / "ambient").mkdir()
    for f in amb:
        shutil.copy(f, out / "ambient" / f.name)
        digests[f"ambient/{f.name}"] = hashlib.sha256(f.read_bytes()).hexdigest()
    (out / "sha256.json").write_text(json.dumps(digests, indent=0))
    parts = [out]
    if a.split:     # two calls: OUT-a the train clean clips and the loops, OUT (the rest) in the second call
        first = out.with_name(out.name + "-a")
        if first.exists():
            shutil.rmtree(first)
        for name in a.sets.split(","):
            (first / "corpus" / name).mkdir(parents=True)
            shutil.move(out / "corpus" / name / "train", first / "corpus" / name / "train")
        shutil.move(out / "ambient", first / "ambient")
        parts = [first, out]
    for part in parts:
        print(f"kit: {part} {_size(part) / 2**20:.1f} MiB (without wheels)")
    print(f"kit: {len(digests) - len(amb)} clips of {a.sets} and {len(amb)} ambient loops")
    return 0


def unpack(a) -> int:
    """KIT... DEST: one kit folder, or the two halves of a --split kit (in any order)."""
    from hwkd.data.noise import SONIC_PI_DIR
    kits, dest = [Path(k) for k in a.kits], Path(a.dest)
    missing = [str(k) for k in kits if not k.is_dir()]
    if missing:
        print(f"kit: {', '.join(missing)} not here (a split kit's first half stays on the device machine only while "
              "it is warm: make the second call right after the first)", file=sys.stderr)
        return 2
    home = next((k for k in kits if (k / "sha256.json").is_file()), None)
    if home is None:
        print(f"kit: no sha256.json in {', '.join(map(str, kits))}; build the kit again", file=sys.stderr)
        return 2
    digests = json.loads((home / "sha256.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(home / "corpus" / "corpus.json", dest / "corpus.json")
    bad, absent = [], []
    for rel, want in digests.items():
        if rel.startswith("ambient/"):
            continue
        src = next((k / "corpus" / Path(rel).with_suffix(".flac") for k in kits
                    if (k / "corpus" / Path(rel).with_suffix(".flac")).is_file()), None)
        if src is None:
            absent.append(rel)
            continue
        x, sr = sf.read(str(src), dtype="int16", always_2d=True)
        if _digest(x) != want:
            bad.append(rel)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), x, sr, subtype="PCM_16")
    for k in kits:
        for man in (k / "corpus").rglob("manifest.jsonl"):
            shutil.copy(man, dest / man.relative_to(k / "corpus"))
    sonic = Path(a.sonic_pi_dir or SONIC_PI_DIR)
    sonic.mkdir(parents=True, exist_ok=True)
    loops = [f for k in kits for f in sorted((k / "ambient").glob("*.flac"))]
    for f in loops:
        if hashlib.sha256(f.read_bytes()).hexdigest() != digests.get(f"ambient/{f.name}"):
            bad.append(f"ambient/{f.name}")
        shutil.copy(f, sonic / f.name)
    if absent or len(loops) != 16:
        print(f"kit: {len(absent)} clips and {16 - len(loops)} ambient loops missing from {', '.join(map(str, kits))}"
              + (f", e.g. {absent[0]}" if absent else "") + "; give both halves of a split kit", file=sys.stderr)
        return 2
    if bad:
        print(f"kit: {len(bad)} clips decoded to other samples than were packed, e.g. {bad[0]}; pack the kit again",
              file=sys.stderr)
        return 2
    print(f"kit: {len(digests) - len(loops)} clips written to {dest} and {len(loops)} ambient loops to {sonic}, every "
          "one equal to what was packed (SHA-256)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--sets", default="foa", help="corpus sets to pack, comma-separated (default %(default)s)")
    b.add_argument("--out", default="teacher-kit")
    b.add_argument("--corpus", default=None, help="corpus root (default: the embedded corpus, built if missing)")
    b.add_argument("--split", action="store_true",
                   help="two halves for two device calls: OUT-a (train clean clips, ambient loops), OUT (the rest)")
    u = sub.add_parser("unpack")
    u.add_argument("kits", nargs="+", metavar="KIT", help="the kit folder (both halves of a --split kit)")
    u.add_argument("dest")
    u.add_argument("--sonic-pi-dir", default=None,
                   help="where the ambient loops go (default: where hwkd reads them, $HWKD_SONIC_PI_DIR or Debian's)")
    z = sub.add_parser("size")
    z.add_argument("kits", nargs="+", metavar="KIT")
    a = ap.parse_args()
    return {"build": build, "unpack": unpack, "size": size}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
