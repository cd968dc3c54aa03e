"""Operations units: metric deltas and batching, alarm composition, log formatting and scrubbing, the
credential refresh schedule (fake clock), and the ops config's one-line errors."""

from __future__ import annotations

import datetime
import io
import json
import logging
import sys

import pytest

from dth_ray.config import AlertsConfig, LogConfig, LogFormat, MetricsConfig, SyncConfig, validate_ops
from dth_ray.credentials import Credentials, RefreshingCredentials, is_auth_error
from dth_ray.errors import ConfigError, PermissionDenied
from dth_ray.model import Tally
from dth_ray.ops import Ops
from dth_ray.ops.alerts import attributes, message, subject, wants_alert
from dth_ray.ops.cloudwatch import (
    MAX_BYTES_PER_CALL,
    Gauges,
    batches,
    dashboard_body,
    dashboard_name,
    datums,
)
from dth_ray.ops.logs import (
    JsonFormatter,
    TextFormatter,
    _Relay,
    fields,
    redact,
    service_lines,
    setup_logging,
    write_relayed,
)
from dth_ray.report import RunReport
from dth_ray.runtime.progress import Snapshot

NOW = datetime.datetime(2025, 1, 1, tzinfo=datetime.timezone.utc)


def _report(status="failed", failed=3, copied=7) -> dict:
    return {"status": status, "job": "logs-to-lake", "run_id": 4, "resumed": False,
            "objects": {"listed": copied + failed + 2, "copied": copied, "skipped": 2, "failed": failed},
            "bytes": {"copied": 1234}, "duration_s": 5.0, "source": "s3://a/", "destination": "s3://b/",
            "failures": [{"key": f"k{i}", "error": "PermissionDenied: S3 403 AccessDenied"} for i in range(failed)],
            "errors": []}


# -- metrics ------------------------------------------------------------------------------------------

def test_datums_are_deltas_for_totals_and_levels_for_gauges():
    data = datums("j", Tally(copied=10, skipped=2, failed=1, bytes_copied=500),
                  Tally(copied=4, skipped=2, failed=0, bytes_copied=100), Gauges(7, 70, 3), NOW)
    values = {d["MetricName"]: d["Value"] for d in data}
    assert values == {"CompletedBytes": 400, "TransferredObjects": 6, "SkippedObjects": 0, "FailedObjects": 1,
                      "PendingObjects": 7, "PendingBytes": 70, "WorkerCount": 3}
    assert all(d["Dimensions"] == [{"Name": "Job", "Value": "j"}] for d in data)
    assert {d["Unit"] for d in data} == {"Bytes", "Count"}


def test_batches_respect_count_and_payload_limits():
    items = [{"MetricName": "M", "Value": float(i), "Dimensions": [{"Name": "Job", "Value": "j"}]}
             for i in range(2500)]
    out = list(batches(items))
    assert [len(b) for b in out] == [1000, 1000, 500]
    assert [d for b in out for d in b] == items
    big = [{"MetricName": "M", "Value": 1.0, "Dimensions": [{"Name": "Job", "Value": "x" * 250_000}]}] * 9
    out = list(batches(big))
    assert all(sum(len(json.dumps(d)) for d in b) <= MAX_BYTES_PER_CALL for b in out)
    assert sum(len(b) for b in out) == 9 and len(out) >= 3


def test_dashboard_has_a_widget_per_metric():
    body = dashboard_body("DTH-Ray", "my job", "us-west-2")
    names = {m[1] for w in body["widgets"] for m in w["properties"]["metrics"]}
    assert {"CompletedBytes", "TransferredObjects", "FailedObjects", "PendingObjects", "WorkerCount",
            "SkippedObjects"} <= names
    assert all(w["properties"]["region"] == "us-west-2" for w in body["widgets"])
    assert dashboard_name("my job/x") == "dth-ray-my-job-x"


def test_ops_disabled_is_a_no_op():
    ops = Ops(SyncConfig(), "j")
    assert not ops.enabled
    ops.progress(Snapshot(Tally(listed=3, copied=1)), 2, 1.0)
    ops.finished(RunReport("failed", "j", 1, "s3://a/", "s3://b/", Tally(listed=3, copied=1, failed=2), 1.0))
    ops.close()


