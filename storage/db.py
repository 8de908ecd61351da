"""The SQL index: engines for SQLite (embedded default) and PostgreSQL, migrations on open,
bulk inserts, column reads into numpy, runs, and video claiming with leases.

SQLite is made safe for several writing processes the documented way: pysqlite's own
BEGIN handling is switched off and every write transaction starts with ``BEGIN IMMEDIATE``
(docs/design.md: WAL + busy timeout alone lost most claims under contention). PostgreSQL claims
with ``FOR UPDATE SKIP LOCKED`` inside the claiming UPDATE.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, create_engine, event, func, select, text, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError, SQLAlchemyError

from . import schema
from .errors import DatabaseError
from .schema import runs, shards, videos


@dataclass
class RunRecord:
    """A row of ``runs`` while its job runs: the id, and what the job reports at its end."""
    id: int
    status: str = "done"
    summary: dict[str, Any] = field(default_factory=dict)


IN_BATCH = 10_000   # values per IN (...) clause: under SQLite's limit of bound values


def in_batches(values: Sequence) -> Iterator[Sequence]:
    """``values`` in slices that one IN (...) clause can hold."""
    for lo in range(0, len(values), IN_BATCH):
        yield values[lo:lo + IN_BATCH]


def path_columns(path: str | Path) -> dict[str, Any]:
    """The ``path`` / ``path_bytes`` columns of a file name. Any name the OS gives is kept: a
    name that is not UTF-8 (surrogate-escaped by Python) is stored as its raw bytes, beside
    a text form with those bytes written ``\\xNN`` for display and lookup."""
    path = str(path)
    try:
        path.encode("utf-8")
        return {"path": path, "path_bytes": None}
    except UnicodeEncodeError:
        raw = os.fsencode(path)
        return {"path": raw.decode("utf-8", "backslashreplace"), "path_bytes": raw}


def file_path(video: Mapping[str, Any]) -> str:
    """The name to open the file of a ``videos`` row by (inverse of :func:`path_columns`)."""
    raw = video.get("path_bytes")
    return os.fsdecode(bytes(raw)) if raw else video["path"]


def sqlite_url(path: str | Path) -> str:
    return f"sqlite:///{Path(path).resolve()}"


def _sqlite_engine(url: str, busy_timeout_s: float, read_only: bool = False) -> Engine:
    if read_only:
        # A store on a read-only mount: no WAL, no lock files; immutable tells SQLite that
        # nobody writes it either, so it needs neither (sqlite.org/uri.html).
        path = make_url(url).database
        url = f"sqlite:///file:{path}?mode=ro&immutable=1&uri=true"
    engine = create_engine(url, connect_args={"timeout": busy_timeout_s})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        dbapi_conn.isolation_level = None  # we emit BEGIN ourselves (SQLAlchemy docs recipe)
        cur = dbapi_conn.cursor()
        if not read_only:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_s * 1000)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # Readers may take a plain deferred transaction; writers must take the lock up front,
        # or two processes that both read-then-write deadlock into "database is locked".
        mode = "DEFERRED" if conn.get_execution_options().get("vidmine_read") else "IMMEDIATE"
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


class Index:
    """A handle on the SQL index. Cheap to create; one per process (engines don't cross fork)."""

    def __init__(self, url: str, *, busy_timeout_s: float = 60.0, migrate: bool = True,
                 read_only: bool = False):
        try:
            parsed = make_url(url)
        except ArgumentError as exc:
            raise DatabaseError(f"not a database URL: {url!r}") from exc
        self.url = url
        self.dialect = parsed.get_backend_name()
        if self.dialect == "sqlite":
            db_path = parsed.database
            if db_path and db_path != ":memory:":
                parent = Path(db_path).parent
                if not parent.is_dir():
                    raise DatabaseError(f"directory for the SQLite index does not exist: {parent}")
            self.engine = _sqlite_engine(url, busy_timeout_s, read_only)
        elif self.dialect == "postgresql":
            if parsed.drivername == "postgresql":
                url = str(parsed.set(drivername="postgresql+psycopg"))
            try:
                self.engine = create_engine(url, pool_pre_ping=True)
            except ModuleNotFoundError as exc:
                raise DatabaseError(
                    "PostgreSQL needs psycopg: pip install 'vidmine[postgres]'") from exc
        else:
            raise DatabaseError(f"unsupported database {self.dialect!r}: use sqlite or postgresql")
        self._pid = os.getpid()
        self.read_only = read_only
        if read_only:
            self._check_schema()
        elif migrate:
            self.migrate()

    # -- connections -------------------------------------------------------------------
    @contextlib.contextmanager
    def write(self) -> Iterator[Connection]:
        """One write transaction (BEGIN IMMEDIATE on SQLite), committed on success."""
        self._check_pid()
        try:
            with self.engine.begin() as conn:
                yield conn
        except OperationalError as exc:
            raise DatabaseError(f"database error on {self.safe_url}: {exc.orig}") from exc

    @contextlib.contextmanager
    def read(self) -> Iterator[Connection]:
        """One read transaction (a consistent snapshot; does not block writers)."""
        self._check_pid()
        try:
            with self.engine.connect().execution_options(vidmine_read=True) as conn:
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise DatabaseError(f"database error on {self.safe_url}: {exc.orig}") from exc

    def _check_pid(self) -> None:
        if os.getpid() != self._pid:  # a pool inherited across fork would share sockets
            self.engine.dispose(close=False)
            self._pid = os.getpid()

    @property
    def safe_url(self) -> str:
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()

    # -- schema ------------------------------------------------------------------------
    def migrate(self) -> None:
        """Bring the schema to the newest migration; safe when many processes open at once."""
        from .migrate import upgrade_to_head
        try:
            with self._migration_lock():
                upgrade_to_head(self.engine)
        except OperationalError as exc:
            raise DatabaseError(f"cannot open the index at {self.safe_url}: {exc.orig}") from exc
        except SQLAlchemyError as exc:
            raise DatabaseError(f"cannot migrate the index at {self.safe_url}: {exc}") from exc

    def _check_schema(self) -> None:
        """A read-only index cannot be migrated: it must be at the newest schema already."""
        from .migrate import current_revision, head_revision
        try:
            current = current_revision(self.engine)
        except (OperationalError, SQLAlchemyError) as exc:
            raise DatabaseError(f"cannot open the read-only index at {self.safe_url}: "
                                f"{getattr(exc, 'orig', exc)}") from exc
        if current != head_revision():
            raise DatabaseError(f"the read-only index at {self.safe_url} has schema {current}, "
                                f"this vidmine needs {head_revision()}: open it once writable")

    @contextlib.contextmanager
    def _migration_lock(self):
        if self.dialect == "sqlite":
            db_path = make_url(self.url).database
            if not db_path or db_path == ":memory:":
                yield
                return
            with open(f"{db_path}.migrate.lock", "a+") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                try:
                    yield
                finally:
                    fcntl.flock(fh, fcntl.LOCK_UN)
        else:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT pg_advisory_lock(7301)"))
                conn.commit()
                try:
                    yield
                finally:
                    conn.execute(text("SELECT pg_advisory_unlock(7301)"))
                    conn.commit()

    # -- bulk --------------------------------------------------------------------------
    def insert_columns(self, conn: Connection, table, columns: Mapping[str, Sequence | np.ndarray]) -> int:
        """Insert many rows given as columns (numpy arrays or lists), without the ORM.

        PostgreSQL goes through COPY; SQLite through the driver's C-level executemany.
        """
        names = list(columns)
        if not names:
            return 0
        cols = [np.asarray(columns[n]).tolist() if isinstance(columns[n], np.ndarray)
                else list(columns[n]) for n in names]
        n = len(cols[0])
        if any(len(c) != n for c in cols):
            raise ValueError("insert_columns: columns differ in length")
        if n == 0:
            return 0
        rows = list(zip(*cols))
        quoted = ", ".join(f'"{c}"' for c in names)
        if self.dialect == "postgresql":
            cursor = conn.connection.driver_connection.cursor()
            with cursor.copy(f'COPY "{table.name}" ({quoted}) FROM STDIN') as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(names))
            conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({quoted}) VALUES ({marks})', rows)
        return n

    def insert_rows(self, conn: Connection, table, rows: Sequence[Mapping[str, Any]],
                    returning_id: bool = False) -> list[int]:
        """Insert dict rows; with ``returning_id`` the new ids come back in input order."""
        if not rows:
            return []
        if returning_id:
            stmt = table.insert().returning(table.c.id, sort_by_parameter_order=True)
            return [r[0] for r in conn.execute(stmt, list(rows))]
        conn.execute(table.insert(), list(rows))
        return []

    @staticmethod
    def read_columns(conn: Connection, stmt,
                     dtypes: Mapping[str, Any] | None = None) -> dict[str, np.ndarray]:
        """Run a select and return its columns as numpy arrays (one fetch, no ORM objects)."""
        result = conn.execute(stmt)
        keys = list(result.keys())
        rows = result.fetchall()
        dtypes = dtypes or {}
        if not rows:
            return {k: np.empty(0, dtype=dtypes.get(k, np.int64)) for k in keys}
        cols = list(zip(*rows))
        return {k: np.asarray(c, dtype=dtypes.get(k)) for k, c in zip(keys, cols)}

    # -- runs --------------------------------------------------------------------------
    @contextlib.contextmanager
    def run(self, kind: str, config: Mapping[str, Any] | None = None,
            parent_id: int | None = None) -> Iterator[RunRecord]:
        """``with index.run("train", cfg) as run:`` records what a job did. The body may set
        ``run.summary`` (and ``run.status``, e.g. "interrupted"); the run ends as that status
        when the body returns, as "failed" with the error's first line when anything raises."""
        record = RunRecord(self.start_run(kind, config, parent_id))
        try:
            yield record
        except BaseException as exc:
            status = "interrupted" if isinstance(exc, KeyboardInterrupt) else "failed"
            text = str(exc).strip().splitlines()
            error = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
            with contextlib.suppress(Exception):  # the original error matters more
                self.finish_run(record.id, status, {**record.summary, "error": error[:500]})
            raise
        self.finish_run(record.id, record.status, record.summary)

    def start_run(self, kind: str, config: Mapping[str, Any] | None = None,
                  parent_id: int | None = None) -> int:
        with self.write() as conn:
            return conn.execute(runs.insert().returning(runs.c.id), dict(
                kind=kind, status="running", host=socket.gethostname(), started_at=time.time(),
                config=json.dumps(config or {}, default=str), parent_id=parent_id)).scalar_one()

    def finish_run(self, run_id: int, status: str = "done",
                   summary: Mapping[str, Any] | None = None) -> None:
        with self.write() as conn:
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                status=status, finished_at=time.time(),
                summary=json.dumps(summary or {}, default=str)))

    # -- shards ------------------------------------------------------------------------
    def register_shard(self, name: str) -> None:
        with self.write() as conn:
            conn.execute(shards.insert().values(
                name=name, host=socket.gethostname(), status="open", created_at=time.time()))

    def seal_shard(self, name: str, n_items: int, n_bytes: int) -> None:
        with self.write() as conn:
            conn.execute(update(shards).where(shards.c.name == name).values(
                status="sealed", sealed_at=time.time(), n_items=n_items, n_bytes=n_bytes))

    # -- videos ------------------------------------------------------------------------
    def add_videos(self, records: Iterable[Mapping[str, Any]]) -> int:
        """Register video files (path, size, mtime; optionally status and error) as pending
        or as given; known paths are left alone. Returns how many were new."""
        rows = {}
        for r in records:
            cols = path_columns(r["path"])
            rows.setdefault(cols["path"], dict(
                **cols, size=r.get("size", 0), mtime=r.get("mtime"),
                status=r.get("status", "pending"), error=r.get("error"), attempts=0,
                updated_at=time.time()))
        if not rows:
            return 0
        with self.write() as conn:
            known = set()
            names = list(rows)
            for batch in in_batches(names):
                known |= set(conn.execute(select(videos.c.path).where(
                    videos.c.path.in_(batch))).scalars())
            new = [row for name, row in rows.items() if name not in known]
            if not new:
                return 0
            # Two daemons that scan one folder can both find a file unknown: the second
            # insert then meets the first's row, which is the row we want.
            insert = (postgresql_insert if self.dialect == "postgresql" else sqlite_insert)(videos)
            stmt = insert.on_conflict_do_nothing(index_elements=[videos.c.path])
            return len(conn.execute(stmt.returning(videos.c.id), new).all())

    def requeue_videos(self, statuses: Sequence[str] = ("failed",),
                       paths: Sequence[str] | None = None, error_prefix: str | None = None) -> int:
        """Set videos of ``statuses`` back to pending, all of them or those of ``paths``, or
        whose error starts with ``error_prefix``. Returns how many."""
        where = videos.c.status.in_(list(statuses))
        if error_prefix is not None:
            where &= videos.c.error.startswith(error_prefix, autoescape=True)
        with self.write() as conn:
            if paths is None:
                return self.requeue(conn, where)
            names = [path_columns(p)["path"] for p in paths]
            return sum(self.requeue(conn, where & videos.c.path.in_(batch))
                       for batch in in_batches(names))

    @staticmethod
    def requeue(conn: Connection, where) -> int:
        """In transaction ``conn``: the videos ``where`` selects back to pending, as never
        tried (attempts, error and lease cleared). Returns how many."""
        return conn.execute(update(videos).where(where).values(
            status="pending", error=None, attempts=0, lease_owner=None, lease_expires=None,
            updated_at=time.time())).rowcount

    def claim_video(self, owner: str, lease_s: float, max_attempts: int = 3) -> dict | None:
        """Claim one pending video (or one whose lease expired) for ``owner``.

        Exactly one of many concurrent claimers gets each video. A video whose workers died
        ``max_attempts`` times is failed instead of being handed out again.
        """
        now = time.time()
        expired = (videos.c.status == "claimed") & (videos.c.lease_expires < now)
        with self.write() as conn:
            conn.execute(update(videos).where(expired & (videos.c.attempts >= max_attempts))
                         .values(status="failed", lease_owner=None, updated_at=now,
                                 error=func.coalesce(videos.c.error, text(
                                     "'worker died or timed out on every attempt'"))))
            candidate = (select(videos.c.id)
                         .where((videos.c.status == "pending") | expired)
                         .order_by(videos.c.id).limit(1)
                         .with_for_update(skip_locked=True).scalar_subquery())
            row = conn.execute(
                update(videos).where(videos.c.id == candidate)
                .values(status="claimed", lease_owner=owner, lease_expires=now + lease_s,
                        attempts=videos.c.attempts + 1, updated_at=now)
                .returning(*videos.c)).mappings().first()
        return dict(row) if row else None

    def renew_lease(self, video_id: int, owner: str, lease_s: float) -> bool:
        """Heartbeat. False means the lease was lost (expired and taken by another worker)."""
        now = time.time()
        with self.write() as conn:
            res = conn.execute(update(videos).where(
                (videos.c.id == video_id) & (videos.c.lease_owner == owner)
                & (videos.c.status == "claimed")).values(lease_expires=now + lease_s))
        return res.rowcount == 1

    def release_video(self, video_id: int, owner: str, status: str = "pending",
                      error: str | None = None, **meta: Any) -> bool:
        """Give a claimed video back (pending), or end it as failed/skipped with a reason."""
        if status not in ("pending", "failed", "skipped"):
            raise ValueError(f"release_video: bad status {status!r}")
        with self.write() as conn:
            res = conn.execute(update(videos).where(
                (videos.c.id == video_id) & (videos.c.lease_owner == owner)
                & (videos.c.status == "claimed")).values(
                    status=status, error=error, lease_owner=None, lease_expires=None,
                    updated_at=time.time(),
                    attempts=(videos.c.attempts - 1) if status == "pending" else videos.c.attempts,
                    **meta))
        return res.rowcount == 1

    def video_counts(self) -> dict[str, int]:
        with self.read() as conn:
            rows = conn.execute(select(videos.c.status, func.count()).group_by(videos.c.status))
            counts = {s: 0 for s in schema.VIDEO_STATUSES}
            counts.update({s: n for s, n in rows})
        return counts
