"""The job manifest's logical schema and the protocol every backend (SQLite, DynamoDB) implements.

Logical schema, the same in every backend:
- runs: one row per execution of a job (run_id, started, finished, status running|succeeded|failed, report).
- shards: per run, the planned shards and their checkpoints: status pending|done, `watermark` (every source
  key of the shard <= watermark is settled) and the exact tally of the settled keys. This is what the success
  path writes for small objects: a few writes per shard, not one per object.
- objects: per-object records only where they matter: failures, multipart copies, copies whose ETags cannot
  be compared across the two stores (the record keeps the source version copied) and keys that already had
  a record. Per-key status is the record, else the done checkpoint whose shard covers the key.
- uploads and parts: open multipart uploads (exact destination key, upload id, source version, part size)
  and the parts already sent with their MD5 ETags, so a resumed run continues an interrupted upload.

A backend is a plain class; the driver wraps it with `ray.remote` so one actor owns the live state and
receives batched records from every transfer actor (one call per batch, never per object).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from dth_ray.model import PartInfo, Shard, Tally, UploadState
from dth_ray.plan.diff import Record

PENDING = "pending"
DONE = "done"
CHECKPOINT_FAILURES = 50  # failures kept per checkpoint (the count is exact); keeps an item far below 400 KB


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
    run_id: int = 0


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """A shard's progress in one run: keys <= watermark are settled and counted in `tally`."""

    shard: Shard
    status: str = PENDING
    watermark: str = ""
    tally: Tally = field(default_factory=Tally)
    run_id: int = 0


@dataclass(frozen=True, slots=True)
class RunInfo:
    run_id: int
    status: str  # running | succeeded | failed
    started: float
    finished: float = 0.0
    report: str = ""


@dataclass
class Progress:
    """Live counters for the progress display; summed from batched deltas sent by the transfer actors."""

    listed: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_copied: int = 0
    bytes_pending: int = 0
    objects_pending: int = 0


class Manifest(Protocol):
    """What the runtime needs from a manifest backend. Every method is one batch or one lookup."""

    job: str
    run_id: int
    writes: int  # write requests made (a batch counts once per backend request)
    items_written: int  # rows/items written

    def latest_run(self) -> RunInfo | None: ...
    def runs(self, limit: int) -> list[RunInfo]: ...
    def start_run(self, shards: Sequence[Shard]) -> int: ...
    def resume_run(self, run_id: int) -> list[Checkpoint]: ...
    def finish_run(self, status: str, report: dict) -> None: ...
    def checkpoints(self, run_id: int) -> list[Checkpoint]: ...
    def record(self, records: Sequence[ObjectRecord], checkpoints: Sequence[Checkpoint] = (),
               progress_delta: dict[str, int] | None = None) -> None: ...
    def records_page(self, prefix: str, start_after: str, end_at: str, limit: int) -> list[Record]: ...
    def lookup(self, key: str) -> ObjectRecord | None: ...
    def covering_checkpoint(self, key: str) -> Checkpoint | None: ...
    def upload_opened(self, upload: UploadState) -> None: ...
    def parts_sent(self, dst_key: str, upload_id: str, parts: Sequence[PartInfo]) -> None: ...
    def upload_closed(self, dst_key: str, upload_id: str) -> None: ...
    def find_uploads(self, dst_key: str) -> list[UploadState]: ...
    def open_uploads(self) -> list[tuple[str, str]]: ...
    def flush(self) -> None: ...
    def progress(self) -> Progress: ...
    def write_counts(self) -> tuple[int, int]: ...
    def close(self) -> None: ...


def default_sqlite_path() -> str:
    state = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(state, "dth_ray", "manifest.sqlite")


def prefix_end(prefix: str) -> str:
    """Smallest string greater than every string starting with `prefix`; '' when there is none (an empty
    prefix, or one made only of U+10FFFF). Surrogates are skipped: they cannot occur in a UTF-8 key."""
    stripped = prefix.rstrip("\U0010ffff")
    if not stripped:
        return ""
    code = ord(stripped[-1]) + 1
    return stripped[:-1] + chr(0xE000 if 0xD800 <= code <= 0xDFFF else code)


def covering_in_recent_runs(manifest: Manifest, key: str, runs: int = 20) -> Checkpoint | None:
    """The newest settled checkpoint covering `key` among the job's last `runs` runs (per-key status)."""
    for run in manifest.runs(runs):
        found = newest_covering(manifest.checkpoints(run.run_id), key)
        if found is not None:
            return found
    return None


def newest_covering(checkpoints: Sequence[Checkpoint], key: str) -> Checkpoint | None:
    """The newest-run checkpoint whose shard holds `key` and has settled it."""
    best = None
    for cp in checkpoints:
        settled = cp.status == DONE or (cp.watermark and key <= cp.watermark)
        if settled and cp.shard.contains(key) and (best is None or cp.run_id > best.run_id):
            best = cp
    return best


def manifest_factory(cfg, job: str, run_id: int = 0) -> tuple[type, tuple]:
    """The configured backend class and its constructor arguments (cfg is a ManifestConfig), so the driver
    can build it in-process or as an actor with `ray.remote(cls).remote(*args)`."""
    from dth_ray.config import ManifestType

    if ManifestType(cfg.type) is ManifestType.dynamodb:
        from dth_ray.runtime.manifest_dynamodb import DynamoManifest

        return DynamoManifest, (cfg, job, run_id)
    from dth_ray.runtime.manifest_sqlite import SqliteManifest

    return SqliteManifest, (cfg.path, job, run_id)


def open_manifest(cfg, job: str, run_id: int = 0) -> Manifest:
    """The configured backend, in this process. Raises ConfigError for a bad setting."""
    cls, args = manifest_factory(cfg, job, run_id)
    return cls(*args)
