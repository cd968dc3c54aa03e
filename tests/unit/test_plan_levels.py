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


class FlatKeys:
    """A flat folder: keys k00000..k{n-1}, no '/' below the root."""

    def __init__(self, n: int):
        self.keys = [f"k{i:05d}" for i in range(n)]

    async def list_page(self, prefix: str, *, start_after: str = "", token: str = "", delimiter: str = "",
                        max_keys: int = 1000) -> ListPage:
        import bisect

        from dth_ray.model import ObjectMeta

        start = bisect.bisect_right(self.keys, token or start_after)
        page = self.keys[start:start + max_keys]
        more = start + max_keys < len(self.keys)
        return ListPage([ObjectMeta(k, 1, "e") for k in page], [], page[-1] if more and page else "")

    async def aclose(self) -> None:
        return None


def _run(overrides: list[str]):
    from dth_ray.compose import load_settings
    from dth_ray.ops import Ops
    from dth_ray.runtime.driver import SyncRun
    from dth_ray.runtime.interrupts import Interrupts

    settings = load_settings(["source.type=memory", "source.bucket=fa", "destination.type=memory",
                              "destination.bucket=fb", *overrides])
    return SyncRun(settings, Ops(settings.config, settings.job), None, Interrupts())


def test_a_flat_folder_is_cut_for_the_lanes_slots_too_so_actors_get_shards():
    from dth_ray.runtime.driver import SHARDS_PER_ACTOR, SHARDS_PER_LANE

    run = _run(["transfer.actors=1"])
    workers = run._plan_workers(lane=True)
    assert workers == 1 + SHARDS_PER_LANE // SHARDS_PER_ACTOR
    shards = asyncio.run(plan_shards(run.s.source, workers, store=FlatKeys(20_000)))
    # Before: 4 shards for the one actor, all of them taken by the lane (8 slots) while Ray started.
    assert len(shards) > SHARDS_PER_LANE, [s.start_after for s in shards]
    assert _run(["transfer.actors=1"])._plan_workers(lane=False) == 1  # no lane: the workers as they are


def test_an_interrupt_before_the_credentials_check_ran_leaves_nothing_to_settle():
    """Seen in a watch stopped as its next scan began: the check (an item with no shard) was among the items
    the loop stopped with, and settling it raised IndexError, so the scan ended 'error' instead of stopping."""
    from dth_ray.runtime.credcheck import CHECK

    run = _run([])
    run._unfinished(CHECK, None)  # raised IndexError: tuple index out of range
    assert run.latest == {}  # nothing settled
