"""SNS alarms: one message per finished run — when it failed (objects that exhausted their retries, shard
errors, or a run that stopped before reporting) and, if `alerts.on_success`, when it succeeded — carrying
the report's summary; and `dth-ray alerts setup`, which creates a topic with an email subscription."""

from __future__ import annotations

import json
import logging
import re

from dth_ray.config import AlertsConfig
from dth_ray.ops.aws import AwsClient, default_region, error_code

log = logging.getLogger(__name__)

MAX_LISTED_FAILURES = 20  # failed keys named in a message (the count is always exact)
MAX_LISTED_ERRORS = 10
MAX_MESSAGE_BYTES = 200_000  # SNS allows 256 KB
MAX_SUBJECT_CHARS = 100  # SNS subject limit (ASCII, no line breaks)


def _ascii_line(text: str) -> str:
    return re.sub(r"[^\x20-\x7e]+", "?", text)


def subject(report: dict) -> str:
    """e.g. 'dth-ray FAILED: job logs-to-lake: 3 objects failed' (ASCII, at most 100 characters)."""
    o = report.get("objects", {})
    job = report.get("job", "")
    if report.get("status") == "succeeded":
        text = f"dth-ray succeeded: job {job}: {o.get('copied', 0)} copied, {o.get('skipped', 0)} skipped"
    elif report.get("status") == "paused":
        text = f"dth-ray paused: job {job}: {o.get('copied', 0)} copied so far (continues in the next window)"
    elif report.get("status") == "interrupted":
        text = f"dth-ray interrupted: job {job}: {o.get('copied', 0)} copied so far (resumable)"
    elif o.get("failed", 0):
        text = f"dth-ray FAILED: job {job}: {o.get('failed', 0)} objects failed"
    else:
        text = f"dth-ray FAILED: job {job}"
    text = _ascii_line(text)
    return text if len(text) <= MAX_SUBJECT_CHARS else text[: MAX_SUBJECT_CHARS - 1] + "~"


def summary(report: dict) -> dict:
    """The part of the report an alarm carries: counts exact, failures and errors truncated."""
    failures = report.get("failures", [])
    errors = report.get("errors", [])
    keep = ("status", "job", "run_id", "resumed", "dry_run", "source", "destination", "objects", "bytes",
            "duration_s", "bytes_per_s", "objects_per_s", "skipped_reasons")
    out = {k: report[k] for k in keep if k in report}
    out["failures"] = failures[:MAX_LISTED_FAILURES]
    out["failures_listed"] = min(len(failures), MAX_LISTED_FAILURES)
    out["errors"] = errors[:MAX_LISTED_ERRORS]
    return out


