"""A request body whose bytes are still arriving: a buffer filled by pieces in any order, sent as its complete
prefix grows (a single PUT that starts while the ranged GETs of the same object are still landing)."""

from __future__ import annotations

import asyncio


class GrowingBody:
    """`view`, filled by `add(start, end)` in any order; `ready(end)` returns once its first `end` bytes are
    all in, and raises what `fail(exc)` was given once the filling stopped. A store whose features say
    `put_streams_body` takes one as a PUT body."""

    __slots__ = ("view", "complete_bytes", "_pending", "_waiters", "_error")

    def __init__(self, view: memoryview):
        self.view = view
        self.complete_bytes = 0  # length of the prefix that is all in
        self._pending: dict[int, int] = {}  # start -> end of pieces in past the prefix
        self._waiters: list[tuple[int, asyncio.Future]] = []
        self._error: BaseException | None = None

    def __len__(self) -> int:
        return len(self.view)

    def add(self, start: int, end: int) -> None:
        """Bytes [start, end) of the body are in."""
        self._pending[start] = max(end, self._pending.get(start, end))
        while self.complete_bytes in self._pending:
            self.complete_bytes = max(self.complete_bytes, self._pending.pop(self.complete_bytes))
        if self._waiters:
            waiting = []
            for end_bytes, future in self._waiters:
                if end_bytes <= self.complete_bytes:
                    if not future.done():
                        future.set_result(None)
                else:
                    waiting.append((end_bytes, future))
            self._waiters = waiting

    def fail(self, exc: BaseException) -> None:
        """The body will not be completed: every waiter, now and later, gets `exc`."""
        self._error = exc
        for _, future in self._waiters:
            if not future.done():
                future.set_exception(exc)
        self._waiters = []

    async def ready(self, end_bytes: int) -> None:
        if end_bytes <= self.complete_bytes:
            return
        if self._error is not None:
            raise self._error
        future = asyncio.get_running_loop().create_future()
        self._waiters.append((end_bytes, future))
        await future
