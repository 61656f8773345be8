"""`hwkd compare`: every KD scheme x every student x every seed at one training budget, then a report.

The matrix is an Optuna study (hwkd.store: the same storages as `hwkd search`; SQLite in the run folder by
default, a PostgreSQL server with --storage for many machines). Its user attributes hold the settings (the
teacher by SHA-256, students by their network config, so a worker on another machine with other paths joins
the same matrix) and every finished cell's result ("cell:STUDENT/SCHEME/seedN"); its trials are the queue: one
WAITING trial per cell without a result, which a worker takes by setting it RUNNING (a row lock on a server; on
SQLite the take is serialised by a file lock beside the database). A running cell's worker stamps a heartbeat
every HEARTBEAT_S; a cell without a stamp for STALE_AFTER_S (a dead worker on any host), or whose worker process
on this host is gone, is failed and queued again; a failed cell (an error, Ctrl-C) is queued again on the next
run. A cell taken twice (a retry queued by two workers at once) is trained once: the lower trial number wins,
the other is pruned as a duplicate.

Each cell is an ordinary distillation run (`none` = plain SE training) in RUN/cells/STUDENT/SCHEME/seedN,
evaluated on the evaluation split into result.json and into the study. An interrupted cell resumes from its last
checkpoint when it is taken again on the same run folder (the trainer's exact resume; on another machine it
starts over); a cell folder is also held by an exclusive flock while it trains (RUN/cells/.../claim.lock; the
kernel drops it when the process dies). Rerunning the same command resumes; other settings are refused (use
another --out / --name). Run folders from before the study are adopted: their finished result.json files are
recorded, their cells not redone.

`--workers N` starts N processes on this machine with the cores shared out (intra-op threads = cores // N);
starting the same command elsewhere with the same --storage joins them. Small students scale poorly over
intra-op threads, so cells side by side finish the matrix sooner (benchmarks/compare_parallel.py).

The report over the cells is hwkd.report.compare.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import socket
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from hwkd import store
from hwkd.audio.io import write_text_atomic
from hwkd.config import changed_settings
from hwkd.errors import HwkdError
from hwkd.experiments.config import CompareConfig  # noqa: F401  (the settings; imported from here too)
from hwkd.metrics.quality import BASE_METRICS
from hwkd.paths import claim_folder
from hwkd.sysinfo import cpu_tag, die_with_parent, ours, pid_alive, pid_domain

METRICS = BASE_METRICS          # what a cell records (mean over the evaluation utterances)
# what a cell records of how it trained on the CPU; either changes float sums (report notes, log)
# what a cell's float results depend on besides its settings: (result key, how it is said, what a cell recorded
# before hwkd kept the key)
CONDITIONS = (("threads", "with different intra-op thread counts", "not recorded"),
              ("cpu", "on different CPUs", "not recorded"), ("device", "on different devices", "cpu"))
HEARTBEAT_S = 30                # a running cell's worker stamps the study this often (the server's clock) ...
STALE_AFTER_S = 300             # ... and a cell without a stamp for this long is a dead worker's: queued again
RESULT = "cell:"                # study user attr prefix of a finished cell's result
STOP_GRACE_S = 120              # after Ctrl-C, how long --workers processes get to stop their cells at a step
POLL_S = 10                     # an idle worker waiting for a tuning grid elsewhere looks again this often
WHAT = "comparison store"       # how messages name the study's database


@dataclass
class CellResult:
    """One finished cell (student x scheme x seed) as RUN/cells/STUDENT/SCHEME/seedN/result.json holds it and the
    report reads it: the means over the evaluation utterances, the student's size, and how it was trained
    (threads and CPU: either changes float sums, hwkd.report.compare flags a student whose cells mix them)."""
    student: str                      # its label (student_label)
    student_spec: str                 # as given: a preset or a config file
    scheme: str
    seed: int
    in_channels: int
    params: int
    macs_per_s: float
    eval_split: str
    eval_clips: int
    enhanced: dict                    # metric -> mean over the evaluation utterances
    noisy: dict
    train_s: float                    # this run's wall clock for it: training since it (re)started, and scoring
    threads: int | str
    cpu: str
    train_data: str | None = None
    kd_weight: dict | None = None     # λ and how it was chosen (hwkd.train.objective)
    curve: list | None = None         # [[epoch, val SI-SDR dB, training steps], ...] from its history.jsonl
    worker: str | None = None         # HOST:PID of the worker that trained it
    kd_ratio: float | None = None     # the tuned or fixed KD-weight ratio it trained at (None: the balanced default)
    val_si_sdr_db: float | None = None    # its best val SI-SDR (what the KD-weight tuning compares)
    # the same checkpoint on the dataset's out-of-domain split (voices, noises and SNRs no training split has):
    # {"split", "clips", "enhanced", "noisy"} like the fields above; None where the dataset has no such split
    # (or the evaluation split is it) and for cells from before hwkd scored it
    ood: dict | None = None
    # the cell's training wall clock across resumes (its history's train_elapsed_s: steps only, validation and
    # scoring left out), and how many cells trained side by side in its process (--group: their turns are in
    # each one's clock); None for cells from before they were recorded
    train_elapsed_s: float | None = None
    group: int | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def student_label(student: str) -> str:
    """A student's name in folders and tables: a preset's name, or a checkpoint's / config file's stem."""
    return Path(student).stem if Path(student).suffix else student


def cell_key(student: str, scheme: str, seed: int, ratio: float | None = None) -> str:
    """A cell's name in the study and on disk: STUDENT/SCHEME/seedN (STUDENT: student_label), SCHEME@rRATIO for a
    KD scheme trained at a tuned KD-weight ratio."""
    return f"{student_label(student)}/{scheme}" + (f"@r{ratio:g}" if ratio is not None else "") + f"/seed{seed}"


TUNE_SEED = 10_000     # the seed of KD-weight tuning cells: apart from the reported seeds, so the reported cells
#                        are not the best of several draws on val (a selection bias val and test share)


def fixed_ratio(cc: CompareConfig, scheme: str) -> float | None:
    """The fixed KD-weight ratio a scheme's cells are balanced at (cc.kd_ratio), None: the balanced default."""
    return None if scheme == "none" else (cc.kd_ratio or {}).get(scheme)


def tuned(cc: CompareConfig, scheme: str) -> bool:
    """Whether a scheme's KD weight is tuned over cc.kd_ratios (every KD scheme when a grid is given)."""
    return bool(cc.kd_ratios) and scheme != "none"


def check_settings(cc: CompareConfig) -> None:
    """Bad settings are refused before anything is written: unknown schemes, an impossible tuning grid."""
    from hwkd.kd.base import schemes
    known = schemes()
    unknown = [s for s in cc.schemes if s not in known]
    if unknown:
        raise HwkdError(f"unknown KD scheme(s): {', '.join(unknown)}", f"use none or {', '.join(sorted(known))}")
    check_ratios(cc)
    from hwkd.train.trainer import check_budget
    check_budget(cell_train_config(cc, seed=0, threads=None))
    if cc.lam is not None and not (math.isfinite(cc.lam) and cc.lam >= 0):
        raise HwkdError(f"--lam {cc.lam}: a KD weight is a number of 0 or more", "e.g. --lam 0.5, or leave it out "
                        "(balanced per cell)")


