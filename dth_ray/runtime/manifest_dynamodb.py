"""The manifest on one DynamoDB table: the actor holds the live state and a thread flushes it in batches.

Items (string hash key `pk`, string range key `sk`). J is the job name, or `sha256:<hex>` of it when the
name is longer than 900 bytes, so every pk stays under DynamoDB's 2048-byte limit:

    run         J#run              run id, 12 digits    run_id status started finished report|report_z job
    checkpoint  J#shard#<run id>   shard id             prefix start_after end_at delimiter status watermark
                                                        tally (JSON, failures capped) run_id updated
    object      J#obj              source key           size src_etag dst_key dst_etag status error verified
                                                        run_id updated
    upload      J#upload           K \\0 U               dst_key upload_id src_etag size part_size run_id created
    part        J#part#<digest>    part number, 5 digits  etag size
    failure     J#fail#<run id>    source key             error_class code attempts message run_id updated
    live        J#live             run id, 12 digits      heartbeat record (LiveRecord JSON)
    job index   #jobs              J                      job source destination args (JSON) updated

A job's index item is written when one of its runs starts or resumes, so `jobs()` is one Query of `#jobs` plus
one per job for its latest run (and one for the checkpoints of a run that has not succeeded), whatever the size of
the table: a Scan for the run items would read every object record too (millions, for a large job). A job
whose runs all predate the index is listed once it runs again. No job's pk is `#jobs`: theirs end in `#run`,
`#obj`, `#upload`, `#shard#N`, `#part#D`, `#fail#N` or `#live`. A failure item goes into the buffer with its
object record (one more item per failed key, in the same BatchWriteItem requests); the live item is written
through, one PutItem per PUBLISH_INTERVAL_S of a running driver.

Source keys are UTF-8 of at most 1024 bytes (DynamoDB's sort-key limit, also S3's key limit); a longer key is
refused with Fatal. In an upload's sk, K is the destination key when it has at most 768 bytes, else
`\\x01sha256:<hex>` of it, and U is the upload id (empty for an intent), or its digest the same way when K \\0
U would pass 1024 bytes. `find_uploads` queries begins_with(K \\0) and keeps only items whose `dst_key`
attribute equals the key, so a key never matches another key it is a prefix of. Parts are one item each under
a digest of (destination key, upload id), so an upload of 10,000 parts never nears the 400 KB item limit.

Writes: runs and uploads are written through (an upload id is durable before its first part is sent; the real
id replaces the key's intent item in one TransactWriteItems). Object records, checkpoints and parts go into a
buffer keyed by (pk, sk), so repeated checkpoints of a shard between two flushes coalesce into one item; a
background thread writes it every `flush_interval_s` with BatchWriteItem (at most 25 items per request),
UnprocessedItems retried with jittered backoff, bounded. A flush that still fails keeps its items in the
buffer (retried at the next interval) and its error is raised from the next call (except `progress()`, the
display poll), which then has no effect. `flush()`, `close()`, `start_run()` and `finish_run()` flush
synchronously and raise if that fails (nothing is dropped: call again); a full buffer (50,000 items) makes the
next write call flush first, so memory stays bounded. Reads overlay the buffer on strongly consistent reads of
the table, so they see writes not yet flushed.

A failed record never overwrites a copied one: in memory at `record()` time, and against the table at flush
time (one BatchGetItem per 100 failed records, since BatchWriteItem has no conditions). Read-then-write is
enough because the manifest actor is the one writer of a job's object items while a run is live; a second
instance (the driver's start-up worker) could only race it on the same key within one flush interval.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import logging
import threading
import time
import zlib
from collections.abc import Sequence

from dth_ray.engine.pacing import Share
from dth_ray.errors import ConfigError, DthError, Fatal, PreconditionFailed
from dth_ray.model import PartInfo, Shard, Tally, UploadState
from dth_ray.plan.diff import Record
from dth_ray.runtime.dynamodb_table import BATCH_WRITE_ITEMS, SORT_KEY_BYTES, DynamoTable, enc
from dth_ray.runtime.dynamodb_table import key as item_key
from dth_ray.runtime.manifest import (
    CHECKPOINT_FAILURES,
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
    failure_row,
    job_info,
    pairing_from_report,
    prefix_end,
)

log = logging.getLogger(__name__)

COPIED = "copied"
_UPLOAD_KEY_BYTES = 768  # leaves 255 bytes of the upload sk for the upload id
_JOB_BYTES = 900
_RUN_ID_ATTEMPTS = 50
_MAX_BUFFERED_ITEMS = 50_000  # beyond this a call flushes synchronously first (memory bounded by construction)
_REPORT_INLINE_BYTES = 64 * 1024
_REPORT_MAX_BYTES = 350 * 1024
_JOBS_PK = "#jobs"


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode("utf-8", "surrogatepass")).hexdigest()


def _nbytes(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


def _upload_head(dst_key: str) -> str:
    """The part of an upload's sk that depends on the key alone (the begins_with prefix of find_uploads)."""
    return dst_key if _nbytes(dst_key) <= _UPLOAD_KEY_BYTES else "\x01sha256:" + _digest(dst_key)


