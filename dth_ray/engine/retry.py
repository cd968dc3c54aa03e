"""Bounded, jittered retries for one object or part; the only retry loop in the engine."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dth_ray.errors import DthError, Throttled

T = TypeVar("T")


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 10.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff for attempt 1, 2, ... (AWS architecture blog's 'full jitter')."""
    rng = rng or random
    return rng.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))


async def retry(fn: Callable[[], Awaitable[T]], attempts: int, *, sleep=asyncio.sleep,
                on_retry: Callable[[DthError, int], None] | None = None) -> T:
    """Run `fn` up to `attempts` times while it raises a retryable DthError; re-raise the last error."""
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except DthError as exc:
            if not exc.retryable or attempt == attempts:
                raise
            if on_retry is not None:
                on_retry(exc, attempt)
            delay = exc.delay_s if isinstance(exc, Throttled) and exc.delay_s else backoff_s(attempt)
            await sleep(delay)
    raise AssertionError("unreachable")