def cell_train_config(cc: CompareConfig, seed: int, threads: int | None, device: str = "cpu"):
    """One cell's training budget (the same for every cell of a matrix but its seed) on `device`."""
    from hwkd.train.config import TrainConfig
    return TrainConfig(epochs=cc.epochs, batch_size=cc.batch_size, lr=cc.lr, seed=seed, segment_s=cc.segment_s,
                       threads=threads or cc.threads, max_steps_per_epoch=cc.max_steps_per_epoch,
                       val_pesq_clips=cc.val_pesq_clips, device=device)


def check_inputs(cc: CompareConfig, teacher_path: Path | None, data: dict | None) -> None:
    """Before a run folder is made: the given datasets exist and are readable layouts, every teacher loads and
    can teach the students that get it (input channels and STFT)."""
    from hwkd.data.layouts import detect_layout
    from hwkd.kd.base import uses_teacher
    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config
    from hwkd.train.objective import check_teacher
    for path in (data or {}).values():
        detect_layout(Path(path))
    teachers = {ch: load_model(p)[0].cfg for ch, p in teacher_paths(cc, teacher_path).items()}
    if not any(uses_teacher(s) for s in cc.schemes):           # no KD: the teacher only sets the students' hop
        return
    hop = teachers[min(teachers)].hop                          # as each cell resolves its student (_run_cell)
    for st in cc.students:
        sc = resolve_config(st, hop=hop)
        check_teacher(teachers.get(sc.in_channels, teachers[min(teachers)]), sc,
                      student=f"student {student_label(st)}",
                      fix="give --teacher a checkpoint with the students' input channels, or other --students",
                      schemes=cc.schemes,
                      response_fix="leave response out of --kd, or give that student a config file with the "
                                   "teacher's mask_mode")


def check_ratios(cc: CompareConfig) -> None:
    """A KD-weight tuning grid: distinct positive ratios, not with a fixed λ; tuned on one of the students."""
    if cc.tune_on is not None and (cc.kd_ratios is None
                                   or cc.tune_on not in [student_label(st) for st in cc.students]):
        raise HwkdError(f"--tune-on {cc.tune_on}: " + ("no tuning grid (--kd-ratios) to train on it"
                                                       if cc.kd_ratios is None else "not one of the students"),
                        "name one of --students, with --kd-ratios")
    if cc.kd_ratio is not None:
        bad = [f"{k}={v}" for k, v in cc.kd_ratio.items()
               if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)]
        other = [k for k in cc.kd_ratio if k == "none" or k not in cc.schemes]
        clash = ("--kd-ratio fixes the balanced KD weight, --lam fixes λ itself" if cc.lam is not None
                 else "--kd-ratio fixes the ratio, --kd-ratios tunes it" if cc.kd_ratios is not None else None)
        if bad or other or clash or not cc.kd_ratio:
            given = ",".join(f"{k}={v:g}" if isinstance(v, (int, float)) else f"{k}={v}"
                             for k, v in cc.kd_ratio.items())
            raise HwkdError(f"--kd-ratio {given or '(no KD scheme)'}: "
                            + (clash or (f"needs positive ratios ({', '.join(bad)})" if bad else
                                         f"names no KD scheme of --kd ({', '.join(other)})" if other
                                         else "--kd has no KD scheme to fix it for")),
                            "give one of --lam, --kd-ratio, --kd-ratios; e.g. --kd-ratio 0.25 (every KD scheme) or "
                            "--kd-ratio i2srf-tfckd=0.25,fitnet=0.5")
    if cc.kd_ratios is None:
        return
    if cc.lam is not None:
        raise HwkdError("--kd-ratios tunes the balanced KD weight, --lam fixes it", "give one of them")
    if not cc.kd_ratios or not all(isinstance(r, (int, float)) and math.isfinite(r) and r > 0 for r in cc.kd_ratios) \
            or len({f"{r:g}" for r in cc.kd_ratios}) != len(cc.kd_ratios):
        raise HwkdError(f"--kd-ratios {','.join(map(str, cc.kd_ratios))}: needs distinct positive numbers",
                        "give e.g. --kd-ratios 0.25,0.5,1 (the balanced default is 0.5)")


def choose_ratio(scores: dict) -> float | None:
    """The ratio with the best val SI-SDR (ties: the lower ratio, the weaker KD term); a diverged ratio (None)
    is never chosen; None when all diverged."""
    ok = [(r, v) for r, v in scores.items() if v is not None]
    return sorted(ok, key=lambda kv: (-kv[1], kv[0]))[0][0] if ok else None


def teacher_paths(cc: CompareConfig, teacher_path: Path | None) -> dict:
    """Input channels -> the teacher file of the students with that many: `teacher_path` for all, or (None) the
    embedded teacher for each (the Ambisonics one for Ambisonics students once it is shipped)."""
    from hwkd.models.registry import resolve_config
    from hwkd.models.teacher import embedded_teacher_path
    channels = sorted({resolve_config(st).in_channels for st in cc.students}) or [1]
    return {ch: Path(teacher_path) if teacher_path is not None else embedded_teacher_path(ch) for ch in channels}


def settings_of(cc: CompareConfig, teacher_path: Path | None) -> dict:
    """What a matrix is: the compare settings, the teacher (path and SHA-256: a retrained teacher at the same path
    must not mix into an old matrix) and each student's network config (a worker elsewhere may name the same
    student by another path)."""
    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config
    paths = teacher_paths(cc, teacher_path)
    first = paths[min(paths)]
    hop = load_model(first)[0].cfg.hop
    nets = {student_label(st): resolve_config(st, hop=hop).to_dict() for st in cc.students}
    out = {**asdict(cc), "teacher": str(first), "teacher_sha256": hashlib.sha256(first.read_bytes()).hexdigest(),
           "student_configs": nets}
    from hwkd.kd.i2srf import pooling_record
    out.update(pooling_record(cc.schemes))        # I²SRF-TFCKD's pooled taps (None: the spec's, before 2026-12-02)
    if 4 in paths and paths[4] != first:          # the Ambisonics students' own teacher
        out.update(teacher_foa=str(paths[4]), teacher_foa_sha256=hashlib.sha256(paths[4].read_bytes()).hexdigest())
    return out


def with_legacy(old: dict) -> dict:
    """Recorded settings with the fields added since filled in as the code that wrote them ran."""
    from hwkd.kd.i2srf import pooling_record
    return {"mixing_version": 1, "tune_on": None, "balance": "mean-2",
            **pooling_record(old.get("schemes", ()), legacy=True), **old}


# what may differ between workers of one matrix: paths on their machines (the content is compared instead)
MACHINE_LOCAL = ("teacher", "teacher_foa", "students", "threads")


