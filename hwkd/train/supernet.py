"""Supernet training: every step trains several sub-networks of the weight-sharing supernet, each distilled.

The sandwich rule (US-Nets, BigNAS; ../shared/research/supernet.md §2): each step trains the largest and the
smallest sub-network and `n_random` sub-networks drawn uniformly from the space's valid configurations, on the
same batch; the loss is the mean over them of L_SE + λ_k·L_KD, one backward, one clipped Adam step (so the
shared weights get one update that serves every size). The teacher's taps are computed once per batch and
serve all of them.

KD per sub-network: a distillation scheme's own modules (I²SRF-TFCKD's fusion chains and calibration layers)
are sized by the student's taps, which depend on its width C and its number of dual-path layers L only
(hwkd.models.dpdcrn: enc/dec taps have C channels, there is one middle tap per layer). So there is one
distiller per (C, L) in the space, each with its own λ balanced like a single run's (λ·‖∇L_KD‖ =
KD_GRAD_RATIO·‖∇L_SE‖ on the first batches, on the largest sub-network with that C and L). What does not
depend on the student's width is shared by all of them (`share_width_free`): I²SRF-TFCKD's calibration MLPs
read Gram matrices ([B, T, T] and [B, T, B], the same for any C), and its teacher-side fusion chains see the
teacher only. Per-size copies held 17.3 M parameters for the wide space's 12 sizes (a 204-MiB resumable state
with Adam's moments, too big to carry across sessions in git); shared, they are one set of the same modules,
trained by every sub-network as the supernet's weights are (one calibration MLP per tap position: a network
with one dual-path layer uses the first middle-tap MLP of one with two).

This plugs into the ordinary trainer (hwkd.train.trainer.train) as an objective: the trainer's model is the
supernet's largest network (its checkpoints are plain DPDCRN checkpoints of the largest configuration, the
distillers and the step count ride in the objective state), so resume, data-parallel workers, warm-up and
cosine and the progress bar are the same code. Which sub-networks a step trains is a function of (seed,
step) alone: a resumed run and every worker draw the same ones.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from torch import nn

from hwkd.kd import create_distiller
from hwkd.models.dpdcrn import DPDCRNConfig
from hwkd.models.enhancer import Enhancer
from hwkd.models.supernet import Supernet
from hwkd.train.losses import se_loss
from hwkd.train.objective import KD_GRAD_RATIO, _grad_norm, check_teacher

N_RANDOM = 2        # random sub-networks per step besides the largest and the smallest


def size_key(cfg: DPDCRNConfig) -> str:
    """The distiller a sub-network uses: its taps' shapes depend on (channels, layers) only."""
    return f"c{cfg.channels}l{cfg.layers}"


def smallest(configs: list[DPDCRNConfig]) -> DPDCRNConfig:
    """The configuration with the fewest parameters (ties: fewer channels, then layers, depth, GRU size)."""
    from hwkd.models.dpdcrn import DPDCRN

    def size(c):
        with torch.device("meta"):
            return sum(p.numel() for p in DPDCRN(c).parameters()), c.channels, c.layers, c.depth, c.hidden, c.heads
    return min(configs, key=size)


SHARED_PARTS = ("calib", "t_fuse")     # what share_width_free shares; recorded in supernet.json


def share_width_free(distillers: dict[str, nn.Module]) -> list[str]:
    """Make every distiller use one set of the width-free parts (SHARED_PARTS, where a scheme has them): those of
    the distiller with the most of them (the most student taps), which serve any fewer taps. Returns the parts
    shared; a donor that would not serve every distiller (a part whose shapes differ otherwise) is an error."""
    shared = []
    for part in SHARED_PARTS:
        have = [d for d in distillers.values() if isinstance(getattr(d, part, None), nn.Module)]
        if not have:
            continue
        donor = max(have, key=lambda d: sum(p.numel() for p in getattr(d, part).parameters()))
        for d in have:
            if not _serves(getattr(donor, part), getattr(d, part)):
                raise ValueError(f"{part} of the distillers differs beyond the number of student taps: not shared")
        for d in have:
            setattr(d, part, getattr(donor, part))
        shared.append(part)
    return shared