def _upload_sk(dst_key: str, upload_id: str) -> str:
    head = _upload_head(dst_key)
    fits = _nbytes(head) + 1 + _nbytes(upload_id) <= SORT_KEY_BYTES
    return head + "\0" + (upload_id if fits else "\x01sha256:" + _digest(upload_id))


def _usable_bound(text: str) -> bool:
    """A key condition value DynamoDB accepts (valid UTF-8, at most 1024 bytes); else filter client-side."""
    try:
        return 0 < len(text.encode("utf-8")) <= SORT_KEY_BYTES
    except UnicodeEncodeError:
        return False


def _obj_from(item: dict) -> ObjectRecord:
    return ObjectRecord(item["sk"], int(item["size"]), item["src_etag"], item["dst_key"], item["dst_etag"],
                        item["status"], item.get("error", ""), bool(item.get("verified", False)),
                        int(item.get("run_id", 0)))


def _cp_from(item: dict, run_id: int) -> Checkpoint:
    shard = Shard(item["sk"], item["prefix"], item["start_after"], item["end_at"], item["delimiter"],
                  item.get("listing", ""))
    return Checkpoint(shard, item["status"], item["watermark"], Tally.from_dict(json.loads(item["tally"])), run_id)


def _failure_from(item: dict) -> FailureRow:
    return FailureRow(item["sk"], item.get("error_class", ""), item.get("code", ""), int(item.get("attempts", 1)),
                      item.get("message", ""), int(item.get("run_id", 0)), float(item.get("updated", 0)))


def _run_from(item: dict) -> RunInfo:
    report = item.get("report", "")
    if "report_z" in item:
        report = zlib.decompress(item["report_z"]).decode()
    return RunInfo(int(item["run_id"]), item["status"], float(item["started"]), float(item.get("finished", 0)),
                   report, int(item.get("executions", 1)))


def _report_value(report: dict) -> tuple[str, str | bytes]:
    """('report', JSON) when small, else ('report_z', zlib JSON); a report too big even so keeps its scalars."""
    text = json.dumps(report)
    if len(text.encode()) <= _REPORT_INLINE_BYTES:
        return "report", text
    blob = zlib.compress(text.encode(), 6)
    if len(blob) > _REPORT_MAX_BYTES:
        brief = {k: v for k, v in report.items() if isinstance(v, (str, int, float, bool))}
        blob = zlib.compress(json.dumps({**brief, "report_truncated": True}).encode(), 6)
    return "report_z", blob


