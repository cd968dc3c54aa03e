"""Ray metrics (exported on every node's Prometheus endpoint by Ray's metrics agent): counters and gauges
fed from the counts the runtime already batches, never one call per byte or per object.

Names as Prometheus shows them: ray_dth_bytes_copied_total, ray_dth_objects_total{result=copied|skipped|
failed}, ray_dth_request_errors_total{error=Throttled|Transient|...}, ray_dth_requests_in_flight,
ray_dth_parts_in_flight, ray_dth_backlog_objects, ray_dth_backlog_bytes, ray_dth_shards_pending,
ray_dth_transfer_actors, ray_dth_requested_slots, ray_dth_event_latency_seconds (histogram, `dth-ray watch`:
event time to landed), ray_dth_event_deletes_skipped_total (`dth-ray watch`: deletes over events.max_delete);
every series is tagged with `dth_job` (see JOB_TAG).
"""

from __future__ import annotations

import functools
import logging

from dth_ray.model import Tally
from dth_ray.runtime.rayhost import ray_is_up

log = logging.getLogger(__name__)

# Not `job`: Prometheus sets `job` on every series it scrapes (Ray's prometheus.yml: job_name 'ray', no
# honor_labels), so a `job` tag of ours would arrive renamed to `exported_job`, every series saying "ray".
JOB_TAG = "dth_job"


class _Off:
    """A metric while Ray is not up in this process: nothing to export it to (never imports Ray, which another
    thread may be importing at that moment: a concurrent first import of Ray fails)."""

    def inc(self, *args, **kwargs) -> None: ...
    def set(self, *args, **kwargs) -> None: ...
    def observe(self, *args, **kwargs) -> None: ...


def _metric(kind: str, name: str, description: str, tag_keys: tuple[str, ...]):
    if not ray_is_up():
        return _Off()
    return _ray_metric(kind, name, description, tag_keys)


@functools.cache
def _ray_metric(kind: str, name: str, description: str, tag_keys: tuple[str, ...]):
    from ray.util import metrics

    return getattr(metrics, kind)(name, description=description, tag_keys=tag_keys)


class ActorMetrics:
    """What one transfer worker adds at each flush: the growth of its cumulative tally since the last one."""

    def __init__(self, job: str):
        self._tags = {JOB_TAG: job}
        self._published = Tally()

    def add(self, totals: Tally, errors: dict[str, int], requests_in_flight: int, parts_in_flight: int = 0) -> None:
        """`totals`: every result the worker counted so far (its counters only grow)."""
        try:
            previous, self._published = self._published, Tally.from_dict(totals.to_dict(0))
            if totals.bytes_copied > previous.bytes_copied:
                _metric("Counter", "dth_bytes_copied", "object bytes copied", (JOB_TAG,)).inc(
                    totals.bytes_copied - previous.bytes_copied, tags=self._tags)
            for result in ("copied", "skipped", "failed"):
                grown = getattr(totals, result) - getattr(previous, result)
                if grown > 0:
                    _metric("Counter", "dth_objects", "objects settled, by result", (JOB_TAG, "result")).inc(
                        grown, tags={**self._tags, "result": result})
            for error, count in errors.items():
                _metric("Counter", "dth_request_errors", "store requests that failed, by error class",
                        (JOB_TAG, "error")).inc(count, tags={**self._tags, "error": error})
            _metric("Gauge", "dth_requests_in_flight", "store requests in flight in this actor",
                    (JOB_TAG,)).set(requests_in_flight, tags=self._tags)
            _metric("Gauge", "dth_parts_in_flight", "multipart parts being read or sent in this actor",
                    (JOB_TAG,)).set(parts_in_flight, tags=self._tags)
        except Exception:  # metrics must never fail a transfer
            log.debug("metrics update failed", exc_info=True)


class DriverMetrics:
    """The run-wide gauges only the driver knows: backlog, actors, capacity requested."""

    def __init__(self, job: str):
        self._tags = {JOB_TAG: job}

    def update(self, backlog_objects: int, backlog_bytes: int, shards_pending: int, actors: int,
               requested_slots: int) -> None:
        values = {"dth_backlog_objects": backlog_objects, "dth_backlog_bytes": backlog_bytes,
                  "dth_shards_pending": shards_pending, "dth_transfer_actors": actors,
                  "dth_requested_slots": requested_slots}
        try:
            for name, value in values.items():
                _metric("Gauge", name, name.removeprefix("dth_").replace("_", " "), (JOB_TAG,)).set(
                    value, tags=self._tags)
        except Exception:  # metrics must never fail a run
            log.debug("metrics update failed", exc_info=True)


class EventLatency:
    """`dth-ray watch`: event-to-landed latency (a Ray histogram); deletes skipped over events.max_delete."""

    BOUNDARIES_S = [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300]

    def __init__(self, job: str):
        self._tags = {JOB_TAG: job}

    def event_landed(self, latency_s: float) -> None:
        try:
            histogram = _histogram(tuple(self.BOUNDARIES_S))
            histogram.observe(latency_s, tags=self._tags)
        except Exception:  # metrics must never fail the service
            log.debug("metrics update failed", exc_info=True)

    def delete_skipped(self) -> None:
        try:
            _metric("Counter", "dth_event_deletes_skipped",
                    "deletes from events skipped over events.max_delete", (JOB_TAG,)).inc(1, tags=self._tags)
        except Exception:  # metrics must never fail the service
            log.debug("metrics update failed", exc_info=True)


def _histogram(boundaries: tuple[float, ...]):
    if not ray_is_up():
        return _Off()
    return _ray_histogram(boundaries)


@functools.cache
def _ray_histogram(boundaries: tuple[float, ...]):
    from ray.util import metrics

    return metrics.Histogram("dth_event_latency_seconds", description="event time to object landed",
                             boundaries=list(boundaries), tag_keys=(JOB_TAG,))
