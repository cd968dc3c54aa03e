"""Planning lists the next level of a few top-level prefixes concurrently (round trips add up across a long
link), and every sub-prefix still becomes a shard. A synthetic in-process lister: pure planning logic."""

from __future__ import annotations

import asyncio

from dth_ray.cli import load_config
from dth_ray.model import ListPage
from dth_ray.runtime.planning import plan_shards


class SlowTree:
    """Keys top{i}/sub{j}/obj: each listing call takes `delay_s`; counts how many run at once."""

    def __init__(self, tops: int, subs: int, delay_s: float = 0.05):
        self.tops, self.subs, self.delay_s = tops, subs, delay_s
        self.running = self.most = self.calls = 0

    async def list_page(self, prefix: str, *, start_after: str = "", token: str = "", delimiter: str = "",
                        max_keys: int = 1000) -> ListPage:
        self.running += 1
        self.calls += 1
        self.most = max(self.most, self.running)
        try:
            await asyncio.sleep(self.delay_s)
        finally:
            self.running -= 1
        if prefix == "":
            return ListPage([], [f"top{i}/" for i in range(self.tops)])
        return ListPage([], [f"{prefix}sub{j}/" for j in range(self.subs)])

    async def aclose(self) -> None:
        return None


def test_next_level_of_few_prefixes_is_listed_concurrently():
    cfg = load_config(["source.bucket=bkt1", "destination.bucket=dst1"], check=False)
    tree = SlowTree(tops=6, subs=3)

    shards = asyncio.run(plan_shards(cfg.source, 2, store=tree))

    assert tree.calls == 1 + 6, "the root, then each top-level prefix once"
    assert tree.most > 1, "the six second-level listings overlapped"
    assert sorted(s.prefix for s in shards) == sorted(f"top{i}/sub{j}/" for i in range(6) for j in range(3))
