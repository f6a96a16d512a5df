"""The SQLite results store — the only module that holds SQL.

- WAL journal mode and a busy timeout, so the dashboard can read while a sweep writes, and several
  runners (dashboard sessions, CLI runs) can write the same file.
- The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` lists the steps, each
  applied once, in order, in its own transaction.
- Every result is committed on its own (:meth:`Store.add_result`), so a runner that crashes or is
  killed keeps every row it finished.
- Connections are opened per operation: a ``Store`` can be shared between threads.

Tables: ``sweeps`` (one per sweep: config JSON, status, owner pid, heartbeat, progress text and
fraction) and ``runs`` (one per :class:`~benchmark.results.RunResult`, the full row as JSON plus
indexed columns).
"""
from __future__ import annotations

import json
import os
import socket
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .errors import StoreError
from .paths import DB_ENV
from .processes import process_alive, process_start_time
from .results import FINISHED_STATUSES, RunResult, now_iso, results_to_frame

#: Sweep statuses. ``cancelling`` is the cancel flag a runner checks; the runner then writes ``cancelled``.
SWEEP_STATUSES = ("pending", "queued", "running", "cancelling", "done", "failed", "interrupted", "cancelled")
#: Statuses of a sweep whose runner is (or should be) alive.
ACTIVE_SWEEP_STATUSES = ("pending", "queued", "running", "cancelling")

MIGRATIONS: list[str] = [
    # 1: sweeps + runs
    """
    CREATE TABLE sweeps (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        created_at TEXT NOT NULL,
        updated_at TEXT NOT NULL,
        model TEXT NOT NULL,
        device TEXT NOT NULL DEFAULT 'cpu',
        config TEXT NOT NULL DEFAULT '{}',
        status TEXT NOT NULL DEFAULT 'pending',
        host TEXT,
        pid INTEGER,
        pid_started REAL,
        heartbeat REAL,
        progress TEXT NOT NULL DEFAULT '',
        fraction REAL NOT NULL DEFAULT 0,
        total_runs INTEGER NOT NULL DEFAULT 0,
        error TEXT,
        finished_at TEXT
    );
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        sweep_id INTEGER REFERENCES sweeps(id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        model TEXT NOT NULL,
        variant TEXT NOT NULL,
        backend TEXT NOT NULL,
        device TEXT NOT NULL,
        batch_size INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_at TEXT NOT NULL,
        started_at TEXT,
        finished_at TEXT,
        data TEXT NOT NULL
    );
    CREATE UNIQUE INDEX runs_sweep_key ON runs(sweep_id, key);
    CREATE INDEX runs_status ON runs(sweep_id, status);
    CREATE INDEX sweeps_status ON sweeps(status);
    """,
    # 2: where a row ran ("" on the sweep's own machine; node=ID / resource=NAME on a Ray cluster)
    """
    ALTER TABLE runs ADD COLUMN target TEXT NOT NULL DEFAULT '';
    """,
]


#: The first 16 bytes of every SQLite 3 database file.
SQLITE_HEADER = b"SQLite format 3\x00"


def schema_version() -> int:
    """The schema version this code writes (the number of migrations)."""
    return len(MIGRATIONS)


