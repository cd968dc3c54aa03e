"""Transfer worker: lists one shard on both sides, merge-joins it, and copies what differs, many at a time.

A plain class: the scheduler builds it in the driver's own thread (the driver lane) or wraps it with
`ray.remote` as an actor. Only metadata leaves it: batched manifest records, live progress and a ShardResult;
bytes stay inside. Items it runs: `run_shard` (sync), `verify_shard`, `delete_keys` and `apply_events`
(runtime/reconcile.py). `stop()` asks it to wind down at a safe point (an interrupt).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import socket
from collections.abc import AsyncIterator, Callable
from typing import Any

from dth_ray.engine import landing
from dth_ray.engine.budget import ByteBudget, budget_for_link
from dth_ray.engine.context import CopySettings
from dth_ray.engine.copier import Copier
from dth_ray.engine.landing import Landing
from dth_ray.engine.limits import Limits
from dth_ray.engine.pacing import SourcePace, paced
from dth_ray.engine.ratelimit import AdaptiveLimit
from dth_ray.engine.verify import same_content, same_stored_checksum
from dth_ray.errors import ConfigError, DthError, Fatal, NotFound, Unreadable, error_class
from dth_ray.gctune import tune as tune_gc
from dth_ray.model import (
    ByteRange,
    ObjectMeta,
    PartInfo,
    Shard,
    ShardResult,
    ShardTask,
    Tally,
    UploadState,
    VerifyTally,
)
from dth_ray.ops.logs import error_fields, fields, relayed_lines, setup_actor_logging
from dth_ray.plan.diff import COPY, SKIP, Record, merge_join, needs_record
from dth_ray.plan.keys import dest_key, src_key_for
from dth_ray.plan.verify import DIFFER, MATCH, READ, classify
from dth_ray.runtime import shardstate as outcome
from dth_ray.runtime.calls import call_manifest
from dth_ray.runtime.manifest import DONE, PENDING, Checkpoint, LiveReport, ObjectRecord
from dth_ray.runtime.metrics import ActorMetrics
from dth_ray.runtime.objectreport import COPIED, FAILED, SKIPPED, PartWriter, make_row
from dth_ray.runtime.pool import local_node_id
from dth_ray.runtime.preflight import probe
from dth_ray.runtime.rayhost import ray_is_up
from dth_ray.runtime.reconcile import Reconciler
from dth_ray.runtime.shardstate import ListingCursor, SettledKeys
from dth_ray.settings import WorkerSettings
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
_PAGE_KEYS = 1000
_FLUSH_RECORDS = 2000
GONE = "gone_since_inventory"  # skipped: in the inventory, no longer at the source


def _named_actor(name: str):
    import ray

    return ray.get_actor(name)


class _UploadJournal:
    """The copier's upload journal on the manifest: upload ids are durable before their first part."""

    def __init__(self, manifest: Any):
        self._manifest = manifest

    async def upload_opened(self, upload: UploadState) -> None:
        await call_manifest(self._manifest, "upload_opened", upload)

    async def parts_sent(self, dst_key: str, upload_id: str, parts: list[PartInfo]) -> None:
        await call_manifest(self._manifest, "parts_sent", dst_key, upload_id, parts)

    async def upload_closed(self, dst_key: str, upload_id: str) -> None:
        await call_manifest(self._manifest, "upload_closed", dst_key, upload_id)

    async def find_uploads(self, dst_key: str) -> list[UploadState]:
        return await call_manifest(self._manifest, "find_uploads", dst_key)


class _Peers:
    """The other transfer actors, which send shares of this actor's large uploads (see Copier.send_parts)."""

    def __init__(self) -> None:
        self.handles: list = []

    def peers(self) -> int:
        return len(self.handles)

    async def send_parts(self, peer: int, meta: ObjectMeta, dst_key: str, upload_id: str,
                         parts: list[tuple[int, ByteRange]]) -> list[tuple[PartInfo, str]]:
        return await self.handles[peer].upload_parts.remote(meta, dst_key, upload_id, parts)


