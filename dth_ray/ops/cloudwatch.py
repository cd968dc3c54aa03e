"""CloudWatch metrics from the run's counters (never from log lines) and the matching dashboard.

Monotonic totals (bytes and objects copied, skipped, failed) are published as the delta since the last
successful publish, so a console Sum over the run equals the report; a publish that fails leaves its delta
for the next one. Gauges (pending objects and bytes, workers) are published as they are. A background
thread publishes every `metrics.interval_s`; `progress()` only stores the latest numbers.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from dth_ray.config import MetricsConfig
from dth_ray.model import Tally
from dth_ray.ops.aws import AwsClient, default_region, error_code

log = logging.getLogger(__name__)

# (name, unit, kind): "sum" metrics are per-interval deltas of a monotonic total; "gauge" metrics are levels.
METRICS: tuple[tuple[str, str, str], ...] = (
    ("CompletedBytes", "Bytes", "sum"),
    ("TransferredObjects", "Count", "sum"),
    ("SkippedObjects", "Count", "sum"),
    ("FailedObjects", "Count", "sum"),
    ("PendingObjects", "Count", "gauge"),
    ("PendingBytes", "Bytes", "gauge"),
    ("WorkerCount", "Count", "gauge"),
)
MAX_DATUMS_PER_CALL = 1000  # PutMetricData limits: 1,000 metrics and 1 MB of payload per call
MAX_BYTES_PER_CALL = 1_000_000
_DATUM_OVERHEAD_BYTES = 200  # headroom per datum for the wire encoding beyond its JSON size


def sums(totals: Tally) -> dict[str, int]:
    """The run's monotonic counters as CloudWatch's sum metrics."""
    return {"CompletedBytes": totals.bytes_copied, "TransferredObjects": totals.copied,
            "SkippedObjects": totals.skipped, "FailedObjects": totals.failed}


@dataclass(frozen=True)
class Gauges:
    pending_objects: int = 0
    pending_bytes: int = 0
    workers: int = 0

    def values(self) -> dict[str, int]:
        return {"PendingObjects": self.pending_objects, "PendingBytes": self.pending_bytes,
                "WorkerCount": self.workers}


def datums(job: str, totals: Tally, published: Tally, gauges: Gauges,
           timestamp: datetime.datetime) -> list[dict]:
    """The MetricData of one publish: each sum metric's delta since `published`, each gauge's level."""
    dims = [{"Name": "Job", "Value": job}]
    before = sums(published)
    deltas = {name: value - before[name] for name, value in sums(totals).items()}
    levels = gauges.values()
    return [{"MetricName": name, "Dimensions": dims, "Timestamp": timestamp, "Unit": unit,
             "Value": float(deltas[name] if kind == "sum" else levels[name])}
            for name, unit, kind in METRICS]


def _size(datum: dict) -> int:
    return len(json.dumps(datum, default=str)) + _DATUM_OVERHEAD_BYTES


def batches(items: Sequence[dict], max_count: int = MAX_DATUMS_PER_CALL,
            max_bytes: int = MAX_BYTES_PER_CALL) -> Iterator[list[dict]]:
    """Split MetricData into PutMetricData calls within the count and payload limits, in order."""
    batch: list[dict] = []
    size = 0
    for item in items:
        item_size = _size(item)
        if batch and (len(batch) >= max_count or size + item_size > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(item)
        size += item_size
    if batch:
        yield batch


class CloudWatchPublisher:
    """Publishes one job's counters to CloudWatch. `update()` is cheap and thread-safe; `start()` runs the
    periodic publisher; `finish(totals)` publishes the exact final totals and stops it."""

    def __init__(self, mc: MetricsConfig, job: str, client: AwsClient | None = None):
        self.namespace = mc.namespace
        self.job = job
        self.interval_s = mc.interval_s
        self._client = client or AwsClient("cloudwatch", region=default_region(mc.region), endpoint=mc.endpoint,
                                           credentials=mc.credentials, role="metrics")
        self._lock = threading.Lock()  # guards the latest numbers
        self._publish_lock = threading.Lock()  # one publish at a time
        self._totals = Tally()
        self._gauges = Gauges()
        self.published = Tally()  # what CloudWatch has summed so far
        self.calls = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False

    def update(self, totals: Tally, gauges: Gauges) -> None:
        """The latest counters (the publisher keeps its own copy: the caller may go on counting)."""
        with self._lock:
            if not self._finished:
                self._totals, self._gauges = _copy(totals), gauges

    def start(self) -> CloudWatchPublisher:
        self._thread = threading.Thread(target=self._run, name="dth-cloudwatch", daemon=True)
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.publish()

    def publish(self) -> bool:
        """Publish the latest numbers now; True on success. Never raises (a failure is logged and its
        deltas wait for the next publish)."""
        with self._publish_lock:
            with self._lock:
                totals, gauges = self._totals, self._gauges
            now = datetime.datetime.now(datetime.timezone.utc)
            data = datums(self.job, totals, self.published, gauges, now)
            try:
                for batch in batches(data):
                    self._client.call("put_metric_data", Namespace=self.namespace, MetricData=batch)
                    self.calls += 1
            except Exception as exc:  # an unreachable CloudWatch must never fail or stall the sync
                self.failures += 1
                log.warning("CloudWatch PutMetricData failed (%s); the deltas go with the next publish",
                            error_code(exc), extra={"event": "metrics_publish_failed", "job": self.job,
                                                    "error_class": error_code(exc)})
                return False
            self.published = totals
            return True

    def finish(self, totals: Tally, gauges: Gauges) -> bool:
        """Set the final totals (the report's), stop the periodic publisher and publish so CloudWatch's sums
        equal them. True when they do."""
        with self._lock:
            self._totals, self._gauges = _copy(totals), gauges
            self._finished = True
        self.stop()
        if self.publish():  # the SDK retries the call itself (standard mode), so one publish is bounded
            return True
        log.warning("CloudWatch totals for job %s may be short of the report: the final publish failed", self.job,
                    extra={"event": "metrics_final_publish_failed", "job": self.job})
        return False

    def stop(self) -> None:
        self._stop.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=30)


# -- dashboard ----------------------------------------------------------------------------------------

def _copy(totals: Tally) -> Tally:
    return Tally(copied=totals.copied, skipped=totals.skipped, failed=totals.failed,
                 bytes_copied=totals.bytes_copied, max_failures=0)


def dashboard_name(job: str) -> str:
    """A CloudWatch dashboard name for a job (A-Z a-z 0-9 - _, at most 255 characters)."""
    return ("dth-ray-" + re.sub(r"[^A-Za-z0-9_-]+", "-", job))[:255]


def dashboard_body(namespace: str, job: str, region: str) -> dict:
    """Widgets for the published metrics: throughput, objects, failures, backlog, workers and run totals."""
    def metric(name: str, label: str = "") -> list:
        return [namespace, name, "Job", job, {"label": label or name}]

    def widget(x: int, y: int, title: str, metrics: list, stat: str, view: str = "timeSeries",
               **extra: object) -> dict:
        props = {"title": title, "region": region, "view": view, "stat": stat, "period": 60, "metrics": metrics}
        props.update(extra)
        return {"type": "metric", "x": x, "y": y, "width": 12 if view == "timeSeries" else 24,
                "height": 6 if view == "timeSeries" else 4, "properties": props}

    return {"widgets": [
        widget(0, 0, "Run totals", [metric("TransferredObjects", "objects copied"),
                                    metric("CompletedBytes", "bytes copied"),
                                    metric("SkippedObjects", "objects skipped"),
                                    metric("FailedObjects", "objects failed")],
               "Sum", view="singleValue", setPeriodToTimeRange=True),
        widget(0, 4, "Completed bytes (per minute)", [metric("CompletedBytes")], "Sum"),
        widget(12, 4, "Transferred and skipped objects (per minute)",
               [metric("TransferredObjects"), metric("SkippedObjects")], "Sum"),
        widget(0, 10, "Failed objects (per minute)", [metric("FailedObjects")], "Sum"),
        widget(12, 10, "Pending objects and bytes",
               [metric("PendingObjects"), [namespace, "PendingBytes", "Job", job, {"yAxis": "right"}]], "Maximum"),
        widget(0, 16, "Workers (transfer actors)", [metric("WorkerCount")], "Maximum"),
    ]}


def console_url(region: str, name: str) -> str:
    host = "console.amazonaws.cn" if region.startswith("cn-") else f"{region}.console.aws.amazon.com"
    return f"https://{host}/cloudwatch/home?region={region}#dashboards:name={name}"


def create_dashboard(mc: MetricsConfig, job: str, client: AwsClient | None = None) -> dict:
    """PutDashboard for `job`'s metrics; returns {name, region, url, widgets}. Raises what botocore raises."""
    region = default_region(mc.region)
    client = client or AwsClient("cloudwatch", region=region, endpoint=mc.endpoint, credentials=mc.credentials,
                                 role="metrics")
    name = dashboard_name(job)
    body = dashboard_body(mc.namespace, job, region)
    answer = client.call("put_dashboard", DashboardName=name, DashboardBody=json.dumps(body))
    problems = [m.get("Message", "") for m in answer.get("DashboardValidationMessages", [])]
    return {"name": name, "region": region, "namespace": mc.namespace, "job": job, "url": console_url(region, name),
            "widgets": [w["properties"]["title"] for w in body["widgets"]], "validation_messages": problems}
