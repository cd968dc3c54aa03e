"""`dth-ray watch`'s rail on deletes from events: events.max_delete per sliding events.max_delete_window."""

from __future__ import annotations

import contextlib
import logging
from collections import deque
from collections.abc import Callable

log = logging.getLogger(__name__)

# Outcomes that prove a reconcile deleted nothing: its grant goes back. ("failed" keeps it: a DELETE that
# timed out may still have happened.)
_NOTHING_DELETED = frozenset({"copied", "unchanged", "absent", "skipped"})
_MAX_SKIPPED_KEYS = 100  # skipped keys named in the report (the count is exact)


class DeleteLimit:
    """Grants for deletes, at most `max_count` in any `window_s`; refusals counted, alerts paced.

    Deletes happen in transfer actors, but only with a grant taken here, in the driver, first: so the limit
    holds however many actors run. A grant goes back when its reconcile proved nothing was deleted. Pure: the
    caller passes the clock (time.monotonic in the service, numbers in tests).
    """

    def __init__(self, max_count: int, window_s: float):
        self.max_count = max_count
        self.window_s = window_s
        self._granted: deque[float] = deque()  # grant times, oldest first
        self.skipped = 0  # deletes refused (over the limit)
        self._alerted_at: float | None = None

    def _expire(self, now: float) -> None:
        while self._granted and self._granted[0] <= now - self.window_s:
            self._granted.popleft()

    def used(self, now: float) -> int:
        """Grants in the window ending at `now` (those still held included)."""
        self._expire(now)
        return len(self._granted)

    def take(self, now: float) -> float | None:
        """A grant (its time, to give back with `give_back`) or None when the window is full."""
        self._expire(now)
        if len(self._granted) >= self.max_count:
            return None
        self._granted.append(now)
        return now

    def give_back(self, grant: float) -> None:
        """Return an unused grant (its delete did not happen); a grant already out of the window is gone."""
        with contextlib.suppress(ValueError):
            self._granted.remove(grant)

    def refuse(self, now: float) -> bool:
        """Count one skipped delete; True when an alert is due: the first refusal, then at most one per
        window (a storm makes one alert, not one per event)."""
        self.skipped += 1
        if self._alerted_at is None or now - self._alerted_at >= self.window_s:
            self._alerted_at = now
            return True
        return False


class EventDeletes:
    """The watch service's side of the rail.

    At dispatch, `may_delete` says whether a key's reconcile may delete (a key whose latest event is a removal
    takes a grant then). After it, `settle` turns a "gone_at_source" result — the source is gone and the
    destination copy was kept: a created event whose object vanished, or a removal without a grant — into
    "again" (a grant was free: reconcile once more, allowed to delete) or "delete_skipped" (counted, logged,
    and one alert per window through `notify(subject, text)`). `clock` is time.monotonic in the service.
    """

    def __init__(self, enabled: bool, max_count: int, window_s: float, window: str, job: str,
                 notify: Callable[[str, str], None] | None, clock: Callable[[], float]):
        self.enabled = enabled
        self.limit = DeleteLimit(max_count, window_s)
        self.window = window
        self.job = job
        self._notify = notify
        self._clock = clock
        self._grants: dict[str, float] = {}
        self.skipped_keys: deque[str] = deque(maxlen=_MAX_SKIPPED_KEYS)
        self.alerts = 0

    def may_delete(self, key: str, removed: bool) -> bool:
        """Whether the reconcile of `key` about to be dispatched may delete (`removed`: its latest event is an
        ObjectRemoved one)."""
        if not self.enabled:
            return False
        if key in self._grants:
            return True
        if removed:
            grant = self.limit.take(self._clock())
            if grant is not None:
                self._grants[key] = grant
                return True
        return False

    def settle(self, key: str, outcome: str) -> str:
        """After the reconcile of `key`: the outcome to count, or "again" (run it once more, with a grant)."""
        grant = self._grants.pop(key, None)
        if grant is not None and outcome in _NOTHING_DELETED:
            self.limit.give_back(grant)
        if outcome != "gone_at_source" or not self.enabled:
            return outcome
        now = self._clock()
        if grant is None:  # (a granted reconcile that still kept it was refused by the worker: never loop)
            again = self.limit.take(now)
            if again is not None:
                self._grants[key] = again
                return "again"
        self.skipped_keys.append(key)
        if self.limit.refuse(now):
            self._limit_reached(key)
        log.info("watch: delete skipped key=%r (events.max_delete=%d per %s reached)", key,
                 self.limit.max_count, self.window)
        return "delete_skipped"

    def _limit_reached(self, key: str) -> None:
        text = (f"events.max_delete={self.limit.max_count} per events.max_delete_window={self.window} "
                "reached: further deletes from events are skipped (their messages acknowledged, counted in "
                "the report's deletes.skipped) until the window has room; the next scan with "
                "sync.delete=true (bounded by sync.max_delete) deletes what the source no longer has")
        log.warning("watch: job %s: %s (first skipped: %r)", self.job, text, key)
        if self._notify is not None:
            self.alerts += 1
            self._notify(f"dth-ray watch: job {self.job}: delete limit reached, deletes skipped",
                         f"dth-ray watch, job {self.job}\n{text}.\nFirst skipped key: {key!r}\n"
                         f"At most one such message is sent per {self.window}.")

    def report(self) -> dict:
        return {"max_delete": self.limit.max_count, "window": self.window,
                "in_window": self.limit.used(self._clock()), "skipped": self.limit.skipped,
                "alerts": self.alerts, "skipped_keys": list(self.skipped_keys)}