class TransferWorker:
    """One transfer worker: its own store clients, byte budget and request caps, shared by its items."""

    def __init__(self, settings: WorkerSettings, manifest: Any, worker_id: str = "",
                 with_ray: Callable[[], bool] = ray_is_up):
        """`manifest`: the manifest actor's name (inside Ray) or a manifest object (the driver lane, tests).
        `with_ray`: whether Ray runs (or is about to) beside this worker: its budget is the near one then
        (see `_fit_budget`)."""
        setup_actor_logging(settings.log_level, settings.log_format)  # first: the stores below may log
        self.settings = settings
        self._manifest = _named_actor(manifest) if isinstance(manifest, str) else manifest
        self._worker_id = worker_id or f"worker-{id(self):x}"
        self._node_id = local_node_id()
        self._src = open_store(settings.source, "source")
        self._dst = open_store(settings.destination, "destination")
        tune_gc()  # the first worker of a process (an actor's, or the driver's lane), after its imports
        t = settings.transfer
        self._copy_settings = CopySettings(
            multipart_threshold_bytes=t.multipart_threshold_bytes, part_size_bytes=t.part_size_bytes,
            parts_in_flight=t.parts_in_flight, max_attempts=t.max_attempts,
            server_side_bucket=settings.source.bucket if t.server_side_copy and _same_service(settings) else "",
            spread_threshold_bytes=t.spread_threshold_bytes, get_range_bytes=t.get_range_bytes,
            copy_cutoff_bytes=t.copy_cutoff_bytes, resume_parts=t.resume_parts)
        self._peers = _Peers()
        self._staging = open_store(settings.staging) if settings.staging is not None else None
        self._report = PartWriter(settings.report) if settings.report is not None else None
        self._metrics = ActorMetrics(settings.job)
        self._copier: Copier | None = None
        self._limits: Limits | None = None
        self._pace: SourcePace | None = None
        self._slots: asyncio.Semaphore | None = None
        self._reconciler: Reconciler | None = None
        self._pending: list[ObjectRecord] = []
        self._checkpoints: list[Checkpoint] = []
        self._active: dict[str, SettledKeys] = {}
        self._totals = Tally()  # every result this worker counted (metrics)
        self._objects_in_flight = 0
        self._bytes_in_flight = 0
        self._landing: set[Landing] = set()  # the objects in flight: how much of each is read
        self._ahead = [0, 0]  # objects and bytes the shards' listings returned that are not decided yet
        self._errors: dict[str, int] = {}  # store requests that failed so far, by class (progress and metrics)
        self._flush_lock: asyncio.Lock | None = None
        self._flusher: asyncio.Task | None = None
        self._stopping = False
        self._with_ray = with_ray

    def _setup(self) -> None:
        """Create loop-bound state lazily, inside the worker's event loop."""
        if self._copier is not None:
            return
        t = self.settings.transfer
        self._limits = Limits(budget=ByteBudget(self._budget_bytes()), concurrency=AdaptiveLimit(t.concurrency * 2))
        self._pace = SourcePace(t.max_requests_per_s, t.max_bandwidth_bytes_per_s)
        self._src = paced(self._src, self._pace)  # listing, copies and checks: the job's budgets hold for all
        self._copier = Copier(self._src, self._dst, self._src.features, self._dst.features, self._copy_settings,
                              self._limits, _UploadJournal(self._manifest), self._peers)
        self._slots = asyncio.Semaphore(t.concurrency)
        self._flush_lock = asyncio.Lock()
        self._reconciler = Reconciler(self.settings, self._src, self._dst, self._copier, self._limits,
                                      self._slots, self._pending, self._manifest)
        self._flusher = asyncio.ensure_future(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        """Progress and records reach the manifest at least every interval, even mid-way through big copies."""
        while True:
            await asyncio.sleep(self.settings.transfer.progress_interval_s)
            try:
                await self._flush()
            except DthError as exc:  # the manifest refused a batch: the items stay here and go next time
                log.warning("manifest flush failed: %s", error_class(exc),
                            extra=fields(job=self.settings.job, **error_fields(exc)))

    # ---- control (called by the scheduler)

    def node_id(self) -> str:
        return self._node_id

    def log_lines(self) -> list[str]:
        """Log lines for the driver to print, where no log monitor copies them (ops/logs.relay_to_driver)."""
        return relayed_lines()

    async def check_credentials(self, listing: str = "") -> str:
        """Resolve both stores' credentials here, where the copies run, and list one key of each: '' when
        both answer, else a one-line error (runtime/credcheck.py fails the run with it before any shard is
        dispatched). On a cluster, keys are read on each node, not where the driver runs. With `listing` (a
        run planned from an inventory) the source is not listed: that shard's staged rows are read and their
        first key HEADed (a key gone since the inventory still proves the keys work)."""
        try:
            if listing:
                self._setup()
                try:
                    staged = await self._staged(Shard("check", "", listing=listing))
                except DthError as exc:
                    raise ConfigError(f"the staged inventory rows {listing!r} could not be read ({error_class(exc)})"
                                      ) from None
                from dth_ray.inventory.staged import check_source_key

                await check_source_key(self._src, staged, self.settings.source.credentials)
            for spec, role in ((self.settings.source, "source"), (self.settings.destination, "destination")):
                if role == "destination" or not listing:
                    await probe(spec, role)
        except ConfigError as exc:
            return (f"{exc} (checked on a transfer actor on node {_node_address()}: credentials are read "
                    "where the actors run, so every Ray node needs them: env:NAME in each node's own "
                    "environment, or use secret:ID, role:ARN or an instance role)")
        return ""

    def set_peers(self, handles: list) -> None:
        """The other transfer actors' handles (the scheduler sends them once all actors exist)."""
        self._peers.handles = list(handles)

    def stop(self) -> None:
        """Wind down: shards take no new object, let the copies in flight finish and return (interrupted)."""
        self._stopping = True

    async def upload_parts(self, meta: ObjectMeta, dst_key: str, upload_id: str,
                           parts: list[tuple[int, ByteRange]]) -> list[tuple[PartInfo, str]]:
        """Send a peer's share of a large upload (bytes go source → destination here, never through Ray)."""
        self._setup()
        return await self._copier.send_parts(meta, dst_key, upload_id, parts)

    @property
    def src_features(self):
        return self._src.features

    @property
    def dst_features(self):
        return self._dst.features

    # ---- listing and diff

    async def _pages(self, store: Any, prefix: str, start_after: str, end_at: str, delimiter: str
                     ) -> AsyncIterator[list[ObjectMeta]]:
        token = ""
        while True:
            page = await store.list_page(prefix, start_after=start_after, token=token, delimiter=delimiter,
                                         max_keys=_PAGE_KEYS)
            objects = page.objects
            if end_at and objects and objects[-1].key > end_at:
                yield [o for o in objects if o.key <= end_at]
                return
            yield objects
            if not page.next_token:
                return
            token = page.next_token

    async def _staged(self, shard: Shard):
        """The shard's staged inventory rows (Shard.listing, a StagedRows). Raises Fatal without the staging
        settings. pyarrow is imported here, by workers of runs planned from an inventory only."""
        from dth_ray.inventory.staged import StagedRows

        if self._staging is None:
            raise Fatal(f"shard {shard.shard_id} was planned from an inventory: run it with source.inventory set")
        got = await self._limits.call(lambda: self._staging.get(shard.listing))
        return StagedRows(got.data)

    async def _record_pages(self, shard: Shard) -> AsyncIterator[list[Record]]:
        start_after = shard.start_after
        while True:
            page = await call_manifest(self._manifest, "records_page", shard.prefix, start_after, shard.end_at,
                                       _PAGE_KEYS)
            yield [r for r in page if shard.contains(r.key)]
            if len(page) < _PAGE_KEYS:
                return
            start_after = page[-1].key

    async def decisions(self, shard: Shard):
        """Merge-join the shard window by window: one source page and the destination keys up to it."""
        src_prefix, dst_prefix = self.settings.source.prefix, self.settings.destination.prefix

        def to_dst(key: str) -> str:
            return dest_key(key, src_prefix, dst_prefix)

        def bound_to_dst(key: str) -> str:
            return to_dst(key) if key else ""  # '' is an open bound, not a key

        staged = await self._staged(shard) if shard.listing else None
        if staged is not None:
            from dth_ray.inventory.staged import DESTINATION, SOURCE, async_pages
        if staged is not None and staged.has_destination:
            dst_pages = async_pages(staged.pages(DESTINATION, bound_to_dst(shard.start_after), bound_to_dst(shard.end_at),
                                               _PAGE_KEYS))
        else:
            dst_pages = self._pages(self._dst, to_dst(shard.prefix), bound_to_dst(shard.start_after),
                                    bound_to_dst(shard.end_at), shard.delimiter)
        src_pages = (async_pages(staged.pages(SOURCE, shard.start_after, shard.end_at, _PAGE_KEYS)) if staged is not None
                     else self._pages(self._src, shard.prefix, shard.start_after, shard.end_at, shard.delimiter))
        dst = ListingCursor(dst_pages, lambda m: m.key)
        records = ListingCursor(self._record_pages(shard), lambda r: r.key)
        join = dict(src_prefix=src_prefix, dst_prefix=dst_prefix, compare=self.settings.compare,
                    src_features=self._src.features, dst_features=self._dst.features,
                    key_filter=self.settings.key_filter)
        ahead = self._ahead
        async for page in src_pages:
            if not page:
                continue
            bound = page[-1].key
            # Listed but not decided yet: the progress display's planned total counts them already.
            left = [len(page), sum(o.size for o in page)]
            ahead[0] += left[0]
            ahead[1] += left[1]
            try:
                dst_batch = await dst.take_through(to_dst(bound))
                rec_batch = await records.take_through(bound)
                for decision in merge_join(page, dst_batch, rec_batch, **join):
                    if decision.src is not None:
                        size = decision.src.size
                        left[0], left[1], ahead[0], ahead[1] = left[0] - 1, left[1] - size, ahead[0] - 1, ahead[1] - size
                    yield decision
            finally:
                ahead[0] -= left[0]  # filtered out, or the listing stopped
                ahead[1] -= left[1]
        for decision in merge_join([], await dst.take_through(None), [], **join):
            yield decision

    # ---- sync: one shard

    async def run_shard(self, task: ShardTask) -> ShardResult:
        """List, diff and copy one shard from `task.watermark` on, adding to `task.base`; returns its exact
        tally (each object counted once) and the watermark it settled up to. A listing error returns the
        result with `error` set (the scheduler's client decides on a retry); `stop()` returns it early with
        `interrupted` set."""
        self._setup()
        shard = task.shard
        settled = SettledKeys(shard, task.base if task.base is not None else Tally(), task.watermark, task.seq,
                              report=self._report is not None and not self.settings.dry_run, run_id=task.run_id)
        settled.tally.max_changes = self.settings.dry_run_changes
        todo = dataclasses.replace(shard, start_after=task.watermark) if task.watermark else shard
        tasks: set[asyncio.Task] = set()
        dry_run, note_extras = self.settings.dry_run, self.settings.note_extras
        src_prefix, dst_prefix = self.settings.source.prefix, self.settings.destination.prefix
        self._active[shard.shard_id] = settled
        where = fields(job=self.settings.job, run_id=task.run_id or None, shard=shard.shard_id)  # log fields
        error = ""
        try:
            async for decision in self.decisions(todo):
                if self._stopping:
                    break
                src = decision.src
                if src is None:  # only at the destination: a delete candidate with sync.delete (deletes.py)
                    if note_extras:
                        self._now(settled, src_key_for(decision.dst.key, src_prefix, dst_prefix),
                                  functools.partial(outcome.destination_only, decision.dst.key, decision.dst.size))
                    continue
                seen = note_extras and decision.dst is not None
                if decision.action == SKIP:
                    self._skip(settled, decision, task, seen)
                    continue
                assert decision.action == COPY
                if dry_run:
                    multipart = src.size >= min(self._copy_settings.multipart_threshold_bytes,
                                                self._limits.budget.capacity_bytes)
                    result = functools.partial(outcome.would_copy, src.key, src.size, decision.reason, multipart)
                    self._now(settled, src.key, outcome.seen_too(result) if seen else result)
                    continue
                await self._slots.acquire()
                self._objects_in_flight += 1
                self._bytes_in_flight += src.size
                entry = settled.open(src.key)
                copy = asyncio.ensure_future(self._copy_one(src, decision, settled, entry, seen, task, where))
                tasks.add(copy)
                copy.add_done_callback(tasks.discard)
                if len(self._pending) >= _FLUSH_RECORDS:
                    await self._flush()
        except DthError as exc:
            # Listing failed after the store's retries: let in-flight copies finish (they are recorded) and
            # hand the shard back with its watermark; the driver re-runs it from there.
            error = f"{error_class(exc)}: {exc}"
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        interrupted = self._stopping and not error
        del self._active[shard.shard_id]
        if not dry_run:
            status = DONE if not error and not interrupted else PENDING
            if status == DONE or settled.dirty or settled.rows:
                async with self._flush_lock:  # after a periodic flush's part of this shard, never beside it
                    self._checkpoints.append(await self._checkpoint(settled, status, final=True))
        await self._flush(final={shard.shard_id: (settled.seq, settled.live)})
        return ShardResult(shard.shard_id, settled.tally, self._node_id, error, settled.watermark, interrupted)

    def _now(self, settled: SettledKeys, key: str, result, row: tuple | None = None) -> None:
        result(self._totals)
        settled.now(key, result, row)

    def _row(self, settled: SettledKeys, src: ObjectMeta, dst_key: str, dst: ObjectMeta | None, result: str,
             reason: str, attempts: int, run_id: int, **dst_sums: str) -> tuple | None:
        """A completion-report row for the shard, when it keeps them (report_objects)."""
        if settled.rows is None:
            return None
        return make_row(src, self._src.features, dst_key, dst, result, reason, attempts, run_id, **dst_sums)

    def _skip(self, settled: SettledKeys, decision, task: ShardTask, seen: bool) -> None:
        """A skip, or — redoing a shard after a loss — an object the lost worker copied: equal at the
        destination and stored there since this run started (or recorded by this run), counted copied."""
        src, dst, record = decision.src, decision.dst, decision.record
        equal = not decision.reason.startswith("unreadable")
        if task.recount_since and equal and dst is not None and (
                dst.stored_at >= task.recount_since or (record is not None and record.run_id == task.run_id)):
            result = functools.partial(outcome.recovered, src.size)
            row = self._row(settled, src, decision.dst_key, dst, COPIED, "recovered", 0, task.run_id)
        else:
            result = functools.partial(outcome.skipped, src.size, decision.reason)
            row = self._row(settled, src, decision.dst_key, dst, SKIPPED, decision.reason, 0, task.run_id)
        self._now(settled, src.key, outcome.seen_too(result) if seen else result, row)

    async def _fit_budget(self) -> None:
        """Hold the budget that fits where this worker runs and how far the source is (engine.budget
        budget_for_link): `transfer.near_buffer_size` beside Ray for a source that answers within 10 ms, the
        full `transfer.buffer_size` otherwise. An object larger than the budget then goes in parts."""
        capacity_bytes = self._budget_bytes()
        if self._limits.budget.capacity_bytes != capacity_bytes:
            rtt_s = self._copier.source_rtt_s()
            log.info("byte budget %d bytes (Ray beside this worker: %s; source round trip: %s)", capacity_bytes,
                     self._with_ray(), "unknown" if rtt_s is None else f"{rtt_s * 1e3:.2f} ms",
                     extra=fields(job=self.settings.job))
            await self._limits.budget.resize(capacity_bytes)

    def _budget_bytes(self) -> int:
        t = self.settings.transfer
        if not t.near_buffer_bytes or not self._with_ray():  # (the common case: no RTT to look up)
            return t.buffer_bytes
        return budget_for_link(t.buffer_bytes, t.near_buffer_bytes, True,
                               self._copier.source_rtt_s() if self._copier is not None else None)

    async def _copy_one(self, src: ObjectMeta, decision, settled: SettledKeys, entry: list, seen: bool,
                        task: ShardTask, where: dict[str, Any]) -> None:
        """Copy one object and settle its result (and its report row); `where` holds the log fields of its
        shard (job, run_id)."""
        result = row = None
        await self._fit_budget()
        dst_key, run_id = decision.dst_key, task.run_id
        progress = Landing(src.size)
        self._landing.add(progress)
        landing.current.set(progress)  # this task's context: the reads under this copy add to it
        try:
            copied = await self._copier.copy(src, dst_key)
        except Unreadable as exc:
            reason = f"unreadable:{src.storage_class or 'archived'}"
            result = functools.partial(outcome.skipped, src.size, reason)
            row = self._row(settled, src, dst_key, None, SKIPPED, reason, exc.attempts, run_id)
            log.warning("skipped unreadable object key=%s error=%s", src.key, error_class(exc),
                        extra={**where, "key": src.key, **error_fields(exc)})
        except DthError as exc:
            if isinstance(exc, NotFound) and task.shard.listing and await self._gone(src.key):
                result = functools.partial(outcome.skipped, src.size, GONE)
                row = self._row(settled, src, dst_key, None, SKIPPED, GONE, exc.attempts, run_id)
            else:
                error = f"{error_class(exc)}: {exc}"
                result = functools.partial(outcome.failed, src.size, src.key, error)
                row = self._row(settled, src, dst_key, None, FAILED, error, exc.attempts, run_id)
                self._pending.append(ObjectRecord(src.key, src.size, src.etag, dst_key, "", "failed", error,
                                                  code=exc.code, attempts=exc.attempts))
                log.warning("copy failed key=%s error=%s attempts=%d", src.key, error_class(exc), exc.attempts,
                            extra={**where, "key": src.key, **fields(attempt=exc.attempts or None),
                                   **error_fields(exc)})
        except Exception as exc:  # a bug must fail one object, not the shard's accounting
            error = f"Fatal: unexpected {type(exc).__name__}"
            result = functools.partial(outcome.failed, src.size, src.key, error)
            row = self._row(settled, src, dst_key, None, FAILED, error, 1, run_id)
            log.exception("unexpected error copying key=%s", src.key, extra={**where, "key": src.key})
        else:
            result = functools.partial(outcome.copied, src.size, copied)
            row = self._row(settled, copied.src, dst_key, None, COPIED, decision.reason, copied.attempts, run_id,
                            dst_etag=copied.dst_etag, dst_checksum=copied.dst_checksum)
            multipart = copied.part_size_bytes > 0
            if decision.record is not None or needs_record(copied.src, copied.dst_etag, self._src.features,
                                                           self._dst.features, multipart):
                self._pending.append(ObjectRecord(
                    src.key, copied.src.size, copied.src.etag or copied.src.checksum, dst_key, copied.dst_etag,
                    "copied", "", copied.verified_source))
        finally:
            self._objects_in_flight -= 1
            self._bytes_in_flight -= src.size
            self._landing.discard(progress)
            self._slots.release()
            if result is not None:
                result = outcome.seen_too(result) if seen else result
                result(self._totals)
                settled.close(entry, result, row)

    async def _gone(self, key: str) -> bool:
        """Whether the source no longer has `key` (a HEAD answers NotFound)."""
        try:
            await self._limits.call(lambda: self._src.head(key))
        except NotFound:
            return True
        except DthError:
            return False
        return False

    # ---- verify: one shard

    async def verify_shard(self, shard: Shard, full: bool) -> VerifyTally:
        """Compare one shard of source and destination: missing, differing and extra objects. Objects the
        listings and the manifest cannot vouch for (or every object, when `full`) are read on both sides."""
        self._setup()
        found = VerifyTally()
        tasks: set[asyncio.Task] = set()
        unreadable = self._src.features.unreadable_storage_classes
        try:
            async for decision in self.decisions(shard):
                src, dst = decision.src, decision.dst
                if src is None:
                    found.note("extra", dst.key)
                    continue
                found.checked += 1
                archived = bool(src.storage_class) and src.storage_class in unreadable
                if dst is None and archived:
                    found.unreadable += 1  # a sync skips it too (archived, or a local symlink): not missing
                    continue
                if dst is None:
                    found.note("missing", src.key)
                    continue
                if archived:
                    verdict = MATCH if src.size == dst.size else DIFFER  # archived: only the size is readable
                else:
                    verdict, _ = classify(src, dst, decision.record, full, self._src.features, self._dst.features)
                if verdict == READ:
                    await self._slots.acquire()
                    task = asyncio.ensure_future(self._read_both(src, dst, found, full))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif verdict == MATCH:
                    found.matched += 1
                else:
                    found.note("differ", src.key)
        except DthError as exc:
            found.errors.append(f"shard {shard.prefix!r}: {error_class(exc)}: {exc}")
        finally:
            if tasks:
                await asyncio.gather(*tasks, return_exceptions=True)
        await self._flush()
        return found

    async def _read_both(self, src: ObjectMeta, dst: ObjectMeta, found: VerifyTally, full: bool) -> None:
        """Compare by the checksums both stores keep where they have them (fast mode), else read both."""
        try:
            same = None if full else await same_stored_checksum(
                self._src, src, self._src.features, self._dst, dst, self._dst.features, self._limits)
            read = same is None
            if read:
                same = await same_content(self._src, src, self._dst, dst, self._limits)
        except DthError as exc:
            found.note("differ", src.key)
            found.errors.append(f"{src.key!r}: {error_class(exc)}: {exc}")
            return
        finally:
            self._slots.release()
        if read:
            found.read_objects += 1
            found.read_bytes += src.size + dst.size
        else:
            found.checksum_objects += 1
        if same:
            found.matched += 1
            self._pending.append(ObjectRecord(src.key, src.size, src.etag or src.checksum, dst.key, dst.etag,
                                              "copied", "", verified=True))
        else:
            found.note("differ", src.key)

    # ---- keeping in sync (runtime/reconcile.py)

    async def delete_keys(self, dst_keys: list[str]) -> dict:
        """sync.delete: delete destination keys whose source key is still absent (each HEADed first)."""
        self._setup()
        return await self._reconciler.delete_keys(dst_keys)

    async def apply_events(self, keys: list[str], deletes: bool = True) -> list[dict]:
        """`watch`: make the destination match the source's current state for each key."""
        self._setup()
        results = await self._reconciler.apply_events(keys, deletes)
        await self._flush()
        await call_manifest(self._manifest, "flush")
        return results

    # ---- flushing

    async def _flush(self, final: dict[str, tuple[int, Tally]] | None = None) -> None:
        """Records, checkpoints and live progress to the manifest in one call (`final`: live tallies of shards
        that just ended, which are no longer active)."""
        if self._flush_lock is None:
            return
        async with self._flush_lock:
            if not self.settings.dry_run:
                for shard in list(self._active.values()):
                    if shard.dirty:
                        checkpoint = await self._checkpoint(shard, PENDING)
                        if checkpoint is not None:
                            self._checkpoints.append(checkpoint)
            live = {sid: (s.seq, s.live) for sid, s in self._active.items()}
            live.update(final or {})
            errors = self._limits.take_errors() if self._limits is not None else {}
            for name, count in errors.items():
                self._errors[name] = self._errors.get(name, 0) + count
            report = LiveReport(self._worker_id, tuple((sid, seq, Tally.from_dict(t.to_dict(0)))
                                                       for sid, (seq, t) in live.items()),
                                self._objects_in_flight, self._bytes_in_flight, tuple(self._errors.items()),
                                sum(p.read_bytes for p in self._landing), *self._ahead,
                                self._pace.usage() if self._pace is not None and self._pace.on else ())
            batch, self._pending[:] = list(self._pending), []
            checkpoints, self._checkpoints = self._checkpoints, []
            try:
                share = await call_manifest(self._manifest, "record", batch, checkpoints, report)
            except BaseException:
                self._pending[:0] = batch  # kept for the next flush, in order
                self._checkpoints[:0] = checkpoints
                raise
            if share is not None and self._pace is not None:
                self._pace.apply(share, self._limits.concurrency)
            if self._limits is not None:
                self._metrics.add(self._totals, errors, self._limits.concurrency.in_flight,
                                  self._copier.parts_in_flight if self._copier is not None else 0)

    async def _checkpoint(self, settled: SettledKeys, status: str, final: bool = False) -> Checkpoint | None:
        """The shard's checkpoint; with report_objects, once its rows are in parts (PartWriter.checkpoint)."""
        if self._report is None or settled.rows is None:
            return settled.checkpoint(status)
        return await self._report.checkpoint(settled, status, final)

    async def close(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await self._flush()
        await self._src.aclose()
        await self._dst.aclose()
        for extra in (self._staging, self._report):
            if extra is not None:
                await extra.aclose()


def _node_address() -> str:
    """This node's IP address as Ray knows it (the host name outside Ray)."""
    try:
        import ray

        return ray.util.get_node_ip_address() if ray.is_initialized() else socket.gethostname()
    except Exception:  # noqa: BLE001 - only for a message
        return socket.gethostname()


def _same_service(settings: WorkerSettings) -> bool:
    from dth_ray.stores.s3 import same_service

    return same_service(settings.source, settings.destination)
