"""Planning on a real store: a flat folder of thousands of keys and a deep tree both come out as several
shards listed in parallel, and listing every shard yields every key exactly once."""

from __future__ import annotations

import asyncio
import random

import pytest

from dth_ray.cli import load_config
from dth_ray.model import Shard
from dth_ray.runtime.planning import plan_shards
from dth_ray.stores import open_store


async def _list_shard(store, shard: Shard) -> list[str]:
    keys, token = [], ""
    while True:
        page = await store.list_page(shard.prefix, start_after=shard.start_after, token=token,
                                     delimiter=shard.delimiter, max_keys=1000)
        keys += [o.key for o in page.objects if not shard.end_at or o.key <= shard.end_at]
        if not page.next_token or (shard.end_at and page.objects and page.objects[-1].key > shard.end_at):
            return keys
        token = page.next_token


def _plan_and_list(cfg, actors: int) -> tuple[list[Shard], list[str]]:
    async def go():
        shards = await plan_shards(cfg.source, actors)
        store = open_store(cfg.source)
        try:
            listed = [k for s in shards for k in await _list_shard(store, s)]
        finally:
            await store.aclose()
        return shards, listed

    return asyncio.run(go())


@pytest.mark.parametrize("layout", ["flat", "deep", "mixed"])
def test_every_key_in_exactly_one_shard(tmp_path, layout):
    rng = random.Random(4)
    root = tmp_path / "src"
    keys = set()
    for i in range(12_000):
        if layout == "flat" or (layout == "mixed" and i % 2):
            key = f"img-{rng.randrange(16**8):08x}.jpg"
        else:
            key = f"{rng.choice('abc')}/{rng.randrange(30):02d}/f{i:05d}"
        keys.add(key)
    for key in keys:
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
    cfg = load_config(["source=local", f"source.path={root}", "destination=local",
                       f"destination.path={tmp_path / 'dst'}"])
    shards, listed = _plan_and_list(cfg, actors=2)
    assert len(listed) == len(set(listed)), "no key in two shards"
    assert set(listed) == keys, "no key missed"
    assert len(shards) >= 8, f"{layout}: only {len(shards)} shards for 2 actors"