def message(report: dict) -> str:
    """A readable summary, then the summary as JSON (for programs subscribed to the topic)."""
    o, b = report.get("objects", {}), report.get("bytes", {})
    status = report.get("status", "failed")
    lines = [
        f"dth-ray job {report.get('job', '')} {'succeeded' if status == 'succeeded' else 'FAILED'}"
        + (f" (run {report['run_id']}{', resumed' if report.get('resumed') else ''})" if "run_id" in report else ""),
        f"  {report.get('source', '?')} -> {report.get('destination', '?')}",
        f"  objects: {o.get('listed', 0):,} listed, {o.get('copied', 0):,} copied, {o.get('skipped', 0):,} skipped, "
        f"{o.get('failed', 0):,} failed",
        f"  bytes copied: {b.get('copied', 0):,} in {report.get('duration_s', 0):,.1f} s",
    ]
    failures = report.get("failures", [])
    if failures:
        lines.append(f"Failed objects (exhausted their retries; first {min(len(failures), MAX_LISTED_FAILURES)} "
                     f"of {o.get('failed', len(failures)):,}):")
        lines += [f"  {f.get('key', '')!r}: {f.get('error', '')}" for f in failures[:MAX_LISTED_FAILURES]]
    errors = report.get("errors", [])
    if errors:
        lines.append("Errors:")
        lines += [f"  {e}" for e in errors[:MAX_LISTED_ERRORS]]
    lines += ["", "Summary (JSON):", json.dumps(summary(report), indent=2, ensure_ascii=False, default=str)]
    text = "\n".join(lines)
    encoded = text.encode("utf-8")
    if len(encoded) > MAX_MESSAGE_BYTES:
        text = encoded[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore") + "\n[truncated]"
    return text


def attributes(report: dict) -> dict:
    """SNS message attributes, for subscription filter policies (e.g. only status=failed)."""
    o = report.get("objects", {})
    return {
        "job": {"DataType": "String", "StringValue": str(report.get("job", "")) or "-"},
        "status": {"DataType": "String", "StringValue": str(report.get("status", "failed"))},
        "failed": {"DataType": "Number", "StringValue": str(int(o.get("failed", 0)))},
        "copied": {"DataType": "Number", "StringValue": str(int(o.get("copied", 0)))},
    }


def wants_alert(report: dict, on_success: bool) -> bool:
    """A failed run always alarms (failed objects or errors); a succeeded one (or one paused by its transfer
    window, as planned) only with on_success."""
    failed = report.get("status") not in ("succeeded", "paused") or report.get("objects", {}).get("failed", 0) > 0
    return failed or on_success


class Alerter:
    """Sends at most one message: the first `send()` that wants one publishes, later calls do nothing."""

    def __init__(self, ac: AlertsConfig, client: AwsClient | None = None):
        self.topic_arn = ac.sns_topic_arn
        self.on_success = ac.on_success
        self._client = client or AwsClient("sns", region=default_region(ac.region, ac.sns_topic_arn),
                                           endpoint=ac.endpoint, credentials=ac.credentials, role="alerts")
        self.sent: str | None = None  # the MessageId once sent

    def send(self, report: dict, on_success: bool | None = None) -> bool:
        """Publish the run's alarm if it wants one and none was sent; True when a message went out.
        Never raises (a failure is logged with its error code)."""
        if self.sent is not None or not wants_alert(report, self.on_success if on_success is None else on_success):
            return False
        try:
            answer = self._client.call("publish", TopicArn=self.topic_arn, Subject=subject(report),
                                       Message=message(report), MessageAttributes=attributes(report))
        except Exception as exc:  # an unreachable SNS must never fail the sync or hide its report
            log.warning("SNS alarm for job %s could not be sent (%s)", report.get("job", ""), error_code(exc),
                        extra={"event": "alert_failed", "job": report.get("job", ""),
                               "error_class": error_code(exc)})
            return False
        self.sent = answer.get("MessageId", "")
        log.info("SNS alarm sent for job %s (%s)", report.get("job", ""), report.get("status", ""),
                 extra={"event": "alert_sent", "job": report.get("job", ""), "status": report.get("status", "")})
        return True

    def notice(self, job: str, status: str, subject_text: str, text: str) -> bool:
        """Publish one message outside the per-run alarm (e.g. `watch` reaching events.max_delete), with the
        same attributes (`status` tells them apart). True when sent; never raises."""
        attrs = attributes({"job": job, "status": status})
        try:
            self._client.call("publish", TopicArn=self.topic_arn,
                              Subject=_ascii_line(subject_text)[:MAX_SUBJECT_CHARS],
                              Message=text.encode("utf-8")[:MAX_MESSAGE_BYTES].decode("utf-8", "ignore"),
                              MessageAttributes=attrs)
        except Exception as exc:  # an unreachable SNS must never stop the service
            log.warning("SNS notice for job %s could not be sent (%s)", job, error_code(exc),
                        extra={"event": "alert_failed", "job": job, "error_class": error_code(exc)})
            return False
        log.info("SNS notice sent for job %s (%s)", job, status,
                 extra={"event": "alert_sent", "job": job, "status": status})
        return True

    def check(self) -> None:
        """GetTopicAttributes: raises what botocore raises when the topic is missing or refuses us."""
        self._client.call("get_topic_attributes", TopicArn=self.topic_arn)


def setup_topic(ac: AlertsConfig, client: AwsClient | None = None) -> dict:
    """CreateTopic `alerts.topic_name` (idempotent) and subscribe `alerts.email`; returns {topic_arn,
    subscription_arn, email, region}. The address gets a confirmation email from AWS first. Raises what
    botocore raises."""
    region = default_region(ac.region, ac.sns_topic_arn)
    client = client or AwsClient("sns", region=region, endpoint=ac.endpoint, credentials=ac.credentials,
                                 role="alerts")
    topic_arn = ac.sns_topic_arn or client.call("create_topic", Name=ac.topic_name)["TopicArn"]
    sub = client.call("subscribe", TopicArn=topic_arn, Protocol="email", Endpoint=ac.email,
                      ReturnSubscriptionArn=True)
    return {"topic_arn": topic_arn, "subscription_arn": sub.get("SubscriptionArn", ""), "email": ac.email,
            "region": region}
