"""The operations facade against moto over HTTP: CloudWatch receives the named metrics with sums equal to the
report, the dashboard command creates its widgets, and SNS carries exactly one alarm per finished job (read
back through an SQS queue subscribed to the topic)."""

from __future__ import annotations

import datetime
import json
import time
import uuid

import pytest

from dth_ray.cli import main
from dth_ray.config import AlertsConfig, MetricsConfig, SyncConfig
from dth_ray.model import Tally
from dth_ray.ops import Ops
from dth_ray.report import RunReport
from dth_ray.runtime.progress import Snapshot
from tests.servers.s3_servers import free_port

NAMES = ("CompletedBytes", "TransferredObjects", "SkippedObjects", "FailedObjects", "PendingObjects",
         "PendingBytes", "WorkerCount")


@pytest.fixture
def moto_keys(moto_server, monkeypatch):
    """Keys for the `env:MOTO` spec (moto accepts any)."""
    monkeypatch.setenv("MOTO_ACCESS_KEY_ID", "moto-access-key")
    monkeypatch.setenv("MOTO_SECRET_ACCESS_KEY", "moto-secret-key")
    return moto_server


def wait_for(condition, timeout_s: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def report(job: str, listed: int, copied: int, skipped: int, failed: int, nbytes: int) -> RunReport:
    tally = Tally(listed=listed, copied=copied, skipped=skipped, bytes_copied=nbytes, bytes_listed=nbytes)
    for i in range(failed):
        tally.fail(f"bad/{i}", "Transient: S3 500 InternalError")
    return RunReport("failed" if failed else "succeeded", job, 1, "s3://src/", "s3://dst/", tally, 3.0)


def sums(cw, job: str, namespace: str = "DTH-Ray") -> dict[str, float]:
    now = datetime.datetime.now(datetime.timezone.utc)
    out = {}
    for name in NAMES:
        points = cw.get_metric_statistics(
            Namespace=namespace, MetricName=name, Dimensions=[{"Name": "Job", "Value": job}],
            StartTime=now - datetime.timedelta(hours=1), EndTime=now + datetime.timedelta(minutes=5),
            Period=3600 * 2, Statistics=["Sum", "Maximum"])["Datapoints"]
        out[name] = sum(p["Sum"] for p in points)
        out[name + ":max"] = max((p["Maximum"] for p in points), default=0.0)
    return out


# -- CloudWatch ---------------------------------------------------------------------------------------

def test_simulated_run_publishes_metrics_whose_sums_equal_the_report(moto_keys):
    job = f"cw-{uuid.uuid4().hex[:8]}"
    cfg = SyncConfig(metrics=MetricsConfig(cloudwatch=True, endpoint=moto_keys.endpoint, region="us-east-1",
                                           credentials="env:MOTO", interval_s=1))
    ops = Ops(cfg, job)
    cw = moto_keys.client("cloudwatch")
    try:
        # a run: listing grows, copies land, a few skips and failures; progress about every 50 ms here
        for step in range(1, 61):
            tally = Tally(listed=min(100, step * 3), copied=step, skipped=step // 10, failed=step // 30,
                          bytes_copied=step * 1000)
            ops.progress(Snapshot(tally, bytes_in_flight=(60 - step) * 1000), actors=4, elapsed_s=step * 0.05)
            time.sleep(0.05)
        wait_for(lambda: ops.metrics.calls >= 2, what="two periodic publishes")
        mid = sums(cw, job)
        assert 0 < mid["TransferredObjects"] <= 60 and mid["WorkerCount:max"] == 4
        final = report(job, listed=100, copied=95, skipped=3, failed=2, nbytes=95_000)
        ops.finished(final)
    finally:
        ops.close()
    got = sums(cw, job)
    assert got["TransferredObjects"] == 95
    assert got["CompletedBytes"] == 95_000
    assert got["SkippedObjects"] == 3
    assert got["FailedObjects"] == 2
    assert got["WorkerCount:max"] == 4
    listed = cw.list_metrics(Namespace="DTH-Ray", Dimensions=[{"Name": "Job", "Value": job}])["Metrics"]
    assert {m["MetricName"] for m in listed} == set(NAMES)
    assert ops.metrics.failures == 0


def test_unreachable_cloudwatch_never_blocks_or_fails_the_run(moto_keys):
    cfg = SyncConfig(metrics=MetricsConfig(cloudwatch=True, endpoint=f"http://127.0.0.1:{free_port()}",
                                           credentials="env:MOTO", interval_s=1))
    ops = Ops(cfg, "unreachable")
    started = time.monotonic()
    for step in range(5):
        ops.progress(Snapshot(Tally(listed=10, copied=step)), actors=1, elapsed_s=step)
    assert time.monotonic() - started < 0.1  # progress() only stores numbers
    ops.finished(report("unreachable", 10, 10, 0, 0, 10))
    ops.close()
    assert ops.metrics.failures >= 1 and time.monotonic() - started < 60


def test_dashboard_create_command(moto_keys, capsys):
    job = f"dash-{uuid.uuid4().hex[:8]}"
    code = main(["dashboard", "create", f"job={job}", f"metrics.endpoint={moto_keys.endpoint}",
                 "metrics.credentials=env:MOTO", "metrics.region=us-east-1", "metrics.namespace=DTH-Ray-Test"])
    out = capsys.readouterr()
    assert code == 0, out.err
    printed = json.loads(out.out)
    assert printed["name"] == f"dth-ray-{job}"
    body = json.loads(moto_keys.client("cloudwatch").get_dashboard(DashboardName=printed["name"])["DashboardBody"])
    shown = {m[1] for w in body["widgets"] for m in w["properties"]["metrics"]}
    assert {"CompletedBytes", "TransferredObjects", "FailedObjects", "PendingObjects", "WorkerCount"} <= shown
    assert all(m[0] == "DTH-Ray-Test" and m[2:4] == ["Job", job]
               for w in body["widgets"] for m in w["properties"]["metrics"])
    assert main(["dashboard", "create", f"metrics.endpoint={moto_keys.endpoint}"]) == 2  # no job: usage error


# -- SNS ----------------------------------------------------------------------------------------------

@pytest.fixture
def topic(moto_keys):
    """A topic with an SQS queue subscribed; yields (arn, drain()) where drain() returns the messages so far."""
    sns, sqs = moto_keys.client("sns"), moto_keys.client("sqs")
    name = f"dth-alerts-{uuid.uuid4().hex[:8]}"
    arn = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    queue_arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)

    def drain() -> list[dict]:
        out = []
        for _ in range(100):
            got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])
        return out

    yield arn, drain
    sqs.delete_queue(QueueUrl=queue)
    sns.delete_topic(TopicArn=arn)


