"""Scripted failures and delays for the in-memory store's calls, so tests of higher layers meet errors on cue."""

from __future__ import annotations

import copy
import threading
import time
from collections import Counter
from dataclasses import dataclass

from dth_ray.errors import DthError

OPERATIONS = frozenset({
    "list_page", "head", "get", "get_into", "put", "create_multipart", "upload_part", "complete_multipart",
    "abort_multipart", "list_parts", "list_uploads", "delete", "copy_object", "upload_part_copy",
})


@dataclass(slots=True)
class _Rule:
    op: str
    key_prefix: str
    times: int | None  # calls left; None: every matching call
    error: DthError | None = None
    delay_s: float = 0.0
    after: int = 0  # matching calls to let through before the rule applies


class Faults:
    """Failure and delay rules for the calls made through one memory bucket's stores, and a count of calls.

    A call names a key: its key, the prefix for list_page and list_uploads, the destination key for copies.
    Rules apply in the order they were added; a call sleeps the sum of its matching delays, then raises at
    most one error (a later failing rule waits for the next call). `calls[op]` counts every call. Safe to
    use from several threads.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: list[_Rule] = []
        self.calls: Counter[str] = Counter()
        self.times: list[float] = []  # time.monotonic() of every call, in order (rates over time)

    def fail(self, op: str, error: DthError, *, times: int | None = 1, key_prefix: str = "",
             after: int = 0) -> None:
        """The next `times` calls of `op` (None: all) naming a key under `key_prefix`, after letting `after` of
        them through, raise a copy of `error`. Raises ValueError for an unknown operation or a count below 1."""
        self._add(_Rule(op, key_prefix, times, error=error, after=after))

    def delay(self, op: str, delay_s: float, *, times: int | None = None, key_prefix: str = "") -> None:
        """The next `times` calls of `op` (None: all) naming a key under `key_prefix` first await
        asyncio.sleep(delay_s). Raises ValueError for an unknown operation or a count below 1."""
        self._add(_Rule(op, key_prefix, times, delay_s=delay_s))

    def clear(self) -> None:
        """Drop every rule (the call counts stay)."""
        with self._lock:
            self._rules.clear()

    def _add(self, rule: _Rule) -> None:
        if rule.op not in OPERATIONS:
            raise ValueError(f"unknown operation {rule.op!r}; one of {sorted(OPERATIONS)}")
        if rule.times is not None and rule.times < 1:
            raise ValueError(f"times={rule.times} must be at least 1 (or None)")
        with self._lock:
            self._rules.append(rule)

    def take(self, op: str, key: str) -> tuple[float, DthError | None]:
        """Count one call and return its delay and error, using up the rules that fire (the store's part)."""
        with self._lock:
            self.calls[op] += 1
            self.times.append(time.monotonic())
            delay_s, error = 0.0, None
            for rule in self._rules:
                if rule.op != op or not key.startswith(rule.key_prefix):
                    continue
                if rule.after:
                    rule.after -= 1
                    continue
                if rule.error is not None:
                    if error is not None:
                        continue
                    error = copy.copy(rule.error)  # a fresh exception per raise: tracebacks never pile up
                delay_s += rule.delay_s
                if rule.times is not None:
                    rule.times -= 1
            self._rules = [rule for rule in self._rules if rule.times != 0]
        return delay_s, error
