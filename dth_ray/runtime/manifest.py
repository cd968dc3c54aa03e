"""The job manifest: runs, per-object results and open multipart uploads, in SQLite (the embedded default).

`Manifest` is a plain class; the driver wraps it with `ray.remote` so one actor owns the file and receives
batched records from every transfer actor (one call per batch, never per object).
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dth_ray.plan.diff import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
  run_id INTEGER PRIMARY KEY AUTOINCREMENT, job TEXT NOT NULL, started REAL NOT NULL, finished REAL,
  status TEXT NOT NULL, report TEXT
);
CREATE TABLE IF NOT EXISTS objects (
  job TEXT NOT NULL, key TEXT NOT NULL, size INTEGER NOT NULL, src_etag TEXT NOT NULL, dst_key TEXT NOT NULL,
  dst_etag TEXT NOT NULL, status TEXT NOT NULL, error TEXT NOT NULL DEFAULT '', verified INTEGER NOT NULL,
  run_id INTEGER NOT NULL, updated REAL NOT NULL, PRIMARY KEY (job, key)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS uploads (
  job TEXT NOT NULL, dst_key TEXT NOT NULL, upload_id TEXT NOT NULL, part_size INTEGER NOT NULL,
  run_id INTEGER NOT NULL, created REAL NOT NULL, PRIMARY KEY (job, dst_key, upload_id)
) WITHOUT ROWID;
"""


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """What the manifest keeps per object: the source version copied and the destination ETag it became."""

    key: str
    size: int
    src_etag: str
    dst_key: str
    dst_etag: str
    status: str  # copied | failed
    error: str = ""
    verified: bool = False


@dataclass
class Progress:
    """Live counters for the progress display; summed from batched deltas sent by the transfer actors."""

    listed: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    bytes_pending: int = 0


def default_path() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "dth_ray", "manifest.sqlite")


class Manifest:
    """SQLite-backed manifest for one job; every write is a batch in one transaction."""

    def __init__(self, path: str, job: str, run_id: int = 0):
        self.path = path or default_path()
        self.job = job
        os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
        # Two connections may write at once (the driver's start-up worker and the manifest actor): wait.
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=60)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)
        self.run_id = run_id
        self._progress = Progress()
        self.writes = 0

    def start_run(self) -> int:
        cur = self._db.execute("INSERT INTO runs (job, started, status) VALUES (?, ?, 'running')",
                               (self.job, time.time()))
        self.run_id = int(cur.lastrowid)
        return self.run_id

    def finish_run(self, status: str, report: dict) -> None:
        self._db.execute("UPDATE runs SET finished=?, status=?, report=? WHERE run_id=?",
                         (time.time(), status, json.dumps(report), self.run_id))

    def record(self, records: Sequence[ObjectRecord], progress_delta: dict[str, int] | None = None) -> None:
        """Store a batch of per-object results and add the batch's progress counters."""
        if records:
            now = time.time()
            rows = [(self.job, r.key, r.size, r.src_etag, r.dst_key, r.dst_etag, r.status, r.error,
                     int(r.verified), self.run_id, now) for r in records]
            self._db.execute("BEGIN IMMEDIATE")
            # A failure never overwrites what an earlier run copied successfully.
            self._db.executemany(
                "INSERT INTO objects VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT(job, key) DO UPDATE SET "
                "size=excluded.size, src_etag=excluded.src_etag, dst_key=excluded.dst_key, "
                "dst_etag=excluded.dst_etag, status=excluded.status, error=excluded.error, "
                "verified=excluded.verified, run_id=excluded.run_id, updated=excluded.updated "
                "WHERE excluded.status='copied' OR objects.status!='copied'", rows)
            self._db.execute("COMMIT")
            self.writes += 1
        for name, value in (progress_delta or {}).items():
            setattr(self._progress, name, getattr(self._progress, name) + value)

    def records_page(self, prefix: str, start_after: str, end_at: str, limit: int) -> list[Record]:
        """Recorded copies for source keys under `prefix` after `start_after` (and <= end_at), key order."""
        sql = ("SELECT key, src_etag, size, dst_etag FROM objects WHERE job=? AND key>? AND key>=? "
               "AND status='copied'")
        args: list = [self.job, start_after, prefix]
        if prefix:
            sql += " AND key<?"
            args.append(_prefix_end(prefix))
        if end_at:
            sql += " AND key<=?"
            args.append(end_at)
        sql += " ORDER BY key LIMIT ?"
        args.append(limit)
        return [Record(key=k, src_etag=e, src_size=s, dst_etag=d) for k, e, s, d in self._db.execute(sql, args)]

    def lookup(self, key: str) -> ObjectRecord | None:
        row = self._db.execute(
            "SELECT key, size, src_etag, dst_key, dst_etag, status, error, verified FROM objects "
            "WHERE job=? AND key=?", (self.job, key)).fetchone()
        return ObjectRecord(*row[:7], verified=bool(row[7])) if row else None

    def upload_opened(self, dst_key: str, upload_id: str, part_size_bytes: int) -> None:
        self._db.execute("INSERT OR REPLACE INTO uploads VALUES (?,?,?,?,?,?)",
                         (self.job, dst_key, upload_id, part_size_bytes, self.run_id, time.time()))
        self.writes += 1

    def upload_closed(self, dst_key: str, upload_id: str) -> None:
        self._db.execute("DELETE FROM uploads WHERE job=? AND dst_key=? AND upload_id=?",
                         (self.job, dst_key, upload_id))
        self.writes += 1

    def open_uploads(self) -> list[tuple[str, str]]:
        return [tuple(r) for r in self._db.execute(
            "SELECT dst_key, upload_id FROM uploads WHERE job=? ORDER BY dst_key", (self.job,))]

    def progress(self) -> Progress:
        return Progress(**vars(self._progress))

    def close(self) -> None:
        self._db.close()


def _prefix_end(prefix: str) -> str:
    """Smallest string greater than every string starting with `prefix`."""
    return prefix[:-1] + chr(ord(prefix[-1]) + 1)
