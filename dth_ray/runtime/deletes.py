"""`sync.delete=true` for batch runs: destination objects under destination.prefix that the source no longer
has are deleted after the copy phase, within the `sync.max_delete` rail.

Two phases, so the limit is enforced before anything is deleted: (1) the transfer actors note the
destination-only keys their shards' merge-joins meet (TransferWorker._note_dst) and the driver lists the
destination regions no shard covers (prefixes the source no longer has at all); (2) the driver compares the
total with `sync.max_delete` — over it, nothing is deleted and the run fails with a clear error — and
otherwise has the actors delete them, each after a HEAD showing the source key is still absent. A dry run
only counts (`objects.would_delete`). Deletes are skipped when a shard's listing failed (its extras may be
incomplete), as rclone does after I/O errors. Extras met by shards finished in an earlier execution of a
resumed run are not known to this one: they are deleted by the next run (never too much, maybe too little).
"""

from __future__ import annotations

import asyncio
import bisect
import logging

from dth_ray.config import SyncConfig, parse_max_delete
from dth_ray.model import Shard
from dth_ray.plan.filters import KeyFilter
from dth_ray.plan.keys import src_key_for
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
_MAX_KEYS = 100_000  # destination-only keys held by the driver (the count stays exact)
_CHUNK = 500  # keys per delete call to an actor


class _Ledger:
    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.count = 0
        self.dst_seen = 0
        self.overflow = False
        self.partial = False

    def add(self, part: dict) -> None:
        self.count += part["count"]
        self.dst_seen += part["dst_seen"]
        room = _MAX_KEYS - len(self.keys)
        self.keys.update(part["keys"][:max(0, room)])
        if len(part["keys"]) > room or part["count"] > len(part["keys"]):
            self.overflow = True


def _covered_check(shards: list[Shard], src_prefix: str):
    """Functions answering, for a source key or '/'-prefix, whether a planned shard covers it."""
    by_prefix: dict[str, list[Shard]] = {}
    for shard in shards:
        by_prefix.setdefault(shard.prefix, []).append(shard)
    whole = {s.prefix for s in shards if not s.delimiter}  # range pieces of one prefix partition all of it
    ordered = sorted(by_prefix)

    def candidates(text: str) -> list[str]:
        out = [src_prefix]
        out.extend(text[:i + 1] for i in range(len(src_prefix), len(text)) if text[i] == "/")
        return out

    def covers_key(key: str) -> bool:
        return any(s.contains(key) for p in candidates(key) for s in by_prefix.get(p, ()))

    def covers_prefix(prefix: str) -> bool:
        return any(p in whole for p in candidates(prefix[:-1]) + [prefix])

    def deeper(prefix: str) -> bool:
        i = bisect.bisect_left(ordered, prefix)
        return i < len(ordered) and ordered[i].startswith(prefix)

    return covers_key, covers_prefix, deeper


async def uncovered_extras(cfg: SyncConfig, shards: list[Shard]) -> dict:
    """Destination keys under destination.prefix whose source key no planned shard covers (whole prefixes
    the source lost): they are destination-only by construction. With source.prefix_list, keys outside the
    listed prefixes are out of the sync's scope and never deleted."""
    out: dict = {"keys": [], "count": 0, "dst_seen": 0}
    if cfg.source.prefix_list:
        return out
    src_prefix, dst_prefix = cfg.source.prefix, cfg.destination.prefix
    key_filter = KeyFilter.from_config(cfg.filter)
    covers_key, covers_prefix, deeper = _covered_check(shards, src_prefix)
    store = open_store(cfg.destination)

    def note(dst_key: str) -> None:
        src_key = src_key_for(dst_key, src_prefix, dst_prefix)
        if not key_filter.is_noop and not key_filter.accepts(src_key[len(src_prefix):]):
            return
        out["count"] += 1
        out["dst_seen"] += 1
        if len(out["keys"]) < _MAX_KEYS:
            out["keys"].append(dst_key)

    async def walk(level: str, delimiter: str) -> None:
        token = ""
        while True:
            page = await store.list_page(level, token=token, delimiter=delimiter, max_keys=1000)
            for meta in page.objects:
                if not covers_key(src_key_for(meta.key, src_prefix, dst_prefix)):
                    note(meta.key)
            for child in page.prefixes:
                src_child = src_key_for(child, src_prefix, dst_prefix)
                if covers_prefix(src_child):
                    continue
                await walk(child, "/" if deeper(src_child) else "")
            if not page.next_token:
                return
            token = page.next_token

    try:
        await walk(dst_prefix, "/")
    finally:
        await store.aclose()
    return out


