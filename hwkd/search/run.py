"""`hwkd search`: the search loop over an Optuna study (the store), resumable and shareable by workers.

A run is a folder RUN (default $HWKD_HOME/runs/NAME) holding run.json (the settings), the study (RUN/study.db,
named in run.json relative to RUN so the folder can be moved or copied, unless --storage or $HWKD_STORAGE names a
database server; no password is ever written or shown: hwkd.store), trials/KEY/ (one folder per
candidate: its spec, log, checkpoints per rung, exports, results) and worker clocks. The settings also live in the
study's user attributes, so a worker on another machine joins with `--storage URL --name NAME` alone.

The loop (per worker): ask the controller for a candidate; skip it if another trial already has or is running
the same model (the lower trial number wins: a trial waits until earlier running ones have written their
candidate; and a candidate folder is held by a file lock while it trains), so two workers never train one
candidate twice; run rung 0 in a child process (short distillation, validation, profiling on the target);
promote it to rung 1 (more distillation) when its rung-0 result is on the current rung-0 front and enough
trials have finished (multi-fidelity); tell the study (quality, latency, GMAC/s) and the constraint. A child
that raises, gives NaN or is killed marks only that trial failed; one with no result after its timeout
(--trial-timeout; by default derived from the training budget) is hung: its process group is killed, the trial
failed with the reason and retried once. Ctrl-C or kill -9 loses no finished trial: on --resume, and by the
other workers after each trial, trials of dead workers (this host: the process is gone; any host: no heartbeat
in the store for STALE_AFTER_S) and interrupted ones are retried (their candidate folder resumes training from
its last checkpoint, and a rung whose result exists is not recomputed).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict
from functools import partial
from pathlib import Path

from hwkd import SAMPLE_RATE, store
from hwkd.audio.io import write_text_atomic
from hwkd.config import changed_settings
from hwkd.errors import HwkdError
from hwkd.paths import claim_folder, hwkd_home
from hwkd.search.config import SearchConfig  # noqa: F401  (the settings; imported from here too)
from hwkd.search.trial import PROFILE_FIELDS, RungResult, TrialRecord
from hwkd.sysinfo import die_with_parent, ours, pid_alive, pid_domain

DIRECTIONS = ("maximize", "minimize", "minimize")        # quality (val SI-SDR dB), latency ms per hop, GMAC/s
METRICS = ("val_si_sdr_db", "latency_ms", "gmacs_per_s")   # their names in the study (optuna-dashboard shows them)
MAX_DUPLICATES_IN_A_ROW = 40
KEY_WAIT_S = 10.0     # how long a trial waits for earlier trials, asked a moment before, to write their key
HEARTBEAT_S = 30      # a running trial's worker stamps the store this often (the database server's clock) ...
STALE_AFTER_S = 300   # ... and a running trial without a stamp for this long is a dead worker's: failed, retried
NAMED_WITHIN_S = 60   # a running trial still unnamed this long after its start is an orphan (not counted)
# A trial process (one rung) with no result after its timeout is hung: its process group is killed, the trial
# failed with the reason and retried once. Default: a fixed allowance (start-up, teacher, validation, profiling)
# plus one per second of audio trained (steps x batch size x segment): 10 s, some twenty times what a CPU
# step of the default students takes (a step of batch 2 was seen at 37 s on two cores shared by five jobs).
# A timeout that strikes a slow but live trial costs little: the retry resumes from its last checkpoint.
TRIAL_TIMEOUT_BASE_S = 600.0
TRIAL_TIMEOUT_PER_AUDIO_S = 10.0
CHILD_ENV_DROP = (store.STORAGE_ENV, "PGPASSWORD")   # a trial process never needs the store or its password


def near_limit(lo_ms: float | None, hi_ms: float | None, limits: list[float]) -> bool:
    """A predicted latency whose band straddles a limit: feasibility is decided on the prediction itself (p50),
    but the measured value may fall on the other side of the limit — the report and `hwkd pick` say so, and a
    measurement on the device settles it. Measured latencies carry no band (False)."""
    return lo_ms is not None and hi_ms is not None and any(lo_ms <= x < hi_ms for x in limits)


def check_search_budget(sc: SearchConfig) -> None:
    """A search whose trials cannot train is refused before it starts (one line naming the flag)."""
    from hwkd.train.trainer import TrainConfig, check_budget
    for ok, flag in ((sc.steps >= 1 or (sc.supernet and sc.steps == 0), f"--steps {sc.steps}"),
                     (sc.promote_steps >= 0, f"--promote-steps {sc.promote_steps}"),
                     (sc.promote_after >= 0, f"--promote-after {sc.promote_after}")):
        if not ok:
            raise HwkdError(f"{flag}: impossible training budget", "give a positive value (see hwkd search --help)")
    if sc.finetune_lr is not None and not (sc.finetune_lr > 0 and math.isfinite(sc.finetune_lr)):
        raise HwkdError(f"--finetune-lr {sc.finetune_lr}: not a learning rate", "give a positive number, e.g. 2e-4")
    if sc.promote_share is not None and not 0 < sc.promote_share <= 1:
        raise HwkdError(f"--promote-share {sc.promote_share}: not a share of the trials' time",
                        "give a number above 0 and at most 1, e.g. 0.5")
    from hwkd.train.recipe import check_lam
    check_lam(sc.lam)
    check_budget(TrainConfig(batch_size=sc.batch_size, lr=sc.lr, segment_s=sc.segment_s, val_clips=sc.val_clips,
                             val_pesq_clips=sc.val_pesq_clips, max_steps_per_epoch=max(1, sc.steps)))


def resume_config(run: Path, settings: dict, data: Path | None = None,
                  trial_timeout: float | None = None) -> tuple[SearchConfig, str | None]:
    """A resumed run's settings on this machine, and the store to give Search (None: the run's own SQLite file, as
    for a new run). A worker joining from another machine gets the embedded corpus and teacher rebuilt or found
    here; another dataset must be given (`data`)."""
    sc = SearchConfig.from_dict(settings)
    sc.mixing_version = settings.get("mixing_version", 1)      # runs from before the field mixed with version 1
    sc.balance = settings.get("balance", "mean-2")             # ... and balanced λ on the mean of 2 batches
    if trial_timeout is not None:
        sc.trial_timeout_s = trial_timeout
    # the run's own SQLite file: None, as for a new run (one worker, a reproducible sampler seed)
    storage = None if settings["storage"] == store.sqlite_url(run / store.RUN_DB) else settings["storage"]
    from hwkd.models.teacher import ASSETS
    if data:
        sc.data = str(data)
    elif sc.data and not Path(sc.data).exists():      # a worker joining from another machine
        if Path(sc.data).parent.parts[-2:] != ("corpus", "default"):
            raise HwkdError(f"the dataset of search {run.name} ({sc.data}) is not on this machine",
                            "pass its local copy with --data PATH")
        sc.data = None                                # the embedded corpus is rebuilt identically here
    shipped = {a.name: a for a in ASSETS.values()}
    if sc.teacher and not Path(sc.teacher).is_file() and Path(sc.teacher).name in shipped:
        sc.teacher = str(shipped[Path(sc.teacher).name])      # an embedded teacher: this machine's copy of it
    return sc, storage


def check_name_free(run: Path, name: str, storage: str | None) -> None:
    """A new search may not take an existing run's name, except a worker rejoining its run's database server."""
    if (run / "run.json").is_file():
        # a worker may rejoin its run's database server; any other store (a $HWKD_STORAGE set for other
        # runs included) would take the name over and rewrite the run's run.json
        old = json.loads((run / "run.json").read_text()).get("storage", "")
        if not storage or store.is_sqlite(old) or store.is_sqlite(storage) or not store.same_database(old, storage):
            raise HwkdError(f"a search named {name} exists ({run}, store {store.redact(old)})",
                            f"continue it with --resume {name}, or choose another --name")


def runs_dir() -> Path:
    return hwkd_home() / "runs"


def resolve_run(name_or_path: str) -> Path:
    p = Path(name_or_path)
    if p.is_dir() or p.is_absolute() or len(p.parts) > 1:
        return p
    return runs_dir() / name_or_path


def candidate_key(cfg) -> str:
    return hashlib.sha1(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()[:10]


class Search:
    def __init__(self, run: Path, sc: SearchConfig, storage: str | None = None, progress: bool = True, log=print):
        self.run = Path(run).resolve()
        self.log = log
        self.progress = progress
        self._settle(sc)
        self.run.mkdir(parents=True, exist_ok=True)
        (self.run / "trials").mkdir(exist_ok=True)
        self.storage_url = storage or store.sqlite_url(self.run / store.RUN_DB)
        self.storage = store.open_study_storage(self.storage_url, heartbeat_interval=HEARTBEAT_S,
                                                grace_period=STALE_AFTER_S)
        self.name = self.run.name
        self.cost_ref = self._cost_ref()
        sampler = self.controller.sampler(sc.seed + os.getpid() % 1000 if storage else sc.seed, n_startup=4)
        settings = {**asdict(sc), "space_def": self.space.as_dict()}
        from hwkd.kd.i2srf import pooling_record
        settings.update(pooling_record([sc.kd]))         # I²SRF-TFCKD's pooled taps (None: before 2026-12-02)
        with store.failures(self.storage_url, "check that the database server is running and reachable"):
            self._create_study(sampler, settings)
        write_text_atomic(self.run / "run.json", json.dumps(
            {**settings, "storage": store.manifest_url(self.storage_url, self.run), "name": self.name,
             "teacher_sha256": self.teacher_sha256}, indent=1))
        self.quality_ref = self.study.user_attrs["quality_ref"]
        self.worker = f"{socket.gethostname()}:{os.getpid()}"

    def _settle(self, sc: SearchConfig) -> None:
        """Everything decided before a store is opened: the target and its runtime and threads, the teacher, the
        space (its hop the teacher's), the dataset (the embedded corpus built on first use) and the controller.
        Bad settings fail here, before anything is written."""
        from hwkd.data import MIX_VERSION
        from hwkd.hw.targets import load_target
        from hwkd.kd import uses_teacher
        from hwkd.models.checkpoint import load_model
        from hwkd.models.teacher import embedded_teacher_path
        from hwkd.search.controllers import make_controller
        from hwkd.search.space import load_space
        self.target = load_target(sc.target)
        sc.mixing_version = sc.mixing_version or MIX_VERSION
        from hwkd.train.recipe import BALANCE_RULE
        sc.balance = sc.balance or BALANCE_RULE
        sc.runtime = sc.runtime or self.target["runtimes"][0]
        sc.threads = sc.threads or self.target["threads"][0]
        if sc.runtime not in self.target["runtimes"]:
            raise HwkdError(f"target {self.target['name']} has no runtime {sc.runtime!r}",
                            f"use one of: {', '.join(self.target['runtimes'])}")
        embedded = sc.teacher is None
        sc.teacher = str(sc.teacher or embedded_teacher_path())     # mono first: its hop is every embedded one's
        if not Path(sc.teacher).is_file():
            raise HwkdError(f"teacher checkpoint {sc.teacher} not found", "give a .pt written by hwkd train")
        self.teacher_cfg = load_model(sc.teacher)[0].cfg
        from hwkd.models.teacher import teacher_sha256
        self.teacher_sha256 = teacher_sha256(sc.teacher)
        self.space = load_space(sc.space, teacher_hop=self.teacher_cfg.hop if uses_teacher(sc.kd) else None)
        in_ch = self.space.values("in_channels")
        if len(in_ch) != 1:
            raise HwkdError(f"search space {self.space.name} mixes input channels {list(in_ch)}",
                            "search mono and Ambisonics students in separate runs (fix in_channels)")
        self.in_channels = in_ch[0]
        if embedded and Path(sc.teacher) != embedded_teacher_path(self.in_channels):   # the Ambisonics teacher
            sc.teacher = str(embedded_teacher_path(self.in_channels))
            self.teacher_cfg = load_model(sc.teacher)[0].cfg
            self.teacher_sha256 = teacher_sha256(sc.teacher)
        if sc.kd == "response":
            from hwkd.train.objective import check_response_form
            check_response_form(self.teacher_cfg.mask_mode, self.space.values("mask_mode"), f"space {self.space.name}",
                                "use a feature scheme (--kd i2srf-tfckd), or a teacher of the space's form")
        if sc.supernet:                     # before the corpus is built (minutes) for a search that cannot start
            self._check_supernet(sc)
        if sc.data is None:
            from hwkd.data.synth import default_dataset
            sc.data = str(default_dataset(self.in_channels, progress=self.progress))
        self.controller = make_controller(sc.controller, self.space, sc.seed)
        self.sc = sc
        self._scorer = None         # rung 0 scored as inherited, in this process (made on first use)

    def _check_supernet(self, sc: SearchConfig) -> None:
        """Every candidate of the space must be a sub-network of the supernet (one line naming the first that
        is not)."""
        from hwkd.models.supernet import SLICED
        from hwkd.train.supernet import load_supernet, uncovered
        sc.supernet = str(Path(sc.supernet).resolve())
        _, trained = load_supernet(sc.supernet)
        cfg = uncovered(trained, self.space.configs())
        if cfg is not None:
            what = ", ".join(f"{f} {getattr(cfg, f)}" for f in SLICED)
            raise HwkdError(f"search space {self.space.name} has a candidate the supernet {sc.supernet} was not "
                            f"trained on ({what})",
                            "use the space the supernet was trained on (its supernet.json) or a part of it, "
                            "or drop --supernet")

    def _create_study(self, sampler, settings: dict) -> None:
        """Creates the study or joins it (the settings stored in it must equal this worker's)."""
        import optuna
        self.study = optuna.create_study(study_name=self.name, storage=self.storage, sampler=sampler,
                                         directions=list(DIRECTIONS), load_if_exists=True)
        old = self.study.user_attrs.get("hwkd_settings")
        if old is None:     # settings last: a worker that sees them finds the references already stored
            self.study.set_metric_names(list(METRICS))     # named in optuna-dashboard too
            q_sdr, q_pesq = self._noisy_quality()
            self.study.set_user_attr("quality_ref", q_sdr)
            self.study.set_user_attr("quality_ref_pesq_wb", q_pesq)
            self.study.set_user_attr("cost_ref", self.cost_ref)
            self.study.set_user_attr("teacher_sha256", self.teacher_sha256)
            self.study.set_user_attr("hwkd_settings", settings)
        else:
            local = ("trials", "time_budget_s", "data", "teacher",    # a budget, and paths of this machine
                     "trial_timeout_s", "supernet")
            from hwkd.kd.i2srf import pooling_record
            legacy = {"mixing_version": 1, "balance": "mean-2",                             # fields added since
                      **pooling_record([old.get("kd")], legacy=True)}
            diff = changed_settings({**legacy, **old}, settings, ignore=local)
            if diff:
                raise HwkdError(f"search {self.name} in {store.redact(self.storage_url)} has other settings "
                                f"({'; '.join(diff)})",
                                "rejoin with --resume NAME (its own settings), or start a new --name")
            was = self.study.user_attrs.get("teacher_sha256")
            if self._other_teacher(was):      # the same path, another file (a retrained teacher)
                raise HwkdError(f"search {self.name} was distilled from a teacher file with SHA-256 {was[:12]}..., "
                                f"but {self.sc.teacher} now has {self.teacher_sha256[:12]}... (retrained?)",
                                "restore that teacher file, or start a new search with --name")
            self.teacher_sha256 = was         # what this run's trials used (None: not recorded by older code)

    def _other_teacher(self, recorded: str | None) -> bool:
        """A run that distils recorded another teacher file's SHA-256 than this run's teacher has (None: older
        code recorded none)."""
        from hwkd.kd import uses_teacher
        return bool(recorded) and recorded != self.teacher_sha256 and uses_teacher(self.sc.kd)

    def _cost_ref(self) -> float:
        """The latency no useful student exceeds: the user's limit, else the hop duration (real time)."""
        hop_ms = self.space.values("hop")[0] / SAMPLE_RATE * 1e3
        return float(self.sc.max_latency_ms or hop_ms)

    def _noisy_quality(self) -> tuple[float, float | None]:
        """The noisy input's val SI-SDR and PESQ-WB on the clips trials are scored on (--val-clips; PESQ on the
        first val_pesq_clips)."""
        from hwkd.data.datasets import SpeechPairs
        from hwkd.metrics.quality import pesq_wb, si_sdr
        val = SpeechPairs(self.sc.data, split="val", mode="utterance", channels=self.in_channels,
                          limit=self.sc.val_clips)
        sdrs, pesqs = [], []
        for i in range(len(val)):
            it = val[i]
            sdrs.append(si_sdr(it["noisy"][0].numpy(), it["clean"].numpy()))
            if i < self.sc.val_pesq_clips:
                try:
                    pesqs.append(pesq_wb(it["noisy"][0].numpy(), it["clean"].numpy()))
                except Exception:  # noqa: BLE001  (a clip PESQ cannot score is left out, as in validation)
                    pass
        return float(sum(sdrs) / len(sdrs)), (float(sum(pesqs) / len(pesqs)) if pesqs else None)

    def limits(self, hop_ms: float) -> list[float]:
        """The per-hop latencies a student must stay within: the user's limit, real time (the hop)."""
        return ([self.sc.max_latency_ms] if self.sc.max_latency_ms else []) + ([hop_ms] if self.sc.realtime else [])

    def constraint(self, latency_ms: float, hop_ms: float) -> float:
        """<= 0 when feasible (Optuna's convention)."""
        lim = self.limits(hop_ms)
        return max(latency_ms - x for x in lim) if lim else 0.0

    # -- bookkeeping over the shared store ---------------------------------------------------------
    def trials(self):
        return self.study.get_trials(deepcopy=False)

    def recover(self) -> int:
        """Trials left RUNNING by dead workers -> failed with no reason (so: retried): on this host, a worker
        whose process is gone; on any host, a trial without a heartbeat for STALE_AFTER_S. Then enqueue one
        retry of every failed-without-reason trial, and of every trial that timed out for the first time
        (`will_retry`), whose candidate has no live or finished trial."""
        import optuna
        from optuna.trial import TrialState
        optuna.storages.fail_stale_trials(self.study)      # any host: no heartbeat for STALE_AFTER_S
        store.fail_orphans(self.study, self.storage, STALE_AFTER_S)    # any host: asked, then killed at once
        for t in self.trials():
            w = t.user_attrs.get("worker", "")
            if t.state == TrialState.RUNNING and ours(t.user_attrs) and not pid_alive(int(w.rsplit(":", 1)[1])):
                try:
                    self.study.tell(t.number, state=TrialState.FAIL)
                except Exception:  # noqa: BLE001  (another worker recovered it first)
                    pass
        retried = 0
        ts = self.trials()
        for t in ts:
            if t.state != TrialState.FAIL or "key" not in t.user_attrs or (
                    "error" in t.user_attrs and not t.user_attrs.get("will_retry")):
                continue
            later = [u for u in ts if u.number > t.number and (u.user_attrs.get("key") == t.user_attrs["key"]
                                                                or u.user_attrs.get("retry_of") == t.number)]
            live = [u for u in ts if u.user_attrs.get("key") == t.user_attrs["key"]
                    and u.state in (TrialState.RUNNING, TrialState.COMPLETE, TrialState.WAITING)]
            if not later and not live:
                # the key rides with the retry: killed before it named its candidate, the retry is retried too
                self.study.enqueue_trial(dict(t.params), user_attrs={"retry_of": t.number,
                                                                     "key": t.user_attrs["key"]})
                retried += 1
        return retried

    def counted(self, trials=None) -> int:
        """Trials that count against --trials: finished (complete, or failed with a reason) and running; a trial
        that timed out and is retried counts through its retry. A running trial still unnamed NAMED_WITHIN_S
        after its start is an orphan (a worker names its trial right after asking), not a running one."""
        from datetime import datetime

        from optuna.trial import TrialState
        n = 0
        for t in self.trials() if trials is None else trials:
            if t.user_attrs.get("duplicate_of") is not None or t.user_attrs.get("over_limit") \
                    or t.user_attrs.get("will_retry"):
                continue
            if t.state == TrialState.RUNNING and "worker" not in t.user_attrs and t.datetime_start is not None \
                    and (datetime.now() - t.datetime_start).total_seconds() > NAMED_WITHIN_S:
                continue
            if t.state in (TrialState.COMPLETE, TrialState.RUNNING) or (t.state == TrialState.FAIL
                                                                        and "error" in t.user_attrs):
                n += 1
        return n

    def _elapsed_file(self) -> Path:
        return self.run / f"clock-{socket.gethostname()}.json"

    # -- one trial ---------------------------------------------------------------------------------------
    def trial_timeout_s(self, steps: int) -> float:
        """How long one trial process (a rung of `steps` training steps) may run before it counts as hung."""
        if self.sc.trial_timeout_s:
            return float(self.sc.trial_timeout_s)
        return TRIAL_TIMEOUT_BASE_S + TRIAL_TIMEOUT_PER_AUDIO_S * steps * self.sc.batch_size * self.sc.segment_s

    def _child(self, tdir: Path, spec: dict) -> tuple[RungResult | None, str | None]:
        """Runs one rung in a child process (its own process group, so that a hung one is killed with all it
        started); returns (result, None) or (None, reason). A reason starting 'timeout:' means it hung."""
        rung = spec["rung"]
        result = tdir / f"rung{rung}.json"
        if result.is_file():
            return RungResult.read(result), None
        (tdir / "error.json").unlink(missing_ok=True)
        spec_path = tdir / f"spec-rung{rung}.json"
        write_text_atomic(spec_path, json.dumps(spec, indent=1))
        timeout = self.trial_timeout_s(spec["steps"])
        env = {k: v for k, v in os.environ.items() if k not in CHILD_ENV_DROP}
        with open(tdir / "trial.log", "a") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "hwkd.search.trial", str(spec_path)], stdout=logf,
                                    stderr=subprocess.STDOUT, preexec_fn=partial(die_with_parent, os.getpid()),
                                    process_group=0,
                                    env={**env, "PYTHONUNBUFFERED": "1"})
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                _kill_group(proc)
                if result.is_file():         # it wrote its result in the last instant: the work stands
                    return RungResult.read(result), None
                logf.write(f"\nhwkd search: no result after {timeout:g} s (--trial-timeout): process group "
                           f"{proc.pid} killed\n")
                return None, (f"timeout: rung {rung} gave no result within {timeout:g} s and was killed "
                              f"(hung? raise --trial-timeout if trials this size need longer)")
            except BaseException:        # Ctrl-C (the child, in its own group, does not get the terminal's SIGINT)
                _kill_group(proc)
                raise
        if rc == 0 and result.is_file():
            return RungResult.read(result), None
        err = tdir / "error.json"
        if err.is_file():
            e = json.loads(err.read_text())
            return None, f"{e['kind']}: {e['error']}"[:500]
        if rc < 0:
            sig = signal.Signals(-rc).name
            return None, f"killed by {sig}" + (" (out of memory?)" if sig == "SIGKILL" else "")
        return None, f"trial process exited with status {rc} (see {tdir / 'trial.log'})"

    def _inherited(self, cfg, tdir: Path, fault: str | None) -> tuple[RungResult | None, str | None]:
        """Rung 0 scored as inherited from the supernet, in this process (hwkd.search.inherit)."""
        if self._scorer is None:
            from hwkd.search.inherit import InheritedScorer
            self._scorer = InheritedScorer(self.sc.supernet, self.sc.data, self.in_channels, self.sc.val_clips,
                                           self.sc.val_pesq_clips, self.target, self.sc.runtime,
                                           self.sc.threads, self.sc.protocol)
        return self._scorer.run(cfg, tdir, fault)

    def adopt(self, src_run: Path, src_settings: dict, progress=None) -> dict:
        """Re-targeting (`hwkd search --like SRC --target T`): every complete trial of the finished search SRC
        enters this study with its quality as SRC measured it (same space, data, val clips, teacher and
        training) and its size and latency taken anew on this run's target and limits — measured where the
        target is measured, else predicted without an export. Nothing is trained. Each candidate's checkpoint
        is linked (else copied) into this run, so the run stands alone. Idempotent: a trial already adopted
        (after an interruption) is skipped."""
        import optuna
        from optuna.trial import TrialState

        from hwkd.models.checkpoint import load_model
        from hwkd.search.controllers import scalar_score
        from hwkd.search.pick import trial_checkpoint
        from hwkd.search.trial import profile_summary
        from hwkd.store import collect_trials
        t0 = time.perf_counter()
        src_trials, src_attrs = collect_trials(src_run, src_settings, with_attrs=True)
        was = src_attrs.get("teacher_sha256")
        if self._other_teacher(was):
            raise HwkdError(f"search {src_run.name} was distilled from a teacher with SHA-256 {was[:12]}..., "
                            f"{self.sc.teacher} is now another file", "restore that teacher file to re-target it")
        if abs(src_attrs["quality_ref"] - self.quality_ref) > 1e-6:
            raise HwkdError(f"search {src_run.name} scored its candidates on other val clips (noisy input "
                            f"{src_attrs['quality_ref']:.3f} dB, here {self.quality_ref:.3f} dB)",
                            "re-target with the dataset that search used (leave out --data)")
        mine = self.trials()
        done = {t.user_attrs.get("like_of") for t in mine}
        keys = {t.user_attrs.get("key") for t in mine}
        src = [t for t in src_trials if t.state == TrialState.COMPLETE and t.user_attrs.get("checkpoint")]
        skipped = []
        fresh = set(PROFILE_FIELDS) | {"constraint", "near_limit", "feasible", "score", "trial_s", "checkpoint"}
        added = 0
        for i, t in enumerate(src):
            a = t.user_attrs
            if t.number in done or a.get("key") in keys:
                continue
            t1 = time.perf_counter()
            key = a["key"]
            old = trial_checkpoint(src_run, a)
            if not old.is_file():
                raise HwkdError(f"search {src_run.name}: trial {t.number}'s checkpoint {old} is missing",
                                "re-target a run whose trials folder is complete")
            ckpt = self.run / "trials" / key / old.parent.name / "best.pt"
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            if not ckpt.is_file():
                try:
                    os.link(old, ckpt)
                except OSError:
                    import shutil
                    shutil.copyfile(old, ckpt)
            net, _ = load_model(ckpt)
            try:
                prof = profile_summary(net, self.target, ckpt.parent.parent / "export", self.sc.runtime,
                                       self.sc.threads, self.sc.protocol, export=False)
            except Exception as e:  # noqa: BLE001  (no latency for it on this target: named, the rest go on)
                skipped.append((t.number, f"{type(e).__name__}: {e}"[:300]))
                continue
            rec = TrialRecord(**{**{k: v for k, v in a.items() if k in TrialRecord.__dataclass_fields__
                                    and k not in fresh}, **prof})
            rec.constraint = self.constraint(rec.latency_ms, rec.hop_ms)
            rec.near_limit = near_limit(rec.latency_lo_ms, rec.latency_hi_ms, self.limits(rec.hop_ms))
            rec.feasible = rec.constraint <= 0
            rec.score = scalar_score(rec.val_si_sdr_db, rec.latency_ms, self.cost_ref, not rec.feasible)
            rec.checkpoint = str(ckpt)
            rec.trial_s = round(time.perf_counter() - t1, 2)
            self.study.add_trial(optuna.trial.create_trial(
                params=t.params, distributions=t.distributions,
                values=[rec.val_si_sdr_db, rec.latency_ms, rec.macs_per_s / 1e9],
                user_attrs={**rec.to_dict(), "key": key, "config": a["config"], "worker": self.worker,
                            "like_of": t.number, "like_run": src_run.name},
                constraints={"latency": rec.constraint}))
            added += 1
            keys.add(key)
            if progress:
                progress(f"  {i + 1}/{len(src)} trial {t.number}: {rec.latency_ms:.3f} ms/hop, SI-SDR "
                         f"{rec.val_si_sdr_db:.2f} dB{'' if rec.feasible else ' (over the limit)'}")
        return {"adopted": added, "source_trials": len(src), "skipped": skipped,
                "elapsed_s": round(time.perf_counter() - t0, 2)}

    def _promote(self, number: int, r0: TrialRecord) -> bool:
        from optuna.trial import TrialState

        from hwkd.search.pareto import front_mask
        if not self.sc.promote_steps:
            return False
        finished = [t for t in self.trials() if t.state == TrialState.COMPLETE and t.number != number]
        done = [t for t in finished if t.user_attrs.get("feasible", True)]
        if len(done) + 1 < self.sc.promote_after or r0.constraint > 0:
            return False
        if self.sc.promote_share is not None:      # the share of all finished trials' time spent promoting
            spent = sum(t.user_attrs.get("rung1_s") or 0.0 for t in finished)
            if spent > self.sc.promote_share * sum(t.user_attrs.get("trial_s") or 0.0 for t in finished):
                return False
        q = [t.user_attrs["rung0_si_sdr_db"] for t in done] + [r0.val_si_sdr_db]
        c = [t.user_attrs["latency_ms"] for t in done] + [r0.latency_ms]
        return bool(front_mask(q, c)[-1])

    def _earlier_same_key(self, number: int, key: str) -> list:
        """Trials that make trial `number` of candidate `key` redundant: running ones numbered before it, and
        finished ones of any number.

        Two workers that ask at the same moment each write their key just after asking; the later-numbered one
        first waits (at most KEY_WAIT_S) until every earlier running trial has written its key, so of two
        trials of one candidate the later always sees the earlier and steps aside, and the earlier never waits
        on the later. A running trial without a key older than a minute is a dead worker's and not waited for.
        """
        import datetime

        from optuna.trial import TrialState
        deadline = time.monotonic() + KEY_WAIT_S
        while True:
            ts = self.trials()
            now = datetime.datetime.now()
            pending = [t for t in ts if t.number < number and t.state == TrialState.RUNNING
                       and "key" not in t.user_attrs and t.datetime_start is not None
                       and (now - t.datetime_start).total_seconds() < 60]
            if not pending or time.monotonic() > deadline:
                return [t for t in ts if t.user_attrs.get("key") == key and (
                    t.state == TrialState.COMPLETE or (t.state == TrialState.RUNNING and t.number < number))]
            time.sleep(0.05)

    def run_one(self, faults: dict, limit: int | None = None) -> str:
        """Ask, run, tell one trial; returns 'done', 'failed', 'duplicate', 'over_limit' or 'stale'.

        'over_limit': trials asked before this one already fill --trials (two workers that both saw one trial
        left asked at once); the trial is closed unrun, so a shared study never runs more than --trials.
        'stale': another worker failed this trial for want of a heartbeat while it ran (this worker was
        stopped or cut off for STALE_AFTER_S) and it then failed too; the retry runs it again. Had it finished,
        its result is added to the study as a new trial ('done'): finished work is never dropped.
        """
        from optuna.trial import TrialState

        self.controller.before_ask(self.study, self.trials(), self.worker)
        trial = self.study.ask()
        # stamped, then named, at once (before the sampler's work): killed before the stamp, the trial is an
        # unnamed orphan that fail_orphans ends; after it, Optuna's stale check ends it on any host and the
        # dead pid on this one (a resume). Unnamed, it would count against --trials until then (see counted).
        self.storage.record_heartbeat(trial._trial_id)
        trial.set_user_attr("pid_domain", pid_domain())
        trial.set_user_attr("worker", self.worker)
        if limit is not None and self.counted([t for t in self.trials() if t.number < trial.number]) >= limit:
            trial.set_user_attr("over_limit", True)
            self.study.tell(trial, state=TrialState.PRUNED)
            return "over_limit"
        with store.Heartbeat(self.storage, trial._trial_id):    # Optuna names a trial in its store by _trial_id only
            return self._run_asked(trial, faults)

    def _still_running(self, trial) -> bool:
        from optuna.trial import TrialState
        if self.storage.get_trial(trial._trial_id).state == TrialState.RUNNING:
            return True
        self.log(f"  trial {trial.number}: failed by another worker while it ran (no heartbeat for "
                 f"{STALE_AFTER_S} s: was this worker stopped or cut off from the store?)")
        return False

    def _run_asked(self, trial, faults: dict) -> str:
        from optuna.trial import TrialState

        from hwkd.search.controllers import suggest
        cand = suggest(trial, self.space)
        cfg = self.space.to_config(cand)
        key = candidate_key(cfg)
        trial.set_user_attr("key", key)
        trial.set_user_attr("config", cfg.to_dict())
        same = self._earlier_same_key(trial.number, key)
        tdir = self.run / "trials" / key
        claim = None if same else claim_folder(tdir)
        if claim is None:     # a trial of it runs or ran; or a live process on this disk trains it (stalled worker)
            if not same:
                same = [t for t in self.trials() if t.user_attrs.get("key") == key and t.number != trial.number]
            trial.set_user_attr("duplicate_of", same[0].number if same else -1)
            self.study.tell(trial, state=TrialState.PRUNED)
            return "duplicate"
        with claim:
            return self._train_candidate(trial, tdir, cand, cfg, faults)

    def _train_candidate(self, trial, tdir: Path, cand: dict, cfg, faults: dict) -> str:
        from optuna.trial import TrialState

        from hwkd.search.controllers import scalar_score
        spec = {"dir": str(tdir), "config": cfg.to_dict(), "candidate": cand, "teacher": self.sc.teacher,
                "kd": self.sc.kd, "lam": self.sc.lam, "data": self.sc.data, "batch_size": self.sc.batch_size,
                "segment_s": self.sc.segment_s, "lr": self.sc.lr, "finetune_lr": self.sc.finetune_lr,
                "seed": self.sc.seed,
                "val_pesq_clips": self.sc.val_pesq_clips, "target": self.target["name"],
                "runtime": self.sc.runtime, "threads": self.sc.threads, "protocol": self.sc.protocol,
                "fault": faults.get(trial.number), "threads_train": None, "supernet": self.sc.supernet,
                "val_clips": self.sc.val_clips, "mixing_version": self.sc.mixing_version,
                "balance": self.sc.balance}
        t0 = time.perf_counter()
        try:
            if self.sc.supernet and self.sc.steps == 0:
                r0, err = self._inherited(cfg, tdir, spec["fault"])
            else:
                r0, err = self._child(tdir, {**spec, "rung": 0, "steps": self.sc.steps})
            if err:
                if not self._still_running(trial):
                    return "stale"
                trial.set_user_attr("error", err)
                again = ""
                if err.startswith("timeout:"):
                    # retried once: unless an earlier trial of this candidate timed out already
                    first = not any(t.user_attrs.get("timed_out") and t.user_attrs.get("key") == tdir.name
                                    and t.number != trial.number for t in self.trials())
                    trial.set_user_attr("timed_out", True)
                    trial.set_user_attr("will_retry", first)
                    again = "; retried once" if first else "; timed out before too, not retried"
                self.study.tell(trial, state=TrialState.FAIL)
                self.log(f"  trial {trial.number} FAILED: {err}{again}")
                return "failed"
            final = TrialRecord(**r0.to_dict(), rung0_si_sdr_db=r0.val_si_sdr_db,
                                constraint=self.constraint(r0.latency_ms, r0.hop_ms),
                                near_limit=near_limit(r0.latency_lo_ms, r0.latency_hi_ms, self.limits(r0.hop_ms)))
            if self._promote(trial.number, final):
                t1 = time.perf_counter()
                r1, err = self._child(tdir, {**spec, "rung": 1, "steps": self.sc.promote_steps,
                                             "steps_before": self.sc.steps})
                final.rung1_s = round(time.perf_counter() - t1, 2)
                if err:       # the rung-0 result stands; the failure is recorded
                    final.rung1_error = err
                else:         # the quality of the last rung trained
                    final.rung, final.val_si_sdr_db, final.val_pesq_wb, final.total_steps = (
                        r1.rung, r1.val_si_sdr_db, r1.val_pesq_wb, r1.total_steps)
                    final.train_s = r0.train_s + r1.train_s
        except KeyboardInterrupt:
            if self._still_running(trial):
                self.study.tell(trial, state=TrialState.FAIL)      # no reason recorded: retried on --resume
            raise
        if final.total_steps is None:
            final.total_steps = self.sc.steps
        final.trial_s = round(time.perf_counter() - t0, 2)
        final.feasible = final.constraint <= 0
        final.score = scalar_score(final.val_si_sdr_db, final.latency_ms, self.cost_ref, not final.feasible)
        final.checkpoint = str(tdir / f"rung{final.rung}" / "best.pt")
        values = [final.val_si_sdr_db, final.latency_ms, final.macs_per_s / 1e9]
        attrs = final.to_dict()
        if self._still_running(trial):
            for k, v in attrs.items():
                trial.set_user_attr(k, v)
            trial.set_constraint("latency", final.constraint)
            self.study.tell(trial, values)
        else:   # failed as stale while this worker was cut off, and perhaps retried: the finished work is kept
            import optuna
            frozen = self.storage.get_trial(trial._trial_id)
            self.study.add_trial(optuna.trial.create_trial(
                params=frozen.params, distributions=frozen.distributions, values=values,
                user_attrs={**frozen.user_attrs, **attrs, "recorded_for": trial.number},
                constraints={"latency": final.constraint}))
            self.log(f"  trial {trial.number}: its finished result is added to the study as a new trial")
        return "done"

    def loop(self, trials: int | None = None, time_budget_s: float | None = None) -> dict:
        """Run trials until --trials (study-wide) or the time budget (this host's clock over resumes)."""
        from optuna.trial import TrialState
        faults = {}
        for part in filter(None, os.environ.get("HWKD_FAULT_TRIALS", "").split(",")):   # tests only
            n, kind = part.split(":")
            faults[int(n)] = kind
        limit = trials if trials is not None else self.sc.trials
        budget = time_budget_s if time_budget_s is not None else self.sc.time_budget_s
        clock = self._elapsed_file()
        spent = json.loads(clock.read_text())["elapsed_s"] if clock.is_file() else 0.0
        retried = self.recover()
        if retried:
            self.log(f"hwkd search: retrying {retried} trial(s) interrupted earlier")
        t_start = time.perf_counter()
        dups = 0
        bar = None
        if self.progress:
            from tqdm import tqdm
            bar = tqdm(total=limit, initial=min(self.counted(), limit or 0), desc=f"search {self.name}",
                       unit="trial", dynamic_ncols=True, file=sys.stdout) if limit else None
        stop = "trials"
        try:
            while True:
                elapsed = spent + time.perf_counter() - t_start
                if limit is not None and self.counted() >= limit:
                    stop = "trials"
                    break
                if budget is not None and elapsed >= budget:
                    stop = "time budget"
                    break
                outcome = self.run_one(faults, limit)
                write_text_atomic(clock, json.dumps({"elapsed_s": spent + time.perf_counter() - t_start}))
                retried = self.recover()          # a worker elsewhere may have died meanwhile
                if retried:
                    self.log(f"hwkd search: retrying {retried} trial(s) of a worker that stopped")
                if outcome == "over_limit":
                    continue          # the loop's test ends it, or retries if an earlier trial was a duplicate
                if outcome == "duplicate":
                    dups += 1
                    if dups >= MAX_DUPLICATES_IN_A_ROW:
                        stop = "space exhausted (the controller keeps proposing evaluated candidates)"
                        break
                    continue
                dups = 0
                last = self.trials()
                mine = [t for t in last if t.user_attrs.get("worker") == self.worker
                        and t.state in (TrialState.COMPLETE, TrialState.FAIL)]
                if bar is not None:
                    bar.n = min(self.counted(), limit)
                    if budget is not None:
                        left = max(0.0, budget - spent - (time.perf_counter() - t_start))
                        bar.set_postfix_str(f"time budget left {int(left // 60)}:{int(left % 60):02d}")
                    bar.refresh()
                if mine and self.progress:
                    t = mine[-1]
                    if t.state == TrialState.COMPLETE:
                        a = t.user_attrs
                        line = (f"  trial {t.number}: C={a['config']['channels']} L={a['config']['layers']} "
                                f"D={a['config']['depth']} heads={a['config']['heads']} "
                                f"H={a['config']['gru_hidden']} -> SI-SDR {a['val_si_sdr_db']:.2f} dB "
                                f"(rung {a['rung']}), {a['latency_ms']:.3f} ms/hop "
                                f"{'predicted' if 'predicted' in a['latency_how'] else 'measured'}, "
                                f"{a['macs_per_s'] / 1e9:.3f} GMAC/s, {a['trial_s']:.0f} s")
                        (bar.write if bar else self.log)(line)
        finally:
            if bar is not None:
                bar.close()
            write_text_atomic(clock, json.dumps({"elapsed_s": spent + time.perf_counter() - t_start}))
        ts = self.trials()
        return {"stop": stop, "complete": sum(t.state == TrialState.COMPLETE for t in ts),
                "failed": sum(t.state == TrialState.FAIL and "error" in t.user_attrs
                              and not t.user_attrs.get("will_retry") for t in ts),
                "retried_after_timeout": sum(bool(t.user_attrs.get("will_retry")) for t in ts),
                "duplicates": sum(t.user_attrs.get("duplicate_of") is not None for t in ts),
                "elapsed_s": round(spent + time.perf_counter() - t_start, 1)}


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGKILL to the child's process group (it and whatever it started), then reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def check_source(src_run: Path, src_settings: dict) -> int:
    """Before a re-targeted run is made (`--like`): the source's store reads, and every complete trial's
    checkpoint is on this machine and loads. Returns the number of complete trials."""
    from optuna.trial import TrialState

    from hwkd.models.checkpoint import load_model
    from hwkd.search.pick import trial_checkpoint
    from hwkd.store import collect_trials
    fix = "re-target a search whose run folder is complete and readable (its study.db and trials/)"
    trials = collect_trials(src_run, src_settings)          # an unreadable store: an HwkdError naming it
    complete = [t for t in trials if t.state == TrialState.COMPLETE and t.user_attrs.get("checkpoint")]
    for t in complete:
        ckpt = trial_checkpoint(src_run, t.user_attrs)
        if not ckpt.is_file():
            raise HwkdError(f"search {src_run.name}: trial {t.number}'s checkpoint {ckpt} is missing", fix)
        load_model(ckpt)                            # a damaged one is an HwkdError naming it
    return len(complete)