class DynamoManifest:
    """DynamoDB-backed manifest for one job (see dth_ray.runtime.manifest for the logical schema)."""

    def __init__(self, cfg, job: str, run_id: int = 0, read_only: bool = False):
        """`read_only`: use the table as it is (never create it, no flush thread), for `dth-ray console`."""
        if not float(cfg.flush_interval_s) > 0:
            raise ConfigError(f"manifest.flush_interval_s={cfg.flush_interval_s!r} must be positive")
        self.job = job
        self.run_id = run_id
        jp = job if _nbytes(job) <= _JOB_BYTES else "sha256:" + _digest(job)
        self._jp = jp
        self._pk_run, self._pk_obj, self._pk_upload = f"{jp}#run", f"{jp}#obj", f"{jp}#upload"
        self._pk_live = f"{jp}#live"
        self._live = LiveProgress()
        self._lock = threading.Lock()  # buffer, in-flight batch, pending error
        self._flush_lock = threading.Lock()  # one flush at a time; upload_closed waits for it
        self._buffer: dict[tuple[str, str], tuple[str, object]] = {}  # (pk, sk) -> (kind, value), newest
        self._inflight: dict[tuple[str, str], tuple[str, object]] = {}  # the batch being written
        self._error: DthError | None = None
        self._table = DynamoTable(cfg)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._flush_loop, args=(float(cfg.flush_interval_s),),
                                        name="manifest-flush", daemon=True)
        if not read_only:
            self._table.ensure()
            self._thread.start()

    @property
    def writes(self) -> int:
        """Write requests made (each BatchWriteItem, PutItem, UpdateItem, DeleteItem)."""
        return self._table.writes

    @property
    def items_written(self) -> int:
        """Items put or deleted."""
        return self._table.items_written

    @property
    def pending_items(self) -> int:
        """Items buffered or being flushed, not yet known to be in the table."""
        with self._lock:
            return len(self._buffer) + len(self._inflight)

    # ---- buffer and flushing

    def _raise_pending(self) -> None:
        """Raise the error of a failed background flush, once; its items stay buffered and are retried."""
        with self._lock:
            error, self._error = self._error, None
        if error is not None:
            raise error

    def _memory(self) -> dict[tuple[str, str], tuple[str, object]]:
        """Buffered items not yet in the table, newest state per (pk, sk). Take it before reading the table."""
        with self._lock:
            return {**self._inflight, **self._buffer}

    def _make_room(self, incoming: int) -> None:
        with self._lock:
            full = len(self._buffer) + incoming > _MAX_BUFFERED_ITEMS
        if full:
            self.flush()

    def _flush_loop(self, interval_s: float) -> None:
        while not self._stop.wait(interval_s):
            with self._lock:
                idle = not self._buffer
            if idle:
                continue
            try:
                self._flush(background=True)
            except DthError as exc:
                log.warning("manifest flush to DynamoDB table %s failed; its items are kept and retried: %s",
                            self._table.name, exc)

    def flush(self) -> None:
        """Write every buffered item now. Raises DthError if that fails (the items stay buffered)."""
        self._flush(background=False)

    def _flush(self, background: bool) -> None:
        """A failed background flush leaves its error for the next call (set under the lock that puts the
        items back, so a flush succeeding meanwhile cannot be followed by a stale error)."""
        with self._flush_lock:
            with self._lock:
                if not self._buffer:
                    self._error = None
                    return
                batch, self._buffer = self._buffer, {}
                self._inflight = batch
            done: set[tuple[str, str]] = set()
            try:
                self._write(batch, done)
            except BaseException as exc:
                error = exc
                if isinstance(exc, Exception) and not isinstance(exc, DthError):
                    log.error("manifest flush failed unexpectedly", exc_info=True)
                    error = Fatal("manifest flush failed unexpectedly (see the manifest actor's log)")
                with self._lock:
                    for key, value in batch.items():
                        if key not in done:
                            self._buffer.setdefault(key, value)  # a newer state buffered meanwhile wins
                    self._inflight = {}
                    if background and isinstance(error, DthError):
                        self._error = error
                if error is exc:
                    raise
                raise error from None
            with self._lock:
                self._inflight = {}
                if not self._buffer:
                    self._error = None

    def _write(self, batch: dict, done: set) -> None:
        """Objects and parts first, checkpoints last (a checkpoint never lands before the records it covers)."""
        failed = [key for key, (kind, value) in batch.items() if kind == "obj" and value.status != COPIED]
        stored = self._table.batch_get(failed, "status")
        done.update(k for k, status in stored.items() if status == COPIED)  # a failure never overwrites copied
        now = time.time()
        ordered = sorted((key for key in batch if key not in done), key=lambda key: batch[key][0] == "cp")
        for start in range(0, len(ordered), BATCH_WRITE_ITEMS):
            chunk = ordered[start:start + BATCH_WRITE_ITEMS]
            self._table.batch_write([{"PutRequest": {"Item": enc(self._item(key, *batch[key], now))}}
                                     for key in chunk])
            done.update(chunk)

    def _item(self, key: tuple[str, str], kind: str, value, now: float) -> dict:
        pk, sk = key
        if kind == "obj":
            return {"pk": pk, "sk": sk, "size": value.size, "src_etag": value.src_etag, "dst_key": value.dst_key,
                    "dst_etag": value.dst_etag, "status": value.status, "error": value.error,
                    "verified": bool(value.verified), "run_id": value.run_id, "updated": now}
        if kind == "fail":
            return {"pk": pk, "sk": sk, "error_class": value.error_class, "code": value.code,
                    "attempts": value.attempts, "message": value.message, "run_id": value.run_id, "updated": now}
        if kind == "cp":
            shard = value.shard
            return {"pk": pk, "sk": sk, "prefix": shard.prefix, "start_after": shard.start_after,
                    "end_at": shard.end_at, "delimiter": shard.delimiter, "status": value.status,
                    "watermark": value.watermark, "tally": json.dumps(value.tally.to_dict(CHECKPOINT_FAILURES)),
                    "run_id": value.run_id, "updated": now, **({"listing": shard.listing} if shard.listing else {})}
        return {"pk": pk, "sk": sk, "etag": value.etag, "size": value.size}

    # ---- runs and shard checkpoints

    def _pk_shard(self, run_id: int) -> str:
        return f"{self._jp}#shard#{run_id:012d}"

    def _pk_fail(self, run_id: int) -> str:
        return f"{self._jp}#fail#{run_id:012d}"

    def latest_run(self) -> RunInfo | None:
        runs = self.runs(1)
        return runs[0] if runs else None

    def runs(self, limit: int) -> list[RunInfo]:
        self._raise_pending()
        out: list[RunInfo] = []
        if limit > 0:
            for item in self._table.query(self._pk_run, forward=False, page=limit):
                out.append(_run_from(item))
                if len(out) >= limit:
                    break
        return out

    def start_run(self, shards: Sequence[Shard], source: str = "", destination: str = "",
                  args: Sequence[str] = ()) -> int:
        """A new run with a pending checkpoint per shard (written through), and the job's index item with
        `source`/`destination` (store locations, as the report names them) and `args` for `jobs()`. Raises
        DthError."""
        latest = self.latest_run()
        run_id = latest.run_id + 1 if latest else 1
        for _ in range(_RUN_ID_ATTEMPTS):
            try:
                self._table.put({"pk": self._pk_run, "sk": f"{run_id:012d}", "run_id": run_id,
                                 "status": "planning", "started": time.time(), "job": self.job, "executions": 1},
                                condition="attribute_not_exists(pk)")
                break
            except PreconditionFailed:
                run_id += 1  # another process took this id: take the next
        else:
            raise Fatal(f"manifest: no free run id for job {self.job!r} after {_RUN_ID_ATTEMPTS} attempts")
        self.run_id = run_id
        self._index_job(source, destination, args)
        with self._lock:
            for shard in shards:
                self._buffer[(self._pk_shard(run_id), shard.shard_id)] = (
                    "cp", Checkpoint(shard, PENDING, "", Tally(), run_id))
        self.flush()
        # Only a run whose whole plan is durable may be resumed: a crash before this leaves it 'planning'.
        self._table.call("update_item", TableName=self._table.name, Key=item_key(self._pk_run, f"{run_id:012d}"),
                         UpdateExpression="SET #s = :s", ExpressionAttributeNames={"#s": "status"},
                         ExpressionAttributeValues=enc({":s": "running"}))
        self._table.count_items(1)
        return run_id

    def resume_run(self, run_id: int, source: str = "", destination: str = "",
                   args: Sequence[str] = ()) -> list[Checkpoint]:
        """Take over run `run_id` (one more execution of it) and return its checkpoints; (re)writes the job's
        index item. Raises DthError."""
        self.run_id = run_id
        self._index_job(source, destination, args)
        self._table.call("update_item", TableName=self._table.name, Key=item_key(self._pk_run, f"{run_id:012d}"),
                         UpdateExpression="SET #s = :s, #e = if_not_exists(#e, :one) + :one",
                         ExpressionAttributeNames={"#s": "status", "#e": "executions"},
                         ExpressionAttributeValues=enc({":s": "running", ":one": 1}))
        self._table.count_items(1)
        return self.checkpoints(run_id)

    def _index_job(self, source: str, destination: str, args: Sequence[str]) -> None:
        self._table.put({"pk": _JOBS_PK, "sk": self._jp, "job": self.job, "source": source,
                         "destination": destination, "args": json.dumps(list(args)), "updated": time.time()})

    def jobs(self) -> list[JobInfo]:
        """Every job in the table's index with its latest run, the most recently active first. Raises DthError."""
        self._raise_pending()
        out = []
        for entry in self._table.query(_JOBS_PK):
            jp = entry["sk"]
            latest = next(iter(self._table.query(f"{jp}#run", forward=False, page=1)), None)
            if latest is None:
                continue  # its run items were removed (by hand): nothing to show
            run = _run_from(latest)
            if run.status == SUCCEEDED:
                checkpoints = []
            elif jp == self._jp:
                checkpoints = self.checkpoints(run.run_id)  # with this instance's buffered ones
            else:
                checkpoints = [_cp_from(item, run.run_id) for item in self._table.query(f"{jp}#shard#{run.run_id:012d}")]
            source, destination = entry.get("source", ""), entry.get("destination", "")
            if not (source or destination):
                source, destination = pairing_from_report(run.report)
            out.append(job_info(entry["job"], run, source, destination, checkpoints,
                                tuple(json.loads(entry.get("args", "[]")))))
        return sorted(out, key=lambda info: (-(info.run.finished or info.run.started), info.job))

    def finish_run(self, status: str, report: dict) -> None:
        """Flush everything, then mark the run finished. Raises DthError."""
        self._raise_pending()
        self.flush()
        if not self.run_id:
            return
        name, value = _report_value(report)
        other = "report_z" if name == "report" else "report"
        try:
            self._table.call("update_item", TableName=self._table.name,
                             Key=item_key(self._pk_run, f"{self.run_id:012d}"),
                             UpdateExpression="SET #f = :f, #s = :s, #r = :r REMOVE #o",
                             ConditionExpression="attribute_exists(pk)",
                             ExpressionAttributeNames={"#f": "finished", "#s": "status", "#r": name, "#o": other},
                             ExpressionAttributeValues=enc({":f": time.time(), ":s": status, ":r": value}))
        except PreconditionFailed:
            log.warning("manifest: run %d of job %r is not recorded; its end is not stored", self.run_id, self.job)
            return
        self._table.count_items(1)

    def checkpoints(self, run_id: int) -> list[Checkpoint]:
        self._raise_pending()
        pk = self._pk_shard(run_id)
        memory = self._memory()
        found = {item["sk"]: _cp_from(item, run_id) for item in self._table.query(pk)}
        found.update({sk: value for (mpk, sk), (_, value) in memory.items() if mpk == pk})
        return [found[sid] for sid in sorted(found)]

    def checkpoint(self, run_id: int, shard_id: str) -> Checkpoint | None:
        """One shard's checkpoint in a run (where a lost worker's shard is redone from)."""
        self._raise_pending()
        pk = self._pk_shard(run_id)
        buffered = self._memory().get((pk, shard_id))
        if buffered is not None:
            return buffered[1]
        item = self._table.get(pk, shard_id)
        return _cp_from(item, run_id) if item else None

    def covering_checkpoint(self, key: str) -> Checkpoint | None:
        return covering_in_recent_runs(self, key)

    # ---- per-object records

    def record(self, records: Sequence[ObjectRecord], checkpoints: Sequence[Checkpoint] = (),
               live: LiveReport | None = None) -> Share | None:
        """Buffer a batch of per-object results and shard checkpoints; keep the live progress; return the
        worker's share of the job's budgets.

        Raises Fatal for a key longer than 1024 bytes, or the error of a failed earlier flush (the batch is
        then not taken).
        """
        self._raise_pending()
        for rec in records:
            if not 0 < _nbytes(rec.key) <= SORT_KEY_BYTES:
                raise Fatal(f"manifest=dynamodb keeps source keys of 1 to {SORT_KEY_BYTES} bytes; "
                            f"a key of {_nbytes(rec.key)} bytes cannot be recorded")
        self._make_room(len(records) + len(checkpoints))
        with self._lock:
            for rec in records:
                key = (self._pk_obj, rec.key)
                current = self._buffer.get(key) or self._inflight.get(key)
                if rec.status != COPIED and current is not None and current[1].status == COPIED:
                    continue  # a failure never overwrites what was copied
                self._buffer[key] = ("obj", rec if rec.run_id else dataclasses.replace(rec, run_id=self.run_id))
            now = time.time()
            for rec in records:
                if rec.status != COPIED:
                    row = failure_row(rec, rec.run_id or self.run_id, now)
                    self._buffer[(self._pk_fail(row.run_id), rec.key)] = ("fail", row)
            for cp in checkpoints:
                # A copy as stored (failures capped): the caller may go on mutating its Tally.
                cp = dataclasses.replace(cp, run_id=cp.run_id or self.run_id,
                                         tally=Tally.from_dict(cp.tally.to_dict(CHECKPOINT_FAILURES)))
                self._buffer[(self._pk_shard(cp.run_id), cp.shard.shard_id)] = ("cp", cp)
        return self._live.add(live)  # the worker's share of the job's budgets

    def records_page(self, prefix: str, start_after: str, end_at: str, limit: int) -> list[Record]:
        """Records (copied or failed) for source keys under `prefix`, start_after < key <= end_at, key order."""
        self._raise_pending()
        if limit <= 0:
            return []

        def wanted(key: str) -> bool:
            return key > start_after and key.startswith(prefix) and (not end_at or key <= end_at)

        memory = {sk: value for (pk, sk), (_, value) in self._memory().items()
                  if pk == self._pk_obj and wanted(sk)}
        lows = [b for b in (start_after, prefix) if _usable_bound(b)]
        highs = [b for b in (end_at, prefix_end(prefix)) if _usable_bound(b)]
        low, high = (max(lows) if lows else ""), (min(highs) if highs else "")
        if low and high and low > high:
            return []
        cond, values = "", {}
        if low and high:
            cond, values = "#sk BETWEEN :lo AND :hi", {":lo": {"S": low}, ":hi": {"S": high}}
        elif low:
            cond, values = "#sk >= :lo", {":lo": {"S": low}}
        elif high:
            cond, values = "#sk <= :hi", {":hi": {"S": high}}
        stored: dict[str, ObjectRecord] = {}
        for item in self._table.query(self._pk_obj, cond, values, page=min(limit + 2, 1000)):
            if wanted(item["sk"]):
                stored[item["sk"]] = _obj_from(item)
                if len(stored) >= limit:
                    break  # any buffered key past this one is past the page too
        for key, rec in memory.items():
            old = stored.get(key)
            if rec.status == COPIED or old is None or old.status != COPIED:
                stored[key] = rec
        return [Record(key=k, src_etag=stored[k].src_etag, src_size=stored[k].size, dst_etag=stored[k].dst_etag,
                       run_id=stored[k].run_id)
                for k in sorted(stored)[:limit]]

    def lookup(self, key: str) -> ObjectRecord | None:
        self._raise_pending()
        buffered = self._memory().get((self._pk_obj, key))
        if buffered is not None and buffered[1].status == COPIED:
            return buffered[1]
        stored = None
        if 0 < _nbytes(key) <= SORT_KEY_BYTES:
            item = self._table.get(self._pk_obj, key)
            stored = _obj_from(item) if item else None
        if buffered is None or (stored is not None and stored.status == COPIED):
            return stored
        return buffered[1]

    # ---- multipart uploads

    def _pk_part(self, dst_key: str, upload_id: str) -> str:
        return f"{self._jp}#part#{_digest(dst_key, upload_id)[:32]}"

    def upload_opened(self, upload: UploadState) -> None:
        """Record an upload, written through (the id is durable before its first part is sent). An empty
        upload_id is an intent (a Create about to be sent); the real id of the key replaces it atomically.
        Raises DthError."""
        self._raise_pending()
        item = {"pk": self._pk_upload, "sk": _upload_sk(upload.dst_key, upload.upload_id),
                "dst_key": upload.dst_key, "upload_id": upload.upload_id, "src_etag": upload.src_etag,
                "size": upload.size, "part_size": upload.part_size_bytes, "run_id": upload.run_id or self.run_id,
                "created": time.time()}
        if upload.upload_id:
            self._table.put_replacing(item, self._pk_upload, _upload_sk(upload.dst_key, ""))
        else:
            self._table.put(item)

    def parts_sent(self, dst_key: str, upload_id: str, parts: Sequence[PartInfo]) -> None:
        self._raise_pending()
        self._make_room(len(parts))
        pk = self._pk_part(dst_key, upload_id)
        with self._lock:
            for part in parts:
                self._buffer[(pk, f"{part.part_number:05d}")] = ("part", part)

    def upload_closed(self, dst_key: str, upload_id: str) -> None:
        """Forget an upload and its parts: parts first, the upload item last. Raises DthError."""
        self._raise_pending()
        pk = self._pk_part(dst_key, upload_id)
        with self._flush_lock:  # no flush in flight can write a part back after the delete
            with self._lock:
                for key in [k for k in self._buffer if k[0] == pk]:
                    del self._buffer[key]
            sks = [item["sk"] for item in self._table.query(pk, attributes=("sk",))]
            for start in range(0, len(sks), BATCH_WRITE_ITEMS):
                self._table.batch_write([{"DeleteRequest": {"Key": item_key(pk, sk)}}
                                         for sk in sks[start:start + BATCH_WRITE_ITEMS]])
            self._table.delete(self._pk_upload, _upload_sk(dst_key, upload_id))

    def find_uploads(self, dst_key: str) -> list[UploadState]:
        """Open uploads recorded for exactly this destination key (never a prefix match), newest first."""
        self._raise_pending()
        memory = self._memory()
        found = []
        head = {":head": {"S": _upload_head(dst_key) + "\0"}}
        for item in self._table.query(self._pk_upload, "begins_with(#sk, :head)", head):
            if item["dst_key"] != dst_key:
                continue
            pk = self._pk_part(dst_key, item["upload_id"])
            parts = {int(p["sk"]): PartInfo(int(p["sk"]), p["etag"], int(p.get("size", 0)))
                     for p in self._table.query(pk, attributes=("sk", "etag", "size"))}
            parts.update({value.part_number: value for (mpk, _), (_, value) in memory.items() if mpk == pk})
            found.append((item["created"], UploadState(dst_key, item["upload_id"], item["src_etag"],
                                                       int(item["size"]), int(item["part_size"]), parts,
                                                       int(item["run_id"]))))
        return [upload for _, upload in sorted(found, key=lambda pair: pair[0], reverse=True)]

    def open_uploads(self) -> list[tuple[str, str]]:
        self._raise_pending()
        return sorted((item["dst_key"], item["upload_id"]) for item in self._table.query(self._pk_upload))

    def failures_page(self, run_id: int, start_after: str, limit: int) -> list[FailureRow]:
        """Up to `limit` failed keys of run `run_id` after `start_after`, in key order, less those a later
        execution of the run copied (a copy recorded after the failure). Raises DthError."""
        self._raise_pending()
        if limit <= 0:
            return []
        pk = self._pk_fail(run_id)
        memory = self._memory()
        buffered = {sk: value for (mpk, sk), (_, value) in memory.items() if mpk == pk and sk > start_after}
        out: list[FailureRow] = []
        after = start_after
        while len(out) < limit:
            cond, values = ("#sk > :lo", {":lo": {"S": after}}) if _usable_bound(after) else ("", None)
            # islice: the query would go on through the whole partition; one request of `limit` is enough
            page = [_failure_from(item) for item in itertools.islice(self._table.query(pk, cond, values, page=limit),
                                                                     limit)]
            ended = len(page) < limit
            rows = {row.key: row for row in page}
            bound = page[-1].key if page and not ended else None
            rows.update({k: v for k, v in buffered.items() if k > after and (bound is None or k <= bound)})
            out.extend(self._still_failed(sorted(rows.values(), key=lambda row: row.key), memory))
            if ended or not page:
                break
            after = bound
        return out[:limit]

    def _still_failed(self, rows: list[FailureRow], memory: dict) -> list[FailureRow]:
        """`rows` less the keys whose object record is a copy made after the failure."""
        stored = self._table.batch_items([(self._pk_obj, row.key) for row in rows
                                          if (self._pk_obj, row.key) not in memory], ("status", "updated"))
        kept = []
        for row in rows:
            buffered = memory.get((self._pk_obj, row.key))
            if buffered is not None:
                copied_after = buffered[1].status == COPIED  # buffered now: newer than any stored failure
            else:
                item = stored.get((self._pk_obj, row.key)) or {}
                copied_after = item.get("status") == COPIED and float(item.get("updated", 0)) >= row.updated
            if not copied_after:
                kept.append(row)
        return kept

    # ---- live state

    def publish(self, live: LiveRecord) -> None:
        """Replace run `live.run_id`'s progress record (one PutItem, written through). Raises DthError."""
        self._table.put({"pk": self._pk_live, "sk": f"{live.run_id:012d}", "heartbeat": live.heartbeat,
                         "record": live.to_json()})

    def live(self, run_id: int) -> LiveRecord | None:
        """Run `run_id`'s newest progress record, if its driver published one. Raises DthError."""
        item = self._table.get(self._pk_live, f"{run_id:012d}")
        return LiveRecord.from_json(item["record"]) if item else None

    def write_counts(self) -> tuple[int, int]:
        """(write requests, items written) by this instance; buffered items count once flushed."""
        return self.writes, self.items_written

    def progress(self) -> Progress:
        """Shard tallies changed since the last call, and the objects and bytes in flight now."""
        return self._live.take()

    def pace_reports(self) -> dict[str, tuple[float, ...]]:
        return self._live.pace_reports()

    def set_shares(self, shares: dict[str, Share], newcomer: Share | None) -> None:
        self._live.set_shares(shares, newcomer)

    def close(self) -> None:
        """Stop the flush thread and flush what is left. Raises DthError if that fails (call again to retry)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self.flush()
