"""Opening the study storage: SQLite on one machine, PostgreSQL across several.

Every process (launcher, worker, report, dashboard) opens storage here, so the
settings that make concurrent use safe live in one place: WAL and a busy timeout
for SQLite, small pre-pinged pools for PostgreSQL, and heartbeats that turn a
killed worker's trial into a retried one instead of a trial RUNNING forever.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import re
import sqlite3
import warnings
from pathlib import Path

import optuna
import sqlalchemy
import sqlalchemy.exc
from optuna.artifacts import FileSystemArtifactStore
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

from spheroid_hpo.errors import InputError

SQLITE_BUSY_TIMEOUT_S = 120
DEFAULT_HEARTBEAT_INTERVAL_S = 15
MAX_RETRIES = 3


def masked_url(url: str) -> str:
    """``url`` with its password replaced by ``***``, for messages and logs.

    It works on the text as typed, so a URL that does not parse (a missing ``:``,
    an unencoded ``@`` in the password) does not show its password either.
    """
    if url.startswith("sqlite"):
        return url  # a file path, which may hold ':' and '@' but never a password
    scheme, separator, rest = url.partition("://")
    if not separator:
        scheme, rest = "", url
    credentials, at, location = rest.rpartition("@")
    user, colon, _password = credentials.partition(":")
    if at and colon:
        url = f"{scheme}{separator}{user}:***@{location}"
    return _PASSWORD_PARAMETER.sub(r"\1***", url)


_PASSWORD_PARAMETER = re.compile(r"([?&]password=)[^&]*", re.IGNORECASE)


def split_password(url: str) -> tuple[str, str | None]:
    """``url`` without its PostgreSQL password, and the password (None when it has none).

    The password then travels as ``PGPASSWORD``, which libpq reads, instead of on a
    command line (``ps`` shows it to every user) or in the database.
    """
    parsed = _parse_url(url)
    password = parsed.password or parsed.query.get("password")
    if parsed.get_backend_name() != "postgresql" or not password:
        return url, None
    if isinstance(password, tuple):
        password = password[0]
    bare = parsed._replace(password=None).difference_update_query(["password"])  # set() skips None
    return bare.render_as_string(hide_password=False), str(password)


def open_storage(
    url: str,
    *,
    heartbeat_interval: int | None = DEFAULT_HEARTBEAT_INTERVAL_S,
    grace_period: int | None = None,
) -> RDBStorage:
    """Open (creating tables when new) the RDB storage at ``url``.

    With a ``heartbeat_interval`` each running trial beats that often; one silent
    for ``grace_period`` seconds (default: four beats) is marked FAIL and queued
    again with the same parameters, up to three times.
    """
    parsed = _parse_url(url)
    engine_kwargs: dict = {}
    if parsed.get_backend_name() == "sqlite":
        engine_kwargs["connect_args"] = {"timeout": SQLITE_BUSY_TIMEOUT_S}
    elif parsed.get_backend_name() == "postgresql":
        # A few connections per worker keep a server's connection limit far away with
        # many workers; pre-ping replaces connections the server or a proxy has dropped.
        engine_kwargs.update(pool_size=2, max_overflow=2, pool_pre_ping=True, pool_recycle=1800)
    try:
        # Heartbeats are marked experimental in Optuna; the warning is noise for our users.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            heartbeat_kwargs = {}
            if heartbeat_interval is not None:
                heartbeat_kwargs = {
                    "heartbeat_interval": heartbeat_interval,
                    "grace_period": grace_period or 4 * heartbeat_interval,
                    "heartbeat_stale_trial_callback": RetryHeartbeatStaleTrialCallback(max_retry=MAX_RETRIES),
                }
            with _sqlite_creation_lock(parsed, url):
                storage = RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat_kwargs)
    except (sqlalchemy.exc.SQLAlchemyError, ImportError) as error:
        raise InputError(f"cannot open storage {masked_url(url)}: {_first_line(error)}; {_hint(parsed)}") from error
    if parsed.get_backend_name() == "sqlite":
        _serialize_sqlite_transactions(storage.engine)
    return storage


def require_existing_sqlite(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist: opening it would create an empty study file.

    For commands that only join or read a study (worker, report, dashboard). A URL
    that does not parse (a port that is not a number) is refused in one line here too.
    """
    parsed = _parse_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        path = Path(parsed.database)
        if not path.is_file() or path.stat().st_size == 0:  # Optuna would write its tables into an empty file
            state = "does not exist" if not path.is_file() else "is empty"
            raise InputError(
                f"no study storage at {url}: the file {parsed.database} {state}; pass --storage with the "
                "URL `spheroid-hpo launch` printed, or launch the study first"
            )


def locked_message(error: BaseException) -> str | None:
    """One line for a SQLite storage that stayed locked past the busy timeout, else None."""
    # Optuna wraps the driver's error (StorageInternalError), so look down the chain.
    while error is not None and not (
        isinstance(error, (sqlalchemy.exc.OperationalError, sqlite3.OperationalError))
        and "database is locked" in str(error)
    ):
        error = error.__cause__ or error.__context__
    if error is None:
        return None
    return (
        f"the SQLite storage stayed locked for {SQLITE_BUSY_TIMEOUT_S} s: another process holds its write "
        "lock (a paused or hung worker?); resume or stop that process and run again, or use PostgreSQL "
        "for many workers"
    )


