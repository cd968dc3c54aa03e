"""Pacing for one actor's store requests: byte budget and AIMD concurrency.

One instance per actor, shared by all its copies and checks, so the caps hold for the actor as a whole. The
job-wide request-rate and bandwidth budgets pace the source store itself (engine/pacing.py).
"""

from __future__ import annotations

from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.ratelimit import AdaptiveLimit
from dth_ray.errors import DthError, Throttled


class Limits:
    """Shared pacing for one actor: byte budget and AIMD request concurrency."""

    def __init__(self, budget: ByteBudget, concurrency: AdaptiveLimit):
        self.budget = budget
        self.concurrency = concurrency
        self.errors: dict[str, int] = {}  # failed requests by error class, for metrics (taken by the actor)

    async def call(self, coro_fn):
        """Run one store request under the cap; a throttle answer halves it."""
        await self.concurrency.acquire()
        return await self._run(coro_fn)

    async def call_sized(self, pick):
        """Like `call`, for a request sized only once it may go: `pick()` returns (nbytes, coro_fn), or None
        for nothing left to send. A reader sizes its next piece then, from the rate learnt by that time (after
        waiting for a slot), so a stream that finds nothing left sends nothing."""
        await self.concurrency.acquire()

        async def sized():
            picked = pick()
            if picked is None:
                return None
            _, coro_fn = picked
            return await coro_fn()

        return await self._run(sized)

    async def call_beside(self, coro_fn):
        """Run one request that the requests it waits on run beside (a PUT fed by its own GETs): outside the
        cap, which it could otherwise fill while they wait for it (the byte budget bounds how many there
        are); a throttle answer still halves the cap."""
        try:
            return await coro_fn()
        except DthError as exc:
            if self._counted(exc):
                self.concurrency.back_off()
            raise

    async def _run(self, coro_fn):
        throttled = False
        try:
            return await coro_fn()
        except DthError as exc:
            throttled = self._counted(exc)
            raise
        finally:
            await self.concurrency.release(throttled)

    def _counted(self, exc: DthError) -> bool:
        """Count a failed request by its error class; True for a throttle answer."""
        name = type(exc).__name__
        self.errors[name] = self.errors.get(name, 0) + 1
        return isinstance(exc, Throttled)

    def take_errors(self) -> dict[str, int]:
        errors, self.errors = self.errors, {}
        return errors
