"""`dth-ray verify`: shards of both listings compared on the transfer actors, reading bytes only where the
listings and the copy-time records cannot prove equality (or everywhere in `full` mode)."""

from __future__ import annotations

import asyncio
import time
from collections import deque

from dth_ray.config import SyncConfig, VerifyMode
from dth_ray.model import Shard, VerifyTally
from dth_ray.plan.filters import KeyFilter
from dth_ray.plan.keys import src_key_for
from dth_ray.plan.shard import shards_from_level
from dth_ray.runtime.driver import (
    actor_count,
    describe,
    job_name,
    probe,
    start_manifest,
    start_ray,
    start_workers,
)
from dth_ray.runtime.planning import list_level
from dth_ray.stores import open_store

_MAX_KEYS = 1000


def run_verify(cfg: SyncConfig) -> dict:
    """Verify the destination against the source; returns the report (JSON-ready). Raises ConfigError first
    if a store is unreachable or refuses us."""
    import ray

    KeyFilter.from_config(cfg.filter)
    asyncio.run(probe(cfg.source, "source"))
    asyncio.run(probe(cfg.destination, "destination"))
    started = time.monotonic()
    job = job_name(cfg)
    shards = asyncio.run(_plan_verify_shards(cfg))
    start_ray(cfg)
    manifest, manifest_name = start_manifest(cfg, job, 0, ray.get_runtime_context().get_node_id())
    workers = start_workers(cfg, manifest_name, actor_count(cfg))
    full = VerifyMode(cfg.verify.mode) is VerifyMode.full
    found = VerifyTally(max_keys=_MAX_KEYS)
    queue = deque(shards)
    in_flight: dict = {}
    load = {i: 0 for i in range(len(workers))}
    try:
        while queue or in_flight:
            while queue and min(load.values()) < 4:
                index = min(load, key=load.get)
                in_flight[workers[index].verify_shard.remote(queue.popleft(), full)] = index
                load[index] += 1
            ready, _ = ray.wait(list(in_flight), num_returns=1)
            for ref in ready:
                load[in_flight.pop(ref)] -= 1
                found.merge(ray.get(ref))
    finally:
        ray.get([w.close.remote() for w in workers])
        ray.get(manifest.close.remote())
        for actor in [*workers, manifest]:
            ray.kill(actor, no_restart=True)
    return build_verify_report(cfg, job, found, time.monotonic() - started)


async def _plan_verify_shards(cfg: SyncConfig) -> list[Shard]:
    """Shards over the union of both sides' first level, so objects only at the destination are seen too.
    One whole-prefix shard when the two prefixes do not split into the same '/' levels."""
    src_prefix, dst_prefix = cfg.source.prefix, cfg.destination.prefix
    whole = [Shard("all", src_prefix)]
    if cfg.source.prefix_list or any(p and not p.endswith("/") for p in (src_prefix, dst_prefix)):
        return whole
    src, dst = open_store(cfg.source), open_store(cfg.destination)
    try:
        src_level, dst_level = await list_level(src, src_prefix), await list_level(dst, dst_prefix)
    finally:
        await src.aclose()
        await dst.aclose()
    if any(s.shard_id.startswith("all:") for s in src_level + dst_level):
        return whole
    prefixes = {s.prefix for s in src_level if not s.delimiter}
    prefixes |= {src_key_for(s.prefix, src_prefix, dst_prefix) for s in dst_level if not s.delimiter}
    return shards_from_level(src_prefix, sorted(prefixes), True)


def build_verify_report(cfg: SyncConfig, job: str, found: VerifyTally, duration_s: float) -> dict:
    bad = found.missing + found.differ + (found.extra if cfg.verify.strict else 0) + len(found.errors)
    return {
        "status": "differ" if bad else "ok",
        "job": job,
        "mode": VerifyMode(cfg.verify.mode).value,
        "strict": cfg.verify.strict,
        "source": describe(cfg.source),
        "destination": describe(cfg.destination),
        "counts": {"checked": found.checked, "matched": found.matched,
                   "missing_on_destination": found.missing, "differ": found.differ,
                   "extra_on_destination": found.extra, "read_objects": found.read_objects,
                   "read_bytes": found.read_bytes, "errors": len(found.errors)},
        "missing_on_destination": found.missing_keys,
        "differ": found.differ_keys,
        "extra_on_destination": found.extra_keys,
        "errors": found.errors[:100],
        "duration_s": round(duration_s, 3),
    }
