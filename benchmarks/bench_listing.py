"""The planning library alone: plan and diff 10 million synthetic keys in one process, with no servers, no
Ray, no driver, no manifest and no worker; keys/s and this script's peak RSS. Not a planning run's memory:
that is bench_10m.py (the real CLI, every process of the run summed).

The synthetic source lists keys computed on the fly (nothing materialised): a flat layout ("obj-%010d",
the layout that defeats depth-based listing) and a deep one (100 folders × N/100 keys). The destination holds
the same keys minus every 100th and with every 250th of another size, so the diff has work to find. Planning
is the product's own (`dth_ray.runtime.planning.plan_shards`, probing where keys branch); the diff is the
product's merge-join (`dth_ray.plan.diff.merge_join`) over the same 1,000-key pages the actors use, with as
many shards in flight as 8 actors × 4 shards.

usage: python benchmarks/bench_listing.py [--keys 10000000] [--layout flat|deep|both]
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import resource
import time
from pathlib import Path

from dth_ray.cli import load_config
from dth_ray.model import ListPage, ObjectMeta
from dth_ray.plan.diff import COPY, merge_join
from dth_ray.runtime.planning import plan_shards
from dth_ray.stores.s3 import FEATURES

HERE = Path(__file__).resolve().parent
ACTORS = 8
IN_FLIGHT = 4 * ACTORS


class SyntheticStore:
    """A sorted virtual key space: groups of `count` keys f'{group}{i:010d}'; list_page like S3's."""

    features = FEATURES

    def __init__(self, groups: list[tuple[str, int]], drop_every: int = 0, resize_every: int = 0):
        self.groups = sorted(groups)
        self.drop_every = drop_every
        self.resize_every = resize_every
        self.calls = 0

    def _first_index(self, group: str, count: int, after: str) -> int:
        if after < group:
            return 0
        return bisect.bisect_right(range(count), after, key=lambda i: f"{group}{i:010d}")

    async def list_page(self, prefix: str, *, start_after: str = "", token: str = "", delimiter: str = "",
                        max_keys: int = 1000) -> ListPage:
        self.calls += 1
        after = max(start_after, token)
        objects: list[ObjectMeta] = []
        prefixes: list[str] = []
        for group, count in self.groups:
            if not (group.startswith(prefix) or prefix.startswith(group)) or after >= group + "9" * 10:
                continue
            rest = group[len(prefix):] if group.startswith(prefix) else ""
            if delimiter and delimiter in rest:  # the whole group rolls up into one common prefix
                common = prefix + rest[: rest.index(delimiter) + 1]
                if common > after and (not prefixes or prefixes[-1] != common):
                    if len(objects) + len(prefixes) >= max_keys:
                        return self._page(objects, prefixes, more=True)
                    prefixes.append(common)
                continue
            for i in range(self._first_index(group, count, after), count):
                key = f"{group}{i:010d}"
                if not key.startswith(prefix):
                    break
                if self.drop_every and i % self.drop_every == 0:
                    continue
                if len(objects) + len(prefixes) >= max_keys:
                    return self._page(objects, prefixes, more=True)
                size = 2048 if self.resize_every and i % self.resize_every == 0 else 1024
                objects.append(ObjectMeta(key=key, size=size, etag=f"{i:032x}"))
        return self._page(objects, prefixes, more=False)

    @staticmethod
    def _page(objects: list[ObjectMeta], prefixes: list[str], more: bool) -> ListPage:
        last = max([o.key for o in objects[-1:]] + [p + "\U0010ffff" for p in prefixes[-1:]] or [""])
        return ListPage(objects=objects, prefixes=prefixes, next_token=last if more else "")

    async def aclose(self) -> None:
        return None


async def diff_shard(src: SyntheticStore, dst: SyntheticStore, shard, compare) -> tuple[int, int]:
    """Pages of one shard on both sides, merge-joined page window by page window; (listed, to copy)."""
    listed = to_copy = 0

    async def pages(store):
        token = ""
        while True:
            page = await store.list_page(shard.prefix, start_after=shard.start_after, token=token,
                                         delimiter=shard.delimiter)
            objects = [o for o in page.objects if not shard.end_at or o.key <= shard.end_at]
            yield objects
            if not page.next_token or len(objects) < len(page.objects):
                return
            token = page.next_token

    dst_pages = pages(dst)
    dst_buffer: list[ObjectMeta] = []
    dst_done = False
    async for page in pages(src):
        if not page:
            continue
        bound = page[-1].key
        while not dst_done and (not dst_buffer or dst_buffer[-1].key <= bound):
            nxt = await anext(dst_pages, None)
            if nxt is None:
                dst_done = True
            else:
                dst_buffer.extend(nxt)
        cut = bisect.bisect_right([o.key for o in dst_buffer], bound)
        window, dst_buffer = dst_buffer[:cut], dst_buffer[cut:]
        for d in merge_join(page, window, [], src_prefix="", dst_prefix="", compare=compare,
                            src_features=FEATURES, dst_features=FEATURES):
            if d.src is not None:
                listed += 1
                to_copy += d.action == COPY
    return listed, to_copy


async def run(layout: str, keys: int) -> dict:
    groups = [("obj-", keys)] if layout == "flat" else [(f"d{j:03d}/obj-", keys // 100) for j in range(100)]
    src = SyntheticStore(groups)
    dst = SyntheticStore(groups, drop_every=100, resize_every=250)
    cfg = load_config(["source.bucket=synthetic", "destination.bucket=synthetic"])
    t0 = time.monotonic()
    shards = await plan_shards(cfg.source, ACTORS, store=src)
    plan_s = time.monotonic() - t0
    plan_calls = src.calls
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(shard):
        async with gate:
            return await diff_shard(src, dst, shard, cfg.compare)

    t1 = time.monotonic()
    results = await asyncio.gather(*(one(s) for s in shards))
    diff_s = time.monotonic() - t1
    listed = sum(r[0] for r in results)
    to_copy = sum(r[1] for r in results)
    expected_copy = sum(1 for _, count in groups for i in range(count) if i % 100 == 0 or i % 250 == 0)
    return {"layout": layout, "keys": keys, "shards": len(shards), "plan_s": round(plan_s, 2),
            "plan_list_calls": plan_calls, "diff_s": round(diff_s, 1), "listed": listed,
            "to_copy": to_copy, "expected_to_copy": expected_copy, "exact": listed == keys and to_copy == expected_copy,
            "keys_per_s": round(listed / (plan_s + diff_s)),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--layout", choices=["flat", "deep", "both"], default="both")
    args = parser.parse_args()
    rows = []
    for layout in (["flat", "deep"] if args.layout == "both" else [args.layout]):
        rows.append(asyncio.run(run(layout, args.keys)))
        print(json.dumps(rows[-1]), flush=True)
    out = HERE / "results" / f"listing-{time.strftime('%Y-%m-%d-%H%M')}.json"
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "actors": ACTORS, "rows": rows}, indent=1)
                   + "\n")
    print("\n| layout | keys | shards | plan s (LIST calls) | diff s | keys/s | to copy (expected) "
          "| peak RSS MB (planning library alone) |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['layout']} | {r['keys']:,} | {r['shards']} | {r['plan_s']} ({r['plan_list_calls']}) | "
              f"{r['diff_s']} | {r['keys_per_s']:,} | {r['to_copy']:,} ({r['expected_to_copy']:,}) | "
              f"{r['peak_rss_mb']} |")
    print(f"\nwritten {out}")
    return 0 if all(r["exact"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