def _serves(donor: nn.Module, other: nn.Module) -> bool:
    """Whether `donor` can stand in for `other`: the same parameters and shapes, except that a list of modules
    (per-tap MLPs) may be longer in the donor."""
    mine = dict(donor.named_parameters())
    for name, p in other.named_parameters():
        if name not in mine or mine[name].shape != p.shape:
            return False
    extra = set(mine) - {n for n, _ in other.named_parameters()}
    # what the donor has beyond `other` may only be further per-tap modules (a student's extra middle taps)
    return all(".q_time." in n or ".q_freq." in n or n.startswith(("q_time.", "q_freq.")) for n in extra)


class _State(nn.Module):
    """The objective's trainable and checkpointed parts: one distiller per size key and the step count."""

    def __init__(self, distillers: dict[str, nn.Module]):
        super().__init__()
        self.distillers = nn.ModuleDict(distillers)
        self.register_buffer("steps", torch.zeros((), dtype=torch.long))


class SandwichObjective:
    name = "supernet-sandwich"

    def __init__(self, supernet: Supernet, configs: list[DPDCRNConfig], teacher, scheme: str, batch_size: int,
                 segment_samples: int, n_random: int = N_RANDOM, seed: int = 0, lams: dict | None = None,
                 inplace_kd: float = 0.0, **options):
        if not configs:
            raise ValueError("a supernet needs at least one sub-network configuration")
        for c in configs:
            supernet.check(c)
        self.supernet = supernet
        self.configs = list(configs)
        self.top = supernet.max_cfg
        self.bottom = smallest(self.configs)
        self.n_random = n_random
        self.seed = seed
        # in-place distillation (BigNAS): every other sub-network also learns the largest one's output (detached),
        # weighted inplace_kd against its L_SE (the same loss, the largest's output as the reference); 0 = off
        if not (inplace_kd >= 0 and math.isfinite(inplace_kd)):
            raise ValueError(f"the in-place distillation weight must be 0 or more, got {inplace_kd}")
        self.inplace_kd = float(inplace_kd)
        self.scheme = scheme
        self.teacher = teacher.eval() if teacher is not None else None
        self.teacher_enhancer = None
        if self.teacher is not None:
            check_teacher(self.teacher.cfg, self.top, "supernet",
                          "choose a space with the teacher's input channels and hop")
            for p in self.teacher.parameters():
                p.requires_grad_(False)
            self.teacher_enhancer = Enhancer(self.teacher)
        # the largest configuration of each size key represents it (balancing λ, building the distiller)
        self.representative: dict[str, DPDCRNConfig] = {}
        for c in sorted(self.configs + [self.top], key=lambda c: (c.depth, c.hidden, c.heads, c.intra_bidirectional)):
            self.representative[size_key(c)] = c
        distillers = {}
        self.shared: list[str] = []
        if self.teacher is not None:
            frames = -(-segment_samples // self.top.hop)
            x = torch.zeros(batch_size, 2 * self.top.in_channels, frames, 257)
            with torch.no_grad():
                _, tt = self.teacher(x[:, : 2 * self.teacher.cfg.in_channels], return_taps=True)
                for key, c in self.representative.items():
                    _, st = supernet(c, x, return_taps=True)
                    distillers[key] = create_distiller(scheme, st, tt, **options)
            self.shared = share_width_free(distillers)
        self.state = _State(distillers)
        self.lams = dict(lams or {})
        self.lam_record: dict = {"rule": "fixed", "lams": self.lams} if lams else {}

    def modules(self) -> list[nn.Module]:
        return [self.state]

    # -- which sub-networks a step trains -------------------------------------------------------------
    def sample(self, step: int) -> list[DPDCRNConfig]:
        """The largest, the smallest and n_random uniform draws (a function of (seed, step) alone)."""
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        picks = torch.randint(len(self.configs), (self.n_random,), generator=g).tolist()
        return [self.top, self.bottom] + [self.configs[i] for i in picks]

    # -- λ ------------------------------------------------------------------------------------------
    def balance(self, batches: list[dict], ratio: float = KD_GRAD_RATIO) -> dict:
        """λ per size key: λ·‖∇L_KD‖ = ratio·‖∇L_SE‖ over the shared weights, on its representative."""
        if not batches:
            raise ValueError("no batches to balance λ on")
        params = [p for p in self.supernet.parameters() if p.requires_grad]
        record = {}
        teacher_taps = [self._teacher_taps(b) for b in batches]           # once per batch, for every key
        for key, c in self.representative.items():
            enh = Enhancer(self.supernet.sub(c))
            se, kd = [], []
            for b, t_taps in zip(batches, teacher_taps):
                est, s_taps = enh(b["noisy"], return_taps=True)
                l_se, _ = se_loss(est, b["clean"], enh.n_fft, enh.hop)
                l_kd, _ = self.state.distillers[key](s_taps, t_taps)
                se.append(_grad_norm(l_se, params))
                kd.append(_grad_norm(l_kd, params))
            g_se, g_kd = sum(se) / len(se), sum(kd) / len(kd)
            if not (g_kd > 0 and math.isfinite(g_kd)) or not (g_se > 0 and math.isfinite(g_se)):
                raise FloatingPointError(f"cannot balance λ for {key}: ‖∇L_SE‖ = {g_se}, ‖∇L_KD‖ = {g_kd}")
            self.lams[key] = ratio * g_se / g_kd
            record[key] = {"lam": self.lams[key], "grad_norm_se": g_se, "grad_norm_kd": g_kd}
        self.lam_record = {"rule": "grad-ratio", "target_ratio": ratio, "batches": len(batches),
                           "lams": dict(self.lams), "per_key": record}
        return self.lam_record

    def _teacher_taps(self, batch: dict):
        if self.teacher is None:
            return None
        self.teacher_enhancer.to(batch["noisy"].device)
        with torch.no_grad():
            _, taps = self.teacher_enhancer(batch["noisy"][:, : self.teacher.cfg.in_channels], return_taps=True)
        return taps

    # -- the trainer's objective ------------------------------------------------------------------------
    def __call__(self, enhancer: Enhancer, batch: dict) -> tuple[torch.Tensor, dict]:
        if self.teacher is not None and set(self.lams) != set(self.state.distillers):
            raise RuntimeError("SandwichObjective λ is not set: call balance() first or pass lams=")
        step = int(self.state.steps)
        t_taps = self._teacher_taps(batch)
        total = 0.0
        parts: dict = {}
        top_est = None
        for role, c in zip(("max", "min") + ("rand",) * self.n_random, self.sample(step)):
            enh = Enhancer(self.supernet.sub(c))
            est, s_taps = enh(batch["noisy"], return_taps=True)
            l_se, p = se_loss(est, batch["clean"], enh.n_fft, enh.hop)
            loss = l_se
            if role == "max":
                top_est = est.detach()
            elif self.inplace_kd:
                l_in, _ = se_loss(est, top_est, enh.n_fft, enh.hop)
                loss = loss + self.inplace_kd * l_in
                parts[f"inplace_{role}"] = parts.get(f"inplace_{role}", 0.0) + float(l_in.detach())
            if t_taps is not None:
                key = size_key(c)
                l_kd, _ = self.state.distillers[key](s_taps, t_taps)
                loss = loss + self.lams[key] * l_kd
                parts[f"kd_{role}"] = parts.get(f"kd_{role}", 0.0) + float(l_kd.detach())
            parts[f"neg_si_sdr_{role}"] = parts.get(f"neg_si_sdr_{role}", 0.0) + p["neg_si_sdr"]
            total = total + loss
        for k in [k for k in parts if k.endswith("_rand")]:
            parts[k] /= max(1, self.n_random)
        self.state.steps += 1
        return total / (2 + self.n_random), parts

    @torch.no_grad()
    def validate_more(self, val_set, device: str) -> dict:
        """The smallest sub-network's val SI-SDR beside the largest's (which the trainer scores)."""
        from hwkd.train.trainer import validate
        v = validate(Enhancer(self.supernet.sub(self.bottom)).to(device), val_set, 0, device)
        return {"val_si_sdr_db_min": v["val_si_sdr_db"]}


def train_supernet(configs: list[DPDCRNConfig], out: str | os.PathLike, tcfg, teacher=None,
                   scheme: str = "i2srf-tfckd", data: str | Path | None = None, n_random: int = N_RANDOM,
                   lams: dict | None = None, mixing: str = "auto", meta: dict | None = None,
                   progress: bool = True, inplace_kd: float = 0.0) -> dict:
    """Train (or resume) the supernet over `configs` into `out` with hwkd's trainer. Writes OUT/supernet.json
    (the sub-network configurations and the largest) and OUT/kd_weight.json (λ per size key); the checkpoints
    (last.pt, best.pt) hold the largest network, which `load_supernet` turns back into the supernet."""
    from hwkd import SAMPLE_RATE
    from hwkd.audio.io import write_text_atomic
    from hwkd.data.datasets import SpeechPairs
    from hwkd.errors import HwkdError
    from hwkd.kd import uses_teacher
    from hwkd.models.supernet import largest
    from hwkd.train.recipe import BALANCE_BATCHES, check_lam, first_batches, mix_version_of, training_set
    from hwkd.train.trainer import check_budget, train
    check_budget(tcfg)
    if tcfg.workers != 1:
        raise HwkdError("supernet training runs in one process (workers 1)", "drop --workers")
    if uses_teacher(scheme) and teacher is None:
        raise HwkdError(f"KD scheme {scheme} needs a teacher", "pass the teacher (the embedded one by default)")
    if not uses_teacher(scheme):
        teacher = None
    for key, lam in (lams or {}).items():
        check_lam(lam, f"KD weight for sub-networks {key}:")
    try:
        top = largest(configs)
    except ValueError as e:
        raise HwkdError(f"these sub-networks cannot share one supernet: {e}", "fix that field in the space") from None
    run = Path(out)
    teacher_id = None
    if teacher is not None:
        import hashlib
        teacher_id = hashlib.sha256(json.dumps(teacher.cfg.to_dict(), sort_keys=True).encode()
                                    + b"".join(t.detach().cpu().numpy().tobytes()
                                               for t in teacher.state_dict().values())).hexdigest()[:16]
    desc = {"max": top.to_dict(), "configs": [c.to_dict() for c in configs], "scheme": scheme,
            "n_random": n_random, "seed": tcfg.seed, "teacher": teacher_id, "lams": lams, "inplace_kd": inplace_kd}
    saved_desc = run / "supernet.json"
    if saved_desc.is_file():
        old, _, _ = read_description(saved_desc)
        old = {"inplace_kd": 0.0, **old}                  # written before in-place distillation existed: off
        if {k: old.get(k) for k in desc} != desc:
            diff = [k for k in desc if old.get(k) != desc[k]]
            raise HwkdError(f"{run} holds a supernet of another space or recipe ({', '.join(diff)} differ)",
                            "resume with the same settings, or choose another --out")
    elif (run / "last.pt").is_file():
        raise HwkdError(f"{run} holds another training run (last.pt without supernet.json)", "choose another --out")
    if data is None:
        from hwkd.data.synth import default_dataset
        data = default_dataset(top.in_channels, progress=progress)
    train_set = training_set(data, "train", tcfg.segment_s, top.in_channels, tcfg.seed, mixing, mix_version_of(run))
    val_set = SpeechPairs(data, split="val", mode="utterance", channels=top.in_channels)
    if tcfg.threads:
        torch.set_num_threads(tcfg.threads)
    torch.manual_seed(tcfg.seed)
    supernet = Supernet(top)
    obj = SandwichObjective(supernet, configs, teacher, scheme, tcfg.batch_size,
                            int(round(tcfg.segment_s * SAMPLE_RATE)), n_random=n_random, seed=tcfg.seed, lams=lams,
                            inplace_kd=inplace_kd)
    if saved_desc.is_file() and old.get("kd_shared", []) != obj.shared:
        raise HwkdError(f"{run} holds a supernet whose distillers share {old.get('kd_shared') or 'nothing'}, "
                        f"this hwkd shares {obj.shared or 'nothing'} (its KD state does not load)",
                        "train it again into a new --out")
    desc["kd_shared"] = obj.shared
    run.mkdir(parents=True, exist_ok=True)
    if not saved_desc.is_file():                 # once every setting is known to work
        write_text_atomic(saved_desc, json.dumps(desc, indent=1))
    kd_file = run / "kd_weight.json"
    if teacher is not None and lams is None:
        if kd_file.is_file():
            obj.lam_record = json.loads(kd_file.read_text())
            obj.lams = {k: float(v) for k, v in obj.lam_record["lams"].items()}
        else:
            if progress:
                print(f"balancing λ for {len(obj.representative)} sub-network sizes on {BALANCE_BATCHES} batches")
            batches = first_batches(train_set, tcfg, BALANCE_BATCHES, tcfg.device)
            if not batches:
                raise HwkdError(f"the training set has {len(train_set)} segments, fewer than one batch of "
                                f"{tcfg.batch_size}", "use a smaller --batch-size or more data")
            supernet.to(tcfg.device)
            obj.state.to(tcfg.device)
            teacher.to(tcfg.device)
            obj.balance(batches)
    if teacher is not None:
        write_text_atomic(kd_file, json.dumps({**obj.lam_record, "scheme": scheme}, indent=1))
    info = {"data": str(data), "mixing_version": getattr(train_set, "version", None), "kd": scheme,
            "supernet": {"configs": len(configs), "max": top.to_dict(), "min": obj.bottom.to_dict(),
                         "n_random": n_random, "inplace_kd": inplace_kd},
            **({"kd_weight": obj.lam_record} if teacher is not None else {}), **(meta or {})}
    res = train(supernet.net, train_set, val_set, run, tcfg, objective=obj, progress=progress, meta=info)
    return {**res, **info}


def read_description(path: Path) -> tuple[dict, DPDCRNConfig, list[DPDCRNConfig]]:
    """A run's supernet.json as written, with its largest network and sub-networks parsed as configurations; a
    damaged file is one line naming it."""
    from hwkd.errors import HwkdError
    try:
        desc = json.loads(path.read_text())
        return desc, DPDCRNConfig.from_dict(desc["max"]), [DPDCRNConfig.from_dict(c) for c in desc["configs"]]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError) as e:
        raise HwkdError(f"{path} is damaged ({type(e).__name__}: {(str(e) or repr(e)).splitlines()[0]})",
                        "give the folder `hwkd supernet train` wrote, or train it again into a new --out") from None


