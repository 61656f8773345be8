"""The study store of searches and KD matrices (an Optuna RDB storage): URLs that never show a password, timeouts,
relocatable run folders, heartbeats.

Passwords: a store URL is shown (messages, logs) only as SQLAlchemy renders it with the password hidden, and
written to RUN/run.json without any password. A password need not be on the command line (where `ps` shows it to
every user of the machine): the URL can come from $HWKD_STORAGE, and for PostgreSQL a URL without a password lets
libpq take it from PGPASSWORD or ~/.pgpass. Server connections get a connect timeout and a statement timeout
(libpq's connect_timeout and `options=-c statement_timeout=...`) unless the URL's query or PGCONNECT_TIMEOUT /
PGOPTIONS set their own; SQLite waits for a locked database (busy timeout) rather than failing at once.

Relocation: the run's own SQLite store is written to run.json relative to the run folder (sqlite:///study.db) and
resolved against the folder that holds run.json when it is read, so a run folder copied or moved elsewhere keeps
working. Older run.json files name it by an absolute path; when that path is gone, RUN/study.db is used.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

from hwkd.errors import HwkdError

STORAGE_ENV = "HWKD_STORAGE"
CONNECT_TIMEOUT_S = 10        # a database server that does not answer within this fails the connection ...
STATEMENT_TIMEOUT_S = 120     # ... and a statement (a lock wait included) that runs longer than this is cancelled
SQLITE_BUSY_S = 60            # SQLite: how long a writer waits for another worker's lock
RUN_DB = "study.db"
_FIX = ("write e.g. postgresql+psycopg://USER@HOST/DB (the password from PGPASSWORD or ~/.pgpass) or "
        "sqlite:////abs/path/study.db")


def parse(url: str, source: str = "--storage"):
    """The URL as SQLAlchemy reads it; a string it cannot read is refused without echoing it (it may hold a
    password)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError
    try:
        return make_url(url)
    except (ArgumentError, ValueError, TypeError):
        raise HwkdError(f"{source} is not a database URL", _FIX) from None


def redact(url: str) -> str:
    """The URL for messages and logs: the password (also one given as ?password=) shown as ***."""
    try:
        u = parse(url)
    except HwkdError:
        return "<not a database URL>"
    if "password" in u.query:
        u = u.update_query_dict({"password": "***"})
    return u.render_as_string(hide_password=True)


def without_password(url: str) -> str:
    """The URL with no password at all: what run.json keeps (libpq then takes it from PGPASSWORD or ~/.pgpass)."""
    from sqlalchemy.engine import URL
    u = parse(url)
    return URL.create(u.drivername, username=u.username, host=u.host, port=u.port, database=u.database,
                      query=u.query).difference_update_query(["password"]).render_as_string(hide_password=False)


def scrub(text: str, url: str | None) -> str:
    """Text (an exception's message) with the URL's password replaced by ***, should a driver have echoed it."""
    if not url:
        return text
    try:
        u = parse(url)
    except HwkdError:
        return text.replace(url, "<not a database URL>")
    for secret in (u.password, u.query.get("password")):
        if isinstance(secret, str) and secret:
            text = text.replace(secret, "***")
    return text


def describe(exc: BaseException, url: str | None) -> str:
    """'ErrorType: first line of its message' (at most 200 characters), with no password in it."""
    first = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {scrub(first, url)[:200]}"


def has_password(url: str) -> bool:
    try:
        u = parse(url)
    except HwkdError:
        return False
    return bool(u.password) or "password" in u.query


def is_sqlite(url: str) -> bool:
    return url.startswith("sqlite")


def sqlite_url(path: Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for an in-memory one)."""
    db = parse(url).database
    return Path(db) if db and db != ":memory:" else None


def same_database(a: str, b: str) -> bool:
    """Whether two URLs name one database (driver, password and query aside)."""
    ua, ub = parse(a), parse(b)
    return (ua.get_backend_name(), ua.host, ua.port, ua.database) == (ub.get_backend_name(), ub.host, ub.port,
                                                                      ub.database)


def engine_kwargs(url: str) -> dict:
    """Timeouts: SQLite's busy timeout; libpq's connect_timeout and statement_timeout, and the MySQL drivers'
    connect_timeout, unless the URL's query (or libpq's environment) sets them."""
    if is_sqlite(url):
        return {"connect_args": {"timeout": SQLITE_BUSY_S}}
    u = parse(url)
    args = {}
    backend = u.get_backend_name()
    if backend in ("postgresql", "mysql", "mariadb") and "connect_timeout" not in u.query \
            and not (backend == "postgresql" and os.environ.get("PGCONNECT_TIMEOUT")):
        args["connect_timeout"] = CONNECT_TIMEOUT_S
    if backend == "postgresql" and "options" not in u.query and not os.environ.get("PGOPTIONS"):
        args["options"] = f"-c statement_timeout={STATEMENT_TIMEOUT_S * 1000}"
    return {"pool_pre_ping": True, **({"connect_args": args} if args else {})}


def require_sqlite_file(url: str, what: str) -> None:
    """Reading a run never creates its SQLite file: a missing one is an error naming it."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None and not path.is_file():
            raise HwkdError(f"the store of {what} ({path}) is missing",
                            "copy or move the whole run folder, study.db included, and give that folder")
        if path is not None and path.stat().st_size == 0:       # opening it would create empty tables in it
            raise HwkdError(f"the store of {what} ({path}) is an empty file",
                            "restore study.db from a copy of the run folder")


