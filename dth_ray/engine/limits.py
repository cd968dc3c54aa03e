"""Pacing for one actor's store requests: byte budget, AIMD concurrency, request rate and bandwidth.

One instance per actor, shared by all its copies and checks, so the caps hold for the actor as a whole.
"""

from __future__ import annotations

from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.ratelimit import AdaptiveLimit, TokenBucket
from dth_ray.errors import DthError, Throttled


class Limits:
    """Shared pacing for one actor: byte budget, AIMD request concurrency, request rate and bandwidth."""

    def __init__(self, budget: ByteBudget, concurrency: AdaptiveLimit, requests: TokenBucket,
                 bandwidth: TokenBucket):
        self.budget = budget
        self.concurrency = concurrency
        self.requests = requests
        self.bandwidth = bandwidth
        self.errors: dict[str, int] = {}  # failed requests by error class, for metrics (taken by the actor)

    async def call(self, coro_fn, nbytes: int = 0):
        """Run one store request under the caps; a throttle answer halves the concurrency cap."""
        await self._pace(nbytes)
        await self.concurrency.acquire()
        return await self._run(coro_fn)

    async def call_sized(self, pick):
        """Like `call`, for a request sized only once it may go: `pick()` returns (nbytes, coro_fn), or None
        for nothing left to send. A reader sizes its next piece then, from the rate learnt by that time. The
        rate and bandwidth caps are taken after the pick (holding the slot: under those caps slots are not
        the limit), so a stream that finds nothing left spends no request token."""
        await self.concurrency.acquire()

        async def sized():
            picked = pick()
            if picked is None:
                return None
            nbytes, coro_fn = picked
            await self._pace(nbytes)
            return await coro_fn()

        return await self._run(sized)

    async def _pace(self, nbytes: int) -> None:
        """The request-rate and bandwidth caps for one request of `nbytes`."""
        if self.requests.rate_per_s > 0:
            await self.requests.take()
        if nbytes and self.bandwidth.rate_per_s > 0:
            await self.bandwidth.take(nbytes)

    async def _run(self, coro_fn):
        throttled = False
        try:
            return await coro_fn()
        except DthError as exc:
            throttled = isinstance(exc, Throttled)
            name = type(exc).__name__
            self.errors[name] = self.errors.get(name, 0) + 1
            raise
        finally:
            await self.concurrency.release(throttled)

    def take_errors(self) -> dict[str, int]:
        errors, self.errors = self.errors, {}
        return errors
