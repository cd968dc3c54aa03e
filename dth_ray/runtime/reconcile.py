"""Transfer-actor methods for keeping in sync: delete propagation for batch runs (sync.delete) and per-key
reconciles for `dth-ray watch`. A mixin of TransferWorker (dth_ray/runtime/worker.py): it uses the actor's
stores, copier, caps and manifest. `run_shard` calls `_note_dst` when sync.delete is on; the driver collects
with `take_extras` and deletes with `delete_extras` (dth_ray/runtime/deletes.py); the watch service
(dth_ray/sync/watch.py) calls `apply_events`.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from typing import Any

from dth_ray.errors import DthError, NotFound, Unreadable, error_class
from dth_ray.plan.diff import SKIP, Record, decide
from dth_ray.plan.keys import dest_key, src_key_for
from dth_ray.runtime.calls import call_manifest
from dth_ray.runtime.manifest import ObjectRecord

log = logging.getLogger(__name__)
_MAX_EXTRA_KEYS = 100_000  # destination-only keys one actor keeps for sync.delete (the count stays exact)


class ReconcileMixin:
    """Needs from the actor: _cfg, _src, _dst, _copier, _limits, _slots, _pending, _manifest, _setup, _flush."""


    @functools.cached_property
    def _extras(self) -> dict:
        """Destination-only keys this actor's shards met (sync.delete), capped, and the destination objects
        seen (the base of a percent sync.max_delete)."""
        return {"keys": [], "count": 0, "dst_seen": 0}

    def _note_dst(self, decision) -> None:
        ledger = self._extras
        if decision.dst is not None:
            ledger["dst_seen"] += 1
        if decision.src is None:  # action "extra": only at the destination
            ledger["count"] += 1
            if len(ledger["keys"]) < _MAX_EXTRA_KEYS:
                ledger["keys"].append(decision.dst.key)

    def take_extras(self) -> dict:
        """What `_note_dst` gathered since the last call: {"keys", "count", "dst_seen"} (keys capped at
        _MAX_EXTRA_KEYS; count exact)."""
        out = dict(self._extras)
        self._extras.update(keys=[], count=0, dst_seen=0)
        return out

    async def delete_extras(self, dst_keys: list[str]) -> dict:
        """Delete destination keys whose source key is (still) absent — each source key is HEADed first, so an
        object created at the source since the listing is kept. Returns {"deleted", "kept", "failures"}."""
        self._setup()
        out: dict = {"deleted": 0, "kept": 0, "failures": []}
        src_prefix, dst_prefix = self._cfg.source.prefix, self._cfg.destination.prefix

        async def one(dst_key: str) -> None:
            async with self._slots:
                try:
                    if await self._head_or_none(self._src, src_key_for(dst_key, src_prefix, dst_prefix)) is not None:
                        out["kept"] += 1
                        return
                    await self._limits.call(lambda: self._dst.delete(dst_key))
                    out["deleted"] += 1
                except DthError as exc:
                    out["failures"].append((dst_key, f"{error_class(exc)}: {exc}"))
                    log.warning("delete failed key=%s error=%s", dst_key, error_class(exc))

        await asyncio.gather(*(one(k) for k in dst_keys))
        return out

    async def _head_or_none(self, store: Any, key: str):
        """HEAD one key under this actor's request caps; None when it does not exist."""
        try:
            return await self._limits.call(lambda: store.head(key))
        except NotFound:
            return None

    async def apply_events(self, keys: list[str], deletes: bool = True) -> list[dict]:
        """Make the destination match the source's CURRENT state for each source key (one reconcile per key;
        the caller never sends a key twice at once): HEAD the source; if it is gone, delete at the destination
        (only when `deletes`); else copy the version just read (If-Match guarded, so a newer version written
        meanwhile is re-read, never torn) unless the manifest's record and the destination show it landed.

        Returns one dict per key: key, outcome (copied|unchanged|deleted|absent|skipped|failed), bytes, error,
        landed_at (epoch s). Records are in the manifest (flushed) before this returns.
        """
        self._setup()
        results = list(await asyncio.gather(*(self._reconcile(key, deletes) for key in keys)))
        await self._flush()
        await call_manifest(self._manifest, "flush")
        return results

    async def _reconcile(self, key: str, deletes: bool) -> dict:
        dst_key = dest_key(key, self._cfg.source.prefix, self._cfg.destination.prefix)
        outcome, nbytes, error = "failed", 0, ""
        async with self._slots:
            try:
                outcome, nbytes = await self._reconcile_key(key, dst_key, deletes)
            except Unreadable as exc:
                outcome, error = "skipped", f"unreadable: {error_class(exc)}"
            except DthError as exc:
                error = f"{error_class(exc)}: {exc}"
                self._pending.append(ObjectRecord(key, 0, "", dst_key, "", "failed", error))
                log.warning("event copy failed key=%s error=%s", key, error_class(exc))
            except Exception as exc:  # a bug must fail one key, not the batch
                error = f"Fatal: unexpected {type(exc).__name__}"
                log.exception("unexpected error reconciling key=%s", key)
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
            action, reason = decide(src, dst.meta if dst is not None else None, record, self._cfg.compare,
                                    self._src.features, self._dst.features)
            if action == SKIP:
                return ("skipped" if reason.startswith("unreadable") else "unchanged"), 0
        try:
            result = await self._copier.copy(src, dst_key)
        except NotFound:
            if await self._head_or_none(self._src, key) is None:  # deleted between our HEAD and GET
                return await self._source_gone(dst_key, deletes), 0
            raise
        self._pending.append(ObjectRecord(key, result.src.size, result.src.etag or result.src.checksum, dst_key,
                                          result.dst_etag, "copied", "", result.verified_source))
        return "copied", result.src.size

    async def _source_gone(self, dst_key: str, deletes: bool) -> str:
        """The source key does not exist (now): delete its destination copy when deletes are on."""
        if not deletes or await self._head_or_none(self._dst, dst_key) is None:
            return "absent"
        await self._limits.call(lambda: self._dst.delete(dst_key))
        return "deleted"
