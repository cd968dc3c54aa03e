"""The manifest in one SQLite file (the embedded default); every write is a batch in one transaction."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Sequence

from dth_ray.engine.pacing import Share
from dth_ray.errors import ConfigError
from dth_ray.files import private_dir, private_file
from dth_ray.model import PartInfo, Shard, Tally, UploadState
from dth_ray.plan.diff import Record
from dth_ray.runtime.manifest import (
    CHECKPOINT_FAILURES,
    PENDING,
    SUCCEEDED,
    Checkpoint,
    JobInfo,
    LiveProgress,
    LiveReport,
    ObjectRecord,
    Progress,
    RunInfo,
    covering_in_recent_runs,
    default_sqlite_path,
    job_info,
    prefix_end,
)

SCHEMA_VERSION = 3
SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, started REAL NOT NULL, finished REAL,
  status TEXT NOT NULL, report TEXT, executions INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX IF NOT EXISTS runs_job ON runs (job, run_id);
CREATE TABLE IF NOT EXISTS shards (
  job TEXT NOT NULL, run_id INTEGER NOT NULL, shard_id TEXT NOT NULL, prefix TEXT NOT NULL,
  start_after TEXT NOT NULL, end_at TEXT NOT NULL, delimiter TEXT NOT NULL, status TEXT NOT NULL,
  watermark TEXT NOT NULL, tally TEXT NOT NULL, updated REAL NOT NULL, PRIMARY KEY (job, run_id, shard_id)
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
CREATE TABLE IF NOT EXISTS jobs (
  job TEXT PRIMARY KEY, source TEXT NOT NULL, destination TEXT NOT NULL, updated REAL NOT NULL
) WITHOUT ROWID;
"""
# `jobs` came after schema 3 without a version step: it only adds a table, which a release that does not know
# it ignores, and any manifest opened here gets it (CREATE TABLE IF NOT EXISTS).
# version -> the statements that take a manifest of that version to the next one. A manifest of an older
# version is migrated when it is opened (its runs, interrupted ones included, resume on this release); one
# newer than this release is refused.
MIGRATIONS: dict[int, tuple[str, ...]] = {
    2: ("ALTER TABLE runs ADD COLUMN executions INTEGER NOT NULL DEFAULT 1",),  # 0.1.0 -> 0.2.0
}


_CHECKPOINT_SQL = "INSERT OR REPLACE INTO shards VALUES (?,?,?,?,?,?,?,?,?,?,?)"
# A failure never overwrites what an earlier run copied successfully.
_RECORD_SQL = ("INSERT INTO objects VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(job, key) DO UPDATE SET "
               "size=excluded.size, src_etag=excluded.src_etag, dst_key=excluded.dst_key, "
               "dst_etag=excluded.dst_etag, status=excluded.status, error=excluded.error, "
               "verified=excluded.verified, run_id=excluded.run_id, updated=excluded.updated "
               "WHERE excluded.status='copied' OR objects.status!='copied'")