class Matrix:
    """A KD matrix's Optuna study: its settings, the queue of cells (trials) and the finished cells' results
    (study user attrs). Opening it creates the study (`create`) or refuses other settings."""

    def __init__(self, out: Path, cc: CompareConfig, teacher_path: Path, storage: str | None = None,
                 name: str | None = None, create: bool = True):
        import optuna
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.out = Path(out).resolve()
        self.cc = cc
        self.url = storage or store.sqlite_url(self.out / store.RUN_DB)
        self.name = name or self.out.name
        extra = len(cc.kd_ratios) * sum(tuned(cc, sc) for sc in cc.schemes) if cc.kd_ratios else 0
        grids = 1 if cc.tune_on else len(cc.students)                      # students that train a tuning grid
        self.total = len(cc.students) * len(cc.schemes) * cc.seeds + grids * extra    # tuning cells included
        self.settings = settings_of(cc, teacher_path)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.fix = ("check that the database server is running and reachable; finished cells are kept, rerun the "
                    "same command to continue")
        if create:
            self.out.mkdir(parents=True, exist_ok=True)
        with self.failures():
            self.storage = store.open_study_storage(self.url, heartbeat_interval=HEARTBEAT_S,
                                                    grace_period=STALE_AFTER_S, what=WHAT)
            if create:
                self.study = optuna.create_study(study_name=self.name, storage=self.storage, direction="maximize",
                                                 load_if_exists=True)
            else:
                try:
                    self.study = optuna.load_study(study_name=self.name, storage=self.storage)
                except KeyError:
                    raise HwkdError(f"{redacted(self.url)} holds no comparison named {self.name}",
                                    "start it without --report-only (or give its --name)") from None
            self.study_id = self.storage.get_study_id_from_name(self.name)
            self._settle_settings(create)
        if create:
            write_text_atomic(self.out / "compare.json", json.dumps(
                {**self.settings, "storage": store.manifest_url(self.url, self.out), "name": self.name}, indent=1))

    def failures(self):
        return store.failures(self.url, self.fix, what=WHAT)

    def _settle_settings(self, create: bool) -> None:
        old = self.study.user_attrs.get("compare")
        if old is None and (len(self.study.directions) != 1 or self.study.user_attrs
                            or self.storage.get_n_trials(self.study_id) > 0):
            raise HwkdError(f"the study {self.name} in {redacted(self.url)} is not a KD comparison (e.g. a search "
                            "of that name)", "give the comparison another --name")
        from hwkd.data import MIX_VERSION
        recorded = MIX_VERSION if old is None else old.get("mixing_version", 1)    # (1: settings from before)
        if self.cc.mixing_version is None:
            self.cc.mixing_version = self.settings["mixing_version"] = recorded
        from hwkd.train.recipe import BALANCE_RULE
        rule = BALANCE_RULE if old is None else old.get("balance", "mean-2")    # (mean-2: settings from before)
        if self.cc.balance is None:
            self.cc.balance = self.settings["balance"] = rule
        if old is None:
            if not create:
                raise HwkdError(f"comparison {self.name} has no settings yet", "start it without --report-only")
            self.study.set_user_attr("compare", self.settings)
            self.study.set_metric_names([f"{self.cc.eval_split}_si_sdr_db"])
            old = self.study.user_attrs["compare"]         # two first workers at once: the one written counts
        diff = changed_settings(with_legacy(old), self.settings, ignore=MACHINE_LOCAL)
        if diff == [f"tune_on: None -> {self.cc.tune_on!r}"] and create:
            # a matrix tuned per student narrowed to one student's grid before any other grid cell started: the
            # others' waiting grid cells are dropped from the queue (recover) and the settings say so from now on
            with self.queue_lock():
                why = self._why_not_tune_on()
                if why:
                    raise HwkdError(f"comparison {self.name} tunes every student on its own grid, and {why}: it "
                                    f"cannot be narrowed to {self.cc.tune_on}'s grid now",
                                    "rerun without --tune-on to resume it, or give a new --out (and --name)")
                self.study.set_user_attr("compare", {**old, "tune_on": self.cc.tune_on})
            diff = []
        if diff:
            raise HwkdError(f"comparison {self.name} ({redacted(self.url)}) has other settings ({'; '.join(diff)})",
                            "rerun with the same options to resume, or give a new --out (and --name)")

    def _why_not_tune_on(self) -> str | None:
        """Why the matrix cannot be narrowed to cc.tune_on's tuning grid: a tuning cell of another student started
        (running, finished, failed, or its result recorded), or a worker of this matrix still running (it would
        queue the other grids again)."""
        from optuna.trial import TrialState
        mine, tune = f"{self.cc.tune_on}/", f"/seed{TUNE_SEED}"

        def other(key):
            return key.endswith(tune) and not key.startswith(mine)
        started = [k for k in self._recorded() if other(k)] + [
            t.user_attrs["cell"] for t in self.trials() if other(t.user_attrs.get("cell", ""))
            and t.state != TrialState.WAITING]
        if started:
            return f"{started[0]} has started"
        for t in self.trials((TrialState.RUNNING,)):
            w = t.user_attrs.get("worker", "")
            if not (ours(t.user_attrs) and not pid_alive(int(w.rsplit(":", 1)[1]))):
                return f"worker {w or '?'} is training {t.user_attrs.get('cell', '?')} (stop it first)"
        return None

    # -- the queue ---------------------------------------------------------------------------------------
    def cell_dir(self, key: str) -> Path:
        return self.out / "cells" / key

    def _recorded(self) -> dict:
        attrs = self.storage.get_study_user_attrs(self.study_id)
        return {k[len(RESULT):]: v for k, v in attrs.items() if k.startswith(RESULT)}

    def wanted(self, recorded: dict | None = None) -> list[tuple]:
        """The cells this matrix trains, in order, as (key, student, scheme, seed, ratio): every seed of no-KD
        (and of each KD scheme when its weight is not tuned); with a tuning grid, a cell of each KD scheme at
        every ratio on the tuning seed (TUNE_SEED), then, once all of a student's and scheme's tuning cells are
        finished, every reported seed at the ratio chosen on val (none when every ratio diverged)."""
        cc = self.cc
        recorded = self._recorded() if recorded is None else recorded
        out = []
        for st in cc.students:
            for sc in cc.schemes:
                if not tuned(cc, sc):
                    r = fixed_ratio(cc, sc)
                    out += [(cell_key(st, sc, k, r), st, sc, k, r) for k in range(cc.seeds)]
                    continue
                src = self.tuned_on(st)
                grid = [(cell_key(src, sc, TUNE_SEED, r), src, sc, TUNE_SEED, r) for r in cc.kd_ratios]
                if src == st:       # (with cc.tune_on, the other students take that student's grid)
                    out += grid
                if all(c[0] in recorded for c in grid):
                    r = choose_ratio({c[4]: recorded[c[0]].get("val_si_sdr_db") for c in grid})
                    if r is not None:       # every ratio diverged: nothing to train at
                        out += [(cell_key(st, sc, k, r), st, sc, k, r) for k in range(cc.seeds)]
        return out

    def tuned_on(self, student: str) -> str:
        """The student whose tuning grid sets `student`'s KD-weight ratio: itself, or the one cc.tune_on names."""
        if self.cc.tune_on is None:
            return student
        return next(st for st in self.cc.students if student_label(st) == self.cc.tune_on)

    def tuning(self, recorded: dict | None = None) -> dict:
        """(student label, scheme) -> {"scores": {ratio: val SI-SDR of its tuning cell}, "chosen": ratio or None}
        (with cc.tune_on: that student's grid, for every student)."""
        recorded = self._recorded() if recorded is None else recorded
        out = {}
        for st in self.cc.students:
            for sc in self.cc.schemes:
                if tuned(self.cc, sc):
                    keys = {r: cell_key(self.tuned_on(st), sc, TUNE_SEED, r) for r in self.cc.kd_ratios}
                    scores = {r: recorded[k].get("val_si_sdr_db") for r, k in keys.items() if k in recorded}
                    out[(student_label(st), sc)] = {
                        "scores": scores, "chosen": choose_ratio(scores) if len(scores) == len(keys) else None}
        return out

    def tuning_cells(self) -> dict:
        """cell key -> result of every finished KD-weight tuning cell (what results() leaves out): a record of
        the matrix keeps them, so that it can be restored without training the grid again."""
        return {k: v for k, v in self._recorded().items() if k.endswith(f"/seed{TUNE_SEED}")}

    def results(self) -> dict:
        """cell key -> result for every finished cell the comparison reports: no-KD and untuned cells, and each
        tuned scheme's seeds at its chosen ratio (not its tuning cells); a result carries its scheme's tuning."""
        recorded = self._recorded()
        tuning = self.tuning(recorded)
        out = {}
        for key, st, sc, seed, _r in self.wanted(recorded):
            if key not in recorded:
                continue
            t = tuning.get((student_label(st), sc))
            if t is not None:
                if seed == TUNE_SEED and not (t["chosen"] is None and len(t["scores"]) == len(self.cc.kd_ratios)):
                    continue        # (a grid whose every ratio diverged is reported by its tuning cells)
                out[key] = {**recorded[key], "kd_tuning": {f"{k:g}": v for k, v in t["scores"].items()}}
            else:
                out[key] = recorded[key]
        return out

    def trials(self, states=None):
        return self.storage.get_all_trials(self.study_id, deepcopy=False, states=states)

    @contextlib.contextmanager
    def queue_lock(self):
        """On SQLite, taking and queueing cells is serialised by an flock beside the database (SQLite ignores the
        row lock a server takes); a server needs none."""
        path = store.sqlite_path(self.url) if store.is_sqlite(self.url) else None
        if path is None:
            yield
            return
        with open(f"{path}.queue.lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def recover(self) -> None:
        """Fail the running cells of dead workers (any host: no heartbeat for STALE_AFTER_S; this host: the process
        is gone), then queue every cell with neither a result nor a waiting or running trial. A result.json left
        in a cell folder (a run from before the study, or a worker killed between writing and recording it) is
        recorded instead of queueing its cell."""
        import optuna
        from optuna.trial import TrialState
        optuna.storages.fail_stale_trials(self.study)
        store.fail_orphans(self.study, self.storage, STALE_AFTER_S)
        for t in self.trials((TrialState.RUNNING,)):
            w = t.user_attrs.get("worker", "")
            if w != self.worker and ours(t.user_attrs) and not pid_alive(int(w.rsplit(":", 1)[1])):
                self._set_state(t._trial_id, TrialState.FAIL, error="its worker process died")
        wanted = {k for k, *_ in self.wanted()}
        for t in self.trials((TrialState.WAITING,)):   # cells no longer wanted (a grid narrowed by tune_on)
            if t.user_attrs.get("cell") not in wanted:
                self._set_state(t._trial_id, TrialState.PRUNED, duplicate="no longer wanted by the matrix's "
                                f"settings (tune_on {self.cc.tune_on})")
        live = {t.user_attrs.get("cell") for t in self.trials((TrialState.WAITING, TrialState.RUNNING))}
        while True:                     # adopting a tuning cell's result.json may make its scheme's seeds wanted
            done = self._recorded()
            adopted = False
            for key, student, scheme, seed, ratio in self.wanted(done):
                if key in done or key in live:
                    continue
                local = self.cell_dir(key) / "result.json"
                if local.is_file():
                    self.record(key, load_cell(self.cell_dir(key)))
                    adopted = True
                    continue
                params = {"student": student_label(student), "scheme": scheme, "seed": seed,
                          **({"kd_ratio": ratio} if ratio is not None else {})}
                self.study.add_trial(optuna.trial.create_trial(
                    state=TrialState.WAITING, params=params,
                    distributions={k: v for k, v in self._distributions().items() if k in params},
                    user_attrs={"cell": key}))
                live.add(key)
            if not adopted:
                return

    def _distributions(self) -> dict:
        from optuna.distributions import CategoricalDistribution as Cat
        # sorted: workers may list students or schemes in another order (Optuna refuses other choice orders)
        seeds = list(range(self.cc.seeds)) + ([TUNE_SEED] if self.cc.kd_ratios else [])
        d = {"student": Cat(sorted(student_label(s) for s in self.cc.students)), "scheme": Cat(sorted(self.cc.schemes)),
             "seed": Cat(seeds)}
        ratios = set(self.cc.kd_ratios or ()) | set((self.cc.kd_ratio or {}).values())
        if ratios:
            d["kd_ratio"] = Cat(sorted(ratios))
        return d

    def spec(self, key: str) -> tuple:
        """(index among the wanted cells, 1-based; student, scheme, seed, ratio) of a cell."""
        for i, (k, *rest) in enumerate(self.wanted(), 1):
            if k == key:
                return (i, *rest)
        raise KeyError(key)

    def take(self, match=None):
        """The first waiting cell (for which `match(key)` holds, when given), now RUNNING in this worker's name with
        a first heartbeat: (trial id, number, key), or None when none waits."""
        from optuna.exceptions import UpdateFinishedTrialError
        from optuna.trial import TrialState
        for t in self.trials((TrialState.WAITING,)):
            if "cell" not in t.user_attrs or (match is not None and not match(t.user_attrs["cell"])):
                continue
            # the heartbeat first: a RUNNING trial without any stamp is never failed as stale (Optuna skips it), so
            # a worker dying between the two writes must not leave one behind
            self.storage.record_heartbeat(t._trial_id)
            try:
                if not self.storage.set_trial_state_values(t._trial_id, state=TrialState.RUNNING):
                    continue
            except UpdateFinishedTrialError:
                continue
            self.storage.set_trial_user_attr(t._trial_id, "pid_domain", pid_domain())
            self.storage.set_trial_user_attr(t._trial_id, "worker", self.worker)
            return t._trial_id, t.number, t.user_attrs["cell"]
        return None

    def superseded(self, key: str, number: int) -> str | None:
        """Why a taken cell is not to be trained: finished already, or a trial with a lower number has it."""
        from optuna.trial import TrialState
        if key in self._recorded():
            return "finished already"
        for t in self.trials((TrialState.WAITING, TrialState.RUNNING)):
            if t.user_attrs.get("cell") == key and t.number < number:
                return f"trial {t.number} has it"
        return None

    def record(self, key: str, res: dict) -> None:
        """A finished cell's result into the study (the first one recorded stays)."""
        if key not in self._recorded():
            self.storage.set_study_user_attr(self.study_id, RESULT + key, res)

    def _set_state(self, trial_id: int, state, values=None, **attrs) -> bool:
        """Set a trial's attrs and final state; False when it was finished meanwhile (e.g. failed as stale)."""
        from optuna.exceptions import UpdateFinishedTrialError
        try:
            for k, v in attrs.items():
                self.storage.set_trial_user_attr(trial_id, k, v)
            return self.storage.set_trial_state_values(trial_id, state=state, values=values)
        except UpdateFinishedTrialError:
            return False

    def work(self, train, log=print, group: int = 1, group_of=None) -> bool:
        """Take, train and record cells until none waits; `train(key, member)` trains one (resuming its folder) and
        returns its result. Returns whether this worker trained any.
        group > 1: take up to `group` waiting cells with the same `group_of(key)` at once (cells that see the same
        batches) and train them side by side in threads, their frozen teacher's forward computed once per batch
        for all (hwkd.train.shared; `member` is (SharedTeacher, member id) of a grouped cell, else None)."""
        from optuna.trial import TrialState
        trained = False
        while True:
            with self.failures(), self.queue_lock():
                self.recover()
                taken = [self.take()]
                if taken[0] is not None and group > 1:
                    mine = group_of(taken[0][2])
                    while len(taken) < group:
                        more = self.take(lambda key, mine=mine: group_of(key) == mine)
                        if more is None:
                            break
                        taken.append(more)
            if taken[0] is None:
                with self.failures():
                    tuning_elsewhere = self.tuning_running()
                if not tuning_elsewhere:
                    return trained
                time.sleep(POLL_S)      # a grid finishing elsewhere queues its scheme's seeds: wait for them
                continue
            ready = []
            for tid, number, key in taken:
                with self.failures():
                    why = self.superseded(key, number)
                    if why:
                        self._set_state(tid, TrialState.PRUNED, duplicate=why)
                        continue
                claim = claim_folder(self.cell_dir(key))
                if claim is None:       # trained by another process on this run folder under an earlier trial
                    with self.failures():
                        self._set_state(tid, TrialState.PRUNED, duplicate="its folder is held by another process")
                    log(f"hwkd compare: cell {key} is held by another process on this run folder; left to it")
                    continue
                ready.append((tid, key, claim))
            if len(ready) <= 1:
                for tid, key, claim in ready:
                    self._train_taken(tid, key, claim, lambda k: train(k, None), log)
                    trained = True
                continue
            trained = self._train_group(ready, train, log) or trained

    def _train_taken(self, tid: int, key: str, claim, train, log) -> None:
        """Train (or adopt the result.json of) one taken cell and record it; a diverged cell is a result, any other
        exception fails its trial and is raised."""
        from optuna.trial import TrialState
        with self.failures(), claim, store.Heartbeat(self.storage, tid):
            try:
                local = self.cell_dir(key) / "result.json"
                res = load_cell(self.cell_dir(key)) if local.is_file() else train(key)
            except FloatingPointError as e:      # a diverged cell is a result (a weight too strong, a seed)
                _, student, scheme, seed, ratio = self.spec(key)
                res = {"student": student_label(student), "student_spec": student, "scheme": scheme, "seed": seed,
                       "kd_ratio": ratio, "diverged": str(e)[:300], "worker": self.worker}
                log(f"hwkd compare: cell {key} diverged ({res['diverged']}); recorded as such")
            except BaseException as e:
                why = "interrupted" if isinstance(e, KeyboardInterrupt) else f"{type(e).__name__}: {e}"[:300]
                with contextlib.suppress(Exception):
                    self._set_state(tid, TrialState.FAIL, error=why)
                raise
            with self.failures():
                self.record(key, res)
                value = None if res.get("diverged") else res["enhanced"].get("si_sdr_db")
                if value is not None and math.isfinite(value):
                    self._set_state(tid, TrialState.COMPLETE, values=[value])
                else:
                    self._set_state(tid, TrialState.FAIL, error=res.get("diverged") or "non-finite SI-SDR (the "
                                                                                       "result is recorded)")

    def _train_group(self, ready: list, train, log) -> bool:
        """The taken cells of one group side by side in threads sharing their teacher's forward (see work)."""
        import threading

        from optuna.trial import TrialState

        from hwkd.train.shared import SharedTeacher
        shared = SharedTeacher()
        members = {key: (shared, shared.join()) for _, key, _ in ready}
        log(f"hwkd compare: {len(ready)} cells side by side, taking turns, the teacher's forward shared by "
            f"{sum(self.distils(k) for _, k, _ in ready)}: " + ", ".join(k for _, k, _ in ready))
        errors: list = []
        # the threads' ends, counted under a condition the calling thread waits on: not Thread.join(timeout), which
        # on Python 3.11 marks a running thread stopped when Ctrl-C lands inside it (bpo-45274's handler releases
        # the thread's state lock), so that it was neither waited for nor joined
        ended, started = threading.Condition(), []

        def run(tid, key, claim):
            try:
                self._train_taken(tid, key, claim, lambda k: train(k, members[k]), log)
            except BaseException as e:  # noqa: BLE001  (raised in the calling thread below)
                errors.append(e)
                if not isinstance(e, KeyboardInterrupt):     # said now: its siblings may train for hours yet
                    log(f"hwkd compare: cell {key} failed ({type(e).__name__}: {e}); the others of its group go "
                        "on, then this is raised"[:400])
            finally:
                shared.leave(members[key][1])        # (already left after training, unless it failed before)
                with ended:
                    done.append(key)
                    ended.notify_all()
        done: list = []

        def all_ended(timeout: float | None) -> bool:
            with ended:
                return ended.wait_for(lambda: len(done) >= len(started), timeout)
        threads = [threading.Thread(target=run, args=r, name=f"cell-{r[1]}", daemon=True) for r in ready]
        try:
            for t in threads:
                t.start()
                started.append(t)
            while not all_ended(1.0):   # (timed: Ctrl-C reaches this thread while it waits)
                pass
        except BaseException:
            # Ctrl-C (or a kill) here: every member stops at its next turn, as an interrupted run would (its last
            # checkpoint kept, its trial failed as interrupted, so the next run resumes it); wait for them, so that
            # no thread is cut off inside a checkpoint write; a second Ctrl-C leaves at once
            shared.stop()
            log("hwkd compare: stopping the group's cells at their next step (Ctrl-C again to leave now)")
            # (a thread started just before Ctrl-C landed, not yet in `started`, is waited for too)
            started[:] = [t for t in threads if t.ident is not None]
            try:
                all_ended(None)
                for t in started:
                    t.join()
            finally:
                for tid, key, _ in ready:
                    with contextlib.suppress(Exception):
                        if key not in self._recorded():
                            self._set_state(tid, TrialState.FAIL, error="interrupted")
            raise
        for t in started:               # (past their last line: gone at once)
            t.join()
        log(f"hwkd compare: group done; teacher forwards {shared.computed}, shared {shared.shared}, a member at most "
            f"{shared.most_ahead} step(s) ahead")
        if errors:
            raise errors[0]
        return True

    def distils(self, key: str) -> bool:
        from hwkd.kd import uses_teacher
        return uses_teacher(self.spec(key)[2])

    def tuning_running(self) -> bool:
        """Whether a KD-weight tuning cell runs (elsewhere) whose grid, once finished, queues more cells."""
        from optuna.trial import TrialState
        return any(t.user_attrs.get("cell", "").endswith(f"/seed{TUNE_SEED}")
                   for t in self.trials((TrialState.RUNNING,)))

    def running_elsewhere(self) -> list[str]:
        """Cells without a result that another worker is training now."""
        from optuna.trial import TrialState
        done = self._recorded()
        return [t.user_attrs["cell"] for t in self.trials((TrialState.RUNNING,))
                if t.user_attrs.get("cell") not in done and t.user_attrs.get("worker") != self.worker]


def redacted(url: str) -> str:
    return store.redact(url)


def stored_storage(out: Path) -> str | None:
    """The store named in RUN/compare.json (a server URL without its password), None for the run's own SQLite."""
    saved = Path(out) / "compare.json"
    if not saved.is_file():
        return None
    url = json.loads(saved.read_text()).get("storage")
    return None if url is None or store.is_sqlite(url) else url


def open_matrix(out: Path, cc: CompareConfig, teacher_path: Path, storage: str | None = None, name: str | None = None,
                create: bool = True) -> Matrix | None:
    """The matrix of `out` (or of `storage` and `name`); with create=False, None for a run folder from before the
    study (its cells are read from their result.json), and an error when there is no comparison at all."""
    out = Path(out)
    url = storage or stored_storage(out)
    if (out / "compare.json").is_file():
        # the folder's cells belong to the matrix it recorded: other settings, another store or another name
        # would adopt its result.json files and checkpoints into a matrix they were not trained for
        old = json.loads((out / "compare.json").read_text())
        # paths may differ (a copied folder, a moved venv): the teacher by SHA-256, students by config (study)
        old = with_legacy(old)                                # settings from before a field: as that code ran
        new = settings_of(cc, teacher_path)
        if cc.mixing_version is None:                          # settled by the matrix: the folder's own
            new["mixing_version"] = old["mixing_version"]
        if cc.balance is None:
            new["balance"] = old["balance"]
        diff = changed_settings(old, new, ignore=("student_configs", *MACHINE_LOCAL))
        if diff == [f"tune_on: None -> {cc.tune_on!r}"] and create:
            diff = []           # narrowed to one student's tuning grid, if none other started (Matrix)
        if diff:
            raise HwkdError(f"{out} holds a comparison with other settings ({'; '.join(diff)})",
                            "rerun with the same options to resume, or give a new --out")
        if old.get("name") and (name or out.resolve().name) != old["name"]:
            raise HwkdError(f"{out} holds comparison {old['name']}, not {name or out.resolve().name}",
                            f"give --name {old['name']} (or none), or a new --out")
        if old.get("storage"):
            if storage is not None and (store.is_sqlite(old["storage"]) or store.is_sqlite(storage)
                                        or not store.same_database(old["storage"], storage)):
                raise HwkdError(f"{out} keeps its matrix in {redacted(store.resolve_manifest(old['storage'], out))}, "
                                f"not in {redacted(storage)}", "drop --storage (and $HWKD_STORAGE) to use the run's "
                                "own store, or give a new --out")
    if not create and url is None and not (out / store.RUN_DB).is_file():
        if (out / "compare.json").is_file():
            return None
        raise HwkdError(f"{out} holds no comparison yet (no compare.json)",
                        "start it without --report-only, or give the run folder of a running comparison")
    return Matrix(out, cc, teacher_path, storage=url, name=name, create=create)


def run_compare(out: Path, cc: CompareConfig, teacher_path: Path, data: dict | None = None,
                progress: bool = True, log=print, train_missing: bool = True, threads: int | None = None,
                storage: str | None = None, name: str | None = None, group: int = 1,
                device: str = "cpu") -> list[dict]:
    """Train and evaluate every cell left in the matrix's queue; returns the finished cells' results (in matrix
    order). `data`: {in_channels: dataset path}. With train_missing=False nothing is trained: the finished cells
    alone (a look at a matrix still running). `threads`: this process's intra-op threads (default cc.threads).
    `group`: up to this many cells that see the same batches train side by side in threads of this process,
    sharing the teacher's forward (Matrix.work); what each cell computes is what it computes alone. `device`: where
    the cells train (cpu, cuda, cuda:N; each cell records it); they are scored on the CPU."""
    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config

    check_settings(cc)
    out = Path(out)
    if train_missing:
        check_inputs(cc, teacher_path, data)
    matrix = open_matrix(out, cc, teacher_path, storage, name, create=train_missing)
    trained, held = False, []
    if matrix is None:                                           # --report-only on a run from before the study
        dirs = [out / "cells" / cell_key(st, sc, seed, fixed_ratio(cc, sc)) for st in cc.students for sc in cc.schemes
                for seed in range(cc.seeds)]
        results = [load_cell(d) for d in dirs if (d / "result.json").is_file()]
    else:
        if train_missing:
            # on the device once, here: the cells (threads of a group among them) then share them where they are
            teachers = {ch: load_model(p)[0].to(device) for ch, p in teacher_paths(cc, teacher_path).items()}
            if group > 1:
                from hwkd.train.shared import limit_arenas
                limit_arenas()  # threads of a group free their steps' memory into few arenas (hwkd.train.shared)
                # the default datasets here, once: not built by forking beside a group's threads
                from hwkd.data.synth import default_dataset
                data = dict(data or {})
                for ch in sorted({resolve_config(st).in_channels for st in cc.students} - set(data)):
                    data[ch] = default_dataset(ch, progress=progress)

            def train(key: str, member=None) -> dict:
                index, student, scheme, seed, ratio = matrix.spec(key)
                return _run_cell(matrix.cell_dir(key), f"{index}/{matrix.total}", student, scheme, seed, cc,
                                 teachers, data, progress and member is None, log, threads, worker=matrix.worker,
                                 ratio=ratio, member=member, device=device)

            def group_of(key: str) -> tuple:
                """Cells that see the same batches: seed, input channels (data and teacher), and where training
                resumes (a cell resuming from a checkpoint is grouped only with cells resuming at the same step)."""
                if key not in inputs:   # (asked under the queue lock for every waiting cell: the spec once)
                    _, student, _, seed, _ = matrix.spec(key)
                    inputs[key] = seed, resolve_config(student).in_channels
                return *inputs[key], _resume_point(matrix.cell_dir(key))
            inputs: dict = {}
            trained = matrix.work(train, log, group=group, group_of=group_of)
        with matrix.failures():
            results = list(matrix.results().values())
            held = matrix.running_elsewhere()
    for key, what, before in CONDITIONS:
        seen = sorted({str(r.get(key, before)) for r in results if not r.get("diverged")})
        if trained and len(seen) > 1:
            log(f"hwkd compare: the finished cells were trained {what} ({'; '.join(seen)}); float results change "
                "with them, so the report notes the students where they are mixed")
    if held:
        log(f"hwkd compare: {len(held)} cell(s) left to the other worker(s) training them: "
            + "; ".join(k.replace("/", " x ").replace(" x seed", " x seed ") for k in held))
    if not results and not train_missing:
        raise HwkdError(f"no finished cells in {out} yet", "wait for the first cell, or rerun without --report-only")
    return results


def load_cell(cdir: Path) -> dict:
    """A finished cell's result.json; cells from before hwkd recorded `threads` there get it from the training
    config in their checkpoint ("default": torch's own count on the machine that trained it)."""
    res = json.loads((cdir / "result.json").read_text())
    if "threads" not in res and (cdir / "last.pt").is_file():
        import torch
        ck = torch.load(cdir / "last.pt", map_location="cpu", weights_only=True)
        res["threads"] = ck.get("train", {}).get("config", {}).get("threads") or "default"
    return res


def _resume_point(cdir: Path) -> tuple:
    """(epoch, step) where a cell's training resumes: (0, 0) without a checkpoint."""
    last = cdir / "last.pt"
    if not last.is_file():
        return 0, 0
    from hwkd.models.checkpoint import read_checkpoint
    try:
        t = read_checkpoint(last)["train"]
        return t["epoch"], t["pos"]
    except Exception:  # noqa: BLE001  (an unreadable checkpoint is said when the cell trains)
        return -1, -1


def _run_cell(cdir: Path, which: str, student: str, scheme: str, seed: int, cc: CompareConfig, teacher,
              data: dict | None, progress: bool, log, threads: int | None, worker: str | None = None,
              ratio: float | None = None, member: tuple | None = None, device: str = "cpu") -> dict:
    """Train (or resume) one cell, evaluate its best checkpoint, write and return result.json (with its learning
    curve, so a report on another machine has it). `member`: (SharedTeacher, member id) of a cell training in a
    group (Matrix.work): it steps in turn with the group and takes its teacher taps from it; it scores its
    evaluation in its own thread (a process pool forked beside other threads could inherit a held lock)."""
    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config
    from hwkd.train.recipe import KDSpec, train_model

    teachers = teacher if isinstance(teacher, dict) else {1: teacher, 4: teacher}
    cfg = resolve_config(student, hop=teachers[min(teachers)].cfg.hop)
    teacher = teachers.get(cfg.in_channels, teachers[min(teachers)])        # the teacher for its input channels
    dset = (data or {}).get(cfg.in_channels)
    if dset is None:
        from hwkd.data.synth import default_dataset
        dset = default_dataset(cfg.in_channels, progress=progress)
    at = f" at KD-weight ratio {ratio:g}" if ratio is not None else ""
    log(f"hwkd compare: cell {which}: {student_label(student)} x {scheme} x seed {seed}{at}")
    t0 = time.perf_counter()
    tcfg = cell_train_config(cc, seed, threads, device)
    with member[0].member(member[1]) if member is not None else contextlib.nullcontext():
        trained = train_model(cfg, cdir, tcfg, data=dset, kd=KDSpec(scheme, teacher, cc.lam, ratio=ratio,
                                                                     balance=cc.balance),
                              progress=progress, meta={"command": f"hwkd compare cell {student} {scheme} seed {seed}"},
                              mix_version=cc.mixing_version)
    best, _ = load_model(cdir / "best.pt")
    with member[0].alone() if member is not None else contextlib.nullcontext():   # (one at a time in a group)
        res = _evaluate_cell(best, dset, cfg, cc, student, scheme, seed, ratio, cdir, t0, trained, worker,
                             jobs=1 if member is not None else None)
    res["device"] = device_tag(device)
    res["group"] = member[0].joined if member is not None else 1
    write_text_atomic(cdir / "result.json", json.dumps(res, indent=1))
    ood = res["ood"]
    log(f"  {student_label(student)} x {scheme} x seed {seed}: SI-SDR {res['enhanced']['si_sdr_db']:.2f} dB, "
        f"PESQ {res['enhanced']['pesq_wb']:.3f}"
        + (f"; out of domain {ood['enhanced']['si_sdr_db']:.2f} dB, {ood['enhanced']['pesq_wb']:.3f}"
           if ood and None not in (ood['enhanced']['si_sdr_db'], ood['enhanced']['pesq_wb']) else "")
        + f" ({res['train_s']} s)")
    return res


def _evaluate_cell(best, dset, cfg, cc: CompareConfig, student: str, scheme: str, seed: int, ratio, cdir: Path,
                   t0: float, trained: dict, worker: str | None, jobs: int | None) -> dict:
    """A trained cell's best checkpoint scored on the evaluation split and out of domain: its CellResult."""
    import torch

    from hwkd.hw.cost import count_params, macs

    sc = _scores_of(best, dset, cc, jobs)
    curve = _curve(cdir)
    res = CellResult(student=student_label(student), student_spec=student, scheme=scheme, seed=seed,
                     in_channels=cfg.in_channels, params=count_params(best), macs_per_s=macs(best)["macs_per_s"],
                     eval_split=cc.eval_split, eval_clips=sc["eval_clips"], enhanced=sc["enhanced"],
                     noisy=sc["noisy"], train_s=round(time.perf_counter() - t0, 1), threads=torch.get_num_threads(),
                     cpu=cpu_tag(),
                     train_data=trained["train_data"], kd_weight=trained.get("kd_weight"), curve=curve,
                     worker=worker, kd_ratio=ratio,
                     val_si_sdr_db=max((p[1] for p in curve), default=None), ood=sc["ood"],
                     train_elapsed_s=train_clock(cdir)).to_dict()
    return res


def device_tag(device: str) -> str:
    """How a cell records where it trained: "cpu", or "cuda:N (GPU name)"."""
    import torch
    dev = torch.device(device)
    if dev.type != "cuda":
        return dev.type
    index = torch.cuda.current_device() if dev.index is None else dev.index
    return f"cuda:{index} ({torch.cuda.get_device_name(index)})"


def _scores_of(model, dset, cc: CompareConfig, jobs: int | None) -> dict:
    """A model scored as a cell is: on the matrix's evaluation split (its first eval_limit clips) and out of
    domain: {"eval_clips", "enhanced", "noisy", "ood"} (mean of each metric; ood None where not scored)."""
    from hwkd.data.datasets import has_split, split_pairs
    from hwkd.data.layouts import scan
    from hwkd.data.speech import OOD_SPLIT
    from hwkd.train.evaluate import evaluate_pairs

    found = scan(dset, channels=model.cfg.in_channels)                  # (one scan for both splits)
    pairs = split_pairs(found, cc.eval_split, limit=cc.eval_limit)
    ev = evaluate_pairs(model, pairs, progress=False, jobs=jobs)
    ood = None
    # the same checkpoint out of domain, unless that is the evaluation split already (or the dataset has none)
    if cc.eval_split is not None and cc.eval_split.rsplit("/", 1)[-1] != OOD_SPLIT and has_split(found, OOD_SPLIT):
        opairs = split_pairs(found, OOD_SPLIT, limit=cc.eval_limit)
        if opairs:                                                       # (none usable: not scored)
            oev = evaluate_pairs(model, opairs, progress=False, jobs=jobs)
            ood = {"split": OOD_SPLIT, "clips": len(opairs),
                   "enhanced": {m: oev["enhanced"][m]["mean"] for m in METRICS},
                   "noisy": {m: oev["noisy"][m]["mean"] for m in METRICS}}
    return {"eval_clips": len(pairs), "enhanced": {m: ev["enhanced"][m]["mean"] for m in METRICS},
            "noisy": {m: ev["noisy"][m]["mean"] for m in METRICS}, "ood": ood}


TEACHER_SCORES = "teacher_scores.json"


def teacher_reference(out: Path, cc: CompareConfig, teacher_path: Path | None, data: dict | None = None,
                      log=print) -> dict:
    """Input channels -> the teacher's own scores, as a cell's (evaluation split and out of domain, the same clips):
    the top of the teacher-student gap the report measures KD against. Scored once per teacher file (SHA-256),
    dataset, split and clip limit, and kept in RUN/teacher_scores.json (a folder it cannot write to: scored, not
    kept). Left out, said, where it cannot be scored like the cells (a teacher for other input channels than its
    students', a dataset that cannot be read): the report then has no gap table for those students."""
    from hwkd.hw.cost import count_params, macs
    from hwkd.models.checkpoint import load_model

    path = Path(out) / TEACHER_SCORES
    try:
        kept = json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        kept = {}                       # (a damaged cache is scored again)
    kept = kept if isinstance(kept, dict) else {}
    got, changed = {}, False
    for ch, tpath in teacher_paths(cc, teacher_path).items():
        try:
            sha = hashlib.sha256(Path(tpath).read_bytes()).hexdigest()
            dset = (data or {}).get(ch)
            if dset is None:
                from hwkd.data.synth import default_dataset
                dset = default_dataset(ch, progress=False)
            key = (sha, str(Path(dset).resolve()), cc.eval_split, cc.eval_limit)
            old = kept.get(str(ch))
            if isinstance(old, dict) and (old.get("sha256"), old.get("data"), old.get("eval_split"),
                                          old.get("eval_limit")) == key:
                got[ch] = old
                continue
            model = load_model(tpath)[0].eval()
            if model.cfg.in_channels != ch:
                log(f"hwkd compare: the teacher {tpath} takes {model.cfg.in_channels} input channel(s), its "
                    f"students {ch}: not scored as they are, so no teacher-student gap for them")
                continue
            log(f"hwkd compare: scoring the teacher {tpath} on the cells' clips ({cc.eval_split} and out of domain): "
                "the top of the teacher-student gap")
            got[ch] = {"file": str(tpath), "sha256": sha, "data": key[1], "params": count_params(model),
                       "macs_per_s": macs(model)["macs_per_s"], "eval_split": cc.eval_split,
                       "eval_limit": cc.eval_limit, **_scores_of(model, dset, cc, None), "cpu": cpu_tag()}
            changed = True
        except (OSError, HwkdError) as e:
            log(f"hwkd compare: the teacher for {ch}-channel students not scored ({e}); no teacher-student gap "
                "for them")
    if changed and path.parent.is_dir():    # (a report through --storage may have no run folder here: not made)
        try:
            write_text_atomic(path, json.dumps({**kept, **{str(k): v for k, v in got.items()}}, indent=1))
        except (OSError, HwkdError):
            pass                        # (a run folder this process cannot write to: scored each time)
    return got


def _history(cdir: Path) -> list[dict]:
    h = cdir / "history.jsonl"
    return [json.loads(line) for line in h.read_text().splitlines() if line.strip()] if h.is_file() else []


def train_clock(cdir: Path) -> float | None:
    """A cell's training wall clock across resumes, from its history (None: no history)."""
    rows = _history(cdir)
    return rows[-1].get("train_elapsed_s") if rows else None


def _curve(cdir: Path) -> list:
    return [[e["epoch"], e["val_si_sdr_db"], e.get("steps")] for e in _history(cdir) if "val_si_sdr_db" in e]


def _worker(k: int, out: Path, cc: CompareConfig, teacher_path: Path, data: dict, threads: int,
            parent: int | None = None, storage: str | None = None, name: str | None = None, group: int = 1,
            device: str = "cpu") -> None:
    import sys
    die_with_parent(parent)

    def log(msg):       # one write per line: lines of side-by-side workers must not interleave
        sys.stdout.write(f"[worker {k}] {msg}\n")
        sys.stdout.flush()
    try:
        run_compare(out, cc, teacher_path, data=data, progress=False, log=log, threads=threads, storage=storage,
                    name=name, group=group, device=device)
    except HwkdError as e:
        print(f"hwkd compare: worker {k}: {e}", file=sys.stderr, flush=True)
        sys.exit(e.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)


def run_compare_parallel(out: Path, cc: CompareConfig, teacher_path: Path, workers: int, data: dict | None = None,
                         progress: bool = True, log=print, storage: str | None = None,
                         name: str | None = None, group: int = 1, device: str = "cpu") -> list[dict]:
    """run_compare in `workers` processes that share the matrix's queue; then every finished cell.
    Intra-op threads per worker: cc.threads, else cores // workers (at least 1). A worker that fails stops
    the others (their cells resume on the next run), as one failing cell stops a single-process run."""
    import multiprocessing as mp

    from hwkd.models.checkpoint import load_model
    from hwkd.models.registry import resolve_config

    if workers <= 1:
        return run_compare(out, cc, teacher_path, data=data, progress=progress, log=log, storage=storage, name=name,
                           group=group, device=device)
    out = Path(out)
    check_settings(cc)
    check_inputs(cc, teacher_path, data)
    open_matrix(out, cc, teacher_path, storage, name)          # the study and its settings, before the workers
    # the datasets once, here: workers synthesising the default corpus side by side would race
    data = dict(data or {})
    paths = teacher_paths(cc, teacher_path)
    hop = load_model(paths[min(paths)])[0].cfg.hop
    for ch in sorted({resolve_config(st, hop=hop).in_channels for st in cc.students} - set(data)):
        from hwkd.data.synth import default_dataset
        data[ch] = default_dataset(ch, progress=progress)
    threads = cc.threads or max(1, (os.cpu_count() or 1) // workers)
    log(f"hwkd compare: {workers} workers, {threads} thread(s) each; progress per cell")
    if group > 1:       # (the workers also set it themselves, limit_arenas; glibc reads this when they start)
        os.environ.setdefault("MALLOC_ARENA_MAX", "2")
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(k, out, cc, teacher_path, data, threads, os.getpid(), storage,
                                               name, group, device), name=f"compare-{k}")
             for k in range(workers)]
    for p in procs:
        p.start()
    try:
        while any(p.is_alive() for p in procs):
            failed = [(k, p.exitcode) for k, p in enumerate(procs) if p.exitcode not in (None, 0)]
            if failed:
                break
            time.sleep(0.5)
        failed = [(k, p.exitcode) for k, p in enumerate(procs) if p.exitcode not in (None, 0)]
    except KeyboardInterrupt:
        # Ctrl-C reached the workers too (one process group): each stops its cells at their next step and leaves;
        # they are given that long before they are stopped outright (a checkpoint is never left half written)
        log(f"hwkd compare: waiting up to {STOP_GRACE_S} s for the workers to stop their cells (Ctrl-C again to "
            "stop them now)")
        with contextlib.suppress(KeyboardInterrupt):
            end = time.monotonic() + STOP_GRACE_S
            for p in procs:
                p.join(timeout=max(0.0, end - time.monotonic()))
        raise
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
            p.join()
    if failed:
        k, code = failed[0]
        raise HwkdError(f"compare worker {k} failed (exit code {code}); the other workers were stopped",
                        "see its message above; finished cells are kept, rerun the same command to resume")
    return run_compare(out, cc, teacher_path, data=data, progress=False, log=log, train_missing=False,
                       storage=storage, name=name)


