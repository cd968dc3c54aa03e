"""A running sync's live record for `dth-ray console`: the progress view (rates and ETA as the terminal shows
them), the shards being copied and a bounded throughput history, published through the manifest every
PUBLISH_INTERVAL_S — its heartbeat. Publishing is best effort: a manifest that refuses it costs a warning,
never the run."""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import replace

from dth_ray.errors import DthError
from dth_ray.runtime.manifest import (
    LIVE_RUNNING_SHARDS,
    LIVE_SAMPLES,
    PUBLISH_INTERVAL_S,
    LiveRecord,
    Manifest,
)
from dth_ray.runtime.progress import ProgressModel, Snapshot

log = logging.getLogger(__name__)


def thin(samples: list[tuple[float, int, int]], limit: int = LIVE_SAMPLES) -> list[tuple[float, int, int]]:
    """Every other sample once there are more than `limit` (the newest always kept): spacing doubles, the
    history stays bounded however long the run."""
    if len(samples) <= limit:
        return samples
    kept = samples[::2]
    if kept[-1] is not samples[-1]:
        kept.append(samples[-1])
    return kept


class LivePublisher:
    """Fed every scheduler tick; publishes at most every `interval_s` (and once more when forced)."""

    def __init__(self, manifest: Manifest, interval_s: float = PUBLISH_INTERVAL_S,
                 clock: Callable[[], float] = time.time):
        self.manifest = manifest
        self.interval_s = interval_s
        self.clock = clock
        self.started = clock()
        self.model = ProgressModel()
        self.samples: list[tuple[float, int, int]] = []
        self.published = 0
        self.last: LiveRecord | None = None
        self._next_s = 0.0

    def tick(self, snap: Snapshot, run_id: int, running: Sequence[str] = (), phase: str = "copying",
             force: bool = False) -> LiveRecord | None:
        """Note `snap`; publish run `run_id`'s record when an interval passed (or `force`). Returns what it
        published, if anything."""
        self.model.update(snap, phase)
        now = self.clock()
        if not run_id or (now < self._next_s and not force):
            return None
        self._next_s = now + self.interval_s
        t = snap.tally
        self.samples = thin([*self.samples, (now, t.bytes_copied + snap.bytes_landed, t.copied)])
        v = self.model.view()
        record = LiveRecord(
            run_id=run_id, heartbeat=now, interval_s=self.interval_s, phase=phase, started=self.started,
            objects=v.objects, total_objects=v.total_objects, bytes=v.bytes, total_bytes=v.total_bytes,
            copied=v.copied, skipped=v.skipped, failed=v.failed, bytes_per_s=round(v.bytes_per_s, 1),
            objects_per_s=round(v.objects_per_s, 1), eta_s=None if v.eta_s is None else round(v.eta_s, 1),
            retries=v.retries, shards_done=v.shards_done, shards_total=v.shards_planned,
            running=tuple(sorted(running)[:LIVE_RUNNING_SHARDS]), samples=tuple(self.samples))
        if force and self.last is not None and phase != "succeeded":  # a run cut short keeps its estimate
            record = replace(record, total_objects=max(record.total_objects, self.last.total_objects),
                             total_bytes=max(record.total_bytes, self.last.total_bytes))
        try:
            self.manifest.publish(record)
        except (DthError, sqlite3.Error) as exc:
            log.warning("could not publish the run's progress record (the console shows older numbers): %s",
                        type(exc).__name__)
            return None
        self.published += 1
        self.last = record
        return record
