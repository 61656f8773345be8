"""Search controllers: they only propose candidates and receive numbers (ask/tell).

Every controller works on the same Optuna study (the store), so the same trial, store, resume and
reports serve all of them:

    optuna        (default) Optuna's TPE sampler, multi-objective: quality up, target latency down, MACs
                  down, with the latency constraint (--max-latency-ms / --realtime) passed as Optuna
                  constraints, so infeasible candidates are learnt from, not just dropped.
    random        Optuna's RandomSampler: the baseline.
    nsga2         Optuna's NSGA-II sampler (population-based, multi-objective).
    nni-random, nni-tpe, nni-evolution
                  NNI's multi-trial tuners: random, TPE and regularized evolution (aging evolution, Real et
                  al.). NNI's policy-based RL is not offered: its PPO tuner is written on TensorFlow 1's API
                  and its NAS RL strategy on tianshou 0.4, neither installable beside torch 2.13 on Python
                  3.11. NNI tuners optimise one number, so they are given the scalarisation

                      score = quality_dB - 1 dB x log2(latency / cost_ref) - 20 dB x (constraint violated)

                  (one dB of quality is worth halving the latency). Each proposal is enqueued into the
                  Optuna study and runs as an ordinary trial; the tuner is told every finished trial of
                  the study (its own and other workers'), and is rebuilt from the store on resume.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from hwkd.errors import HwkdError

if TYPE_CHECKING:                                   # (light to import: the CLI lists the controllers)
    from hwkd.search.space import SearchSpace

CONTROLLERS: dict[str, type] = {}          # name -> Controller class (registered below; plug-ins register theirs)


def register(name: str):
    """Class decorator: a controller under `name` (`hwkd search --controller NAME`)."""
    def deco(cls):
        cls.name = name
        CONTROLLERS[name] = cls
        return cls
    return deco


class Controller:
    """One ask/tell interface for every controller. The search asks the Optuna study it created with `sampler()`
    for each candidate and tells it every result; a controller that proposes by itself (an NNI tuner) does so
    in `before_ask`, enqueueing its proposal so that the study's next ask returns it. Constraints reach the
    samplers through Trial.set_constraint (Optuna >= 5)."""

    name = "base"

    def __init__(self, space: SearchSpace, seed: int):
        self.space, self.seed = space, seed

    def sampler(self, seed: int, n_startup: int):
        """The Optuna sampler of the study (`seed`: this worker's; workers of one database share no generator)."""
        raise NotImplementedError

    def before_ask(self, study, trials: list, worker: str) -> None:
        """Called before each study.ask() with the study's trials (FrozenTrials) and this worker's name."""


@register("optuna")
class TPE(Controller):
    """Optuna's multivariate TPE, multi-objective (quality, latency)."""

    def sampler(self, seed: int, n_startup: int):
        import optuna
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=n_startup, multivariate=True)


@register("nsga2")
class NSGA2(Controller):
    def sampler(self, seed: int, n_startup: int):
        import optuna
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=max(4, n_startup))


@register("random")
class Random(Controller):
    def sampler(self, seed: int, n_startup: int):
        import optuna
        return optuna.samplers.RandomSampler(seed=seed)


class NNITuner(Random):
    """One of NNI's HPO tuners (NNIProposer) proposing; the random sampler fills what a proposal does not fix, and
    draws when the tuner has nothing to propose."""

    def __init__(self, space: SearchSpace, seed: int):
        super().__init__(space, seed)
        self.proposer = None

    def before_ask(self, study, trials: list, worker: str) -> None:
        from optuna.trial import TrialState
        if self.proposer is None:
            self.proposer = NNIProposer(self.name, self.space, self.seed, worker)
        self.proposer.observe([t for t in trials if t.state in (TrialState.COMPLETE, TrialState.FAIL)])
        if not any(t.state == TrialState.WAITING for t in trials):
            prop = self.proposer.propose()
            if prop is not None:        # None: the tuner has nothing to propose now; the sampler draws
                study.enqueue_trial(prop[1], user_attrs={"nni_id": prop[0], "nni_worker": worker})


