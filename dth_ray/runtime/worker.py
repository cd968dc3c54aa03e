"""Transfer actor: lists one shard on both sides, merge-joins it, and copies what differs, many at a time.

A plain class; the driver wraps it with `ray.remote` (so unit tests can use it directly). Only metadata
leaves it: batched manifest records, progress deltas and a ShardResult; bytes stay inside the actor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from dth_ray.config import SyncConfig, parse_size
from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.copier import Copier, CopySettings, Limits
from dth_ray.engine.ratelimit import AdaptiveLimit, TokenBucket
from dth_ray.errors import DthError, Unreadable, error_class
from dth_ray.model import ObjectMeta, Shard, ShardResult, Tally
from dth_ray.plan.diff import COPY, SKIP, Record, merge_join
from dth_ray.plan.filters import KeyFilter
from dth_ray.plan.keys import dest_key
from dth_ray.runtime.manifest import ObjectRecord
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
_PAGE_KEYS = 1000
_FLUSH_RECORDS = 2000


async def _call(target: Any, method: str, *args):
    """Call the manifest: an actor handle (awaited ObjectRef, never ray.get) or a local object in tests."""
    fn = getattr(target, method)
    remote = getattr(fn, "remote", None)
    if remote is not None:
        return await remote(*args)
    return fn(*args)


def _same_service(cfg: SyncConfig) -> bool:
    from dth_ray.stores.s3 import same_service

    return same_service(cfg.source, cfg.destination)


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
    """Makes each upload id durable in the manifest before its first part is sent."""

    def __init__(self, manifest: Any):
        self._manifest = manifest

    async def upload_opened(self, dst_key: str, upload_id: str, part_size_bytes: int) -> None:
        await _call(self._manifest, "upload_opened", dst_key, upload_id, part_size_bytes)

    async def upload_closed(self, dst_key: str, upload_id: str) -> None:
        await _call(self._manifest, "upload_closed", dst_key, upload_id)


class TransferWorker:
    """One transfer actor: its own store clients, byte budget and request caps, shared by its shards."""

    def __init__(self, cfg: SyncConfig, manifest: Any, node_id: str = ""):
        self._cfg = cfg
        self._manifest = manifest
        self._node_id = node_id or _current_node_id()
        self._src = open_store(cfg.source)
        self._dst = open_store(cfg.destination)
        t = cfg.transfer
        self._filter = KeyFilter.from_config(cfg.filter)
        self._limits: Limits | None = None
        self._settings = CopySettings(
            multipart_threshold_bytes=parse_size(t.multipart_threshold, "transfer.multipart_threshold"),
            part_size_bytes=None if t.part_size == "auto" else parse_size(t.part_size, "transfer.part_size"),
            parts_in_flight=t.parts_in_flight,
            max_attempts=t.max_attempts,
            server_side_bucket=cfg.source.bucket if t.server_side_copy and _same_service(cfg) else "",
        )
        self._copier: Copier | None = None
        self._slots: asyncio.Semaphore | None = None
        self._pending: list[ObjectRecord] = []
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
                              self._limits, _UploadJournal(self._manifest))
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
            page = await _call(self._manifest, "records_page", shard.prefix, start_after, shard.end_at,
                               _PAGE_KEYS)
            yield [r for r in page if shard.contains(r.key)]
            if len(page) < _PAGE_KEYS:
                return
            start_after = page[-1].key

    async def _decisions(self, shard: Shard):
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

    async def run_shard(self, shard: Shard) -> ShardResult:
        """List, diff and copy one shard; returns its exact tally (each object counted once)."""
        self._setup()
        tally = Tally()
        tasks: set[asyncio.Task] = set()
        dry_run = self._cfg.dry_run
        try:
            async for decision in self._decisions(shard):
                src = decision.src
                if src is None:
                    continue  # destination-only: not this command's business (delete propagation is opt-in)
                tally.listed += 1
                tally.bytes_listed += src.size
                self._count("listed", 1)
                if decision.action == SKIP:
                    tally.skip(decision.reason)
                    self._count("skipped", 1)
                    continue
                assert decision.action == COPY
                if dry_run:
                    tally.would_copy += 1
                    tally.would_copy_bytes += src.size
                    continue
                await self._slots.acquire()
                self._count("bytes_pending", src.size)
                task = asyncio.ensure_future(self._copy_one(src, decision.dst_key, tally))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                if len(self._pending) >= _FLUSH_RECORDS:
                    await self._flush()
            if tasks:
                await asyncio.gather(*tasks)
        except DthError as exc:
            # Listing failed after the store's retries: let in-flight copies finish (they are recorded),
            # and hand the shard back; the driver re-runs it and the manifest turns done work into skips.
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._flush()
            return ShardResult(shard.shard_id, Tally(), self._node_id, f"{error_class(exc)}: {exc}")
        await self._flush()
        return ShardResult(shard_id=shard.shard_id, tally=tally, node_id=self._node_id)

    async def _copy_one(self, src: ObjectMeta, dst_key: str, tally: Tally) -> None:
        try:
            outcome = await self._copier.copy(src, dst_key)
        except Unreadable as exc:
            tally.skip(f"unreadable:{src.storage_class or 'archived'}")
            self._count("skipped", 1)
            log.warning("skipped unreadable object key=%s error=%s", src.key, error_class(exc))
        except DthError as exc:
            tally.fail(src.key, f"{error_class(exc)}: {exc}")
            self._pending.append(ObjectRecord(src.key, src.size, src.etag, dst_key, "", "failed",
                                              f"{error_class(exc)}: {exc}"))
            self._count("failed", 1)
            log.warning("copy failed key=%s error=%s", src.key, error_class(exc))
        except Exception as exc:  # a bug must fail one object, not the shard's accounting
            tally.fail(src.key, f"Fatal: unexpected {type(exc).__name__}")
            self._count("failed", 1)
            log.exception("unexpected error copying key=%s", src.key)
        else:
            tally.copied += 1
            tally.bytes_copied += src.size
            tally.part_size_bytes = max(tally.part_size_bytes, outcome.part_size_bytes)
            tally.server_side_copies += outcome.server_side
            self._pending.append(ObjectRecord(
                src.key, outcome.src.size, outcome.src.etag or outcome.src.checksum, dst_key, outcome.dst_etag,
                "copied", "", outcome.verified_source))
            self._count("copied", 1)
            self._count("bytes_copied", src.size)
        finally:
            self._count("bytes_pending", -src.size)
            self._slots.release()

    def _count(self, name: str, value: int) -> None:
        self._delta[name] = self._delta.get(name, 0) + value

    async def _flush(self) -> None:
        async with self._flush_lock:
            if not self._pending and not self._delta:
                return
            batch, self._pending = self._pending, []
            delta, self._delta = self._delta, {}
            await _call(self._manifest, "record", batch, delta)

    async def close(self) -> None:
        if self._copier is not None:
            self._flusher.cancel()
            await self._flush()
        await self._src.aclose()
        await self._dst.aclose()
