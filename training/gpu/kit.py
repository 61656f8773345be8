"""The teachers' GPU kit: what a device machine needs to train them with on-the-fly mixing, as lossless FLAC.

  python training/gpu/kit.py build --sets foa [--out teacher-kit]      (here, where the corpus is built)
  python training/gpu/kit.py unpack teacher-kit /tmp/corpus            (there, before training)

A set travels as its corpus.json, its train split's clean clips alone (on-the-fly mixing reads nothing else of
it: hwkd.data.mixing.OnTheFlyMix) and its whole val split (noisy and clean: the fixed clips every epoch is scored
on), with the split manifests; the 16 ambient loops go along whole (the train split takes 3 of every 5 of them by
their order, so all must be there), as do SHA-256 digests of every clip's decoded samples, which `unpack` checks
after writing the WAV files back. The device has no Debian packages: unpack puts the ambient loops where hwkd
reads them (/usr/share/sonic-pi/samples). Generated audio is never committed: the kit folder is ignored.
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


def build(a) -> int:
    from hwkd.data.noise import SONIC_PI_DIR, ambient_files
    from hwkd.data.synth import default_dataset
    root = Path(a.corpus) if a.corpus else default_dataset(1).parent
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
    (out / "sha256.json").write_text(json.dumps(digests, indent=0))
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"kit: {out} holds {len(digests)} clips of {a.sets} and {len(amb)} ambient loops, {size / 2**20:.1f} MiB")
    if size > a.budget_mib * 2**20:
        print(f"kit: more than the {a.budget_mib} MiB left beside the working tree in one device call "
              f"({CARRY_LIMIT // 2**20} MiB in all); carry fewer sets", file=sys.stderr)
        return 2
    return 0


def unpack(a) -> int:
    from hwkd.data.noise import SONIC_PI_DIR
    kit, dest = Path(a.kit), Path(a.dest)
    digests = json.loads((kit / "sha256.json").read_text())
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copy(kit / "corpus" / "corpus.json", dest / "corpus.json")
    bad = []
    for rel, want in digests.items():
        src = kit / "corpus" / Path(rel).with_suffix(".flac")
        x, sr = sf.read(str(src), dtype="int16", always_2d=True)
        if _digest(x) != want:
            bad.append(rel)
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        sf.write(str(out), x, sr, subtype="PCM_16")
    for man in (kit / "corpus").rglob("manifest.jsonl"):
        shutil.copy(man, dest / man.relative_to(kit / "corpus"))
    sonic = Path(a.sonic_pi_dir or SONIC_PI_DIR)
    sonic.mkdir(parents=True, exist_ok=True)
    for f in sorted((kit / "ambient").glob("*.flac")):
        shutil.copy(f, sonic / f.name)
    if bad:
        print(f"kit: {len(bad)} clips decoded to other samples than were packed, e.g. {bad[0]}; pack the kit again",
              file=sys.stderr)
        return 2
    print(f"kit: {len(digests)} clips written to {dest}, every one's samples equal to the packed ones (SHA-256)")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--sets", default="foa", help="corpus sets to pack, comma-separated (default %(default)s)")
    b.add_argument("--out", default="teacher-kit")
    b.add_argument("--corpus", default=None, help="corpus root (default: the embedded corpus, built if missing)")
    b.add_argument("--budget-mib", type=float, default=48.0,
                   help="refuse a kit larger than this (default %(default)s: 64 MiB minus the working tree)")
    u = sub.add_parser("unpack")
    u.add_argument("kit")
    u.add_argument("dest")
    u.add_argument("--sonic-pi-dir", default=None, help="where the ambient loops go (default: where hwkd reads them)")
    a = ap.parse_args()
    return build(a) if a.cmd == "build" else unpack(a)


if __name__ == "__main__":
    sys.exit(main())