def manifest_url(url: str, run: Path) -> str:
    """What run.json keeps: the run's own SQLite file relative to the run folder; a server URL without its
    password."""
    if is_sqlite(url):
        path = sqlite_path(url)
        if path is not None:
            try:
                return f"sqlite:///{path.resolve().relative_to(Path(run).resolve())}"
            except ValueError:
                return sqlite_url(path)
        return url
    return without_password(url)


def resolve_manifest(stored: str, run: Path, given: str | None = None, given_from: str = "--storage") -> str:
    """The URL to connect with, from run.json's `storage` (resolved against the run folder that holds it) and an
    optional URL the user gave (--storage or $HWKD_STORAGE), which supplies the password of the run's server.

    A given URL naming another database than the run's is refused when it came from --storage and ignored when it
    came from the environment (the run's own store is used)."""
    run = Path(run)
    if is_sqlite(stored):
        if given and given_from == "--storage" and not is_sqlite(given):
            raise HwkdError(f"run {run.name} keeps its trials in its own SQLite file, but --storage names "
                            f"{redact(given)}", "drop --storage: the run's own store is used")
        path = sqlite_path(stored)
        if path is None:
            return stored
        if not path.is_absolute():
            return sqlite_url(run / path)
        if not path.is_file() and (path.name == RUN_DB or (run / RUN_DB).is_file()):   # older run.json, folder moved
            return sqlite_url(run / RUN_DB)
        return sqlite_url(path)
    if given and not is_sqlite(given):
        if same_database(stored, given):
            return given
        if given_from == "--storage":
            raise HwkdError(f"run {run.name} keeps its trials in {redact(stored)}, but --storage names "
                            f"{redact(given)}", "drop --storage to use the run's own store, or give its URL")
    return stored


@contextlib.contextmanager
def failures(url: str, fix: str, what: str = "search store"):
    """A database error (a server gone, a statement over its timeout) as one HwkdError line with no password."""
    import optuna
    from sqlalchemy.exc import SQLAlchemyError
    try:
        yield
    except (SQLAlchemyError, optuna.exceptions.StorageInternalError) as e:
        cause = e.__cause__ if isinstance(e, optuna.exceptions.StorageInternalError) and e.__cause__ else e
        raise HwkdError(f"the {what} {redact(url)} failed ({describe(cause, url)})", fix) from None


def open_rdb(url: str, **kw):
    """An Optuna RDBStorage with hwkd's timeouts."""
    import optuna
    return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs(url), **kw)


def given_storage(flag: str | None) -> tuple[str | None, str]:
    """The store URL the user gave and where from: --storage, else $HWKD_STORAGE, else (None, '')."""
    if flag:
        return flag, "--storage"
    env = os.environ.get(STORAGE_ENV, "").strip()
    if env:
        parse(env, f"${STORAGE_ENV}")
        return env, f"${STORAGE_ENV}"
    return None, ""


def cell_float(v) -> float | None:
    """A cell of collect()'s table as a float, None where empty (None or NaN)."""
    return None if v is None or v != v else float(v)


