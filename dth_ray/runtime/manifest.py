"""The job manifest's logical schema and the protocol every backend (SQLite, DynamoDB) implements.

Logical schema, the same in every backend:
- runs: one row per run of a job (run_id, started, finished, status, report). Status: planning (its plan is
  not durable yet: never resumed), running (live, or its driver died), interrupted (stopped on a signal),
  failed, succeeded. An interrupted, failed or dead run with work left is resumed by the next invocation.
- shards: per run, the planned shards and their checkpoints: status pending|done, `watermark` (every source
  key of the shard <= watermark is settled) and the exact tally of the settled keys. This is what the success
  path writes for small objects: a few writes per shard, not one per object.
- objects: per-object records only where they matter: failures, multipart copies, copies whose ETags cannot
  be compared across the two stores (the record keeps the source version copied) and keys that already had
  a record. Per-key status is the record, else the done checkpoint whose shard covers the key.
- jobs: the source and destination each job was last run with (written when a run starts or resumes), so
  `dth-ray jobs` can list the jobs of a manifest with each one's latest run (`jobs()`).
- uploads and parts: open multipart uploads (exact destination key, upload id, source version, part size)
  and the parts already sent with their MD5 ETags, so a resumed run continues an interrupted upload.
- failures: per run, one row per failed key (error class, provider code, the engine's tries, message), written
  in the same batch as the key's object record, so `dth-ray console` pages a run's failures in key order
  whatever their number; a key a later execution copied is no longer listed (its object record says copied).
- live: per run, one small progress record (`LiveRecord`: the snapshot's numbers, running shards, a bounded
  throughput history) that a running driver replaces every PUBLISH_INTERVAL_S: its heartbeat. A run still
  `running` whose heartbeat is older than STALE_AFTER_INTERVALS intervals lost its driver.
- jobs: the stores each job was last run with and the credential-free overrides that name them (written when
  a run starts or resumes), so the jobs of a manifest can be listed with each one's latest run (`jobs()`).

A backend is a plain class; the driver wraps it with `ray.remote` so one actor owns the live state and
receives batched records from every transfer actor (one call per batch, never per object).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from typing import Protocol

from dth_ray.engine.pacing import Share
from dth_ray.model import PartInfo, Shard, Tally, UploadState
from dth_ray.plan.diff import Record

PENDING = "pending"
DONE = "done"
COPIED_OBJECT, FAILED_OBJECT = "copied", "failed"  # ObjectRecord.status
# Run states (see the module docstring).
PLANNING, RUNNING, INTERRUPTED, FAILED, SUCCEEDED = "planning", "running", "interrupted", "failed", "succeeded"
PAUSED = "paused"  # stopped at its transfer window's end (schedule.window): resumable like interrupted
CHECKPOINT_FAILURES = 50  # failures kept per checkpoint (the count is exact); keeps an item far below 400 KB
PUBLISH_INTERVAL_S = 5.0  # how often a running driver replaces its run's live record (its heartbeat)
STALE_AFTER_INTERVALS = 3  # a running run whose heartbeat is older than this many intervals lost its driver
LIVE_SAMPLES = 240  # throughput samples a live record keeps (thinned evenly as a run goes on)
LIVE_RUNNING_SHARDS = 2000  # running shard ids a live record names at most


@dataclass(frozen=True, slots=True)
class ObjectRecord:
    """What the manifest keeps per object: the source version copied and the destination ETag it became."""

    key: str
    size: int
    src_etag: str
    dst_key: str
    dst_etag: str
    status: str  # copied | failed
    error: str = ""  # failed: "ErrorClass: credential-free message" (the worker's format)
    verified: bool = False
    run_id: int = 0
    code: str = ""  # failed: the provider's error code, if any (e.g. AccessDenied)
    attempts: int = 0  # failed: the tries the engine made in the copy that failed

    @property
    def error_class(self) -> str:
        return self.error.partition(":")[0].strip() if self.error else ""


@dataclass(frozen=True, slots=True)
class FailureRow:
    """One failed key of a run, as the console pages them."""

    key: str
    error_class: str
    code: str
    attempts: int
    message: str
    run_id: int
    updated: float = 0.0


def failure_row(rec: ObjectRecord, run_id: int, now: float) -> FailureRow:
    """The failures-table row of a failed object record."""
    message = rec.error.partition(":")[2].strip() if ":" in rec.error else rec.error
    return FailureRow(rec.key, rec.error_class or "Fatal", rec.code, max(1, rec.attempts), message, run_id, now)


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
    status: str  # see the run states above
    started: float
    finished: float = 0.0
    report: str = ""
    executions: int = 1  # this run's executions so far (1 + the times it was resumed)


@dataclass(frozen=True, slots=True)
class JobInfo:
    """One job of a manifest as `jobs()` lists it: its latest run and, for a run that has not succeeded
    (running, interrupted, cut off, failed), the settled tally of its checkpoints and its shards (done, total).
    `source`/`destination` are the store locations the driver recorded and `args` the credential-free overrides
    that name its stores (empty for a job whose runs all predate that record)."""

    job: str
    run: RunInfo
    source: str = ""
    destination: str = ""
    settled: Tally | None = None
    shards: tuple[int, int] = (0, 0)
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class LiveRecord:
    """A running driver's progress record (see the module docstring): the progress view's numbers at
    `heartbeat` (epoch seconds), the shards being copied, and throughput `samples` (epoch seconds, bytes
    done, objects done), oldest first."""

    run_id: int
    heartbeat: float
    interval_s: float = PUBLISH_INTERVAL_S
    phase: str = "copying"
    started: float = 0.0
    objects: int = 0
    total_objects: int = 0
    bytes: int = 0
    total_bytes: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_per_s: float = 0.0
    objects_per_s: float = 0.0
    eta_s: float | None = None
    retries: int = 0
    shards_done: int = 0
    shards_total: int = 0
    running: tuple[str, ...] = ()
    samples: tuple[tuple[float, int, int], ...] = ()

    def stale(self, now: float) -> bool:
        """The driver stopped publishing: no heartbeat for STALE_AFTER_INTERVALS intervals."""
        return now - self.heartbeat > STALE_AFTER_INTERVALS * max(self.interval_s, 1.0)

    def to_json(self) -> str:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["running"], out["samples"] = list(self.running), [list(s) for s in self.samples]
        return json.dumps(out, separators=(",", ":"))

    @classmethod
    def from_json(cls, text: str) -> LiveRecord:
        data = json.loads(text)
        names = {f.name for f in fields(cls)}
        known = {k: v for k, v in data.items() if k in names}
        known["running"] = tuple(known.get("running", ()))
        known["samples"] = tuple((float(t), int(b), int(o)) for t, b, o in known.get("samples", ()))
        return cls(**known)


@dataclass(frozen=True, slots=True)
class LiveReport:
    """What a worker sends with each flush for the progress display: each active shard's live tally (every
    result known so far, settled or not) tagged with its attempt's `seq`, and the worker's objects and bytes
    in flight (absolute values, replacing its previous ones)."""

    worker_id: str
    shards: tuple[tuple[str, int, Tally], ...] = ()
    objects_in_flight: int = 0
    bytes_in_flight: int = 0
    errors: tuple[tuple[str, int], ...] = ()  # store requests that failed so far (and were retried), by class
    bytes_landed: int = 0  # of bytes_in_flight, those already read (engine/landing.py)
    objects_ahead: int = 0  # listed by its shards but not decided yet (the planned total's estimate)
    bytes_ahead: int = 0
    pace: tuple[float, ...] = ()  # the job's budgets: SourcePace.usage() (cumulative), () when off


@dataclass(frozen=True, slots=True)
class Progress:
    """Live progress: shard tallies changed since the last call (newest attempt each), and the objects and
    bytes in flight now (summed over workers)."""

    shards: dict[str, tuple[int, Tally]] = field(default_factory=dict)
    objects_in_flight: int = 0
    bytes_in_flight: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bytes_landed: int = 0  # of bytes_in_flight, those already read
    objects_ahead: int = 0  # listed but not decided yet
    bytes_ahead: int = 0


class LiveProgress:
    """The manifest's live state for the progress display and the job's budgets (in memory only, never
    written): what each worker reported last, and the shares of the budgets the driver set for them."""

    def __init__(self) -> None:
        self._pace: dict[str, tuple[float, ...]] = {}
        self._shares: dict[str, Share] = {}
        self._newcomer: Share | None = None
        self._changed: dict[str, tuple[int, Tally]] = {}
        self._in_flight: dict[str, tuple[int, int, int, int, int]] = {}
        self._errors: dict[str, tuple[tuple[str, int], ...]] = {}

    def add(self, live: LiveReport | None) -> Share | None:
        """Keep a worker's report; returns its share of the job's budgets (None before the driver set any)."""
        if live is None:
            return None
        if live.pace:
            self._pace[live.worker_id] = live.pace
        for shard_id, seq, tally in live.shards:
            known = self._changed.get(shard_id)
            if known is None or seq >= known[0]:
                self._changed[shard_id] = (seq, tally)
        self._in_flight[live.worker_id] = (live.objects_in_flight, live.bytes_in_flight, live.bytes_landed,
                                           live.objects_ahead, live.bytes_ahead)
        self._errors[live.worker_id] = live.errors
        return self._shares.get(live.worker_id, self._newcomer)

    def pace_reports(self) -> dict[str, tuple[float, ...]]:
        """Each worker's latest budget usage (SourcePace.usage())."""
        return dict(self._pace)

    def set_shares(self, shares: dict[str, Share], newcomer: Share | None) -> None:
        """The driver's split of the budgets; `newcomer` for a worker it has not seen yet."""
        self._shares, self._newcomer = dict(shares), newcomer

    def take(self) -> Progress:
        changed, self._changed = self._changed, {}
        errors: dict[str, int] = {}
        for per_worker in self._errors.values():
            for name, count in per_worker:
                errors[name] = errors.get(name, 0) + count
        in_flight = self._in_flight.values()
        return Progress(changed, sum(f[0] for f in in_flight), sum(f[1] for f in in_flight), errors,
                        sum(f[2] for f in in_flight), sum(f[3] for f in in_flight), sum(f[4] for f in in_flight))


