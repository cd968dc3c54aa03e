"""Planning a run's shards from the source listing: '/' levels first, then automatic key-range splitting of
any range too big for one lister (probes of one key each), so flat buckets and deep trees both list in
parallel with no depth setting, and no key can fall between shards."""

from __future__ import annotations

import asyncio
import logging

from dth_ray.model import Shard
from dth_ray.plan.prefix_list import prefixes_under
from dth_ray.plan.ranges import boundaries, common_prefix, interval_shards, occupied_edges
from dth_ray.plan.shard import (
    order_largest_first,
    shards_for_prefixes,
    shards_from_level,
    split_level_by_bytes,
)
from dth_ray.settings import StoreSpec
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
MAX_PLANNED_SHARDS = 20_000
PLAN_OBJECTS = 10_000  # objects directly at a level whose sizes planning keeps to split it by bytes
_SPLIT_DEPTH = 4
_PROBE_CONCURRENCY = 32
_DEEPER_CONCURRENCY = 8  # level listings at once: bounds what lists past the cap (each ≤ MAX_PLANNED_SHARDS)


async def plan_shards(source: StoreSpec, actors: int, store=None, progress=None) -> list[Shard]:
    """Shards from the first one or two levels of common prefixes (or the prefix-list file); ranges that
    hold more than a page of keys are then cut until there are about 4 shards per actor. `store` (a Lister)
    replaces the configured source, e.g. for a synthetic benchmark; `progress` (a ProgressModel) is told what
    the listing sees as it goes."""
    if source.prefix_list:
        return shards_for_prefixes(prefixes_under(source.prefix_list, source.prefix))
    own = store is None
    store = open_store(source, "source") if own else store
    try:
        shards = await list_level(store, source.prefix, 2 * actors, progress)
        if len(shards) < 4 * actors:
            # The next level of each, listed concurrently (across a long link each listing costs round trips),
            # until MAX_PLANNED_SHARDS are planned; later prefixes then stay whole.
            gate = asyncio.Semaphore(_DEEPER_CONCURRENCY)
            planned = 0

            async def deeper(shard: Shard) -> list[Shard]:
                nonlocal planned
                async with gate:
                    if shard.delimiter or planned > MAX_PLANNED_SHARDS:
                        return [shard]
                    found = await list_level(store, shard.prefix, 2 * actors, progress)
                planned += len(found)
                return found

            shards = [s for group in await asyncio.gather(*(deeper(s) for s in shards)) for s in group]
        if len(shards) < 4 * actors:
            shards = await split_ranges(store, shards, 4 * actors)
    finally:
        if own:
            await store.aclose()
    if progress is not None:
        progress.planned(shards=len(shards))
    return order_largest_first([(s, 0) for s in shards])


async def list_level(store, prefix: str, parts: int = 1, progress=None) -> list[Shard]:
    """Shards for one '/' level: one per common prefix, and the objects directly at the level cut into up
    to `parts` shards of about equal bytes (when there are few enough to have sizes for). A level with more
    objects than that stops listing early: its objects form one range, split later by probing."""
    prefixes: list[str] = []
    objects: list[tuple[str, int]] = []
    token = ""
    while True:
        page = await store.list_page(prefix, token=token, delimiter="/", max_keys=1000)
        if progress is not None:
            progress.planned(prefixes=len(page.prefixes), keys=len(page.objects))
        prefixes.extend(page.prefixes)
        objects.extend((o.key, o.size) for o in page.objects)
        if not page.next_token or len(prefixes) > MAX_PLANNED_SHARDS or len(objects) > PLAN_OBJECTS:
            break
        token = page.next_token
    if page.next_token:
        # Too many to plan one by one: one range shard over the whole level, cut by probing instead.
        return [Shard(shard_id=f"all:{prefix}", prefix=prefix)]
    shards = shards_from_level(prefix, prefixes, False)
    if objects:
        shards.extend(split_level_by_bytes(prefix, objects, parts))
    return shards


async def split_ranges(store, shards: list[Shard], want: int) -> list[Shard]:
    """Cut shards whose range holds more than one page of keys, most promising first, until `want`."""
    gate = asyncio.Semaphore(_PROBE_CONCURRENCY)
    out = list(shards)
    for _ in range(_SPLIT_DEPTH):
        if len(out) >= want:
            break
        share = max(2, -(-want // max(1, len(out))))
        pieces = await asyncio.gather(*(_split_one(store, s, share, gate) for s in out))
        grown = [p for group in pieces for p in group]
        if len(grown) == len(out):
            break
        out = grown
    return out


async def _first_after(store, shard: Shard, after: str, gate: asyncio.Semaphore) -> str | None:
    async with gate:
        page = await store.list_page(shard.prefix, start_after=after, delimiter=shard.delimiter, max_keys=1)
    keys = [o.key for o in page.objects]
    return keys[0] if keys else None


async def _split_one(store, shard: Shard, share: int, gate: asyncio.Semaphore) -> list[Shard]:
    """The shard cut at boundaries where its keys branch, or itself when it fits in a page."""
    async with gate:
        page = await store.list_page(shard.prefix, start_after=shard.start_after, delimiter=shard.delimiter,
                                     max_keys=1000)
    keys = [o.key for o in page.objects if not shard.end_at or o.key <= shard.end_at]
    if not page.next_token or len(keys) < len(page.objects) or not keys:
        return [shard]
    # Shorten the sample's common stem until no key of the shard lies beyond every key it starts
    # (a probe past stem+U+10FFFF); the range then branches right after the stem.
    stem = common_prefix(keys[0], keys[-1])
    while len(stem) > len(shard.prefix):
        beyond = await _first_after(store, shard, stem + "\U0010ffff", gate)
        if beyond is None or (shard.end_at and beyond > shard.end_at) or beyond.startswith(stem):
            break
        stem = common_prefix(stem, beyond)
    edges = boundaries(stem, shard.start_after, shard.end_at)
    if not edges:
        return [shard]
    firsts = await asyncio.gather(*(_first_after(store, shard, e, gate) for e in edges))
    kept = occupied_edges(edges, firsts, shard.end_at)
    if not kept:
        return [shard]
    if len(kept) > share:  # keep about `share` evenly spaced cuts; the listers balance the rest
        step = len(kept) / share
        kept = sorted({kept[int(i * step)] for i in range(1, share)} | {kept[0]})
    return interval_shards(shard, kept)