def collect_trials(run: Path, settings: dict, with_attrs: bool = False):
    """A search run's Optuna trials (and, with_attrs, the study's user attrs), read from its store."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = settings["storage"]
    require_sqlite_file(url, f"search {settings['name']}")      # reading never creates an empty store
    try:
        study = optuna.load_study(study_name=settings["name"], storage=open_rdb(url))
        trials, attrs = study.get_trials(deepcopy=False), study.user_attrs
    except Exception as e:  # noqa: BLE001
        raise HwkdError(f"cannot read the store of {run} ({redact(url)}: {describe(e, url)})",
                        "check that the run finished its first trial and its database is reachable (a URL "
                        "without a password takes it from PGPASSWORD or ~/.pgpass)") from None
    return (trials, attrs) if with_attrs else trials


def collect(run: Path, settings: dict) -> tuple:
    """A search run's trials as a DataFrame (one row per trial of every worker: config, quality, cost and how each
    latency was obtained; duplicates, over-limit and waiting trials left out) and the study's user attrs."""
    import pandas as pd
    trials, attrs = collect_trials(run, settings, with_attrs=True)
    rows = []
    for t in trials:
        a = t.user_attrs
        if a.get("duplicate_of") is not None or a.get("over_limit") or t.state.name == "WAITING":
            continue
        cfg = a.get("config", {})
        rows.append({"trial": t.number, "state": t.state.name, "key": a.get("key"),
                     **{f"cfg_{k}": v for k, v in cfg.items() if k != "n_fft"},
                     "val_si_sdr_db": a.get("val_si_sdr_db"), "val_pesq_wb": a.get("val_pesq_wb"),
                     "rung": a.get("rung"), "total_steps": a.get("total_steps"),
                     "rung0_si_sdr_db": a.get("rung0_si_sdr_db"), "params": a.get("params"),
                     "gmacs_per_s": a["macs_per_s"] / 1e9 if a.get("macs_per_s") else None,
                     "latency_ms": a.get("latency_ms"), "latency_p90_ms": a.get("latency_p90_ms"),
                     "latency_lo_ms": a.get("latency_lo_ms"), "latency_hi_ms": a.get("latency_hi_ms"),
                     "near_limit": a.get("near_limit"),
                     "rtf": a.get("rtf"), "latency_how": a.get("latency_how"),
                     "latency_provenance": a.get("latency_provenance"), "feasible": a.get("feasible"),
                     "error": a.get("error"), "worker": a.get("worker"), "trial_s": a.get("trial_s"),
                     "started": t.datetime_start.isoformat() if t.datetime_start else None,
                     "completed": t.datetime_complete.isoformat() if t.datetime_complete else None,
                     "checkpoint": a.get("checkpoint"), "kd_lambda": a.get("kd_lambda")})
    return pd.DataFrame(rows), attrs


def open_study_storage(url: str, heartbeat_interval: int, grace_period: int, what: str = "search store"):
    """Optuna's RDB storage of a search, heartbeats on (a running trial's worker stamps it; a trial without a stamp
    for `grace_period` s is a dead worker's). Workers started together race to create the schema: the loser
    retries (the server is up then). An unreachable or refused store is one HwkdError naming it (redacted)."""
    import time
    import warnings

    import optuna
    from sqlalchemy.exc import IntegrityError, ProgrammingError
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)   # TPE, heartbeat
    # the heartbeat is stamped by hwkd's own thread around ask/tell, which Optuna's warning does not foresee
    warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used with Study.optimize")
    try:
        for attempt in range(5):
            try:
                return open_rdb(url, heartbeat_interval=heartbeat_interval, grace_period=grace_period)
            except (IntegrityError, ProgrammingError):
                if attempt == 4:
                    raise
                time.sleep(0.5 + attempt)
    except HwkdError:
        raise
    except Exception as e:  # noqa: BLE001  (SQLAlchemy raises many kinds for a bad URL / down server)
        raise HwkdError(f"cannot open the {what} {redact(url)} ({describe(e, url)})",
                        "check the URL, that the database server is running and reachable, and the "
                        "credentials (a URL without a password takes it from PGPASSWORD or ~/.pgpass)") from None


class Heartbeat:
    """Stamps the trial in the store every `interval` seconds while it runs (Optuna's RDB heartbeat, timed by
    the database server's clock), so a worker on any machine can tell a dead worker's trial from a long one."""

    def __init__(self, storage, trial_id: int):
        self.storage, self.trial_id = storage, trial_id
        self.stop = threading.Event()
        self.thread = None

    def __enter__(self):
        interval = self.storage.get_heartbeat_interval()
        if interval:
            self.storage.record_heartbeat(self.trial_id)
            self.thread = threading.Thread(target=self._beat, args=(interval,), daemon=True)
            self.thread.start()
        return self

    def _beat(self, interval: float) -> None:
        while not self.stop.wait(interval):
            try:
                self.storage.record_heartbeat(self.trial_id)
            except Exception:  # noqa: BLE001  (a missed stamp: the grace period spans several)
                pass

    def __exit__(self, *exc):
        self.stop.set()
        if self.thread is not None:
            self.thread.join(timeout=10)


def fail_orphans(study, storage, grace_s: float) -> int:
    """Fail RUNNING trials that never named their worker (`worker` user attr) within grace_s of their start: a
    process killed between taking a trial and naming itself leaves one, and Optuna's stale check skips a trial
    that was never stamped with a heartbeat, so nothing else would ever end it. Returns how many."""
    from datetime import datetime

    from optuna.exceptions import UpdateFinishedTrialError
    from optuna.trial import TrialState
    n = 0
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if "worker" in t.user_attrs or t.datetime_start is None \
                or (datetime.now() - t.datetime_start).total_seconds() <= grace_s:
            continue
        try:
            n += bool(storage.set_trial_state_values(t._trial_id, state=TrialState.FAIL))
        except UpdateFinishedTrialError:
            pass
    return n