# -- alerts -------------------------------------------------------------------------------------------

def test_alarm_subject_message_and_attributes_carry_the_counts():
    report = _report(failed=3)
    assert subject(report) == "dth-ray FAILED: job logs-to-lake: 3 objects failed"
    text = message(report)
    assert "3 failed" in text and "'k0'" in text
    summary = json.loads(text.split("Summary (JSON):\n", 1)[1])
    assert summary["objects"]["failed"] == 3 and summary["status"] == "failed"
    assert attributes(report)["failed"] == {"DataType": "Number", "StringValue": "3"}
    assert len(subject(dict(report, job="j" * 300))) == 100


def test_alarm_failures_are_truncated_but_counted():
    report = _report(failed=500)
    summary = json.loads(message(report).split("Summary (JSON):\n", 1)[1])
    assert summary["objects"]["failed"] == 500 and len(summary["failures"]) == 20


def test_which_runs_alarm():
    assert wants_alert(_report("failed", failed=1), on_success=False)
    assert wants_alert({"status": "failed", "objects": {"failed": 0}}, on_success=False)  # shard errors
    assert not wants_alert(_report("succeeded", failed=0), on_success=False)
    assert wants_alert(_report("succeeded", failed=0), on_success=True)
    assert subject(_report("succeeded", failed=0)).startswith("dth-ray succeeded: job logs-to-lake: 7 copied")


# -- logs ---------------------------------------------------------------------------------------------

def _record(msg, *args, extra=None, exc_info=None):
    record = logging.LogRecord("dth_ray.runtime.worker", logging.WARNING, __file__, 1, msg, args, exc_info)
    for k, v in (extra or {}).items():
        setattr(record, k, v)
    return record


def test_json_formatter_one_object_per_line_with_event_fields():
    line = JsonFormatter().format(_record("copy failed key=%s", "a/b", extra=fields(
        job="j1", key="a/b", attempt=3, error_class="Throttled", shard=None)))
    assert "\n" not in line
    doc = json.loads(line)
    assert doc["msg"] == "copy failed key=a/b" and doc["level"] == "WARNING"
    assert (doc["job"], doc["key"], doc["attempt"], doc["error_class"]) == ("j1", "a/b", 3, "Throttled")
    assert "shard" not in doc and doc["ts"].endswith("Z")
    try:
        raise PermissionDenied("S3 403 InvalidAccessKeyId", "InvalidAccessKeyId")
    except PermissionDenied:
        import sys

        doc = json.loads(JsonFormatter().format(_record("boom", exc_info=sys.exc_info())))
    assert doc["error_class"] == "PermissionDenied" and "\n" not in JsonFormatter().format(_record("x"))


def test_text_formatter_appends_fields():
    line = TextFormatter().format(_record("copy failed", extra={"key": "a b", "attempt": 2}))
    assert line.endswith("copy failed key='a b' attempt=2")


@pytest.mark.parametrize("text", [
    "Authorization: AWS4-HMAC-SHA256 Credential=AKIAEXAMPLEKEY1/20250101/us-east-1/s3/aws4_request, Signature=abc",
    "GET https://b.s3.amazonaws.com/k?X-Amz-Credential=AKIAEXAMPLEKEY1%2F2025&X-Amz-Signature=deadbeef",
    '{"SecretString": "{\\"access_key_id\\": \\"x\\", \\"secret_access_key\\": \\"wJalrXUtnFEMI\\"}"}',
    "secret_access_key='wJalrXUtnFEMI'",
    "x-amz-security-token: FwoGZXIvYXdzEJr",
])
def test_redact_scrubs_credential_shapes(text):
    out = redact(text)
    for secret in ("AKIAEXAMPLEKEY1", "wJalrXUtnFEMI", "deadbeef", "FwoGZXIvYXdzEJr"):
        assert secret not in out