def fault_message(error: BaseException) -> str | None:
    """One line for a storage or disk fault anywhere in ``error``'s chain, else None: a SQLite file that
    stayed locked, a full disk (no space for a checkpoint, or for the SQLite file to grow), or a damaged
    SQLite file. Optuna wraps the driver's error (StorageInternalError "... e.g. exceeding max length",
    then "Should not reach" when it cannot record the failed trial either), so look down the chain."""
    locked = locked_message(error)
    if locked is not None:
        return locked
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        text = str(getattr(error, "orig", None) or error)
        disk_full = isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)
        if disk_full or "database or disk is full" in text:
            where = f" ({error.filename})" if isinstance(error, OSError) and error.filename else ""
            return (f"no space left on the disk{where}; free space and run again (finished trials are kept, "
                    f"and a trial that was running is retried from its last checkpoint)")
        if isinstance(error, (sqlite3.DatabaseError, sqlalchemy.exc.DatabaseError)) and (
            "malformed" in text or "not a database" in text
        ):
            return (f"the SQLite storage file is damaged ({_first_line(error)}); restore it from a copy, or "
                    f"save what it holds with `sqlite3 study.db .recover | sqlite3 recovered.db`")
        error = error.__cause__ or error.__context__
    return None


def open_artifact_store(path: Path) -> FileSystemArtifactStore:
    """The folder-backed Optuna artifact store (shared folder for several machines)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise InputError(f"cannot create artifact folder {path}: {error.strerror}; pass --artifacts DIR") from error
    return FileSystemArtifactStore(str(path))


def _parse_url(url: str) -> sqlalchemy.engine.URL:
    try:
        parsed = sqlalchemy.engine.make_url(url)
    except (sqlalchemy.exc.ArgumentError, ValueError) as error:  # ValueError: a port that is not a number
        raise InputError(
            f"storage URL {masked_url(url)!r} is not a database URL; use sqlite:///runs/study.db or "
            "postgresql+psycopg://USER:PASSWORD@HOST:5432/DB"
        ) from error
    if "@" in (parsed.host or ""):
        raise InputError(
            f"storage URL {masked_url(url)} has an '@' in its user name or password; write it as %40 "
            "(percent-encode special characters, e.g. postgresql+psycopg://USER:PASS%40WORD@HOST:5432/DB)"
        )
    if parsed.get_backend_name() == "sqlite" and parsed.host:
        # sqlite://runs/x.db reads "runs" as a host; SQLAlchemy refused it only after x.db was created.
        raise InputError(
            f"storage URL {url} has a host part ({parsed.host!r}); SQLite URLs take three slashes and a path: "
            f"sqlite:///{parsed.host}/{parsed.database or ''} (four for an absolute path)"
        )
    if parsed.get_backend_name() not in ("sqlite", "postgresql", "mysql"):
        raise InputError(
            f"storage URL {masked_url(url)} uses unknown database {parsed.get_backend_name()!r}; "
            "use sqlite:///... or postgresql+psycopg://..."
        )
    try:
        parsed.get_dialect()
    except (sqlalchemy.exc.NoSuchModuleError, ImportError) as error:
        raise InputError(
            f"storage URL {masked_url(url)} names driver {parsed.drivername!r}, which is not installed or unknown; "
            "use sqlite:///... or postgresql+psycopg://..."
        ) from error
    return parsed


@contextlib.contextmanager
def _sqlite_creation_lock(parsed: sqlalchemy.engine.URL, url: str):
    """Prepare a SQLite file (folder, WAL) and hold an exclusive lock on it while Optuna creates its tables.

    Two launches starting on the same new file would otherwise both switch it to WAL and
    create its tables; one fails ("table studies already exists", "database is locked").
    flock is apart from SQLite's own fcntl locks. Other databases need no lock.
    """
    database = parsed.database if parsed.get_backend_name() == "sqlite" else None
    if not database or database == ":memory:":
        yield
        return
    path = Path(database)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(path, "ab")  # creates the file, and leaves an existing one as it is
        fcntl.flock(handle, fcntl.LOCK_EX)
        # WAL lets readers (the dashboard, progress) run beside a writer, and it is a
        # property of the file: set once, every later connection inherits it.
        with contextlib.closing(sqlite3.connect(path, timeout=SQLITE_BUSY_TIMEOUT_S)) as connection:
            connection.execute("PRAGMA journal_mode=WAL")
    except (OSError, sqlite3.Error) as error:
        message = locked_message(error) or f"{error}; check the path and its permissions"
        raise InputError(f"cannot open SQLite storage {url}: {message}") from error
    with handle:
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _serialize_sqlite_transactions(engine: sqlalchemy.engine.Engine) -> None:
    """Make every SQLite transaction take the write lock when it begins.

    Optuna claims a queued trial by reading it as WAITING and writing RUNNING in one
    transaction, relying on SELECT ... FOR UPDATE, which SQLite ignores: two workers can
    both claim it. ``BEGIN IMMEDIATE`` serialises those transactions; the busy timeout
    makes the second one wait instead of failing.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _no_implicit_transactions(dbapi_connection, _record):
        # pysqlite would otherwise open its own deferred transaction before ours.
        dbapi_connection.isolation_level = None

    @sqlalchemy.event.listens_for(engine, "begin")
    def _begin_immediate(connection):
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    # Connections pooled while the storage was created predate the listeners.
    engine.dispose()


def _hint(parsed: sqlalchemy.engine.URL) -> str:
    if parsed.get_backend_name() == "postgresql":
        return "check that the server runs, and the host, port, user, password and database name"
    return "check the URL"


def _first_line(error: BaseException) -> str:
    text = str(getattr(error, "orig", None) or error).strip()
    return text.splitlines()[0] if text else error.__class__.__name__
