"""Per-key ordering for event-driven sync: at most one reconcile per key at a time, events coalesced.

A reconcile reads the source's CURRENT state of a key and makes the destination match it (runtime/worker.py,
TransferWorker.apply_events). So what makes an event "done" is a reconcile of its key that *started after the
event was received*: its read sees the change the event announced, or a later one. The coalescer enforces
exactly that and nothing weaker:

- events for a key that is not running merge into one pending reconcile (latest event wins: it stands for
  the group in logs and metrics; every event's token is acknowledged when the reconcile finishes);
- events for a key whose reconcile is already running wait behind it and get a fresh reconcile afterwards
  (the running one may have read the source before their change);
- timestamps and S3 sequencers order events (`newer`) and count stale ones, but never cancel a read: a stale
  event costs one HEAD, while trusting a wrong clock would leave a stale object. Whether the read finds
  anything to copy is decided against the manifest's record of what was copied (TransferWorker).

Pure: no clock, no I/O. Tokens are whatever the caller needs to acknowledge (e.g. the SQS message).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field

from dth_ray.sync.events import Event, newer


@dataclass
class Pending:
    """One key's coalesced events: `latest` stands for them; `tokens` pair each event with its token."""

    key: str
    latest: Event
    tokens: list[tuple[Hashable, Event]] = field(default_factory=list)
    stale: int = 0  # events that were older than `latest` when they arrived

    def add(self, event: Event, token: Hashable) -> None:
        self.tokens.append((token, event))
        if newer(self.latest, event):
            self.latest = event
        else:
            self.stale += 1


class Coalescer:
    """Pending reconciles in arrival order, the keys running, and events waiting behind a running key."""

    def __init__(self) -> None:
        self._pending: OrderedDict[str, Pending] = OrderedDict()
        self._running: dict[str, Pending] = {}
        self._behind: dict[str, Pending] = {}

    def add(self, event: Event, token: Hashable) -> str:
        """Queue `event`; returns 'new' (a new reconcile), 'merged' (joins a pending one) or 'behind' (its key
        is running: it gets the next reconcile of that key)."""
        key = event.key
        if key in self._running:
            waiting = self._behind.get(key)
            if waiting is None:
                self._behind[key] = Pending(key, event, [(token, event)])
            else:
                waiting.add(event, token)
            return "behind"
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = Pending(key, event, [(token, event)])
            return "new"
        pending.add(event, token)
        return "merged"

    def take(self, limit: int) -> list[Pending]:
        """Up to `limit` pending reconciles, oldest first; their keys are running until `finish`."""
        out = []
        while self._pending and len(out) < limit:
            key, pending = self._pending.popitem(last=False)
            self._running[key] = pending
            out.append(pending)
        return out

    def finish(self, key: str) -> Pending:
        """The reconcile of `key` ended (whatever its outcome); returns it with the tokens it covered. Events
        that waited behind it become the next pending reconcile of the key, ahead of newer keys.

        Raises KeyError if `key` is not running.
        """
        done = self._running.pop(key)
        waiting = self._behind.pop(key, None)
        if waiting is not None:
            self._pending[key] = waiting
            self._pending.move_to_end(key, last=False)
        return done

    def again(self, key: str) -> None:
        """The reconcile of `key` ended but must run once more (e.g. it may now delete): its events stay
        unacknowledged, joined by those that waited behind it, in one pending reconcile ahead of newer keys.

        Raises KeyError if `key` is not running.
        """
        pending = self._running.pop(key)
        waiting = self._behind.pop(key, None)
        if waiting is not None:
            for token, event in waiting.tokens:
                pending.add(event, token)
        self._pending[key] = pending
        self._pending.move_to_end(key, last=False)

    def release(self) -> list[Pending]:
        """Everything not running (pending and waiting), removed: for a shutdown that abandons it."""
        out = list(self._pending.values()) + list(self._behind.values())
        self._pending.clear()
        self._behind.clear()
        return out

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def running(self) -> int:
        return len(self._running)

    @property
    def waiting(self) -> int:
        return len(self._behind)

    def is_running(self, key: str) -> bool:
        return key in self._running

    def running_keys(self) -> list[str]:
        return list(self._running)