def test_setup_logging_is_idempotent_and_quiets_the_sdk():
    cfg = SyncConfig(log_level="DEBUG", log=LogConfig(format=LogFormat.json))
    stream = io.StringIO()
    root = logging.getLogger()
    before = list(root.handlers), root.level
    try:
        setup_logging(cfg, stream)
        handler = setup_logging(cfg, stream)
        assert sum(type(h) is type(handler) for h in root.handlers) == 1
        assert logging.getLogger("botocore").getEffectiveLevel() >= logging.INFO
        logging.getLogger("dth_ray.test").debug("hello", extra={"job": "j"})
        assert json.loads(stream.getvalue().splitlines()[-1])["job"] == "j"
    finally:
        root.removeHandler(handler)
        root.setLevel(before[1])


def test_a_services_lines_are_at_info_unless_log_level_is_stricter_and_a_new_setup_resets_them():
    root, watch = logging.getLogger(), logging.getLogger("dth_ray.sync.watch")
    before = list(root.handlers), root.level
    try:
        for level, shown in (("WARNING", True), ("DEBUG", True), ("ERROR", False)):
            stream = io.StringIO()
            handler = setup_logging(SyncConfig(log_level=level), stream)
            assert watch.level == logging.NOTSET  # what an earlier command raised is gone
            service_lines("dth_ray.sync.watch")
            watch.info("watch: scheduled scan starting")
            logging.getLogger("dth_ray.other").info("not a service line")
            assert ("scheduled scan starting" in stream.getvalue()) is shown, level
            assert ("not a service line" in stream.getvalue()) is (level == "DEBUG")
    finally:
        root.removeHandler(handler)
        root.setLevel(before[1])
        watch.setLevel(logging.NOTSET)


def test_the_handler_writes_to_the_stderr_of_the_moment(monkeypatch):
    root = logging.getLogger()
    before = root.level
    handler = setup_logging(SyncConfig(log_level="WARNING"))
    try:
        first, second = io.StringIO(), io.StringIO()
        monkeypatch.setattr(sys, "stderr", first)
        logging.getLogger("dth_ray.test").warning("one")
        first.close()  # a capture that has ended, as a test's or a daemon's stderr may
        monkeypatch.setattr(sys, "stderr", second)
        logging.getLogger("dth_ray.test").warning("two")
        assert "two" in second.getvalue() and "one" not in second.getvalue()
    finally:
        root.removeHandler(handler)
        root.setLevel(before)


def test_an_actors_relayed_lines_are_bounded_handed_over_once_and_count_what_was_dropped():
    relay = _Relay(limit=3)
    relay.setFormatter(TextFormatter())
    log = logging.getLogger("dth_ray.relaytest")
    log.addHandler(relay)
    log.propagate = False
    try:
        for n in range(5):
            log.warning("line %d", n)
    finally:
        log.removeHandler(relay)
        log.propagate = True
    lines = relay.take()
    assert len(lines) == 4 and "2 earlier lines were not relayed" in lines[0]
    assert [line.rsplit(" ", 1)[1] for line in lines[1:]] == ["2", "3", "4"]
    assert relay.take() == []


def test_relayed_lines_reach_the_drivers_stderr_tagged_with_their_worker_and_scrubbed(monkeypatch):
    root = logging.getLogger()
    before = root.level
    handler = setup_logging(SyncConfig(log_level="WARNING"))
    try:
        err = io.StringIO()
        monkeypatch.setattr(sys, "stderr", err)
        write_relayed("actor-0a1b2c3d", ["2026-12-05 WARNING dth_ray.x slow Signature=abcdef",
                                         '{"level": "WARNING", "msg": "json line"}'])
        write_relayed("actor-0a1b2c3d", [])
    finally:
        root.removeHandler(handler)
        root.setLevel(before)
    assert err.getvalue().splitlines() == ["(actor-0a1b2c3d) 2026-12-05 WARNING dth_ray.x slow Signature=***",
                                           '{"level": "WARNING", "msg": "json line"}']


# -- credentials refresh schedule -------------------------------------------------------------------

