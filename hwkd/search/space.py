"""Search spaces over the DPDCRN student, read from YAML (search_spaces/*.yaml).

A space names its dimensions, each a DPDCRNConfig field, as a list of choices or an integer range:

    name: default
    description: mono streaming students for small CPUs
    params:
      channels: [8, 16, 24, 32]             # choices
      layers: {low: 1, high: 2}             # integers low..high (step 1, or step: k)
      heads: [0, 1, 2]                      # 0 = attention off
      causal: true                          # a scalar is a fixed value

Fields not named keep the DPDCRNConfig default. Every value must make a valid model, and every combination of
the choices that interact (channels with heads, causal with time_attention) too; a space where one does not
is refused at load time, naming the value or the combination, so no trial is wasted on it. A dimension holds
at most MAX_CHOICES values (a range is sized before it is listed: {low: 1, high: 10^12} hung the loader).
A candidate is the dict of sampled values; `to_config` turns it into the model config.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, fields
from pathlib import Path

import yaml

from hwkd.config import is_int
from hwkd.errors import HwkdError
from hwkd.models.dpdcrn import DPDCRNConfig

SPACES_DIR = Path(__file__).resolve().parents[2] / "search_spaces"
DIMENSIONS = tuple(f.name for f in fields(DPDCRNConfig) if f.name != "n_fft")
_BOOL = ("intra_bidirectional", "causal")
_STR = ("time_attention", "causal_norm")
MAX_CHOICES = 10_000
INTERACTING = (("channels", "heads"), ("causal", "time_attention"))   # validity depends on both values


@dataclass
class Dimension:
    name: str
    choices: tuple          # every value the dimension can take, in order
    rng: tuple | None = None  # (low, high, step) for an integer range

    @property
    def fixed(self) -> bool:
        return len(self.choices) == 1


@dataclass
class SearchSpace:
    name: str
    description: str
    dims: dict              # name -> Dimension
    source: str

    def to_config(self, candidate: dict) -> DPDCRNConfig:
        values = {n: d.choices[0] for n, d in self.dims.items() if d.fixed}
        values.update(candidate)
        return DPDCRNConfig(**values)

    @property
    def free(self) -> list[Dimension]:
        return [d for d in self.dims.values() if not d.fixed]

    def size(self) -> int:
        n = 1
        for d in self.free:
            n *= len(d.choices)
        return n

    def configs(self, limit: int = 100_000) -> list[DPDCRNConfig]:
        """Every configuration of the space (all valid: `load_space` checked the combinations), in the
        order of the dimensions' choices. A space of more than `limit` is refused (a supernet enumerates its
        sub-networks; a range of thousands of widths is not a supernet space)."""
        if self.size() > limit:
            raise HwkdError(f"search space {self.name} holds {self.size():,} configurations, more than {limit:,}",
                            "use lists of choices (e.g. channels: [8, 16, 24, 32]) instead of wide ranges")
        free = self.free
        return [self.to_config(dict(zip((d.name for d in free), combo)))
                for combo in itertools.product(*(d.choices for d in free))]

    def fixed_value(self, name: str, default=None):
        d = self.dims.get(name)
        return d.choices[0] if d is not None and d.fixed else default

    def values(self, name: str) -> tuple:
        d = self.dims.get(name)
        return d.choices if d is not None else (getattr(DPDCRNConfig(), name),)

    def as_dict(self) -> dict:
        return {"name": self.name, "description": self.description, "source": self.source,
                "params": {n: list(d.choices) for n, d in self.dims.items()}}


def _dimension(path: str, name: str, spec) -> Dimension:
    rng = None

    def bad(what: str):
        return HwkdError(f"{path}: params.{name}: {what}",
                         "write a list of choices, {low: A, high: B[, step: S]} for integers, or one fixed value")
    if isinstance(spec, dict):
        if set(spec) - {"low", "high", "step"} or not {"low", "high"} <= set(spec):
            raise bad(f"a range needs low and high (and optionally step), got keys {sorted(map(str, spec))}")
        lo, hi, step = spec["low"], spec["high"], spec.get("step", 1)
        if not all(is_int(v) for v in (lo, hi, step)) or step < 1 or lo > hi:
            raise bad(f"range must be integers with low <= high and step >= 1, got {spec}")
        if (hi - lo) // step + 1 > MAX_CHOICES:
            raise bad(f"the range {lo}..{hi} holds {(hi - lo) // step + 1:,} values, more than {MAX_CHOICES:,}")
        choices = tuple(range(lo, hi + 1, step))
        rng = (lo, hi, step)
    elif isinstance(spec, list):
        if not spec:
            raise bad("an empty list of choices")
        if len(spec) > MAX_CHOICES:
            raise bad(f"{len(spec):,} choices, more than {MAX_CHOICES:,}")
        choices = tuple(spec)
    else:
        choices = (spec,)
    for v in choices:
        if name in _BOOL:
            ok = isinstance(v, bool)
        elif name in _STR:
            ok = isinstance(v, str)
        elif name == "gru_hidden":
            ok = v is None or is_int(v)
        else:
            ok = is_int(v)
        if not ok:
            raise bad(f"value {v!r} has the wrong type")
    if len(set(choices)) != len(choices):
        raise bad(f"repeated choices in {list(choices)}")
    return Dimension(name, choices, rng if len(choices) > 1 else None)


def load_space(spec: str | Path, teacher_hop: int | None = None) -> SearchSpace:
    """A space by name (a file in search_spaces/) or by path. teacher_hop: distillation needs the student's
    STFT to be the teacher's, so a space with another hop is refused when given."""
    p = Path(spec)
    known = ", ".join(sorted(q.stem for q in SPACES_DIR.glob("*.yaml")))
    if p.is_dir():
        raise HwkdError(f"search space {spec} is a folder, not a YAML file", f"use one of: {known}, or a path to a "
                        "YAML file")
    if not p.suffix:
        p = SPACES_DIR / f"{spec}.yaml"
    if not p.is_file():
        raise HwkdError(f"search space {spec} not found ({p})", f"use one of: {known}, or a path to a YAML file")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise HwkdError(f"{p} is not valid YAML ({str(e).splitlines()[0]})", "fix the file's syntax") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("params"), dict) or not doc["params"]:
        raise HwkdError(f"{p}: a search space is a mapping with a non-empty 'params' mapping",
                        "see search_spaces/README.md for the format")
    unknown = set(doc) - {"name", "description", "params"}
    if unknown:
        raise HwkdError(f"{p}: unknown key(s) {', '.join(sorted(unknown))}", "keep to name, description, params")
    bad = [k for k in doc["params"] if k not in DIMENSIONS]
    if bad:
        raise HwkdError(f"{p}: unknown dimension(s) {', '.join(sorted(map(str, bad)))}",
                        f"use DPDCRN fields: {', '.join(DIMENSIONS)}")
    dims = {k: _dimension(str(p), k, v) for k, v in doc["params"].items()}
    space = SearchSpace(str(doc.get("name") or p.stem), str(doc.get("description") or ""), dims, str(p))
    # every value must make a valid model (ranges: DPDCRNConfig), and so must every combination of the dimensions
    # that interact; the others are independent, so checking them one at a time covers every combination
    paired = {n for pair in INTERACTING for n in pair}
    for name in dims:
        if name in paired:
            continue
        for v in dims[name].choices:
            try:
                DPDCRNConfig(**{name: v})
            except ValueError as e:
                raise HwkdError(f"{p}: params.{name}: value {v!r} is not valid ({e})",
                                "see hwkd/models/dpdcrn.py DPDCRNConfig for each field's range") from None
    for a, b in INTERACTING:
        for combo in itertools.product(space.values(a), space.values(b)):
            values = dict(zip((a, b), combo))
            try:
                DPDCRNConfig(**values)
            except ValueError as e:
                raise HwkdError(f"{p}: the combination {values} is not a valid DPDCRN ({e})",
                                "narrow the choices so that every combination is valid "
                                "(channels/2 divisible by every heads choice; causal needs time_attention none or "
                                "causal)") from None
    if teacher_hop is not None and any(h != teacher_hop for h in space.values("hop")):
        raise HwkdError(f"{p}: hop choices {list(space.values('hop'))} differ from the teacher's hop {teacher_hop}",
                        "distillation needs the teacher's STFT: fix hop to the teacher's, or use a teacher with "
                        "that hop (--teacher)")
    return space


def list_spaces() -> list[str]:
    return sorted(q.stem for q in SPACES_DIR.glob("*.yaml"))
