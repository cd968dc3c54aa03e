"""Pacing and bounds: token buckets (fake clock), AIMD on throttling, bounded retries, the byte budget."""

from __future__ import annotations

import asyncio
import pickle

import pytest

from dth_ray.config import StoreConfig, StoreType, SyncConfig
from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.ratelimit import AdaptiveLimit, TokenBucket
from dth_ray.engine.retry import backoff_s, retry
from dth_ray.errors import Fatal, Throttled, Transient


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_token_bucket_paces_to_its_rate():
    clock = FakeClock()
    bucket = TokenBucket(100.0, burst=10.0, clock=clock, sleep=clock.sleep)

    async def take_many():
        for _ in range(110):
            await bucket.take()

    asyncio.run(take_many())
    # 10 tokens of burst, then 100 more at 100/s: one second of fake time.
    assert clock.now == pytest.approx(1.0, rel=0.02)


def test_bandwidth_bucket_counts_bytes_and_zero_means_unlimited():
    clock = FakeClock()
    bucket = TokenBucket(1_000_000.0, clock=clock, sleep=clock.sleep)
    asyncio.run(bucket.take(3_000_000))
    asyncio.run(bucket.take(1_000_000))
    assert clock.now == pytest.approx(3.0, rel=0.02)
    unlimited = TokenBucket(0, clock=clock, sleep=clock.sleep)
    asyncio.run(unlimited.take(10**12))
    assert clock.now == pytest.approx(3.0, rel=0.02)


def test_adaptive_limit_halves_on_throttle_and_recovers_additively():
    limit = AdaptiveLimit(32)

    async def cycle(throttled: bool):
        await limit.acquire()
        await limit.release(throttled)

    asyncio.run(cycle(True))
    assert limit.limit == 16
    asyncio.run(cycle(True))
    assert limit.limit == 8
    for _ in range(8):
        asyncio.run(cycle(False))
    assert 8 < limit.limit <= 9.1
    assert limit.throttle_events == 2


def test_adaptive_limit_caps_in_flight():
    limit = AdaptiveLimit(3)
    peak = 0
    current = 0

    async def job():
        nonlocal peak, current
        await limit.acquire()
        current += 1
        peak = max(peak, current)
        await asyncio.sleep(0)
        current -= 1
        await limit.release()

    async def main():
        await asyncio.gather(*(job() for _ in range(20)))

    asyncio.run(main())
    assert peak == 3


def test_retry_is_bounded_and_honours_throttle_delay():
    clock = FakeClock()
    calls = []

    async def flaky():
        calls.append(1)
        raise Throttled("slow down", delay_s=1.5)

    with pytest.raises(Throttled):
        asyncio.run(retry(flaky, attempts=4, sleep=clock.sleep))
    assert len(calls) == 4
    assert clock.slept == [1.5, 1.5, 1.5]


def test_retry_stops_at_once_on_non_retryable_and_returns_on_success():
    attempts = []

    async def fatal():
        attempts.append(1)
        raise Fatal("no")

    with pytest.raises(Fatal):
        asyncio.run(retry(fatal, attempts=5, sleep=FakeClock().sleep))
    assert len(attempts) == 1

    results = iter([Transient("x"), Transient("y"), "ok"])

    async def recovers():
        item = next(results)
        if isinstance(item, Exception):
            raise item
        return item

    assert asyncio.run(retry(recovers, attempts=3, sleep=FakeClock().sleep)) == "ok"


def test_backoff_is_full_jitter_within_cap():
    import random

    rng = random.Random(1)
    assert all(0 <= backoff_s(n, base_s=0.2, cap_s=10, rng=rng) <= min(10, 0.2 * 2 ** (n - 1)) for n in range(1, 20))


def test_byte_budget_never_exceeds_capacity():
    budget = ByteBudget(100)
    peak = 0

    async def hold(n: int):
        nonlocal peak
        async with budget.hold(n):
            peak = max(peak, budget.in_use_bytes)
            await asyncio.sleep(0)

    async def main():
        await asyncio.gather(*(hold(n) for n in (60, 50, 40, 30, 500, 10)))

    asyncio.run(main())
    assert peak <= 100
    assert budget.in_use_bytes == 0


def test_small_holds_pass_large_ones_that_fill_the_budget_within_an_eighth_more():
    budget = ByteBudget(64 * 1024)  # small holds: up to 1 KiB; overdraft: 8 KiB

    async def main():
        done = asyncio.Event()

        async def hold(n: int):
            async with budget.hold(n):
                await done.wait()

        large = [asyncio.ensure_future(hold(32 * 1024)) for _ in range(2)]
        await asyncio.sleep(0)
        assert budget.in_use_bytes == 64 * 1024, "the large holds took the whole budget"
        third = asyncio.ensure_future(hold(1025))  # not small: it waits for the large ones
        small = [asyncio.ensure_future(hold(1024)) for _ in range(9)]
        await asyncio.sleep(0)
        assert budget.in_use_bytes == 64 * 1024 + 8 * 1024, "small ones move on, an eighth more and no further"
        done.set()
        await asyncio.gather(*large, third, *small)
        assert budget.in_use_bytes == 0

    asyncio.run(main())


def test_configs_and_stores_pickle():
    cfg = SyncConfig()
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    from dth_ray.stores import open_store

    for kind in (StoreType.s3, StoreType.cos, StoreType.kodo, StoreType.oss):
        store = open_store(StoreConfig(type=kind, bucket="bucket-1", region="cn-hangzhou"))
        again = pickle.loads(pickle.dumps(store))
        assert type(again) is type(store) and again.features == store.features
