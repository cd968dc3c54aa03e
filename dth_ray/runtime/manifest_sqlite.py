"""The manifest in one SQLite file (the embedded default); every write is a batch in one transaction."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from dth_ray.engine.pacing import Share
from dth_ray.errors import ConfigError
from dth_ray.files import private_dir, private_file
from dth_ray.model import PartInfo, Shard, Tally, UploadState
from dth_ray.plan.diff import Record
from dth_ray.runtime.manifest import (
    CHECKPOINT_FAILURES,
    FAILED_OBJECT,
    PENDING,
    SUCCEEDED,
    Checkpoint,
    FailureRow,
    JobInfo,
    LiveProgress,
    LiveRecord,
    LiveReport,
    ObjectRecord,
    Progress,
    RunInfo,
    covering_in_recent_runs,
    default_sqlite_path,
    failure_row,
    job_info,
    pairing_from_report,
    prefix_end,
)

SCHEMA_VERSION = 5
_TABLES_4 = (
    """CREATE TABLE IF NOT EXISTS failures (
  job TEXT NOT NULL, run_id INTEGER NOT NULL, key TEXT NOT NULL, error_class TEXT NOT NULL, code TEXT NOT NULL,
  attempts INTEGER NOT NULL, message TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (job, run_id, key)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS live (
  job TEXT NOT NULL, run_id INTEGER NOT NULL, heartbeat REAL NOT NULL, record TEXT NOT NULL,
  PRIMARY KEY (job, run_id)
) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS jobs (
  job TEXT PRIMARY KEY, source TEXT NOT NULL, destination TEXT NOT NULL, updated REAL NOT NULL,
  args TEXT NOT NULL DEFAULT '[]'
) WITHOUT ROWID""",
)
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, started REAL NOT NULL, finished REAL,
  status TEXT NOT NULL, report TEXT, executions INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job, run_id);
CREATE TABLE IF NOT EXISTS shards (
  job TEXT NOT NULL, run_id INTEGER NOT NULL, shard_id TEXT NOT NULL, prefix TEXT NOT NULL,
  start_after TEXT NOT NULL, end_at TEXT NOT NULL, delimiter TEXT NOT NULL, status TEXT NOT NULL,
  watermark TEXT NOT NULL, tally TEXT NOT NULL, updated REAL NOT NULL, listing TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (job, run_id, shard_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS objects (
  job TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, src_etag TEXT NOT NULL, dst_key TEXT NOT NULL,
  dst_etag TEXT NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', verified INTEGER NOT NULL,
  run_id INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (job, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
  job TEXT NOT NULL, dst_key TEXT NOT NULL, upload_id TEXT NOT NULL, src_etag TEXT NOT NULL,
  size INTEGER NOT NULL, part_size INTEGER NOT NULL, run_id INTEGER NOT NULL, created REAL NOT NULL,
  PRIMARY KEY (job, dst_key, upload_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS parts (
  job TEXT NOT NULL, dst_key TEXT NOT NULL, upload_id TEXT NOT NULL, part_number INTEGER NOT NULL,
  etag TEXT NOT NULL, size INTEGER NOT NULL, PRIMARY KEY (job, dst_key, upload_id, part_number)
) WITHOUT ROWID;
""" + "".join(f"{table};\n" for table in _TABLES_4)
# version -> the statements that take a manifest of that version to the next one. A manifest of an older
# version is migrated when it is opened (its runs, interrupted ones included, resume on this release); one
# newer than this release is refused.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE runs ADD COLUMN executions INTEGER NOT NULL DEFAULT 1",),  # 0.1.0 -> 0.2.0
    3: _TABLES_4,  # per-key failures, live progress records, the jobs index (dth-ray console)
    4: ("ALTER TABLE shards ADD COLUMN listing TEXT NOT NULL DEFAULT ''",),  # shards planned from an inventory
}


_CHECKPOINT_SQL = "INSERT OR REPLACE INTO shards VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
# A failure never overwrites what an earlier run copied successfully.
_RECORD_SQL = ("INSERT INTO objects VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(job, key) DO UPDATE SET "
               "size=excluded.size, src_etag=excluded.src_etag, dst_key=excluded.dst_key, "
               "dst_etag=excluded.dst_etag, status=excluded.status, error=excluded.error, "
               "verified=excluded.verified, run_id=excluded.run_id, updated=excluded.updated "
               "WHERE excluded.status='copied' OR objects.status!='copied'")