@dataclass
class SweepRecord:
    """One row of the ``sweeps`` table; ``counts`` maps run status -> number of rows."""

    id: int
    created_at: str
    updated_at: str
    model: str
    device: str
    config: dict[str, Any]
    status: str
    host: str | None = None
    pid: int | None = None
    pid_started: float | None = None
    heartbeat: float | None = None
    progress: str = ""
    fraction: float = 0.0
    total_runs: int = 0
    error: str | None = None
    finished_at: str | None = None
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def active(self) -> bool:
        return self.status in ACTIVE_SWEEP_STATUSES

    @property
    def label(self) -> str:
        sweep = self.config.get("sweep", self.config)
        precisions = ",".join(sweep.get("precisions", ()) or ())
        backends = ",".join(sweep.get("backends", ()) or ())
        return f"#{self.id} {self.model} [{precisions}] on {backends} ({self.status})"

    def to_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class Store:
    """The results database at ``path`` (created, with its folder, when missing).

    Raises :class:`StoreError` ("cannot write results database at X: ...") when the file cannot be
    created or written, or was written by a newer Slimbench (schema version above ours).
    """

    def __init__(self, path: str | os.PathLike | None = None, *, create: bool = True, timeout_s: float = 30.0):
        from .paths import resolve_db_path

        self.path = resolve_db_path(path)
        self.timeout_s = float(timeout_s)
        if not create and not self.path.exists():
            raise StoreError(
                f"no results database at {self.path}; run `slimbench run` first or pass --db PATH"
            )
        if self.path.exists() and self.path.is_dir():
            raise StoreError(f"cannot write results database at {self.path}: it is a folder; give a file path")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._check_file()
            self._init_schema()
        except sqlite3.DatabaseError as exc:
            raise self._unreadable(exc) from None
        except OSError as exc:
            raise StoreError(f"cannot write results database at {self.path}: {exc.strerror or exc}") from None

    def _unreadable(self, exc: BaseException) -> StoreError:
        return StoreError(f"results database {self.path} cannot be used ({exc}); move the file away (or restore a "
                          f"backup) and a new one is created, or choose another file with --db or {DB_ENV}")

    def _check_file(self) -> None:
        """Fail fast, with the reason, on a path that is not (and cannot become) a SQLite database:
        a device, pipe or ``/proc`` entry, a file of another kind, or a folder where the set-up lock
        cannot be created (rather than waiting ``timeout_s`` for a lock that can never be taken)."""
        import stat

        if self.path.exists():
            mode = self.path.stat().st_mode
            if not stat.S_ISREG(mode):
                raise StoreError(f"results database {self.path} is not a regular file (a device, pipe or socket); "
                                 "give a database file path with --db")
            with open(self.path, "rb") as fh:
                head = fh.read(len(SQLITE_HEADER))
            if head and head != SQLITE_HEADER:
                raise StoreError(f"{self.path} is not a SQLite database (it starts with {head[:16]!r}); give the "
                                 f"path of a Slimbench results database, or a new file, with --db or {DB_ENV}")
        lock = Path(f"{self.path}.init.lock")
        try:
            with open(lock, "a"):
                pass
        except OSError as exc:
            raise StoreError(f"cannot create the set-up lock {lock} next to the results database "
                             f"({exc.strerror or exc}); use a --db path in a writable folder") from None

    # --- connection ---------------------------------------------------------------------------
    def _open(self) -> sqlite3.Connection:
        conn = sqlite3.connect(str(self.path), timeout=self.timeout_s, isolation_level=None)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.timeout_s * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA synchronous = NORMAL")
        return conn

    @contextmanager
    def _conn(self, write: bool = False) -> Iterator[sqlite3.Connection]:
        """A connection; with ``write`` the block runs in one IMMEDIATE transaction (committed on exit)."""
        try:
            conn = self._open()
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot open results database at {self.path}: {exc}") from None
        try:
            if write:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            else:
                yield conn
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot write results database at {self.path}: {exc}") from None
        except sqlite3.DatabaseError as exc:  # corrupt pages ("database disk image is malformed")
            raise self._unreadable(exc) from None
        finally:
            conn.close()

    def _init_schema(self) -> None:
        """Switch to WAL and migrate, one process at a time.

        Two processes creating the same database at once would otherwise race on the journal-mode
        switch, which SQLite answers with "database is locked" without waiting for the busy timeout.
        """
        from filelock import FileLock, Timeout

        try:
            with FileLock(f"{self.path}.init.lock", timeout=self.timeout_s):
                self._init_schema_locked()
        except Timeout:
            raise StoreError(f"cannot write results database at {self.path}: another process holds its "
                             f"set-up lock for more than {self.timeout_s:g} s") from None

    def _init_schema_locked(self) -> None:
        conn = self._open()
        try:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(f"cannot write results database at {self.path}: WAL journal mode unavailable ({mode})")
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > len(MIGRATIONS):
                raise StoreError(
                    f"results database at {self.path} has schema version {version}, newer than this "
                    f"Slimbench understands ({len(MIGRATIONS)}); upgrade Slimbench or use another --db"
                )
            for number in range(version + 1, len(MIGRATIONS) + 1):
                conn.execute("BEGIN IMMEDIATE")
                try:
                    current = conn.execute("PRAGMA user_version").fetchone()[0]
                    if current < number:  # another process may have migrated meanwhile
                        for statement in _statements(MIGRATIONS[number - 1]):
                            conn.execute(statement)
                        conn.execute(f"PRAGMA user_version = {number}")
                    conn.execute("COMMIT")
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
            # Prove that we can write (a read-only file opens fine but fails on first write).
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("ROLLBACK")
        finally:
            conn.close()

    @property
    def tag(self) -> str:
        """A short tag of the database path (sweep ids are per database; files in the shared data
        folder carry both)."""
        import hashlib

        return hashlib.sha1(str(Path(self.path).resolve()).encode()).hexdigest()[:8]

    @property
    def user_version(self) -> int:
        with self._conn() as conn:
            return conn.execute("PRAGMA user_version").fetchone()[0]

    @property
    def journal_mode(self) -> str:
        with self._conn() as conn:
            return str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()

    # --- sweeps -------------------------------------------------------------------------------
    def create_sweep(self, model: str, config: dict[str, Any], *, device: str = "cpu",
                     status: str = "pending", total_runs: int = 0, pid: int | None = None) -> int:
        """Insert a sweep row and return its id."""
        _check_sweep_status(status)
        now = now_iso()
        with self._conn(write=True) as conn:
            cur = conn.execute(
                "INSERT INTO sweeps (created_at, updated_at, model, device, config, status, host, pid, "
                "pid_started, heartbeat, total_runs) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (now, now, model, device, json.dumps(config), status, socket.gethostname(), pid,
                 process_start_time(pid) if pid else None, time.time(), int(total_runs)),
            )
            return int(cur.lastrowid)

    def get_sweep(self, sweep_id: int) -> SweepRecord:
        with self._conn() as conn:
            row = conn.execute("SELECT * FROM sweeps WHERE id = ?", (int(sweep_id),)).fetchone()
            if row is None:
                known = [r[0] for r in conn.execute("SELECT id FROM sweeps ORDER BY id DESC LIMIT 10")]
                raise StoreError(
                    f"no sweep {sweep_id} in {self.path}; recent sweeps: "
                    f"{', '.join(map(str, known)) or 'none'} (list them with `slimbench sweeps`)"
                )
            counts = self._counts(conn, [int(sweep_id)]).get(int(sweep_id), {})
        return _sweep_record(row, counts)

    def list_sweeps(self, limit: int | None = None, statuses: Iterable[str] | None = None) -> list[SweepRecord]:
        """Sweeps, newest first."""
        sql = "SELECT * FROM sweeps"
        args: list[Any] = []
        if statuses:
            statuses = list(statuses)
            sql += f" WHERE status IN ({','.join('?' * len(statuses))})"
            args += statuses
        sql += " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(int(limit))
        with self._conn() as conn:
            rows = conn.execute(sql, args).fetchall()
            counts = self._counts(conn, [r["id"] for r in rows])
        return [_sweep_record(r, counts.get(r["id"], {})) for r in rows]

    @staticmethod
    def _counts(conn: sqlite3.Connection, ids: list[int]) -> dict[int, dict[str, int]]:
        if not ids:
            return {}
        out: dict[int, dict[str, int]] = {}
        rows = conn.execute(
            f"SELECT sweep_id, status, COUNT(*) FROM runs WHERE sweep_id IN ({','.join('?' * len(ids))}) "
            "GROUP BY sweep_id, status", ids,
        )
        for sweep_id, status, n in rows:
            out.setdefault(sweep_id, {})[status] = n
        return out

    def update_sweep_status(self, sweep_id: int, status: str, *, error: str | None = None,
                            progress: str | None = None, fraction: float | None = None) -> None:
        """Set a sweep's status (and error/progress). Final statuses stamp ``finished_at``.

        A runner's ``pending``/``queued``/``running`` never overwrites a cancel request
        (``cancelling``/``cancelled``) that a user made in the meantime."""
        _check_sweep_status(status)
        sets = ["status = ?", "updated_at = ?", "heartbeat = ?"]
        args: list[Any] = [status, now_iso(), time.time()]
        if error is not None:
            sets.append("error = ?")
            args.append(error)
        if progress is not None:
            sets.append("progress = ?")
            args.append(progress)
        if fraction is not None:
            sets.append("fraction = ?")
            args.append(float(fraction))
        if status not in ACTIVE_SWEEP_STATUSES:
            sets.append("finished_at = ?")
            args.append(now_iso())
        args.append(int(sweep_id))
        where = "id = ?"
        if status in ("pending", "queued", "running"):
            where += " AND status NOT IN ('cancelling', 'cancelled')"
        with self._conn(write=True) as conn:
            conn.execute(f"UPDATE sweeps SET {', '.join(sets)} WHERE {where}", args)

    def reopen_sweep(self, sweep_id: int) -> None:
        """Make a finished/interrupted/cancelled sweep ``pending`` again (to resume it); its
        ``cancelled`` and ``interrupted`` rows become ``pending``."""
        with self._conn(write=True) as conn:
            conn.execute(
                "UPDATE sweeps SET status = 'pending', error = NULL, finished_at = NULL, updated_at = ?, "
                "heartbeat = ? WHERE id = ?", (now_iso(), time.time(), int(sweep_id)),
            )
            for row in conn.execute("SELECT id, data FROM runs WHERE sweep_id = ? AND status IN "
                                    "('cancelled', 'interrupted')", (int(sweep_id),)).fetchall():
                data = json.loads(row["data"])
                data["status"], data["error"] = "pending", None
                conn.execute("UPDATE runs SET status = 'pending', data = ? WHERE id = ?", (json.dumps(data), row["id"]))

    def claim_sweep(self, sweep_id: int) -> SweepRecord:
        """Claim a finished/interrupted/cancelled sweep for this process before resuming it, in one
        transaction: it becomes ``pending`` with this process as its runner. Raises ``StoreError``
        when another runner holds it (an active status), so two ``--resume N`` never both run.
        Returns the sweep as it was before the claim (see :meth:`release_sweep`)."""
        rec = self.get_sweep(sweep_id)
        with self._conn(write=True) as conn:
            cur = conn.execute(
                f"UPDATE sweeps SET status = 'pending', pid = ?, pid_started = ?, host = ?, heartbeat = ?, "
                f"updated_at = ? WHERE id = ? AND status NOT IN ({','.join('?' * len(ACTIVE_SWEEP_STATUSES))})",
                (os.getpid(), process_start_time(), socket.gethostname(), time.time(), now_iso(), int(sweep_id),
                 *ACTIVE_SWEEP_STATUSES),
            )
            if cur.rowcount == 0:
                row = conn.execute("SELECT status, pid FROM sweeps WHERE id = ?", (int(sweep_id),)).fetchone()
                status, pid = (row["status"], row["pid"]) if row else ("deleted", None)
                raise StoreError(f"sweep {sweep_id} is still {status} (runner pid {pid}); one runner per sweep: "
                                 "wait for it or cancel it first")
        return rec

    def release_sweep(self, claimed: SweepRecord) -> None:
        """Undo :meth:`claim_sweep` when the resume stops before it started (its status and error back)."""
        with self._conn(write=True) as conn:
            conn.execute("UPDATE sweeps SET status = ?, error = ?, updated_at = ? WHERE id = ? AND pid = ?",
                         (claimed.status, claimed.error, now_iso(), int(claimed.id), os.getpid()))

    def set_sweep_owner(self, sweep_id: int, pid: int | None = None) -> None:
        """Record the process that runs the sweep (default: this one) and its start time."""
        pid = pid or os.getpid()
        with self._conn(write=True) as conn:
            conn.execute(
                "UPDATE sweeps SET pid = ?, pid_started = ?, host = ?, heartbeat = ?, updated_at = ? WHERE id = ?",
                (pid, process_start_time(pid), socket.gethostname(), time.time(), now_iso(), int(sweep_id)),
            )

    def set_sweep_config(self, sweep_id: int, config: dict[str, Any]) -> None:
        """Replace a sweep's stored config (its runner records what it resolved, e.g. its targets)."""
        with self._conn(write=True) as conn:
            conn.execute("UPDATE sweeps SET config = ?, updated_at = ? WHERE id = ?",
                         (json.dumps(config), now_iso(), int(sweep_id)))

    def set_sweep_total(self, sweep_id: int, total_runs: int) -> None:
        with self._conn(write=True) as conn:
            conn.execute("UPDATE sweeps SET total_runs = ? WHERE id = ?", (int(total_runs), int(sweep_id)))

    def update_progress(self, sweep_id: int, message: str, fraction: float | None = None) -> None:
        """Store the runner's latest progress line (pages poll it) and refresh the heartbeat."""
        with self._conn(write=True) as conn:
            if fraction is None:
                conn.execute("UPDATE sweeps SET progress = ?, heartbeat = ?, updated_at = ? WHERE id = ?",
                             (message, time.time(), now_iso(), int(sweep_id)))
            else:
                conn.execute(
                    "UPDATE sweeps SET progress = ?, fraction = ?, heartbeat = ?, updated_at = ? WHERE id = ?",
                    (message, float(fraction), time.time(), now_iso(), int(sweep_id)),
                )

    def heartbeat(self, sweep_id: int) -> None:
        with self._conn(write=True) as conn:
            conn.execute("UPDATE sweeps SET heartbeat = ? WHERE id = ?", (time.time(), int(sweep_id)))

    def sweep_status(self, sweep_id: int) -> str:
        with self._conn() as conn:
            row = conn.execute("SELECT status FROM sweeps WHERE id = ?", (int(sweep_id),)).fetchone()
        if row is None:
            raise StoreError(f"no sweep {sweep_id} in {self.path}")
        return row[0]

    def request_cancel(self, sweep_id: int) -> str:
        """Ask the sweep's runner to stop: an active sweep becomes ``cancelling`` (the runner kills
        its running job and writes ``cancelled``); a sweep whose runner is gone becomes ``cancelled``
        at once. Returns the new status. Other sweeps are untouched."""
        rec = self.get_sweep(sweep_id)
        if not rec.active:
            return rec.status
        if rec.pid and rec.host == socket.gethostname() and not process_alive(rec.pid, rec.pid_started):
            self.cancel_pending_runs(sweep_id)
            self.update_sweep_status(sweep_id, "cancelled", progress="cancelled")
            return "cancelled"
        with self._conn(write=True) as conn:
            conn.execute(
                "UPDATE sweeps SET status = 'cancelling', updated_at = ? WHERE id = ? AND status IN "
                "('pending', 'queued', 'running')", (now_iso(), int(sweep_id)),
            )
        return self.sweep_status(sweep_id)

    def cancel_requested(self, sweep_id: int) -> bool:
        return self.sweep_status(sweep_id) in ("cancelling", "cancelled")

    def delete_sweep(self, sweep_id: int) -> int:
        """Delete one sweep and its rows (only those). Returns the number of rows removed."""
        with self._conn(write=True) as conn:
            n = conn.execute("DELETE FROM runs WHERE sweep_id = ?", (int(sweep_id),)).rowcount
            conn.execute("DELETE FROM sweeps WHERE id = ?", (int(sweep_id),))
        return n

    def mark_interrupted(self, stale_s: float = 300.0) -> list[int]:
        """Sweeps left active by a runner that died (pid gone on this host) or stopped beating for
        ``stale_s`` seconds become ``interrupted``; their unfinished rows go back to ``pending``.
        Returns the ids marked."""
        marked = []
        now = time.time()
        host = socket.gethostname()
        for rec in self.list_sweeps(statuses=ACTIVE_SWEEP_STATUSES):
            dead = bool(rec.pid) and rec.host == host and not process_alive(rec.pid, rec.pid_started)
            stale = rec.heartbeat is None or now - float(rec.heartbeat) > stale_s
            if not (dead or stale):
                continue
            reason = "runner process ended" if dead else f"no heartbeat for {stale_s:.0f} s"
            if "recommend" in (rec.config or {}):  # a recommendation is started again, not resumed
                error = f"interrupted: {reason} before the recommendation finished; its measured rows are kept; " \
                        "run `slimbench recommend` again"
            else:
                error = f"interrupted: {reason} before the sweep finished; resume it with `slimbench run --resume {rec.id}`"
            with self._conn(write=True) as conn:
                cur = conn.execute(
                    "UPDATE sweeps SET status = 'interrupted', error = ?, updated_at = ?, finished_at = ? "
                    "WHERE id = ? AND status IN ('pending', 'queued', 'running', 'cancelling')",
                    (error, now_iso(), now_iso(), rec.id),
                )
                if cur.rowcount:
                    self._reset_running(conn, rec.id)
                    marked.append(rec.id)
        return marked

    # --- runs ---------------------------------------------------------------------------------
    def add_result(self, result: RunResult) -> int:
        """Insert or replace (same sweep and key) one row, committed at once; sets ``result.id``."""
        data = result.dumps()
        with self._conn(write=True) as conn:
            row = None
            if result.sweep_id is not None:
                row = conn.execute("SELECT id FROM runs WHERE sweep_id = ? AND key = ?",
                                   (result.sweep_id, result.key)).fetchone()
            cols = (result.model, result.variant, result.backend, result.device, result.batch_size,
                    result.status, result.created_at, result.started_at, result.finished_at, result.target, data)
            if row is None:
                cur = conn.execute(
                    "INSERT INTO runs (sweep_id, key, model, variant, backend, device, batch_size, status, "
                    "created_at, started_at, finished_at, target, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (result.sweep_id, result.key, *cols),
                )
                result.id = int(cur.lastrowid)
            else:
                conn.execute(
                    "UPDATE runs SET model = ?, variant = ?, backend = ?, device = ?, batch_size = ?, "
                    "status = ?, created_at = ?, started_at = ?, finished_at = ?, target = ?, data = ? WHERE id = ?",
                    (*cols, row[0]),
                )
                result.id = int(row[0])
        return result.id

    def add_pending(self, sweep_id: int, results: Iterable[RunResult]) -> int:
        """Insert placeholder rows (``pending``) for runs not yet in the sweep; returns how many."""
        n = 0
        with self._conn(write=True) as conn:
            for r in results:
                r.sweep_id = int(sweep_id)
                exists = conn.execute("SELECT 1 FROM runs WHERE sweep_id = ? AND key = ?",
                                      (r.sweep_id, r.key)).fetchone()
                if exists:
                    continue
                conn.execute(
                    "INSERT INTO runs (sweep_id, key, model, variant, backend, device, batch_size, status, "
                    "created_at, started_at, finished_at, target, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (r.sweep_id, r.key, r.model, r.variant, r.backend, r.device, r.batch_size, r.status,
                     r.created_at, r.started_at, r.finished_at, r.target, r.dumps()),
                )
                n += 1
        return n

    def set_run_status(self, sweep_id: int, keys: Iterable[str], status: str, error: str | None = None) -> None:
        """Change the status (and error) of unfinished rows ``keys`` of a sweep."""
        keys = list(keys)
        with self._conn(write=True) as conn:
            for key in keys:
                row = conn.execute(
                    "SELECT id, data FROM runs WHERE sweep_id = ? AND key = ?", (int(sweep_id), key)
                ).fetchone()
                if row is None:
                    continue
                data = json.loads(row["data"])
                if data.get("status") in FINISHED_STATUSES:
                    continue
                data["status"] = status
                if error is not None:
                    data["error"] = error
                conn.execute("UPDATE runs SET status = ?, data = ? WHERE id = ?",
                             (status, json.dumps(data), row["id"]))

    def cancel_pending_runs(self, sweep_id: int) -> None:
        """Unfinished rows of a sweep become ``cancelled``."""
        with self._conn() as conn:
            keys = [r[0] for r in conn.execute(
                "SELECT key FROM runs WHERE sweep_id = ? AND status IN ('pending', 'running')", (int(sweep_id),))]
        self.set_run_status(sweep_id, keys, "cancelled", error="cancelled before it ran")

    def reset_running_runs(self, sweep_id: int) -> None:
        """Rows left ``running`` by a stopped runner go back to ``pending`` (a resume runs them)."""
        with self._conn(write=True) as conn:
            self._reset_running(conn, sweep_id)

    @staticmethod
    def _reset_running(conn: sqlite3.Connection, sweep_id: int) -> None:
        for row in conn.execute("SELECT id, data FROM runs WHERE sweep_id = ? AND status = 'running'",
                                (int(sweep_id),)).fetchall():
            data = json.loads(row["data"])
            data["status"] = "pending"
            conn.execute("UPDATE runs SET status = 'pending', data = ? WHERE id = ?", (json.dumps(data), row["id"]))

    def get_results(self, sweep_id: int | Iterable[int] | None = None,
                    statuses: Iterable[str] | None = None) -> list[RunResult]:
        """Rows of one sweep, several sweeps, or all (``None``), oldest first; optionally by status."""
        sql = "SELECT id, sweep_id, data FROM runs"
        where, args = [], []
        if sweep_id is not None:
            ids = [int(sweep_id)] if isinstance(sweep_id, (int, str)) else [int(s) for s in sweep_id]
            if not ids:
                return []
            where.append(f"sweep_id IN ({','.join('?' * len(ids))})")
            args += ids
        if statuses is not None:
            statuses = list(statuses)
            where.append(f"status IN ({','.join('?' * len(statuses))})")
            args += statuses
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY id"
        with self._conn() as conn:
            rows = conn.execute(sql, args).fetchall()
        out = []
        for row in rows:
            result = RunResult.from_json(row["data"])
            result.id = row["id"]
            result.sweep_id = row["sweep_id"]
            out.append(result)
        return out

    def missing_runs(self, sweep_id: int) -> list[str]:
        """Keys (``variant|backend|batch[|target]``) of the sweep's rows that are not finished."""
        with self._conn() as conn:
            rows = conn.execute(
                f"SELECT key FROM runs WHERE sweep_id = ? AND status NOT IN "
                f"({','.join('?' * len(FINISHED_STATUSES))}) ORDER BY id",
                (int(sweep_id), *FINISHED_STATUSES),
            ).fetchall()
        return [r[0] for r in rows]

    def results_frame(self, sweep_ids: int | Iterable[int] | None = None, statuses: Iterable[str] | None = None):
        """A pandas DataFrame of ``RunResult.to_row()`` for the given sweeps (all when ``None``)."""
        return results_to_frame(self.get_results(sweep_ids, statuses))

    def export_csv(self, path: str | os.PathLike, sweep_ids: int | Iterable[int] | None = None) -> Path:
        path = Path(path)
        try:
            self.results_frame(sweep_ids).to_csv(path, index=False)
        except OSError as exc:
            raise StoreError(f"cannot write CSV export {path}: {exc.strerror or exc}") from None
        return path

    def export_json(self, path: str | os.PathLike, sweep_ids: int | Iterable[int] | None = None) -> Path:
        path = Path(path)
        rows = [r.to_json() for r in self.get_results(sweep_ids)]
        try:
            path.write_text(json.dumps(rows, indent=2, allow_nan=False))
        except OSError as exc:
            raise StoreError(f"cannot write JSON export {path}: {exc.strerror or exc}") from None
        return path


def _statements(script: str) -> list[str]:
    return [s.strip() for s in script.split(";") if s.strip()]


def _check_sweep_status(status: str) -> None:
    if status not in SWEEP_STATUSES:
        raise ValueError(f"sweep status must be one of {', '.join(SWEEP_STATUSES)}; got {status!r}")


def _sweep_record(row: sqlite3.Row, counts: dict[str, int]) -> SweepRecord:
    data = dict(row)
    data["config"] = json.loads(data.get("config") or "{}")
    names = SweepRecord.__dataclass_fields__
    return SweepRecord(**{k: v for k, v in data.items() if k in names}, counts=dict(counts))