def load_supernet(run: str | os.PathLike, which: str = "best") -> tuple[Supernet, list[DPDCRNConfig]]:
    """A trained supernet from its run folder (OUT/supernet.json and OUT/{best,last}.pt) and its configurations."""
    from hwkd.errors import HwkdError
    from hwkd.models.checkpoint import load_model
    run = Path(run)
    desc_file, ck = run / "supernet.json", run / f"{which}.pt"
    if not desc_file.is_file() or not ck.is_file():
        raise HwkdError(f"{run} is not a trained supernet (needs supernet.json and {which}.pt)",
                        "give the folder `hwkd supernet train` wrote")
    _, top, configs = read_description(desc_file)
    net, _ = load_model(ck)
    if net.cfg != top:
        raise HwkdError(f"{ck} holds {net.cfg}, not the supernet's largest network {top}",
                        "the folder is damaged: retrain, or use the other checkpoint")
    sn = Supernet(top)
    sn.net.load_state_dict(net.state_dict())
    return sn.eval(), configs


# -- the shipped supernet ---------------------------------------------------------------------------------
# Trained once over SUPERNET_SPACE with SUPERNET_RECIPE (on the 2-core CPU in the background across sessions:
# training/resume.sh supernet, whose command and args files are this recipe), distilled from the embedded mono
# teacher; shipped as the folder hwkd/assets/supernet/ (supernet.json and the slim best.pt of its largest
# network), which `hwkd search` uses by default for a space it covers.
ASSET_DIR = Path(__file__).resolve().parents[1] / "assets" / "supernet"
SUPERNET_SPACE = "wide"
SUPERNET_ARGS = (f"--space {SUPERNET_SPACE} --epochs 14 --batch-size 8 --segment-s 2 --lr 2e-3 --random 2 "
                 "--val-pesq-clips 10")
