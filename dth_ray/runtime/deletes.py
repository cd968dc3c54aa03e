"""`sync.delete=true` for batch runs: destination objects under destination.prefix that the source no longer
has are deleted after the copy phase, within the `sync.max_delete` rail.

Two phases, so the limit is enforced before anything is deleted: (1) each shard's diff counts, in its settled
tally, the destination objects it met and the destination-only ones (their keys too), and the driver lists
the destination regions no shard covers (prefixes the source no longer has at all); (2) the driver compares
the total with `sync.max_delete` — over it, nothing is deleted and the run fails with a clear error — and
otherwise hands batches of keys to the scheduler's workers, which delete each after a HEAD showing the source
key is still absent. A dry run only counts (`objects.would_delete`). Deletes are skipped when a shard did not
finish (its destination-only keys may be incomplete), as rclone does after I/O errors. Keys noted by a worker
that was lost, or by an earlier execution of a resumed run, are not known to this one: those objects are
deleted by the next run (never too much, maybe too little; the report says `partial`).
"""

from __future__ import annotations

import asyncio
import bisect
import logging

from dth_ray.model import Change, ObjectMeta, Shard, Tally
from dth_ray.plan.keys import src_key_for
from dth_ray.report import DeleteSummary
from dth_ray.runtime.scheduler import Item
from dth_ray.runtime.shardstate import destination_only
from dth_ray.settings import Settings
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
MAX_KEYS = 100_000  # destination-only keys the driver holds (the count stays exact)
_BATCH = 500  # keys per delete item


class Candidates:
    """The destination-only keys of a run: from its shards' tallies and from the uncovered regions."""

    def __init__(self) -> None:
        self.keys: set[str] = set()
        self.count = 0
        self.destination_objects = 0
        self.changes: list[Change] = []  # a dry run's would-deletes the tallies added here carried

    def add(self, tally: Tally) -> None:
        self.count += tally.dst_only
        self.destination_objects += tally.dst_seen
        self.changes.extend(tally.changes)
        room = MAX_KEYS - len(self.keys)
        self.keys.update(tally.dst_only_keys[:max(0, room)])

    @property
    def overflow(self) -> bool:
        return self.count > MAX_KEYS

    @property
    def partial(self) -> bool:
        """Some candidates were counted by a worker whose notes are gone (lost, or an earlier execution)."""
        return not self.overflow and self.count > len(self.keys)


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


async def uncovered_extras(settings: Settings, shards: list[Shard]) -> Tally:
    """Destination keys under destination.prefix whose source key no planned shard covers (whole prefixes
    the source lost): they are destination-only by construction. With source.prefix_list, keys outside the
    listed prefixes are out of the sync's scope and never deleted."""
    found = Tally(max_dst_only_keys=MAX_KEYS, max_changes=settings.worker.dry_run_changes)
    if settings.source.prefix_list:
        return found
    src_prefix, dst_prefix = settings.source.prefix, settings.destination.prefix
    key_filter = settings.worker.key_filter
    covers_key, covers_prefix, deeper = _covered_check(shards, src_prefix)
    store = open_store(settings.destination, "destination")

    def note(dst: ObjectMeta) -> None:
        src_key = src_key_for(dst.key, src_prefix, dst_prefix)
        if key_filter.is_noop or key_filter.accepts(src_key[len(src_prefix):]):
            destination_only(dst.key, dst.size, found)

    async def walk(level: str, delimiter: str) -> None:
        token = ""
        while True:
            page = await store.list_page(level, token=token, delimiter=delimiter, max_keys=1000)
            for meta in page.objects:
                if not covers_key(src_key_for(meta.key, src_prefix, dst_prefix)):
                    note(meta)
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
    return found


def check_limit(settings: Settings, found: Candidates, summary: DeleteSummary) -> str:
    """Why nothing may be deleted ('' when the candidates are within sync.max_delete and complete enough)."""
    dst_prefix = settings.destination.prefix
    if dst_prefix and not dst_prefix.endswith("/") and not settings.delete.prefix_as_is:
        # Configuration refuses this before the run (config.check_delete_scope); settings resolved without
        # that check must still never delete sibling prefixes.
        return (f"sync.delete: destination.prefix={dst_prefix!r} does not end in '/' and "
                "sync.delete_prefix_as_is is not set; nothing was deleted")
    limit = settings.delete.limit(found.destination_objects)
    if limit is not None and found.count > limit:
        return (f"sync.max_delete={settings.delete.text} exceeded: {found.count} destination objects are not at the "
                f"source (of {found.destination_objects} seen; limit {limit}); nothing was deleted — check "
                f"source.prefix and destination.prefix, or raise sync.max_delete")
    if found.overflow:
        return (f"sync.delete: more than {MAX_KEYS} destination-only keys; nothing deleted — delete in smaller "
                f"prefixes")
    return ""


def delete_items(found: Candidates) -> list[Item]:
    keys = sorted(found.keys)
    return [Item(f"delete:{i // _BATCH}", "delete_keys", (keys[i:i + _BATCH],)) for i in range(0, len(keys), _BATCH)]


class DeleteRun:
    """The scheduler's client for the delete phase: batches of keys, each deleted where its source is absent.
    A lost worker's batch is done again (HEAD then delete is idempotent)."""

    def __init__(self, summary: DeleteSummary):
        self.summary = summary
        self.done: set[str] = set()

    def on_item_done(self, item: Item, result: dict, where) -> Item | None:
        self.summary.deleted += result["deleted"]
        self.summary.kept += result["kept"]
        self.summary.failures.extend(result["failures"])
        self.done.add(item.key)
        return None

    def on_item_failed(self, item: Item, error: str, where) -> None:
        self.summary.failures.extend((key, error) for key in item.args[0])
        self.done.add(item.key)

    def redo(self, item: Item, where, lost: bool) -> Item | None:
        return item

    def on_tick(self, scheduler) -> None:
        return None


def finish_summary(summary: DeleteSummary) -> list[str]:
    """The run's errors from a delete phase's summary."""
    summary.failed = len(summary.failures)
    if summary.failed:
        log.warning("sync.delete: %d deleted, %d kept (back at the source), %d failed", summary.deleted,
                    summary.kept, summary.failed)
        return [f"sync.delete: {summary.failed} deletes failed"]
    log.info("sync.delete: %d deleted, %d kept (back at the source)", summary.deleted, summary.kept)
    return []


def gather(settings: Settings, found: Candidates, shards: list[Shard]) -> Candidates:
    """Add the uncovered destination regions to `found` (a listing of the destination, driver-side)."""
    found.add(asyncio.run(uncovered_extras(settings, shards)))
    return found