class SqliteManifest:
    """SQLite-backed manifest for one job (see dth_ray.runtime.manifest for the logical schema). Thread-safe:
    one lock serializes this connection's users (the driver lane's workers, the scheduler, the driver)."""

    def __init__(self, path: str, job: str, run_id: int = 0):
        self.path = path or default_sqlite_path()
        self.job = job
        self.run_id = run_id
        self.writes = 0
        self.items_written = 0
        self._live = LiveProgress()
        self._lock = threading.RLock()
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
        self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

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
        rows = self._read("SELECT run_id, status, started, finished, report, executions FROM runs WHERE job=? "
                          "ORDER BY run_id DESC LIMIT ?", (self.job, limit))
        return [RunInfo(r, s, st, f or 0.0, rep or "", ex) for r, s, st, f, rep, ex in rows]

    def start_run(self, shards: Sequence[Shard], source: str = "", destination: str = "") -> int:
        """A new run with a pending checkpoint per shard; `source`/`destination` (store locations, as the
        report names them) are kept for `jobs()`."""
        with self._transaction(2 if source or destination else 1) as db:
            cur = db.execute("INSERT INTO runs (job, started, status) VALUES (?, ?, 'planning')",
                             (self.job, time.time()))
            self.run_id = int(cur.lastrowid)
            self._note_pairing(db, source, destination)
        self._put_checkpoints([Checkpoint(s, PENDING, "", Tally(), self.run_id) for s in shards])
        # Only a run whose whole plan is durable may be resumed: a crash before this leaves it 'planning'.
        self._write("UPDATE runs SET status='running' WHERE run_id=?", [(self.run_id,)])
        return self.run_id

    def resume_run(self, run_id: int, source: str = "", destination: str = "") -> list[Checkpoint]:
        """Take over run `run_id` (one more execution of it) and return its checkpoints."""
        self.run_id = run_id
        with self._transaction(2 if source or destination else 1) as db:
            db.execute("UPDATE runs SET executions=executions+1, status='running' WHERE run_id=?", (run_id,))
            self._note_pairing(db, source, destination)
        return self.checkpoints(run_id)

    def _note_pairing(self, db, source: str, destination: str) -> None:
        if source or destination:
            db.execute("INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)",
                       (self.job, source, destination, time.time()))

    def jobs(self) -> list[JobInfo]:
        """Every job in this file with its latest run, the most recently active first (one query over the
        runs, and one for the checkpoints of each latest run that has not succeeded)."""
        rows = self._read(
            "SELECT r.job, r.run_id, r.status, r.started, r.finished, r.report, r.executions, j.source, "
            "j.destination FROM runs r JOIN (SELECT job, MAX(run_id) AS run_id FROM runs GROUP BY job) l "
            "ON r.job = l.job AND r.run_id = l.run_id LEFT JOIN jobs j ON j.job = r.job "
            "ORDER BY COALESCE(r.finished, r.started) DESC, r.job", ())
        out = []
        for job, run_id, status, started, finished, report, executions, source, destination in rows:
            run = RunInfo(run_id, status, started, finished or 0.0, report or "", executions)
            if source is None and not report:  # a job from before the jobs table: its newest report says
                source, destination = self._pairing_from_reports(job)
            checkpoints = [] if status == SUCCEEDED else self._checkpoints_of(job, run_id)
            out.append(job_info(job, run, source or "", destination or "", checkpoints))
        return out

    def _pairing_from_reports(self, job: str) -> tuple[str, str]:
        rows = self._read("SELECT report FROM runs WHERE job=? AND report IS NOT NULL AND report != '' "
                          "ORDER BY run_id DESC LIMIT 1", (job,))
        report = json.loads(rows[0][0]) if rows else {}
        return report.get("source", ""), report.get("destination", "")

    def _checkpoints_of(self, job: str, run_id: int) -> list[Checkpoint]:
        rows = self._read("SELECT shard_id, status, tally FROM shards WHERE job=? AND run_id=?",
                          (job, run_id))
        return [Checkpoint(Shard(sid, ""), st, "", Tally.from_dict(json.loads(t)), run_id)
                for sid, st, t in rows]

    def finish_run(self, status: str, report: dict) -> None:
        self._write("UPDATE runs SET finished=?, status=?, report=? WHERE run_id=?",
                    [(time.time(), status, json.dumps(report), self.run_id)])

    def checkpoints(self, run_id: int) -> list[Checkpoint]:
        rows = self._read(
            "SELECT shard_id, prefix, start_after, end_at, delimiter, status, watermark, tally FROM shards "
            "WHERE job=? AND run_id=? ORDER BY shard_id", (self.job, run_id))
        return [Checkpoint(Shard(sid, p, sa, ea, d), st, w, Tally.from_dict(json.loads(t)), run_id)
                for sid, p, sa, ea, d, st, w, t in rows]

    def checkpoint(self, run_id: int, shard_id: str) -> Checkpoint | None:
        """One shard's checkpoint in a run (where a lost worker's shard is redone from)."""
        rows = self._read(
            "SELECT shard_id, prefix, start_after, end_at, delimiter, status, watermark, tally FROM shards "
            "WHERE job=? AND run_id=? AND shard_id=?", (self.job, run_id, shard_id))
        if not rows:
            return None
        sid, p, sa, ea, d, st, w, t = rows[0]
        return Checkpoint(Shard(sid, p, sa, ea, d), st, w, Tally.from_dict(json.loads(t)), run_id)

    def _put_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        if checkpoints:
            with self._transaction(len(checkpoints)) as db:
                db.executemany(_CHECKPOINT_SQL, self._checkpoint_rows(checkpoints))

    def _checkpoint_rows(self, checkpoints: Sequence[Checkpoint]) -> list[tuple]:
        now = time.time()
        return [(self.job, cp.run_id or self.run_id, cp.shard.shard_id, cp.shard.prefix, cp.shard.start_after,
                 cp.shard.end_at, cp.shard.delimiter, cp.status, cp.watermark,
                 json.dumps(cp.tally.to_dict(CHECKPOINT_FAILURES)), now) for cp in checkpoints]

    def covering_checkpoint(self, key: str) -> Checkpoint | None:
        return covering_in_recent_runs(self, key)

    # ---- per-object records

    def record(self, records: Sequence[ObjectRecord], checkpoints: Sequence[Checkpoint] = (),
               live: LiveReport | None = None) -> Share | None:
        """Store a batch of per-object results and shard checkpoints in one transaction (a checkpoint never
        lands without the records it covers); keep the live progress and answer the worker's share of the job's budgets."""
        if records or checkpoints:
            now = time.time()
            rows = [(self.job, r.key, r.size, r.src_etag, r.dst_key, r.dst_etag, r.status, r.error,
                     int(r.verified), r.run_id or self.run_id, now) for r in records]
            with self._transaction(len(records) + len(checkpoints)) as db:
                db.executemany(_RECORD_SQL, rows)
                db.executemany(_CHECKPOINT_SQL, self._checkpoint_rows(checkpoints))
        return self._live.add(live)  # the worker's share of the job's budgets

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