def _run_shards(cfg: SyncConfig, manifest, run_id: int) -> list[Shard]:
    """Every shard of this run: from its checkpoints, or planned again for a dry run (which records none)."""
    if run_id:
        return [cp.shard for cp in manifest.checkpoints(run_id)]
    import os

    from dth_ray.runtime.planning import plan_shards

    return asyncio.run(plan_shards(cfg, cfg.transfer.actors or max(2, os.cpu_count() or 2)))


def propagate_deletes(cfg: SyncConfig, workers: list, lane, manifest, run_id: int, state) -> dict:
    """Gather the run's destination-only keys, enforce sync.max_delete, delete them (not in a dry run).

    Call after the dispatch, while the actors are alive. Returns the summary `delete_report` adds to the
    report; errors (limit exceeded, deletes skipped or failed) are in its "errors".
    """
    import ray

    ledger = _Ledger()
    for ref in [w.take_extras.remote() for w in workers]:
        try:
            ledger.add(ray.get(ref))
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            ledger.partial = True  # a lost actor's notes are gone: fewer deletes, never wrong ones
    worker = getattr(lane, "_worker", None)
    if worker is not None:
        ledger.add(worker.take_extras())
    ledger.add(asyncio.run(uncovered_extras(cfg, _run_shards(cfg, manifest, run_id))))
    count_limit, percent_limit = parse_max_delete(cfg.sync.max_delete)
    summary: dict = {"candidates": ledger.count, "destination_objects": ledger.dst_seen, "deleted": 0, "kept": 0,
                     "failed": 0, "max_delete": cfg.sync.max_delete or "unlimited", "partial": ledger.partial,
                     "errors": [], "failures": []}
    limit = count_limit
    if percent_limit is not None:
        limit = int(ledger.dst_seen * percent_limit / 100)
    if limit is not None and ledger.count > limit:
        summary["errors"].append(
            f"sync.max_delete={cfg.sync.max_delete} exceeded: {ledger.count} destination objects are not at the "
            f"source (of {ledger.dst_seen} seen; limit {limit}); nothing was deleted — check source.prefix and "
            f"destination.prefix, or raise sync.max_delete")
        return summary
    if state.errors:
        summary["errors"].append(f"sync.delete: nothing deleted because {len(state.errors)} shard listing(s) "
                                 f"failed (their destination-only keys may be incomplete)")
        return summary
    if ledger.overflow:
        summary["errors"].append(f"sync.delete: more than {_MAX_KEYS} destination-only keys; nothing deleted — "
                                 f"delete in smaller prefixes")
        return summary
    if cfg.dry_run or not ledger.keys:
        return summary
    keys = sorted(ledger.keys)
    chunks = [keys[i:i + _CHUNK] for i in range(0, len(keys), _CHUNK)]
    refs = {workers[i % len(workers)].delete_extras.remote(chunk): chunk for i, chunk in enumerate(chunks)}
    for ref, chunk in refs.items():
        try:
            done = ray.get(ref)
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError):
            done = {"deleted": 0, "kept": 0, "failures": [(k, "actor lost") for k in chunk]}
        summary["deleted"] += done["deleted"]
        summary["kept"] += done["kept"]
        summary["failures"].extend(done["failures"])
    summary["failed"] = len(summary["failures"])
    if summary["failed"]:
        summary["errors"].append(f"sync.delete: {summary['failed']} deletes failed")
    log.info("sync.delete: %d deleted, %d kept (back at the source), %d failed", summary["deleted"],
             summary["kept"], summary["failed"])
    return summary


def delete_report(report: dict, summary: dict, dry_run: bool) -> None:
    """Add a propagate_deletes summary to a run report: objects.deleted (or would_delete), `deletes`, errors."""
    if dry_run:
        report["objects"]["would_delete"] = summary["candidates"]
    else:
        report["objects"]["deleted"] = summary["deleted"]
    report["deletes"] = {k: v for k, v in summary.items() if k not in ("errors", "failures")}
    report["errors"].extend(summary["errors"])
    report["failures"].extend({"key": k, "error": f"delete: {e}"} for k, e in summary["failures"][:100])
    if summary["errors"]:
        report["status"] = "failed"
