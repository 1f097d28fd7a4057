"""Opening a sweep's Optuna storage, and saying in one line why it cannot be opened.

A storage is a URL: `sqlite:///FILE` (one machine), `postgresql://USER@HOST:PORT/DB` (many machines; the `postgres`
extra brings the driver) or `journal:///FILE` (Optuna's JournalStorage: machines that share only a file system).
Nothing is ever created or upgraded in a file that is not already an Optuna study of this version.
"""

from __future__ import annotations

import sqlite3
import time
import warnings
from importlib.metadata import version
from pathlib import Path

import optuna
import sqlalchemy.exc
from sqlalchemy.engine import make_url

from fmnist.core.errors import UserError

JOURNAL = "journal:///"
# what a storage that went away raises: SQLAlchemy's errors, which Optuna wraps in StorageInternalError on commit
LOST = (sqlalchemy.exc.SQLAlchemyError, optuna.exceptions.StorageInternalError)
TABLE_RACE_TRIES = 5
DRIVERS = {"postgresql": "postgres"}  # URL dialect -> the pyproject extra that brings its driver


def where(url: str) -> str:
    """The storage as a user would look for it: a file's path, or a server's host:port (no password)."""
    if url.startswith(JOURNAL):
        return "/" + url[len(JOURNAL) :].lstrip("/")  # journal:///abs/path, and journal:////abs/path alike
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        return parsed.database or ":memory:"
    return f"{parsed.host or 'localhost'}:{parsed.port or 'default port'}"


def _check_sqlite_file(path: Path) -> None:
    """Refuse a file that is not an Optuna sqlite storage before SQLAlchemy touches it: Optuna would add its tables to
    any sqlite database, and a corrupt file fails deep in SQLAlchemy."""
    if not path.exists() or path.stat().st_size == 0:
        return
    try:
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as db:
            tables = {name for (name,) in db.execute("select name from sqlite_master where type='table'")}
    except sqlite3.DatabaseError as e:
        raise UserError(
            f"{path} is not an Optuna storage ({e}): point hydra.sweeper.storage at another file "
            f"(the file was left as it is)"
        ) from None
    if tables and not {"studies", "trials", "alembic_version"} <= tables:
        raise UserError(
            f"{path} is an sqlite database but not an Optuna storage (tables: "
            f"{', '.join(sorted(tables)[:5])}): point hydra.sweeper.storage at another file "
            f"(the file was left as it is)"
        )


def open_storage(
    url: str, heartbeat_interval: int | None = None, grace_period: int | None = None, stale_trial_callback=None
):
    """The storage behind `url`, ready for several processes; heartbeats recorded by the database when asked for."""
    if url.startswith(JOURNAL):
        from optuna.storages.journal import JournalFileBackend, JournalStorage  # only for journal URLs

        path = Path(where(url))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    backend = make_url(url).get_backend_name()
    engine_kwargs = {}
    if backend == "sqlite":
        _check_sqlite_file(Path(make_url(url).database))
        # several workers write one file: wait for the lock instead of failing after sqlite's 5 s
        engine_kwargs = {"connect_args": {"timeout": 120}}
    else:
        # a pooled connection outlives a server restart: check it before use instead of failing the next query
        engine_kwargs = {"pool_pre_ping": True}
    try:
        for attempt in range(1, TABLE_RACE_TRIES + 1):
            try:
                with warnings.catch_warnings():  # heartbeat_interval is marked experimental since Optuna 2.9
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    return optuna.storages.RDBStorage(
                        url,
                        engine_kwargs=engine_kwargs,
                        heartbeat_interval=heartbeat_interval,
                        grace_period=grace_period,
                        heartbeat_stale_trial_callback=stale_trial_callback,
                    )
            except (sqlalchemy.exc.ProgrammingError, sqlalchemy.exc.IntegrityError):
                # workers started together on a fresh PostgreSQL database race to create Optuna's tables (one in
                # three got "relation studies already exists" here): the loser finds them made on its next try
                if attempt == TABLE_RACE_TRIES or backend == "sqlite":
                    raise
                time.sleep(0.5 * attempt)
    except ImportError as e:  # Optuna's own message names no module: its cause does
        module = getattr(e.__cause__, "name", None) or str(e)
        hint = f"pip install -e '.[{DRIVERS[backend]}]'" if backend in DRIVERS else f"install {module}"
        raise UserError(
            f"the storage at {where(url)} needs the {backend} driver {module}, which is not installed: {hint}"
        ) from None
    except Exception as e:
        raise storage_error(e, url) from None


def storage_error(error: Exception, url: str) -> Exception:
    """The one-line UserError for a storage that failed: unreachable, not a database, written by an older Optuna;
    any other error is returned as it is."""
    if isinstance(error, RuntimeError) and "optuna storage upgrade" in str(error):
        return UserError(
            f"{url} was written by an older Optuna than {version('optuna')}: upgrade it once with "
            f"`optuna storage upgrade --storage {url}`, then rerun"
        )
    cause = error
    while cause is not None and not isinstance(cause, sqlalchemy.exc.SQLAlchemyError):  # Optuna wraps it
        cause = cause.__cause__ or cause.__context__
    error = cause or error
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if isinstance(error, sqlalchemy.exc.OperationalError | sqlalchemy.exc.InterfaceError):
        return UserError(
            f"cannot reach the study's storage at {where(url)} ({first}): start the server or fix "
            f"hydra.sweeper.storage, then rerun the same command (finished trials are kept)"
        )
    if isinstance(error, sqlalchemy.exc.DatabaseError):
        return UserError(f"{where(url)} is not an Optuna storage ({first}): point hydra.sweeper.storage elsewhere")
    return error


class StorageLost(UserError):
    """A trial's job lost the study's storage mid-run: not its configuration's fault, so the sweeper runs it again."""
