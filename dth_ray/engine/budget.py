"""A byte budget: payload memory is taken from it before any GET, so peak memory is bounded by design."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager


class ByteBudget:
    """Async counting semaphore over bytes. A request larger than the whole budget waits for all of it."""

    def __init__(self, capacity_bytes: int):
        self.capacity_bytes = capacity_bytes
        self._free = capacity_bytes
        self._cond = asyncio.Condition()

    @property
    def in_use_bytes(self) -> int:
        return self.capacity_bytes - self._free

    @asynccontextmanager
    async def hold(self, nbytes: int):
        need = min(max(nbytes, 1), self.capacity_bytes)
        async with self._cond:
            await self._cond.wait_for(lambda: self._free >= need)
            self._free -= need
        try:
            yield
        finally:
            async with self._cond:
                self._free += need
                self._cond.notify_all()