class Manifest(Protocol):
    """What the runtime needs from a manifest backend. Every method is one batch or one lookup."""

    job: str
    run_id: int
    writes: int  # write requests made (a batch counts once per backend request)
    items_written: int  # rows/items written

    def latest_run(self) -> RunInfo | None: ...
    def runs(self, limit: int) -> list[RunInfo]: ...
    def start_run(self, shards: Sequence[Shard], source: str = "", destination: str = "",
                  args: Sequence[str] = ()) -> int: ...
    def resume_run(self, run_id: int, source: str = "", destination: str = "",
                   args: Sequence[str] = ()) -> list[Checkpoint]: ...
    def jobs(self) -> list[JobInfo]: ...
    def publish(self, live: LiveRecord) -> None: ...
    def live(self, run_id: int) -> LiveRecord | None: ...
    def failures_page(self, run_id: int, start_after: str, limit: int) -> list[FailureRow]: ...
    def finish_run(self, status: str, report: dict) -> None: ...
    def checkpoints(self, run_id: int) -> list[Checkpoint]: ...
    def checkpoint(self, run_id: int, shard_id: str) -> Checkpoint | None: ...
    def record(self, records: Sequence[ObjectRecord], checkpoints: Sequence[Checkpoint] = (),
               live: LiveReport | None = None) -> Share | None: ...
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
    def pace_reports(self) -> dict[str, tuple[float, ...]]: ...
    def set_shares(self, shares: dict[str, Share], newcomer: Share | None) -> None: ...
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


def job_info(job: str, run: RunInfo, source: str, destination: str, checkpoints: Sequence[Checkpoint] = (),
             args: Sequence[str] = ()) -> JobInfo:
    """A JobInfo for `run`: a run that has not succeeded gets its checkpoints' settled tally and shard counts
    (its report, if any, counts only what it reached)."""
    if run.status == SUCCEEDED:
        return JobInfo(job, run, source, destination, args=tuple(args))
    settled = Tally()
    for cp in checkpoints:
        settled.merge(cp.tally)
    return JobInfo(job, run, source, destination, settled,
                   (sum(cp.status == DONE for cp in checkpoints), len(checkpoints)), tuple(args))


def pairing_from_report(report: str) -> tuple[str, str]:
    """(source, destination) as a finished run's report names them; ('', '') without one."""
    try:
        data = json.loads(report) if report else {}
    except ValueError:
        return "", ""
    return str(data.get("source", "")), str(data.get("destination", ""))


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
