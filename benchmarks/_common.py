import json
import math
import statistics
import sys
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"


def save(name: str, data: dict, teacher=None) -> Path:
    """results/NAME.json. `teacher`: the teacher checkpoint the benchmark ran with (True: the embedded one),
    recorded with its SHA-256 so a figure names the teacher it depends on."""
    if teacher is not None:
        from hwkd.models.teacher import embedded_teacher_path, teacher_sha256
        path = embedded_teacher_path() if teacher is True else Path(teacher)
        data = {**data, "teacher_file": str(path), "teacher_sha256": teacher_sha256(path)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / f"{name}.json"
    out.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {out}", file=sys.stderr)
    return out


def val_score(run: Path) -> dict:
    """A training run's last validation (its history.jsonl): val SI-SDR, PESQ-WB and the steps trained."""
    last = [json.loads(x) for x in (run / "history.jsonl").read_text().splitlines()][-1]
    return {"val_si_sdr_db": last["val_si_sdr_db"], "val_pesq_wb": last.get("val_pesq_wb"), "steps": last["steps"]}


def median(xs):
    return statistics.median(xs)


ORACLE_GAIN_MAX = math.tanh(3.0)      # the largest gain a polar mask gives short of saturation


def ideal_gain_output(ref, target, keep_phase: bool):
    """The ideal mask target/ref on `ref` (numpy [N]), its gain clipped at ORACLE_GAIN_MAX, with the target's
    phase or ref's own, through hwkd's STFT/iSTFT: the oracle of DPDCRN's polar mask family (numpy [N])."""
    import torch

    from hwkd.audio.stft import istft, stft
    nr, ns = stft(torch.from_numpy(ref)[None]), stft(torch.from_numpy(target)[None])
    m = ns / torch.where(nr.abs() > 0, nr, torch.ones_like(nr))
    g = m.abs().clamp(max=ORACLE_GAIN_MAX)
    return istft(nr * g * (torch.exp(1j * m.angle()) if keep_phase else 1), len(ref))[0].numpy()


def inherited_model(sn, cfg):
    """The plain DPDCRN that `hwkd supernet extract` would write for sub-network `cfg` of supernet `sn` (eval)."""
    from hwkd.models.dpdcrn import DPDCRN
    m = DPDCRN(cfg)
    m.load_state_dict(sn.extract(cfg).state_dict())
    return m.eval()


def inherited_score(sn, cfg, val, pesq_clips: int = 5) -> dict:
    """A sub-network of supernet `sn` scored as inherited (no training) on `val`: val SI-SDR and PESQ-WB (on the
    first `pesq_clips` clips), with the plain DPDCRN that `hwkd supernet extract` would write."""
    from hwkd.models.enhancer import Enhancer
    from hwkd.train.trainer import validate
    v = validate(Enhancer(inherited_model(sn, cfg)), val, pesq_clips, "cpu")
    return {"val_si_sdr_db": v["val_si_sdr_db"], "val_pesq_wb": v["val_pesq_wb"]}
