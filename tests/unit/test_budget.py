"""The byte budget's buffers: reused object after object (no allocation each time), by size class, exact
length, and the bytes held plus the idle buffers never above the budget's 9/8 × capacity."""

from __future__ import annotations

import asyncio

MiB = 1 << 20


def run(coro):
    return asyncio.run(coro)


def test_buffers_are_reused_not_allocated_per_object():
    from dth_ray.engine.budget import ByteBudget

    async def body():
        budget = ByteBudget(64 * MiB)
        for size in (10 * MiB, 10 * MiB - 7, 9 * MiB + 1, 10 * MiB):  # one size class: whole MiB
            async with budget.buffer(size) as view:
                assert len(view) == size and not view.readonly
                view[-1] = 7
        return budget.allocations, budget.pooled_bytes

    allocations, pooled = run(body())
    assert allocations == 1 and pooled == 10 * MiB, "one 10 MiB buffer served all four"


def test_concurrent_holders_get_distinct_buffers_and_the_pool_stays_within_the_bound():
    from dth_ray.engine.budget import ByteBudget

    async def body():
        budget = ByteBudget(32 * MiB)
        seen = []
        peak = 0

        async def one(size):
            nonlocal peak
            async with budget.buffer(size) as view:
                seen.append(view)
                peak = max(peak, budget.pooled_bytes)
                await asyncio.sleep(0.001)

        for sizes in ([8 * MiB] * 4, [16 * MiB] * 2, [3 * MiB] * 8, [30 * MiB]):
            await asyncio.gather(*(one(s) for s in sizes))
        return budget, peak, seen

    budget, peak, seen = run(body())
    assert peak <= 32 * MiB * 9 // 8
    assert budget.pooled_bytes <= 32 * MiB * 9 // 8


def test_small_sizes_round_to_64_kib_not_to_a_mebibyte():
    from dth_ray.engine.budget import ByteBudget

    async def body():
        budget = ByteBudget(64 * MiB)
        async with budget.buffer(300 * 1024):
            return budget.pooled_bytes

    assert run(body()) == 320 * 1024


def test_idle_buffers_count_against_the_bound_with_the_bytes_held():
    from dth_ray.engine.budget import ByteBudget

    async def body():
        budget = ByteBudget(32 * MiB)
        for size in (6 * MiB, 7 * MiB, 9 * MiB):  # three size classes, all idle afterwards
            async with budget.buffer(size):
                pass
        idle_before = budget.pooled_bytes
        async with budget.hold(20 * MiB):  # a body read outside the pool: 20 + 22 idle > 36 MiB
            during = budget.pooled_bytes
            assert budget.in_use_bytes + during <= 32 * MiB * 9 // 8
        return idle_before, during

    idle_before, during = run(body())
    assert idle_before == 22 * MiB
    assert during == 13 * MiB, "the largest idle buffer (9 MiB) was dropped to make room, no more"


def test_a_buffer_as_large_as_most_of_the_budget_is_reused_not_dropped_and_allocated_again():
    from dth_ray.engine.budget import ByteBudget

    async def body():
        budget = ByteBudget(192 * MiB)
        for _ in range(4):  # 128 MiB held + 128 MiB idle would pass 9/8 × 192 MiB: the idle one is the one taken
            async with budget.buffer(128 * MiB):
                pass
        return budget.allocations

    assert run(body()) == 1


def test_held_plus_idle_stays_within_the_bound_through_any_mix_of_holds_and_buffers():
    import random

    from dth_ray.engine.budget import ByteBudget

    rng = random.Random(7)
    limit, rounding = 32 * MiB * 9 // 8, MiB

    async def body():
        budget = ByteBudget(32 * MiB)
        worst = 0

        async def one(kind: str, size: int) -> None:
            nonlocal worst
            use = budget.buffer(size) if kind == "buffer" else budget.hold(size)
            async with use:
                idle = sum(len(b) for bufs in budget._idle.values() for b in bufs)  # noqa: SLF001
                assert idle == budget._idle_bytes  # noqa: SLF001
                worst = max(worst, budget.in_use_bytes + idle)
                await asyncio.sleep(rng.random() / 1000)

        for _ in range(40):
            batch = [(rng.choice(["buffer", "hold"]), rng.choice([300 * 1024, 3 * MiB, 9 * MiB + 5, 17 * MiB]))
                     for _ in range(rng.randint(1, 6))]
            await asyncio.gather(*(one(kind, size) for kind, size in batch))
        return worst

    assert run(body()) <= limit + rounding