def open_run(name: str, storage: str | None = None, storage_from: str = "--storage") -> tuple[Path, dict]:
    """A finished or running search's folder and settings (from run.json, or from the store).

    settings["storage"] is the URL to connect with: run.json's, its SQLite file resolved against the folder that
    holds run.json (store.resolve_manifest), or `storage` (from --storage or $HWKD_STORAGE, `storage_from`) where
    it names the run's database server and so may carry its password. A SQLite store that is not there is an
    error, never created empty."""
    run = resolve_run(name)
    manifest = run / "run.json"
    if manifest.is_file():
        try:
            settings = json.loads(manifest.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise HwkdError(f"{manifest} is damaged ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})",
                            "restore the run folder from a copy; a search writes run.json when it starts") from None
        if not isinstance(settings, dict) or not isinstance(settings.get("storage"), str) \
                or not isinstance(settings.get("name", ""), str):
            raise HwkdError(f"{manifest} is damaged (no storage URL in it)",
                            "restore the run folder from a copy; a search writes run.json when it starts")
        settings.setdefault("name", run.name)
        settings["storage"] = store.resolve_manifest(settings["storage"], run, storage, storage_from)
        store.require_sqlite_file(settings["storage"], f"search {run.name}")
        return run, settings
    if storage:
        import optuna
        store.require_sqlite_file(storage, f"search {Path(name).name}")
        try:
            study = optuna.load_study(study_name=Path(name).name, storage=store.open_rdb(storage))
        except Exception as e:  # noqa: BLE001
            raise HwkdError(f"no search {Path(name).name!r} in {store.redact(storage)} "
                            f"({store.describe(e, storage)})", f"check --name and {storage_from}") from None
        settings = study.user_attrs.get("hwkd_settings")
        if settings is None:
            raise HwkdError(f"study {Path(name).name!r} in {store.redact(storage)} was not made by hwkd search",
                            "give the name of an hwkd search run")
        return run, {**settings, "storage": storage, "name": Path(name).name}
    raise HwkdError(f"no search run at {run}", f"give a run name from {runs_dir()} or a path to a run folder")