_FAILURE_SQL = "INSERT OR REPLACE INTO failures VALUES (?,?,?,?,?,?,?,?)"
# A run's failed keys in key order, less those a later execution of the run copied (a copy recorded after the
# failure); keyset paging on the primary key, so a page costs the same with millions of failures.
_FAILURES_PAGE_SQL = (
    "SELECT f.key, f.error_class, f.code, f.attempts, f.message, f.run_id, f.updated FROM failures f "
    "LEFT JOIN objects o ON o.job=f.job AND o.key=f.key WHERE f.job=? AND f.run_id=? AND f.key>? "
    "AND NOT (o.status IS NOT NULL AND o.status='copied' AND o.updated>=f.updated) ORDER BY f.key LIMIT ?")
_JOBS_SQL = (
    "SELECT r.job, r.run_id, r.status, r.started, r.finished, r.report, {executions} FROM runs r "
    "JOIN (SELECT job, MAX(run_id) AS run_id FROM runs GROUP BY job) l ON r.job=l.job AND r.run_id=l.run_id")


class SqliteManifest:
    """SQLite-backed manifest for one job (see dth_ray.runtime.manifest for the logical schema). Thread-safe:
    one lock serializes this connection's users (the driver lane's workers, the scheduler, the driver)."""

    def __init__(self, path: str, job: str, run_id: int = 0, read_only: bool = False):
        """`read_only`: open an existing file without writing to it (no migration; tables an older schema
        lacks read as empty), for `dth-ray console`. Raises ConfigError when the file is not usable."""
        self.path = path or default_sqlite_path()
        self.job = job
        self.run_id = run_id
        self.writes = 0
        self.items_written = 0
        self._live = LiveProgress()
        self._lock = threading.RLock()
        if read_only:
            self._open_read_only()
            return
        try:
            private_dir(os.path.dirname(os.path.abspath(self.path)), own=not path)
            private_file(self.path)  # before SQLite creates it 0644: its -wal and -shm files take its mode
            # Two connections may write at once (the driver's start-up worker and the manifest actor): wait.
            self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            has_tables = self._db.execute("SELECT count(*) FROM sqlite_master WHERE type='table'").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"manifest.path={self.path!r} is not a usable SQLite file ({exc})") from None
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        if has_tables and version != SCHEMA_VERSION:
            self._migrate(version)
        self._db.executescript(SCHEMA)
        if "args" not in self._columns("jobs"):  # a schema-3 `jobs` table (dth-ray jobs) predates the column
            self._db.execute("ALTER TABLE jobs ADD COLUMN args TEXT NOT NULL DEFAULT '[]'")
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        self._tables = {"failures", "live", "jobs"}
        self._executions, self._job_args, self._listing = "executions", "args", "listing"

    def _open_read_only(self) -> None:
        if not os.path.isfile(self.path):
            raise ConfigError(f"manifest.path={self.path!r} does not exist (no job has run with this manifest)")
        try:
            uri = Path(os.path.abspath(self.path)).as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=60)
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            self._tables = {name for (name,) in self._db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"manifest.path={self.path!r} is not a usable SQLite file ({exc})") from None
        if version > SCHEMA_VERSION:
            raise ConfigError(f"manifest.path={self.path!r} holds manifest schema {version} (a newer dth_ray's); "
                              f"this dth_ray reads up to {SCHEMA_VERSION}")
        self._executions = "executions" if "executions" in self._columns("runs") else "1"  # schema 2: one
        self._job_args = "args" if "args" in self._columns("jobs") else "'[]'"
        self._listing = "listing" if "listing" in self._columns("shards") else "''"  # schema 4: none

    def _columns(self, table: str) -> set[str]:
        return {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}  # noqa: S608

    def _migrate(self, version: int) -> None:
        """Bring a manifest written by an earlier release to this schema, in one transaction. Raises
        ConfigError (one line, with the way to start afresh) when it cannot be."""
        if version > SCHEMA_VERSION or any(v not in MIGRATIONS for v in range(version, SCHEMA_VERSION)):
            newer = "a newer" if version > SCHEMA_VERSION else "an unknown older"
            raise ConfigError(f"manifest.path={self.path!r} holds manifest schema {version} ({newer} dth_ray's), "
                              f"this dth_ray reads {min(MIGRATIONS)}-{SCHEMA_VERSION}: run that release to finish "
                              f"its run, or start afresh with another manifest.path")
        with self._transaction(0) as db:
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step]:
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    @contextlib.contextmanager
    def _transaction(self, items: int):
        """One write transaction (the lock also keeps this connection's other users out of it)."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
            self.writes += 1
            self.items_written += items

    def _write(self, sql: str, rows: Sequence[tuple]) -> None:
        with self._transaction(len(rows)) as db:
            db.executemany(sql, rows)

    def _read(self, sql: str, args: Sequence) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    # ---- runs and shard checkpoints

    def latest_run(self) -> RunInfo | None:
        runs = self.runs(1)
        return runs[0] if runs else None

    def runs(self, limit: int) -> list[RunInfo]:
        rows = self._read(f"SELECT run_id, status, started, finished, report, {self._executions} FROM runs WHERE job=? "
                          "ORDER BY run_id DESC LIMIT ?", (self.job, limit))
        return [RunInfo(r, s, st, f or 0.0, rep or "", ex) for r, s, st, f, rep, ex in rows]

    def start_run(self, shards: Sequence[Shard], source: str = "", destination: str = "",
                  args: Sequence[str] = ()) -> int:
        """A new run with a pending checkpoint per shard; `source`/`destination` (store locations, as the
        report names them) and `args` (credential-free overrides naming the stores) are kept for `jobs()`."""
        with self._transaction(2 if source or destination else 1) as db:
            cur = db.execute("INSERT INTO runs (job, started, status) VALUES (?, ?, 'planning')",
                             (self.job, time.time()))
            self.run_id = int(cur.lastrowid)
            self._note_pairing(db, source, destination, args)
        self._put_checkpoints([Checkpoint(s, PENDING, "", Tally(), self.run_id) for s in shards])
        # Only a run whose whole plan is durable may be resumed: a crash before this leaves it 'planning'.
        self._write("UPDATE runs SET status='running' WHERE run_id=?", [(self.run_id,)])
        return self.run_id

    def resume_run(self, run_id: int, source: str = "", destination: str = "",
                   args: Sequence[str] = ()) -> list[Checkpoint]:
        """Take over run `run_id` (one more execution of it) and return its checkpoints."""
        self.run_id = run_id
        with self._transaction(2 if source or destination else 1) as db:
            db.execute("UPDATE runs SET executions=executions+1, status='running' WHERE run_id=?", (run_id,))
            self._note_pairing(db, source, destination, args)
        return self.checkpoints(run_id)

    def _note_pairing(self, db, source: str, destination: str, args: Sequence[str]) -> None:
        if source or destination:
            db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?, ?)",
                       (self.job, source, destination, time.time(), json.dumps(list(args))))

    def jobs(self) -> list[JobInfo]:
        """Every job in this file with its latest run, the most recently active first (one query over the
        runs, and one for the checkpoints of each latest run that has not succeeded)."""
        pairings = {}
        if "jobs" in self._tables:
            pairings = {job: (src, dst, tuple(json.loads(args or "[]"))) for job, src, dst, args in self._read(
                f"SELECT job, source, destination, {self._job_args} FROM jobs", ())}
        out = []
        for job, run_id, status, started, finished, report, executions in self._read(
                _JOBS_SQL.format(executions=self._executions.replace("executions", "r.executions")), ()):
            run = RunInfo(run_id, status, started, finished or 0.0, report or "", executions)
            source, destination, args = pairings.get(job) or (*pairing_from_report(report), ())
            checkpoints = [] if status == SUCCEEDED else self._checkpoints_of(job, run_id)
            out.append(job_info(job, run, source, destination, checkpoints, args))
        return sorted(out, key=lambda info: (-(info.run.finished or info.run.started), info.job))

    def _checkpoints_of(self, job: str, run_id: int) -> list[Checkpoint]:
        rows = self._read("SELECT shard_id, status, tally FROM shards WHERE job=? AND run_id=?", (job, run_id))
        return [Checkpoint(Shard(sid, ""), st, "", Tally.from_dict(json.loads(t)), run_id) for sid, st, t in rows]

    def finish_run(self, status: str, report: dict) -> None:
        self._write("UPDATE runs SET finished=?, status=?, report=? WHERE run_id=?",
                    [(time.time(), status, json.dumps(report), self.run_id)])

    def checkpoints(self, run_id: int) -> list[Checkpoint]:
        rows = self._read(
            f"SELECT shard_id, prefix, start_after, end_at, delimiter, status, watermark, tally, {self._listing} "
            "FROM shards WHERE job=? AND run_id=? ORDER BY shard_id", (self.job, run_id))
        return [Checkpoint(Shard(sid, p, sa, ea, d, li), st, w, Tally.from_dict(json.loads(t)), run_id)
                for sid, p, sa, ea, d, st, w, t, li in rows]

    def checkpoint(self, run_id: int, shard_id: str) -> Checkpoint | None:
        """One shard's checkpoint in a run (where a lost worker's shard is redone from)."""
        rows = self._read(
            f"SELECT shard_id, prefix, start_after, end_at, delimiter, status, watermark, tally, {self._listing} "
            "FROM shards WHERE job=? AND run_id=? AND shard_id=?", (self.job, run_id, shard_id))
        if not rows:
            return None
        sid, p, sa, ea, d, st, w, t, li = rows[0]
        return Checkpoint(Shard(sid, p, sa, ea, d, li), st, w, Tally.from_dict(json.loads(t)), run_id)

    def _put_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        if checkpoints:
            with self._transaction(len(checkpoints)) as db:
                db.executemany(_CHECKPOINT_SQL, self._checkpoint_rows(checkpoints))

    def _checkpoint_rows(self, checkpoints: Sequence[Checkpoint]) -> list[tuple]:
        now = time.time()
        return [(self.job, cp.run_id or self.run_id, cp.shard.shard_id, cp.shard.prefix, cp.shard.start_after,
                 cp.shard.end_at, cp.shard.delimiter, cp.status, cp.watermark,
                 json.dumps(cp.tally.to_dict(CHECKPOINT_FAILURES)), now, cp.shard.listing) for cp in checkpoints]

    def covering_checkpoint(self, key: str) -> Checkpoint | None:
        return covering_in_recent_runs(self, key)

    # ---- per-object records

    def record(self, records: Sequence[ObjectRecord], checkpoints: Sequence[Checkpoint] = (),
               live: LiveReport | None = None) -> Share | None:
        """Store a batch of per-object results (and a failures row per failed one) and shard checkpoints in
        one transaction (a checkpoint never lands without the records it covers); keep the live progress and
        return the worker's share of the job's budgets."""
        if records or checkpoints:
            now = time.time()
            rows = [(self.job, r.key, r.size, r.src_etag, r.dst_key, r.dst_etag, r.status, r.error,
                     int(r.verified), r.run_id or self.run_id, now) for r in records]
            failures = [failure_row(r, r.run_id or self.run_id, now) for r in records if r.status == FAILED_OBJECT]
            with self._transaction(len(records) + len(failures) + len(checkpoints)) as db:
                db.executemany(_RECORD_SQL, rows)
                db.executemany(_FAILURE_SQL, [(self.job, f.run_id, f.key, f.error_class, f.code, f.attempts,
                                               f.message, f.updated) for f in failures])
                db.executemany(_CHECKPOINT_SQL, self._checkpoint_rows(checkpoints))
        return self._live.add(live)  # the worker's share of the job's budgets

    def failures_page(self, run_id: int, start_after: str, limit: int) -> list[FailureRow]:
        """Up to `limit` failed keys of run `run_id` after `start_after`, in key order (see _FAILURES_PAGE_SQL)."""
        if "failures" not in self._tables or limit <= 0:
            return []
        return [FailureRow(*row) for row in self._read(_FAILURES_PAGE_SQL, (self.job, run_id, start_after, limit))]

    def records_page(self, prefix: str, start_after: str, end_at: str, limit: int) -> list[Record]:
        """Records (copied or failed) for source keys under `prefix`, start_after < key <= end_at, key order."""
        sql = "SELECT key, src_etag, size, dst_etag, run_id FROM objects WHERE job=? AND key>? AND key>=?"
        args: list = [self.job, start_after, prefix]
        end = prefix_end(prefix)
        if end:
            sql += " AND key<?"
            args.append(end)
        if end_at:
            sql += " AND key<=?"
            args.append(end_at)
        sql += " ORDER BY key LIMIT ?"
        args.append(limit)
        return [Record(key=k, src_etag=e, src_size=s, dst_etag=d, run_id=r)
                for k, e, s, d, r in self._read(sql, args)]

    def lookup(self, key: str) -> ObjectRecord | None:
        rows = self._read(
            "SELECT key, size, src_etag, dst_key, dst_etag, status, error, verified, run_id FROM objects "
            "WHERE job=? AND key=?", (self.job, key))
        return ObjectRecord(*rows[0][:7], verified=bool(rows[0][7]), run_id=rows[0][8]) if rows else None

    # ---- multipart uploads

    def upload_opened(self, upload: UploadState) -> None:
        """Record an upload; an empty upload_id is an intent (Create about to be sent), which the real
        id of the same key replaces."""
        with self._transaction(1) as db:
            if upload.upload_id:
                db.execute("DELETE FROM uploads WHERE job=? AND dst_key=? AND upload_id=''", (self.job, upload.dst_key))
            db.execute("INSERT OR REPLACE INTO uploads VALUES (?,?,?,?,?,?,?,?)",
                       (self.job, upload.dst_key, upload.upload_id, upload.src_etag, upload.size,
                        upload.part_size_bytes, upload.run_id or self.run_id, time.time()))

    def parts_sent(self, dst_key: str, upload_id: str, parts: Sequence[PartInfo]) -> None:
        if parts:
            self._write("INSERT OR REPLACE INTO parts VALUES (?,?,?,?,?,?)",
                        [(self.job, dst_key, upload_id, p.part_number, p.etag, p.size) for p in parts])

    def upload_closed(self, dst_key: str, upload_id: str) -> None:
        with self._transaction(1) as db:
            for table in ("uploads", "parts"):
                db.execute(f"DELETE FROM {table} WHERE job=? AND dst_key=? AND upload_id=?",  # noqa: S608
                           (self.job, dst_key, upload_id))

    def find_uploads(self, dst_key: str) -> list[UploadState]:
        """Open uploads recorded for exactly this destination key (never a prefix match), newest first."""
        rows = self._read("SELECT upload_id, src_etag, size, part_size, run_id FROM uploads "
                          "WHERE job=? AND dst_key=? ORDER BY created DESC", (self.job, dst_key))
        out = []
        for upload_id, src_etag, size, part_size, run_id in rows:
            parts = {n: PartInfo(n, e, s) for n, e, s in self._read(
                "SELECT part_number, etag, size FROM parts WHERE job=? AND dst_key=? AND upload_id=?",
                (self.job, dst_key, upload_id))}
            out.append(UploadState(dst_key, upload_id, src_etag, size, part_size, parts, run_id))
        return out

    def open_uploads(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._read(
            "SELECT dst_key, upload_id FROM uploads WHERE job=? ORDER BY dst_key", (self.job,))]

    # ---- live state

    def publish(self, live: LiveRecord) -> None:
        """Replace run `live.run_id`'s progress record (one small row: the heartbeat)."""
        self._write("INSERT OR REPLACE INTO live VALUES (?, ?, ?, ?)",
                    [(self.job, live.run_id, live.heartbeat, live.to_json())])

    def live(self, run_id: int) -> LiveRecord | None:
        """Run `run_id`'s newest progress record, if its driver published one."""
        if "live" not in self._tables:
            return None
        rows = self._read("SELECT record FROM live WHERE job=? AND run_id=?", (self.job, run_id))
        return LiveRecord.from_json(rows[0][0]) if rows else None

    def flush(self) -> None:
        """Every write above is already durable in SQLite."""

    def progress(self) -> Progress:
        """Shard tallies changed since the last call, and the objects and bytes in flight now."""
        return self._live.take()

    def pace_reports(self) -> dict[str, tuple[float, ...]]:
        return self._live.pace_reports()

    def set_shares(self, shares: dict[str, Share], newcomer: Share | None) -> None:
        self._live.set_shares(shares, newcomer)

    def write_counts(self) -> tuple[int, int]:
        """(write requests, rows written) by this instance."""
        return self.writes, self.items_written

    def close(self) -> None:
        with self._lock:
            self._db.close()