def test_a_wait_for_a_buffer_ends_with_none_once_the_caller_has_a_leaner_way():
    from dth_ray.engine.budget import ByteBudget

    """`unless` is asked first and whenever the budget changes: a waiter whose other way became possible gets
    None and holds nothing, even when the release that woke it left room; without it, it gets its buffer."""
    budget = ByteBudget(100 * MiB)
    leaner = {"now": False}

    async def main():
        async with budget.buffer(70 * MiB):
            async with budget.buffer(1, unless=lambda: True) as at_once:
                assert at_once is None and budget.in_use_bytes == 70 * MiB
            waiting = asyncio.ensure_future(_lend(budget, 60 * MiB, lambda: leaner["now"]))
            plain = asyncio.ensure_future(_lend(budget, 60 * MiB, None))
            await asyncio.sleep(0.01)
            assert not waiting.done() and not plain.done()
            leaner["now"] = True  # e.g. the source's rate became known
        return await waiting, await plain

    got_waiting, got_plain = asyncio.run(main())
    assert got_waiting is None and got_plain == 60 * MiB
    assert budget.in_use_bytes == 0


async def _lend(budget, nbytes: int, unless):
    async with budget.buffer(nbytes, unless=unless) as buf:
        return None if buf is None else len(buf)


def test_a_cut_keeps_what_is_held_and_new_holds_wait_until_enough_is_given_back():
    """A resize to less: holds taken stay, the next one waits until the bytes held fit the new capacity, and
    idle buffers beyond the new bound are dropped at once; one asking for more than the new capacity waits
    for all of it (the capacity at grant time, not at asking) instead of waiting forever."""
    from dth_ray.engine.budget import ByteBudget

    budget = ByteBudget(64 * MiB)

    async def main():
        async with budget.buffer(8 * MiB):  # leaves an idle 8 MiB buffer behind
            pass
        assert budget.pooled_bytes == 8 * MiB
        first = budget.buffer(40 * MiB)
        await first.__aenter__()
        big = asyncio.ensure_future(_lend(budget, 60 * MiB, None))  # fits 64 MiB once `first` is back
        await asyncio.sleep(0.01)
        await budget.resize(16 * MiB)
        assert budget.capacity_bytes == 16 * MiB and budget.in_use_bytes == 40 * MiB
        assert budget.pooled_bytes == 40 * MiB, "the idle 8 MiB went: 40 held + 8 idle > 9/8 × 16"
        small = asyncio.ensure_future(_lend(budget, 4 * MiB, None))
        await asyncio.sleep(0.01)
        assert not small.done() and not big.done()
        await first.__aexit__(None, None, None)
        return await big, await small

    assert run(main()) == (60 * MiB, 4 * MiB)
    assert budget.in_use_bytes == 0


def test_a_raise_lets_waiting_holds_in_at_once():
    from dth_ray.engine.budget import ByteBudget

    budget = ByteBudget(16 * MiB)

    async def main():
        async with budget.buffer(16 * MiB):
            waiting = asyncio.ensure_future(_lend(budget, 32 * MiB, None))
            await asyncio.sleep(0.01)
            assert not waiting.done()
            await budget.resize(64 * MiB)
            got = await asyncio.wait_for(waiting, 1.0)
            assert budget.in_use_bytes == 16 * MiB
            return got

    assert run(main()) == 32 * MiB
    assert budget.in_use_bytes == 0


def test_the_near_budget_only_beside_ray_and_only_for_a_source_known_to_be_near():
    from dth_ray.engine.budget import budget_for_link

    full, near = 160 * MiB, 32 * MiB
    assert budget_for_link(full, near, True, 0.0002) == near, "loopback"
    assert budget_for_link(full, near, True, 0.0) == near, "a disk on this machine"
    assert budget_for_link(full, near, True, 0.150) == full, "150 ms away: the budget is the bytes in flight"
    assert budget_for_link(full, near, True, None) == full, "not known yet: treated as far"
    assert budget_for_link(full, near, False, 0.0002) == full, "no Ray: this process has the memory"
    assert budget_for_link(full, 0, True, 0.0002) == full, "transfer.near_buffer_size=0"


def _rss_bytes() -> int:
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def test_dropped_buffers_give_their_pages_back_to_the_system_at_once():
    """Pool buffers are mappings of their own, not C-heap memory malloc may keep: the process's resident size
    falls by the buffers' size as soon as the pool drops them (here: the budget is cut). On the heap, glibc
    keeps freed chunks below its trim threshold, which rises with the largest block freed (measured beside
    Ray: ~35 MB of a driver's memory beyond its pool)."""
    from dth_ray.engine.budget import ByteBudget

    raise_malloc_thresholds = bytearray(24 * MiB)  # mapped, then freed: glibc now keeps blocks up to 24 MiB
    del raise_malloc_thresholds

    async def body():
        budget = ByteBudget(64 * MiB)
        async with budget.buffer(8 * MiB) as a, budget.buffer(8 * MiB) as b, budget.buffer(8 * MiB) as c, \
                budget.buffer(8 * MiB) as d:
            for view in (a, b, c, d):
                view[::4096] = b"\x01" * len(range(0, len(view), 4096))  # touch every page
        del a, b, c, d, view  # the caller's last references (a lent view keeps its buffer)
        held = _rss_bytes()
        await budget.resize(MiB)  # the idle buffers are now beyond the bound
        return held - _rss_bytes(), budget.pooled_bytes

    released, pooled = run(body())
    assert pooled == 0 and released >= 30 * MiB, f"{released / MiB:.1f} MiB given back"
