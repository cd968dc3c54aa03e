"""The staged inventory files of a run (see runtime/inventory.py): what its plan.json says, and their removal.

Apart from the planning module so that every run can ask without importing pyarrow (~75 ms and numpy's
threads, for runs that never read an inventory).
"""

from __future__ import annotations

import asyncio
import json
import logging

from dth_ray.errors import DthError
from dth_ray.model import Shard
from dth_ray.settings import Settings
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
PLAN_FILE = "plan.json"


async def planned_info(settings: Settings, shards: list[Shard]) -> dict | None:
    """What plan.json says about the inventories a resumed run was planned from (None: not from one, or the
    file is gone)."""
    listing = next((s.listing for s in shards if s.listing), "")
    if not listing or settings.worker.staging is None:
        return None
    store = open_store(settings.worker.staging)
    try:
        got = await store.get(listing.rpartition("/")[0] + "/" + PLAN_FILE)
        return json.loads(got.data)
    except (DthError, ValueError):
        return None
    finally:
        await store.aclose()


async def remove_staged(settings: Settings, shards: list[Shard]) -> None:
    """Delete the staged files of a finished run (best effort: a leftover is logged, never an error)."""
    listings = [s.listing for s in shards if s.listing]
    if not listings or settings.worker.staging is None:
        return
    store = open_store(settings.worker.staging)
    keys = listings + [listings[0].rpartition("/")[0] + "/" + PLAN_FILE]
    gate = asyncio.Semaphore(16)

    async def drop(key: str) -> None:
        async with gate:
            try:
                await store.delete(key)
            except DthError as exc:
                log.warning("could not delete staged inventory rows key=%s error=%s", key, type(exc).__name__)

    try:
        await asyncio.gather(*(drop(k) for k in keys))
    finally:
        await store.aclose()
