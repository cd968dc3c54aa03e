"""Per-key reconciles inside a transfer worker: delete propagation for batch runs (`sync.delete`) and event
handling for `dth-ray watch`. The worker builds one Reconciler with exactly what it needs: its settings, stores,
copier and caps, the list its manifest records are batched in, and the manifest itself.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from dth_ray.engine.copier import Copier
from dth_ray.engine.limits import Limits
from dth_ray.errors import DthError, NotFound, Unreadable, error_class
from dth_ray.ops.logs import error_fields, fields
from dth_ray.plan.diff import SKIP, Record, decide
from dth_ray.plan.keys import dest_key, src_key_for
from dth_ray.runtime.calls import call_manifest
from dth_ray.runtime.manifest import ObjectRecord
from dth_ray.settings import WorkerSettings

log = logging.getLogger(__name__)


class Reconciler:
    """Make destination keys match the source's current state, one key at a time (under the worker's caps)."""

    def __init__(self, settings: WorkerSettings, src: Any, dst: Any, copier: Copier, limits: Limits,
                 slots: asyncio.Semaphore, records: list[ObjectRecord], manifest: Any):
        self._settings = settings
        self._src = src
        self._dst = dst
        self._copier = copier
        self._limits = limits
        self._slots = slots
        self._records = records  # the worker's batch: appended here, flushed by the worker
        self._manifest = manifest
        self._job = {"job": settings.job}  # on every log line

    async def delete_keys(self, dst_keys: list[str]) -> dict:
        """Delete destination keys whose source key is (still) absent — each source key is HEADed first, so an
        object created at the source since the listing is kept. Returns {"deleted", "kept", "failures"}."""
        out: dict = {"deleted": 0, "kept": 0, "failures": []}
        src_prefix, dst_prefix = self._settings.source.prefix, self._settings.destination.prefix

        async def one(dst_key: str) -> None:
            if not self._in_scope(dst_key):
                out["failures"].append((dst_key, "Fatal: outside the sync's scope (destination.prefix, "
                                                 "filter.*)"))
                log.error("delete refused key=%s: outside destination.prefix or rejected by filter.*",
                          dst_key, extra={**self._job, "key": dst_key})
                return
            async with self._slots:
                try:
                    if await self._head_or_none(self._src, src_key_for(dst_key, src_prefix, dst_prefix)) is not None:
                        out["kept"] += 1
                        return
                    await self._limits.call(lambda: self._dst.delete(dst_key))
                    out["deleted"] += 1
                except DthError as exc:
                    out["failures"].append((dst_key, f"{error_class(exc)}: {exc}"))
                    log.warning("delete failed key=%s error=%s", dst_key, error_class(exc),
                                extra={**self._job, "key": dst_key, **error_fields(exc)})

        await asyncio.gather(*(one(k) for k in dst_keys))
        return out

    def _in_scope(self, dst_key: str) -> bool:
        """Whether a delete of `dst_key` stays in the sync's scope: under destination.prefix, and its source
        key accepted by filter.* (the planners only hand such keys over; this is the last check before a
        DELETE)."""
        s = self._settings
        if not dst_key.startswith(s.destination.prefix):
            return False
        rel = dst_key[len(s.destination.prefix):]
        return s.key_filter.is_noop or s.key_filter.accepts(rel)

    async def _head_or_none(self, store: Any, key: str):
        """HEAD one key under the worker's request caps; None when it does not exist."""
        try:
            return await self._limits.call(lambda: store.head(key))
        except NotFound:
            return None

    async def apply_events(self, keys: list[str], deletes: bool = True) -> list[dict]:
        """Make the destination match the source's CURRENT state for each source key (one reconcile per key;
        the caller never sends a key twice at once): HEAD the source; if it is gone, delete at the destination
        (only when `deletes`); else copy the version just read (If-Match guarded, so a newer version written
        meanwhile is re-read, never torn) unless the manifest's record and the destination show it landed.

        Returns one dict per key: key, outcome (copied, unchanged, deleted, absent, gone_at_source, skipped or
        failed), bytes, error, landed_at (epoch s); gone_at_source: the source is gone, the destination copy
        was kept because `deletes` is false. The worker flushes the records before answering.
        """
        return list(await asyncio.gather(*(self._reconcile(key, deletes) for key in keys)))

    async def _reconcile(self, key: str, deletes: bool) -> dict:
        dst_key = dest_key(key, self._settings.source.prefix, self._settings.destination.prefix)
        outcome, nbytes, error = "failed", 0, ""
        async with self._slots:
            try:
                outcome, nbytes = await self._reconcile_key(key, dst_key, deletes)
            except Unreadable as exc:
                outcome, error = "skipped", f"unreadable: {error_class(exc)}"
            except DthError as exc:
                error = f"{error_class(exc)}: {exc}"
                self._records.append(ObjectRecord(key, 0, "", dst_key, "", "failed", error))
                log.warning("event copy failed key=%s error=%s", key, error_class(exc),
                            extra={**self._job, "key": key, **fields(attempt=exc.attempts or None),
                                   **error_fields(exc)})
            except Exception as exc:  # a bug must fail one key, not the batch
                error = f"Fatal: unexpected {type(exc).__name__}"
                log.exception("unexpected error reconciling key=%s", key, extra={**self._job, "key": key})
        return {"key": key, "outcome": outcome, "bytes": nbytes, "error": error, "landed_at": time.time()}

    async def _reconcile_key(self, key: str, dst_key: str, deletes: bool) -> tuple[str, int]:
        info, rec = await asyncio.gather(self._head_or_none(self._src, key),
                                         call_manifest(self._manifest, "lookup", key))
        if info is None:
            return await self._source_gone(dst_key, deletes), 0
        src = info.meta
        record = (Record(key, rec.src_etag, rec.size, rec.dst_etag)
                  if rec is not None and rec.status == "copied" and rec.dst_key == dst_key else None)
        if record is not None and record.dst_etag and record.src_etag not in (src.etag, src.checksum):
            reason = "changed_at_source"  # we copied another version of it: no need to look at the destination
        else:
            dst = await self._head_or_none(self._dst, dst_key)
            action, reason = decide(src, dst.meta if dst is not None else None, record, self._settings.compare,
                                    self._src.features, self._dst.features)
            if action == SKIP:
                return ("skipped" if reason.startswith("unreadable") else "unchanged"), 0
        try:
            result = await self._copier.copy(src, dst_key)
        except NotFound:
            if await self._head_or_none(self._src, key) is None:  # deleted between our HEAD and GET
                return await self._source_gone(dst_key, deletes), 0
            raise
        self._records.append(ObjectRecord(key, result.src.size, result.src.etag or result.src.checksum, dst_key,
                                          result.dst_etag, "copied", "", result.verified_source))
        return "copied", result.src.size

    async def _source_gone(self, dst_key: str, deletes: bool) -> str:
        """The source key does not exist (now): delete its destination copy when `deletes`; without it, say
        that the destination still holds one ("gone_at_source"), so the caller may allow the delete (watch
        counts every delete against events.max_delete, whatever the event said)."""
        if await self._head_or_none(self._dst, dst_key) is None:
            return "absent"
        if not deletes or not self._in_scope(dst_key):
            return "gone_at_source"
        await self._limits.call(lambda: self._dst.delete(dst_key))
        return "deleted"
