"""Transfer actor: lists one shard on both sides, merge-joins it, and copies what differs, many at a time.

A plain class; the driver wraps it with `ray.remote` (so unit tests can use it directly). Only metadata
leaves it: batched manifest records, progress deltas and a ShardResult; bytes stay inside the actor.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from dth_ray.config import SyncConfig, parse_size
from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.copier import Copier, CopyOutcome, CopySettings, Limits
from dth_ray.engine.ratelimit import AdaptiveLimit, TokenBucket
from dth_ray.engine.verify import same_content
from dth_ray.errors import DthError, Unreadable, error_class
from dth_ray.model import ByteRange, ObjectMeta, PartInfo, Shard, ShardResult, Tally, UploadState, VerifyTally
from dth_ray.plan.diff import COPY, SKIP, Record, merge_join, needs_record
from dth_ray.plan.filters import KeyFilter
from dth_ray.plan.keys import dest_key
from dth_ray.plan.verify import DIFFER, MATCH, READ, classify
from dth_ray.runtime.calls import call_manifest
from dth_ray.runtime.manifest import DONE, PENDING, Checkpoint, ObjectRecord
from dth_ray.runtime.metrics import ActorMetrics
from dth_ray.runtime.naming import job_name
from dth_ray.runtime.reconcile import ReconcileMixin
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
_PAGE_KEYS = 1000
_FLUSH_RECORDS = 2000


def _same_service(cfg: SyncConfig) -> bool:
    from dth_ray.stores.s3 import same_service

    return same_service(cfg.source, cfg.destination)


def _named_actor(name: str):
    import ray

    return ray.get_actor(name)


def _current_node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""


class _Cursor:
    """Buffered read-ahead over a paged async source, handing out items up to a bound in key order."""

    def __init__(self, pages: AsyncIterator[list], key_of: Callable[[Any], str]):
        self._pages = pages
        self._key_of = key_of
        self._buffer: list = []
        self._done = False

    async def take_through(self, bound: str | None) -> list:
        """Items with key <= bound (all remaining items when bound is None)."""
        while not self._done and (bound is None or not self._buffer or self._key_of(self._buffer[-1]) <= bound):
            page = await anext(self._pages, None)
            if page is None:
                self._done = True
            else:
                self._buffer.extend(page)
        if bound is None:
            out, self._buffer = self._buffer, []
            return out
        cut = 0
        while cut < len(self._buffer) and self._key_of(self._buffer[cut]) <= bound:
            cut += 1
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out


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


class _Settled:
    """The settled prefix of one shard's key order, so a checkpoint counts exactly the keys <= watermark.

    Decisions arrive in key order; copies finish out of order. Each entry is [key, done, outcomes]; runs of
    finished entries behind an unfinished one merge into one entry, so the queue stays at most about twice
    the copies in flight, whatever the number of skips.
    """

    __slots__ = ("shard", "tally", "watermark", "_queue", "dirty")

    def __init__(self, shard: Shard, tally: Tally, watermark: str):
        self.shard = shard
        self.tally = tally
        self.watermark = watermark
        self._queue: deque[list] = deque()
        self.dirty = False

    def now(self, key: str, outcome: Callable[[Tally], None]) -> None:
        """A decision settled at once (skip, dry-run count)."""
        if not self._queue:
            outcome(self.tally)
            self.watermark = key
            self.dirty = True
        elif self._queue[-1][1]:
            tail = self._queue[-1]
            tail[0] = key
            tail[2].append(outcome)
        else:
            self._queue.append([key, True, [outcome]])

    def open(self, key: str) -> list:
        entry = [key, False, []]
        self._queue.append(entry)
        return entry

    def close(self, entry: list, outcome: Callable[[Tally], None]) -> None:
        entry[1] = True
        entry[2].append(outcome)
        while self._queue and self._queue[0][1]:
            key, _, outcomes = self._queue.popleft()
            for apply in outcomes:
                apply(self.tally)
            self.watermark = key
            self.dirty = True

    def checkpoint(self, status: str) -> Checkpoint:
        self.dirty = False
        return Checkpoint(self.shard, status, self.watermark, Tally.from_dict(self.tally.to_dict()))


def _skipped(size: int, reason: str, tally: Tally) -> None:
    tally.listed += 1
    tally.bytes_listed += size
    tally.skip(reason)


def _would_copy(size: int, multipart: bool, tally: Tally) -> None:
    tally.listed += 1
    tally.bytes_listed += size
    tally.would_copy += 1
    tally.would_copy_bytes += size
    if multipart:
        tally.would_copy_multipart += 1
        tally.would_copy_multipart_bytes += size


def _copied(size: int, outcome: CopyOutcome, tally: Tally) -> None:
    tally.listed += 1
    tally.bytes_listed += size
    tally.copied += 1
    tally.bytes_copied += size
    tally.part_size_bytes = max(tally.part_size_bytes, outcome.part_size_bytes)
    tally.server_side_copies += int(outcome.server_side)
    tally.spread_parts += outcome.spread_parts
    tally.resumed_parts += outcome.resumed_parts


def _failed(size: int, key: str, error: str, tally: Tally) -> None:
    tally.listed += 1
    tally.bytes_listed += size
    tally.fail(key, error)


class TransferWorker(ReconcileMixin):
    """One transfer actor: its own store clients, byte budget and request caps, shared by its shards."""

    def __init__(self, cfg: SyncConfig, manifest: Any, node_id: str = ""):
        """`manifest`: the manifest actor's name (inside Ray) or a local manifest object (driver, tests)."""
        self._cfg = cfg
        self._manifest = _named_actor(manifest) if isinstance(manifest, str) else manifest
        self._node_id = node_id or _current_node_id()
        self._src = open_store(cfg.source)
        self._dst = open_store(cfg.destination)
        t = cfg.transfer
        self._filter = KeyFilter.from_config(cfg.filter)
        self._limits: Limits | None = None
        self._settings = CopySettings(
            # An object larger than the byte budget goes up in parts, so one PUT never holds more than it.
            multipart_threshold_bytes=min(parse_size(t.multipart_threshold, "transfer.multipart_threshold"),
                                          parse_size(t.buffer_size, "transfer.buffer_size")),
            part_size_bytes=None if t.part_size == "auto" else parse_size(t.part_size, "transfer.part_size"),
            parts_in_flight=t.parts_in_flight,
            max_attempts=t.max_attempts,
            server_side_bucket=cfg.source.bucket if t.server_side_copy and _same_service(cfg) else "",
            spread_threshold_bytes=parse_size(t.spread_threshold, "transfer.spread_threshold"),
            get_range_bytes=0 if t.get_range_size == "auto" else parse_size(t.get_range_size, "transfer.get_range_size"),
            copy_cutoff_bytes=parse_size(t.copy_cutoff, "transfer.copy_cutoff"),
        )
        self._peers = _Peers()
        self._metrics = ActorMetrics(job_name(cfg))
        self._copier: Copier | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pending: list[ObjectRecord] = []
        self._checkpoints: list[Checkpoint] = []
        self._active: dict[str, _Settled] = {}
        self._delta: dict[str, int] = {}
        self._flush_lock: asyncio.Lock | None = None

    def _setup(self) -> None:
        """Create loop-bound state lazily, inside the actor's event loop."""
        if self._copier is not None:
            return
        t = self._cfg.transfer
        self._limits = Limits(
            budget=ByteBudget(parse_size(t.buffer_size, "transfer.buffer_size")),
            concurrency=AdaptiveLimit(t.concurrency * 2),
            requests=TokenBucket(t.max_requests_per_s),
            bandwidth=TokenBucket(parse_size(t.max_bandwidth, "transfer.max_bandwidth")),
        )
        self._copier = Copier(self._src, self._dst, self._src.features, self._dst.features, self._settings,
                              self._limits, _UploadJournal(self._manifest), self._peers)
        self._slots = asyncio.Semaphore(t.concurrency)
        self._flush_lock = asyncio.Lock()
        self._flusher = asyncio.ensure_future(self._flush_periodically())

    async def _flush_periodically(self) -> None:
        """Progress and records reach the manifest at least every interval, even mid-way through big copies."""
        while True:
            await asyncio.sleep(self._cfg.transfer.progress_interval_s)
            await self._flush()

    def node_id(self) -> str:
        return self._node_id

    def set_peers(self, handles: list) -> None:
        """The other transfer actors' handles (the driver sends them once all actors exist)."""
        self._peers.handles = list(handles)

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
        src_prefix, dst_prefix = self._cfg.source.prefix, self._cfg.destination.prefix

        def to_dst(key: str) -> str:
            return dest_key(key, src_prefix, dst_prefix)

        def bound_to_dst(key: str) -> str:
            return to_dst(key) if key else ""  # '' is an open bound, not a key

        dst = _Cursor(self._pages(self._dst, to_dst(shard.prefix), bound_to_dst(shard.start_after),
                                  bound_to_dst(shard.end_at), shard.delimiter), lambda m: m.key)
        records = _Cursor(self._record_pages(shard), lambda r: r.key)
        join = dict(src_prefix=src_prefix, dst_prefix=dst_prefix, compare=self._cfg.compare,
                    src_features=self._src.features, dst_features=self._dst.features, key_filter=self._filter)
        async for page in self._pages(self._src, shard.prefix, shard.start_after, shard.end_at, shard.delimiter):
            if not page:
                continue
            bound = page[-1].key
            dst_batch = await dst.take_through(to_dst(bound))
            rec_batch = await records.take_through(bound)
            for decision in merge_join(page, dst_batch, rec_batch, **join):
                yield decision
        for decision in merge_join([], await dst.take_through(None), [], **join):
            yield decision

    async def run_shard(self, shard: Shard, watermark: str = "", base: Tally | None = None) -> ShardResult:
        """List, diff and copy one shard (from `watermark` on, adding to `base` when resuming it); returns
        its exact tally (each object counted once) and the watermark it settled up to."""
        self._setup()
        settled = _Settled(shard, base if base is not None else Tally(), watermark)
        todo = dataclasses.replace(shard, start_after=watermark) if watermark else shard
        tasks: set[asyncio.Task] = set()
        dry_run = self._cfg.dry_run
        self._active[shard.shard_id] = settled
        try:
            async for decision in self.decisions(todo):
                src = decision.src
                if self._cfg.sync.delete:  # sync.delete: remember destination-only keys (see _note_dst)
                    self._note_dst(decision)
                if src is None:
                    continue  # destination-only: deleted after the run only with sync.delete (runtime/deletes.py)
                self._count("listed", 1)
                if decision.action == SKIP:
                    self._count("skipped", 1)
                    settled.now(src.key, functools.partial(_skipped, src.size, decision.reason))
                    continue
                assert decision.action == COPY
                if dry_run:
                    multipart = src.size >= self._settings.multipart_threshold_bytes
                    settled.now(src.key, functools.partial(_would_copy, src.size, multipart))
                    continue
                await self._slots.acquire()
                self._count("bytes_pending", src.size)
                self._count("objects_pending", 1)
                entry = settled.open(src.key)
                task = asyncio.ensure_future(self._copy_one(src, decision.dst_key, decision.record is not None, settled,
                                                              entry))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if len(self._pending) >= _FLUSH_RECORDS:
                    await self._flush()
            if tasks:
                await asyncio.gather(*tasks)
        except DthError as exc:
            # Listing failed after the store's retries: let in-flight copies finish (they are recorded), and
            # hand the shard back with its watermark; the driver re-runs it from there.
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._flush()
            del self._active[shard.shard_id]
            return ShardResult(shard.shard_id, settled.tally, self._node_id, f"{error_class(exc)}: {exc}",
                               settled.watermark)
        del self._active[shard.shard_id]
        if not dry_run:
            self._checkpoints.append(settled.checkpoint(DONE))
        await self._flush()
        return ShardResult(shard.shard_id, settled.tally, self._node_id, watermark=settled.watermark)

    async def _copy_one(self, src: ObjectMeta, dst_key: str, recorded: bool, settled: _Settled,
                        entry: list) -> None:
        outcome = None
        try:
            result = await self._copier.copy(src, dst_key)
        except Unreadable as exc:
            reason = f"unreadable:{src.storage_class or 'archived'}"
            outcome = functools.partial(_skipped, src.size, reason)
            self._count("skipped", 1)
            log.warning("skipped unreadable object key=%s error=%s", src.key, error_class(exc))
        except DthError as exc:
            error = f"{error_class(exc)}: {exc}"
            outcome = functools.partial(_failed, src.size, src.key, error)
            self._pending.append(ObjectRecord(src.key, src.size, src.etag, dst_key, "", "failed", error))
            self._count("failed", 1)
            log.warning("copy failed key=%s error=%s", src.key, error_class(exc))
        except Exception as exc:  # a bug must fail one object, not the shard's accounting
            outcome = functools.partial(_failed, src.size, src.key, f"Fatal: unexpected {type(exc).__name__}")
            self._count("failed", 1)
            log.exception("unexpected error copying key=%s", src.key)
        else:
            outcome = functools.partial(_copied, src.size, result)
            multipart = result.part_size_bytes > 0
            if recorded or needs_record(result.src, result.dst_etag, self._src.features, self._dst.features,
                                        multipart):
                self._pending.append(ObjectRecord(
                    src.key, result.src.size, result.src.etag or result.src.checksum, dst_key, result.dst_etag,
                    "copied", "", result.verified_source))
            self._count("copied", 1)
            self._count("bytes_copied", src.size)
        finally:
            self._count("bytes_pending", -src.size)
            self._count("objects_pending", -1)
            self._slots.release()
            if outcome is not None:
                settled.close(entry, outcome)

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
                if dst is None:
                    found.note("missing", src.key)
                    continue
                if src.storage_class and src.storage_class in unreadable:
                    verdict = MATCH if src.size == dst.size else DIFFER  # archived: only the size is readable
                else:
                    verdict, _ = classify(src, dst, decision.record, full, self._src.features, self._dst.features)
                if verdict == READ:
                    await self._slots.acquire()
                    task = asyncio.ensure_future(self._read_both(src, dst, found))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                elif verdict == MATCH:
                    found.matched += 1
                else:
                    found.note("differ", src.key)
            if tasks:
                await asyncio.gather(*tasks)
        except DthError as exc:
            await asyncio.gather(*tasks, return_exceptions=True)
            found.errors.append(f"shard {shard.prefix!r}: {error_class(exc)}: {exc}")
        await self._flush()
        return found

    async def _read_both(self, src: ObjectMeta, dst: ObjectMeta, found: VerifyTally) -> None:
        try:
            same = await same_content(self._src, src, self._dst, dst, self._limits)
        except DthError as exc:
            found.note("differ", src.key)
            found.errors.append(f"{src.key!r}: {error_class(exc)}: {exc}")
            return
        finally:
            self._slots.release()
        found.read_objects += 1
        found.read_bytes += src.size + dst.size
        if same:
            found.matched += 1
            self._pending.append(ObjectRecord(src.key, src.size, src.etag or src.checksum, dst.key, dst.etag,
                                              "copied", "", verified=True))
        else:
            found.note("differ", src.key)

    def _count(self, name: str, value: int) -> None:
        self._delta[name] = self._delta.get(name, 0) + value

    async def _flush(self) -> None:
        async with self._flush_lock:
            if not self._cfg.dry_run:
                self._checkpoints.extend(s.checkpoint(PENDING) for s in self._active.values() if s.dirty)
            if not self._pending and not self._delta and not self._checkpoints:
                return
            batch, self._pending = self._pending, []
            checkpoints, self._checkpoints = self._checkpoints, []
            delta, self._delta = self._delta, {}
            await call_manifest(self._manifest, "record", batch, checkpoints, delta)
            if self._limits is not None:
                self._metrics.add(delta, self._limits.take_errors(), self._limits.concurrency.in_flight,
                                  self._copier.parts_in_flight if self._copier is not None else 0)

    async def close(self) -> None:
        if self._copier is not None:
            self._flusher.cancel()
            await self._flush()
        await self._src.aclose()
        await self._dst.aclose()
