"""A job's export progress in a small SQLite file beside the manifest: per partition its download session,
row count and status; per shard, once finished, the files it wrote. A rerun continues from here: finished
shards are not read again, and a finished partition whose source did not change is skipped."""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from dataclasses import dataclass

from dth_ray.files import private_dir, private_file
from dth_ray.maxcompute.plan import FileInfo, Spec, spec_text

EXPORTING, UNLOADED, DONE = "exporting", "unloaded", "done"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS mc_partitions (
    job TEXT NOT NULL, spec TEXT NOT NULL, download_id TEXT NOT NULL, record_count INTEGER NOT NULL,
    shard_rows INTEGER NOT NULL, modified TEXT NOT NULL, status TEXT NOT NULL, manifest TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (job, spec));
CREATE TABLE IF NOT EXISTS mc_shards (
    job TEXT NOT NULL, spec TEXT NOT NULL, shard INTEGER NOT NULL, start_row INTEGER NOT NULL,
    rows INTEGER NOT NULL, files TEXT NOT NULL, PRIMARY KEY (job, spec, shard));
"""


@dataclass(frozen=True)
class PartitionRecord:
    download_id: str
    record_count: int
    shard_rows: int
    modified: str
    status: str
    manifest: str


class ExportState:
    """Durable export progress of one job (every write commits before it returns)."""

    def __init__(self, path: str, job: str):
        private_dir(os.path.dirname(os.path.abspath(path)))
        private_file(path)  # before SQLite creates it 0644: its journal files take its mode
        self._db = sqlite3.connect(path, check_same_thread=False, timeout=30)
        self._db.executescript(_SCHEMA)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._job = job
        self._lock = threading.Lock()

    def partition(self, spec: Spec) -> PartitionRecord | None:
        with self._lock:
            row = self._db.execute(
                "SELECT download_id, record_count, shard_rows, modified, status, manifest FROM mc_partitions "
                "WHERE job=? AND spec=?", (self._job, spec_text(spec))).fetchone()
        return PartitionRecord(*row) if row else None

    def start_partition(self, spec: Spec, download_id: str, record_count: int, shard_rows: int, modified: str,
                        status: str = EXPORTING) -> None:
        """A fresh start for this partition: its record replaced, its finished shards forgotten."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM mc_shards WHERE job=? AND spec=?", (self._job, spec_text(spec)))
            self._db.execute("INSERT OR REPLACE INTO mc_partitions VALUES (?, ?, ?, ?, ?, ?, ?, '')",
                             (self._job, spec_text(spec), download_id, record_count, shard_rows, modified, status))

    def set_status(self, spec: Spec, status: str, manifest: str = "") -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE mc_partitions SET status=?, manifest=? WHERE job=? AND spec=?",
                             (status, manifest, self._job, spec_text(spec)))

    def shard_done(self, spec: Spec, shard: int, start_row: int, rows: int, files: tuple[FileInfo, ...]) -> None:
        doc = json.dumps([[f.key, f.rows, f.size, f.etag] for f in files])
        with self._lock, self._db:
            self._db.execute("INSERT OR REPLACE INTO mc_shards VALUES (?, ?, ?, ?, ?, ?)",
                             (self._job, spec_text(spec), shard, start_row, rows, doc))

    def shards_done(self, spec: Spec) -> dict[int, tuple[FileInfo, ...]]:
        with self._lock:
            rows = self._db.execute("SELECT shard, files FROM mc_shards WHERE job=? AND spec=?",
                                    (self._job, spec_text(spec))).fetchall()
        return {shard: tuple(FileInfo(*f) for f in json.loads(files)) for shard, files in rows}

    def close(self) -> None:
        with self._lock:
            self._db.close()