def alerts_cfg(moto, arn: str, **kw) -> SyncConfig:
    return SyncConfig(alerts=AlertsConfig(sns_topic_arn=arn, endpoint=moto.endpoint, credentials="env:MOTO", **kw))


def summary_of(envelope: dict) -> dict:
    return json.loads(envelope["Message"].split("Summary (JSON):\n", 1)[1])


def test_exactly_one_alarm_per_finished_job(moto_keys, topic):
    arn, drain = topic
    jobs = {"a-fails": report("a-fails", 500, 480, 0, 20, 480), "b-fails": report("b-fails", 3, 2, 0, 1, 2),
            "c-succeeds": report("c-succeeds", 40, 38, 2, 0, 38_000)}
    for job, final in jobs.items():
        ops = Ops(alerts_cfg(moto_keys, arn), job)
        for step in range(3):
            ops.progress(Snapshot(Tally(listed=step, copied=step)), actors=2, elapsed_s=step)
        ops.finished(final)
        ops.finished(final)  # a second call changes nothing
        ops.close()
    messages = drain()
    assert len(messages) == 3
    by_job = {m["MessageAttributes"]["job"]["Value"]: m for m in messages}
    assert set(by_job) == set(jobs)
    a = by_job["a-fails"]
    assert a["Subject"] == "dth-ray FAILED: job a-fails: 20 objects failed"
    assert a["MessageAttributes"]["failed"]["Value"] == "20" and "20 failed" in a["Message"]
    assert summary_of(a)["objects"] == jobs["a-fails"].to_json()["objects"] and len(summary_of(a)["failures"]) == 20
    assert summary_of(by_job["b-fails"])["objects"]["failed"] == 1
    c = by_job["c-succeeds"]
    assert c["MessageAttributes"]["status"]["Value"] == "succeeded" and summary_of(c)["objects"]["copied"] == 38


def test_success_alarm_is_optional_and_failures_always_alarm(moto_keys, topic):
    arn, drain = topic
    ops = Ops(alerts_cfg(moto_keys, arn, on_success=False), "quiet")
    ops.finished(report("quiet", 5, 5, 0, 0, 5))
    ops.close()
    watch_scan = Ops(alerts_cfg(moto_keys, arn), "scan", one_time=False)  # a watch scan: no success alarm
    watch_scan.finished(report("scan", 5, 5, 0, 0, 5))
    assert drain() == []
    crashed = Ops(alerts_cfg(moto_keys, arn, on_success=False), "crashed")
    crashed.aborted(RuntimeError("actor died"))
    crashed.finished(report("crashed", 1, 1, 0, 0, 1))  # already alarmed: nothing more
    messages = drain()
    assert len(messages) == 1 and "RuntimeError" in messages[0]["Message"]
    assert messages[0]["MessageAttributes"]["status"]["Value"] == "failed"


def test_alerts_setup_command_creates_topic_and_email_subscription(moto_keys, capsys):
    name = f"dth-setup-{uuid.uuid4().hex[:8]}"
    code = main(["alerts", "setup", "alerts.email=ops@example.com", f"alerts.topic_name={name}",
                 f"alerts.endpoint={moto_keys.endpoint}", "alerts.credentials=env:MOTO", "alerts.region=us-east-1"])
    out = capsys.readouterr()
    assert code == 0, out.err
    arn = out.out.strip()
    assert arn == f"arn:aws:sns:us-east-1:123456789012:{name}"
    subs = moto_keys.client("sns").list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    assert [(s["Protocol"], s["Endpoint"]) for s in subs] == [("email", "ops@example.com")]
    assert main(["alerts", "setup", f"alerts.endpoint={moto_keys.endpoint}"]) == 2  # no email: usage error
