"""Operations for a run: CloudWatch metrics, SNS alarms and structured logs behind one facade the driver calls.

    ops = Ops(cfg, job)                      # nothing happens unless metrics.cloudwatch or alerts.sns_topic_arn
    ops.progress(snapshot, actors, elapsed_s)  # about once a second; only stores numbers (never blocks)
    ops.finished(report)                     # once (a RunReport): final metrics (sums == report), one SNS alarm
    ops.close()                              # always (finally:); flushes metrics if finished() never ran

Nothing here raises into the run: an unreachable CloudWatch or SNS is logged (error code only) and skipped.
"""

from __future__ import annotations

import logging
import threading

from dth_ray.config import SyncConfig
from dth_ray.errors import DthError, error_class
from dth_ray.ops.alerts import Alerter
from dth_ray.ops.cloudwatch import CloudWatchPublisher, Gauges
from dth_ray.ops.logs import setup_logging
from dth_ray.report import RunReport

log = logging.getLogger(__name__)

__all__ = ["Ops", "setup_logging"]


class Ops:
    """One run's operations side. `one_time=False` (a scheduled scan of `dth-ray watch`) sends no success
    alarm, only failures."""

    def __init__(self, cfg: SyncConfig, job: str, *, one_time: bool = True):
        self.job = job
        self._one_time = one_time
        self._lock = threading.Lock()
        self._done = False
        self.metrics: CloudWatchPublisher | None = None
        self.alerts: Alerter | None = None
        try:
            if cfg.metrics.cloudwatch:
                self.metrics = CloudWatchPublisher(cfg.metrics, job).start()
            if cfg.alerts.sns_topic_arn:
                self.alerts = Alerter(cfg.alerts)
        except Exception as exc:  # a broken ops setting must not stop the sync itself
            log.warning("operations setup failed (%s); metrics/alerts are off for this run", error_class(exc),
                        extra={"event": "ops_setup_failed", "job": job, "error_class": type(exc).__name__})

    @property
    def enabled(self) -> bool:
        return self.metrics is not None or self.alerts is not None

    def progress(self, snapshot, actors: int, elapsed_s: float) -> None:
        """The run so far (a `dth_ray.runtime.progress.Snapshot`) and the transfer actor count."""
        if self.metrics is None:
            return
        self.metrics.update(snapshot.tally, Gauges(max(0, snapshot.objects_in_flight),
                                                   max(0, snapshot.bytes_in_flight), actors))

    def finished(self, report: RunReport) -> None:
        """The run's report: publish its totals exactly, then send one alarm. Only the first call counts."""
        with self._lock:
            if self._done:
                return
            self._done = True
        if self.metrics is not None:
            try:
                self.metrics.finish(report.tally, Gauges())
            except Exception:  # never into the run
                log.warning("CloudWatch final flush failed unexpectedly", exc_info=True)
        if self.alerts is not None:
            self.alerts.send(report.to_json(), on_success=self.alerts.on_success and self._one_time)

    def aborted(self, error: BaseException) -> None:
        """The run stopped before it had a report (an exception in the driver): one failure alarm naming the
        class (and message, for a DthError: those carry no credentials), and the metrics flushed."""
        text = f"{type(error).__name__}: {error}" if isinstance(error, DthError) else type(error).__name__
        report = {"status": "failed", "job": self.job, "objects": {}, "bytes": {}, "failures": [],
                  "errors": [f"the run stopped before finishing: {text}"]}
        with self._lock:
            if self._done:
                return
            self._done = True
        if self.metrics is not None:
            self.metrics.stop()
            self.metrics.publish()
        if self.alerts is not None:
            self.alerts.send(report)

    def check(self) -> None:
        """Optional preflight: raises (botocore's error) when the alarm topic is missing or refuses us."""
        if self.alerts is not None:
            self.alerts.check()

    def close(self) -> None:
        """Stop the publisher; if finished() never ran, publish what is known so far."""
        if self.metrics is None:
            return
        with self._lock:
            done = self._done
        self.metrics.stop()
        if not done:
            self.metrics.publish()