class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_refreshing_credentials_schedule_and_forced_refresh(monkeypatch):
    monkeypatch.setenv("ROT_ACCESS_KEY_ID", "AKIDONE")
    monkeypatch.setenv("ROT_SECRET_ACCESS_KEY", "secret-one")
    clock = FakeClock()
    creds = RefreshingCredentials("env:ROT", "source", refresh_interval_s=900, clock=clock)
    keys, gen = creds.current()
    assert keys == Credentials("AKIDONE", "secret-one") and gen == 0 and not creds.due()
    assert "secret-one" not in repr(creds) and "secret-one" not in repr(keys) and "AKIDONE" not in str(keys)
    monkeypatch.setenv("ROT_ACCESS_KEY_ID", "AKIDTWO")
    monkeypatch.setenv("ROT_SECRET_ACCESS_KEY", "secret-two")
    clock.now += 899
    creds.refresh_if_due()
    assert creds.current() == (keys, 0)  # not due yet
    clock.now += 2
    assert creds.due()
    creds.refresh_if_due()
    assert creds.current()[0].access_key_id == "AKIDTWO" and creds.generation == 1
    # an auth error seen with an older generation: someone already re-read, nothing fetched
    monkeypatch.setenv("ROT_ACCESS_KEY_ID", "AKIDTHREE")
    clock.now += 10
    creds.refresh(0)
    assert creds.generation == 1
    # with the current generation: re-read at once, but at most every few seconds
    creds.refresh(1)
    assert creds.current()[0].access_key_id == "AKIDTHREE" and creds.generation == 2
    monkeypatch.setenv("ROT_ACCESS_KEY_ID", "AKIDFOUR")
    creds.refresh(2)
    assert creds.generation == 2
    clock.now += 3
    creds.refresh(2)
    assert creds.generation == 3


def test_failed_scheduled_refresh_keeps_the_keys(monkeypatch):
    monkeypatch.setenv("ROT_ACCESS_KEY_ID", "AKIDONE")
    monkeypatch.setenv("ROT_SECRET_ACCESS_KEY", "secret-one")
    clock = FakeClock()
    creds = RefreshingCredentials("env:ROT", "source", refresh_interval_s=60, clock=clock)
    keys, _ = creds.current()
    monkeypatch.delenv("ROT_SECRET_ACCESS_KEY")
    clock.now += 61
    creds.refresh_if_due()
    assert creds.current() == (keys, 0) and not creds.due()  # retried a minute later
    clock.now += 61
    assert creds.due()


def test_refreshing_credentials_never_pickle():
    import pickle

    with pytest.raises(TypeError):
        pickle.dumps(RefreshingCredentials("anonymous", "source"))


def test_auth_error_codes():
    assert is_auth_error(PermissionDenied("S3 403", "InvalidAccessKeyId"))
    assert is_auth_error(PermissionDenied("S3 400", "ExpiredToken"))
    assert not is_auth_error(PermissionDenied("S3 403", "AccessDenied"))


# -- config -------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("change", "named"), [
    ({"metrics": MetricsConfig(interval_s=0)}, "metrics.interval_s"),
    ({"metrics": MetricsConfig(namespace="AWS/S3")}, "metrics.namespace"),
    ({"metrics": MetricsConfig(credentials="anonymous")}, "metrics.credentials"),
    ({"metrics": MetricsConfig(endpoint="http://example.com")}, "metrics.endpoint"),
    ({"alerts": AlertsConfig(sns_topic_arn="topic")}, "alerts.sns_topic_arn"),
    ({"alerts": AlertsConfig(email="nobody")}, "alerts.email"),
    ({"alerts": AlertsConfig(region="moon-1")}, "alerts.region"),
    ({"alerts": AlertsConfig(credentials="role:nope")}, "alerts.credentials"),
    ({"log_level": "LOUD"}, "log_level"),
])
def test_ops_config_errors_name_the_key(change, named):
    cfg = SyncConfig(**change)
    with pytest.raises(ConfigError) as err:
        validate_ops(cfg)
    assert named in str(err.value) and "\n" not in str(err.value)


def test_ops_config_accepts_good_values():
    validate_ops(SyncConfig(metrics=MetricsConfig(cloudwatch=True, region="cn-north-1", interval_s=10,
                                                  credentials="role:arn:aws-cn:iam::123456789012:role/cw"),
                            alerts=AlertsConfig(sns_topic_arn="arn:aws:sns:us-west-2:123456789012:dth-ray-alerts",
                                                email="ops@example.com")))
