"""Bounded, jittered retries for one object or part; the only retry loop in the engine.

One owner per retry layer (the SDK retries single requests, this one an object's copy or a peer's part, the
job re-queues failed items), always bounded, with an injectable sleep so tests need no real waiting.
"""

from __future__ import annotations

import asyncio
import inspect
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from dth_ray.errors import DthError, Throttled

T = TypeVar("T")


def backoff_s(attempt: int, base_s: float = 0.2, cap_s: float = 10.0, rng: random.Random | None = None) -> float:
    """Full-jitter exponential backoff for attempt 1, 2, ... (AWS architecture blog's 'full jitter')."""
    rng = rng or random
    return rng.uniform(0, min(cap_s, base_s * 2 ** (attempt - 1)))


async def retry(fn: Callable[[], Awaitable[T]], attempts: int, *,
                sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                on_retry: Callable[[DthError, int], Awaitable[None] | None] | None = None,
                at_once: tuple[type[DthError], ...] = ()) -> T:
    """Run `fn` up to `attempts` times while it raises a retryable DthError; re-raise the last error.

    Before each further attempt `on_retry(error, attempt)` runs (awaited when it returns an awaitable; what it
    raises ends the retries), then `sleep` waits: a Throttled error's own delay where it gives one, else
    full-jitter backoff. Errors of the `at_once` classes are retried too, though not retryable in general,
    and with no wait: the hook deals with them (the copier re-reads a source that changed). Any other error
    that is not retryable (Unreadable, PermissionDenied, Fatal, ...) is raised at once, with `attempts` set
    on it (the tries made).
    """
    for attempt in range(1, attempts + 1):
        try:
            return await fn()
        except DthError as exc:
            exc.attempts = attempt  # the tries made, for the log line of a copy that failed
            now = isinstance(exc, at_once)
            if not (exc.retryable or now) or attempt == attempts:
                raise
            if on_retry is not None:
                hooked = on_retry(exc, attempt)
                if inspect.isawaitable(hooked):
                    await hooked
            if not now:
                await sleep(exc.delay_s if isinstance(exc, Throttled) and exc.delay_s else backoff_s(attempt))
    raise AssertionError("unreachable")