for _name in ("nni-random", "nni-tpe", "nni-evolution"):
    register(_name)(type(f"NNI_{_name[4:].upper()}", (NNITuner,), {}))


def make_controller(name: str, space: SearchSpace, seed: int) -> Controller:
    if name not in CONTROLLERS:
        raise HwkdError(f"unknown controller {name!r}", f"use one of: {', '.join(CONTROLLERS)}")
    return CONTROLLERS[name](space, seed)


def suggest(trial, space: SearchSpace) -> dict:
    """The candidate of an Optuna trial (enqueued values are returned as enqueued)."""
    cand = {}
    for d in space.free:
        if d.rng is not None:
            lo, hi, step = d.rng
            cand[d.name] = trial.suggest_int(d.name, lo, hi, step=step)
        else:
            cand[d.name] = trial.suggest_categorical(d.name, list(d.choices))
    return cand


def scalar_score(quality: float, latency: float, cost_ref: float, violated: bool) -> float:
    return quality - math.log2(max(latency, 1e-6) / cost_ref) - (20.0 if violated else 0.0)


class NNIProposer:
    """Wraps one of NNI's HPO tuners as a proposer of candidates (NNI's own ask/tell: generate_parameters /
    receive_trial_result). Results of the trials this proposer made are reported to it as such; other
    trials of the study (other workers, earlier sessions) are imported where the tuner supports it (TPE)."""

    def __init__(self, name: str, space: SearchSpace, seed: int, worker: str):
        import logging

        import nni  # noqa: F401  (its import installs its log handlers; quiet them after)
        logging.getLogger("nni").setLevel(logging.WARNING)
        self.space = space
        self.name = name
        self.worker = worker
        self.tuner = self._make(name, seed)
        # the evolution tuner speaks NNI's NAS format (layer_choice, values as {"_value", "_idx"})
        kind = "layer_choice" if name == "nni-evolution" else "choice"
        self.tuner.update_search_space({d.name: {"_type": kind, "_value": list(d.choices)} for d in space.free})
        self.seen: set[int] = set()
        self._next_id = 0

    def _make(self, name: str, seed: int):
        import random

        import numpy as np
        random.seed(seed)               # the evolution tuner draws from the global generators
        np.random.seed(seed)
        if name == "nni-random":
            from nni.algorithms.hpo.random_tuner import RandomTuner
            return RandomTuner(seed=seed)
        if name == "nni-tpe":
            from nni.algorithms.hpo.tpe_tuner import TpeTuner
            return TpeTuner(optimize_mode="maximize", seed=seed)
        if name == "nni-evolution":
            from nni.algorithms.hpo.regularized_evolution_tuner import RegularizedEvolutionTuner
            return RegularizedEvolutionTuner(optimize_mode="maximize", population_size=8, sample_size=3)
        raise HwkdError(f"unknown controller {name!r}", f"use one of: {', '.join(CONTROLLERS)}")

    def observe(self, finished: list) -> None:
        """finished: FrozenTrials (complete or failed) of the study."""
        free = {d.name for d in self.space.free}
        imports = []
        for t in finished:
            if t.number in self.seen:
                continue
            self.seen.add(t.number)
            mine = t.user_attrs.get("nni_worker") == self.worker and "nni_id" in t.user_attrs
            params = {k: v for k, v in t.params.items() if k in free}
            if t.state.name == "COMPLETE" and "score" in t.user_attrs:
                if mine:
                    self.tuner.receive_trial_result(t.user_attrs["nni_id"], params, t.user_attrs["score"])
                else:
                    imports.append({"parameter": params, "value": t.user_attrs["score"]})
            elif mine:
                self.tuner.trial_end(t.user_attrs["nni_id"], False)
        if imports and self.name == "nni-tpe":
            self.tuner.import_data(imports)

    def propose(self) -> tuple[int, dict] | None:
        import nni
        self._next_id += 1
        try:
            params = self.tuner.generate_parameters(self._next_id)
        except nni.NoMoreTrialError:      # e.g. evolution whose whole population failed
            return None
        params = {k: (v["_value"] if isinstance(v, dict) else v) for k, v in params.items()}
        return self._next_id, {k: (v.item() if hasattr(v, "item") else v) for k, v in params.items()}
