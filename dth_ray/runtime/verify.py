"""`dth-ray verify`: shards of both listings compared by the scheduler's workers, reading bytes only where the
listings and the copy-time records cannot prove equality (or everywhere in `full` mode)."""

from __future__ import annotations

import asyncio
import time

from dth_ray.model import Shard, VerifyTally
from dth_ray.naming import describe
from dth_ray.plan.autoscale import RAY_LOOK_AFTER_S
from dth_ray.plan.keys import src_key_for
from dth_ray.plan.shard import shards_from_level
from dth_ray.runtime.interrupts import Interrupts
from dth_ray.runtime.jobmanifest import JobManifest
from dth_ray.runtime.jobs import adopt_legacy_job
from dth_ray.runtime.planning import list_level
from dth_ray.runtime.preflight import check_stores
from dth_ray.runtime.rayhost import ray_is_up
from dth_ray.runtime.scheduler import Item, Scheduler, Workers
from dth_ray.runtime.worker import TransferWorker
from dth_ray.settings import Settings
from dth_ray.stores import open_store

_MAX_KEYS = 1000


class VerifyRun:
    """The scheduler's client: each shard's VerifyTally merged once. A shard whose worker was lost is compared
    again from the start (its partial findings were never merged, so nothing counts twice)."""

    def __init__(self, ray_on_demand: bool = False) -> None:
        self.found = VerifyTally(max_keys=_MAX_KEYS)
        self.done: set[str] = set()
        self.ray_on_demand = ray_on_demand
        self.started = time.monotonic()

    def on_item_done(self, item: Item, result: VerifyTally, where) -> Item | None:
        self.found.merge(result)
        self.done.add(item.key)
        return None

    def on_item_failed(self, item: Item, error: str, where) -> None:
        self.found.errors.append(f"shard {item.args[0].prefix!r}: {error}")
        self.done.add(item.key)

    def redo(self, item: Item, where, lost: bool) -> Item | None:
        return item

    def on_tick(self, scheduler) -> None:
        """On the embedded default, Ray joins once shards are still waiting after a moment: more to compare
        than the driver holds at once (small verifies never pay Ray's start-up)."""
        if self.ray_on_demand and scheduler.queued and time.monotonic() - self.started >= RAY_LOOK_AFTER_S:
            self.ray_on_demand = False
            scheduler.want_ray()


def run_verify(settings: Settings, interrupts: Interrupts | None = None) -> dict:
    """Verify the destination against the source; returns the report (JSON-ready). Raises ConfigError first
    if a store is unreachable or refuses us."""
    settings = settings.with_stores(*check_stores(settings.source, settings.destination))
    settings = adopt_legacy_job(settings)  # its copy-time records may be under the job's earlier name
    started = time.monotonic()
    interrupts = interrupts or Interrupts()
    interrupts.install()
    shards = asyncio.run(_plan_verify_shards(settings))
    lane = settings.runtime.embedded and not ray_is_up()
    manifest = JobManifest(settings.manifest, settings.job, (settings.worker.log_level, settings.worker.log_format))
    workers = Workers(build_local=(lambda: TransferWorker(settings.worker, manifest.local, "lane")) if lane else None,
                      actor_class=TransferWorker, actor_args=lambda: (settings.worker, manifest.actor_name(scheduler, 0)),
                      actors=settings.transfer.actors)
    on_demand = lane and settings.runtime.ray_on_demand
    scheduler = Scheduler(workers, interrupts, settings.transfer.progress_interval_s, ray_on_demand=on_demand)
    client = VerifyRun(on_demand)
    items = [Item(s.shard_id, "verify_shard", (s, settings.verify_full)) for s in shards]
    try:
        if on_demand:
            scheduler.start_local()
            scheduler.start(client, items)
            outcome = scheduler.wait(settings.runtime)
        else:
            outcome = scheduler.run(client, items, settings.runtime if lane or not ray_is_up() else None)
    finally:
        scheduler.close()
        manifest.close()
    report = build_verify_report(settings, client.found, time.monotonic() - started)
    if outcome.interrupted:
        report["status"] = "interrupted"
        report["unfinished"] = sorted(item.key for item, _ in outcome.unfinished)
    return report


async def _plan_verify_shards(settings: Settings) -> list[Shard]:
    """Shards over the union of both sides' first level, so objects only at the destination are seen too.
    One whole-prefix shard when the two prefixes do not split into the same '/' levels."""
    src_prefix, dst_prefix = settings.source.prefix, settings.destination.prefix
    whole = [Shard("all", src_prefix)]
    if settings.source.prefix_list or any(p and not p.endswith("/") for p in (src_prefix, dst_prefix)):
        return whole
    src, dst = open_store(settings.source, "source"), open_store(settings.destination, "destination")
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


def build_verify_report(settings: Settings, found: VerifyTally, duration_s: float) -> dict:
    bad = found.missing + found.differ + (found.extra if settings.verify_strict else 0) + len(found.errors)
    return {
        "status": "differ" if bad else "ok",
        "job": settings.job,
        "mode": "full" if settings.verify_full else "fast",
        "strict": settings.verify_strict,
        "source": describe(settings.source),
        "destination": describe(settings.destination),
        "counts": {"checked": found.checked, "matched": found.matched,
                   "missing_on_destination": found.missing, "differ": found.differ,
                   "extra_on_destination": found.extra, "read_objects": found.read_objects,
                   "read_bytes": found.read_bytes, "compared_by_stored_checksum": found.checksum_objects,
                   "unreadable_at_source": found.unreadable,
                   "errors": len(found.errors)},
        "missing_on_destination": found.missing_keys,
        "differ": found.differ_keys,
        "extra_on_destination": found.extra_keys,
        "errors": found.errors[:100],
        "duration_s": round(duration_s, 3),
    }