SUPERNET_RECIPE = (f"hwkd supernet train --threads 1 {SUPERNET_ARGS} --out RUN && python -m hwkd.train.supernet RUN")


def shipped_supernet() -> Path | None:
    """The shipped supernet's folder, or None while none is shipped."""
    return ASSET_DIR if (ASSET_DIR / "supernet.json").is_file() and (ASSET_DIR / "best.pt").is_file() else None


def uncovered(trained: list[DPDCRNConfig], configs: list[DPDCRNConfig]) -> DPDCRNConfig | None:
    """The first of `configs` that is not among a supernet's `trained` sub-networks (None: it covers them all)."""
    trained = set(trained)
    return next((c for c in configs if c not in trained), None)


def supernet_space(run: str | os.PathLike) -> str | None:
    """The name of the space a supernet was trained over, as `hwkd supernet train` recorded it (None: not
    recorded, or a folder that is not a supernet). A space from a YAML file elsewhere has a name that no
    search_spaces/ file has: the caller checks."""
    from hwkd.models.checkpoint import read_checkpoint
    if not (Path(run) / "best.pt").is_file():
        return None
    space = (read_checkpoint(Path(run) / "best.pt").get("meta") or {}).get("space")
    return space.get("name") if isinstance(space, dict) else None


def install_supernet(run: str | os.PathLike, dst: str | os.PathLike | None = None) -> Path:
    """Ship a trained supernet (a `hwkd supernet train` folder) as the package's: its description and its best.pt
    without optimizer or distiller state. Returns the folder written."""
    from hwkd.audio.io import write_text_atomic
    from hwkd.errors import HwkdError
    from hwkd.models.checkpoint import read_checkpoint, slim_checkpoint
    run, dst = Path(run), Path(dst or ASSET_DIR)
    load_supernet(run)                                  # a whole, loadable supernet, or one line saying why not
    ck = read_checkpoint(run / "best.pt")
    if not ck.get("train", {}).get("history"):
        raise HwkdError(f"{run}/best.pt has no finished epoch", "ship a supernet after its training")
    dst.mkdir(parents=True, exist_ok=True)
    slim_checkpoint(run / "best.pt", dst / "best.pt")
    write_text_atomic(dst / "supernet.json", (run / "supernet.json").read_text())
    return dst


if __name__ == "__main__":
    import sys

    from hwkd.errors import HwkdError
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m hwkd.train.supernet RUN   (ships the supernet trained in RUN with the "
                         "package: hwkd/assets/supernet/)")
    try:
        out = install_supernet(sys.argv[1])
    except HwkdError as e:
        raise SystemExit(f"hwkd: error: {e}") from None
    size = sum(f.stat().st_size for f in out.iterdir()) / 2 ** 20
    print(f"wrote {out} ({size:.2f} MiB)")
