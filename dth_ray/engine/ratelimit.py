"""Request-rate and bandwidth caps (token buckets) and an AIMD concurrency limit that backs off on throttling."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable


class TokenBucket:
    """Refills `rate_per_s` tokens per second up to `burst`; rate 0 means unlimited."""

    def __init__(self, rate_per_s: float, burst: float | None = None,
                 clock: Callable[[], float] = time.monotonic, sleep=asyncio.sleep):
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(rate_per_s, 1.0)
        self._tokens = self.burst
        self._clock = clock
        self._sleep = sleep
        self._last = clock()
        self._lock = asyncio.Lock()
        self.taken = 0.0  # tokens taken so far
        self.waited_s = 0.0  # time callers slept for tokens so far

    def set_rate(self, rate_per_s: float, burst: float | None = None) -> None:
        """A new rate (and burst) from now on; tokens earned at the old rate are kept up to the new burst."""
        now = self._clock()
        if self.rate_per_s > 0:
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
        self._last = now
        self.rate_per_s = rate_per_s
        self.burst = burst if burst is not None else max(rate_per_s, 1.0)
        self._tokens = min(self._tokens, self.burst)

    async def take(self, amount: float = 1.0) -> None:
        """Take `amount` tokens, sleeping off any deficit (amounts above the burst are paid over time)."""
        if self.rate_per_s <= 0:
            return
        self.taken += amount
        async with self._lock:  # FIFO: one waiter sleeps at a time, so big requests are not starved
            now = self._clock()
            self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate_per_s)
            self._last = now
            self._tokens -= amount
            if self._tokens < 0:
                wait_s = -self._tokens / self.rate_per_s
                self.waited_s += wait_s
                await self._sleep(wait_s)


class AdaptiveLimit:
    """In-flight cap that halves on a throttle answer and grows by one per `limit` successes (AIMD).

    Waiters queue FIFO on their own futures, so a release wakes exactly the callers it admits.
    """

    def __init__(self, maximum: int, minimum: int = 1):
        self.maximum = maximum
        self.minimum = minimum
        self.limit = float(maximum)
        self._in_flight = 0
        self._waiters: deque[asyncio.Future] = deque()
        self.throttle_events = 0

    @property
    def in_flight(self) -> int:
        return self._in_flight

    async def acquire(self) -> None:
        if self._in_flight < int(self.limit) and not self._waiters:
            self._in_flight += 1
            return
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter  # the releaser counted us in before waking us
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._release_slot()
            else:
                self._waiters.remove(waiter)
            raise

    def back_off(self) -> None:
        """Halve the cap as a throttle answer would (another worker of the job was throttled)."""
        self.limit = max(float(self.minimum), self.limit / 2)

    async def release(self, throttled: bool = False) -> None:
        if throttled:
            self.throttle_events += 1
            self.limit = max(float(self.minimum), self.limit / 2)
        else:
            self.limit = min(float(self.maximum), self.limit + 1.0 / max(self.limit, 1.0))
        self._release_slot()

    def _release_slot(self) -> None:
        self._in_flight -= 1
        while self._waiters and self._in_flight < int(self.limit):
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                waiter.set_result(None)
