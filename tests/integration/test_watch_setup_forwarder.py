"""`dth-ray events setup` against moto over HTTP (queue, dead-letter queue, redrive policy, alarm, the queue
policy's source conditions, the least-privilege policy), and the Function Compute forwarder sending real OSS
event JSON to moto SQS (its bucket allowlist and credential formats)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import uuid

import pytest

from dth_ray.sync.events import CREATED, OSS, REMOVED, parse_body

FORWARDER = os.path.join(os.path.dirname(__file__), "..", "..", "dth_ray", "functions", "oss_forwarder", "index.py")


def _oss_record(name: str, key: str, size: int = 0) -> dict:
    """An OSS event record as Function Compute's OSS trigger delivers it."""
    return {
        "eventName": name, "eventSource": "acs:oss", "eventTime": "2024-05-01T12:00:02.000Z", "eventVersion": "1.0",
        "oss": {"bucket": {"arn": "acs:oss:cn-hangzhou:1237050315505689:src-bucket", "name": "src-bucket",
                           "ownerIdentity": "1237050315505689", "virtualBucket": ""},
                "object": {"deltaSize": size, "eTag": "688A7BF4F233DC9C88A80BF985AB7329", "key": key, "size": size},
                "ossSchemaVersion": "1.0", "ruleId": "9adac8e253828f4f7c0466d941fa3db81161e853"},
        "region": "cn-hangzhou", "requestParameters": {"sourceIPAddress": "140.205.128.221"},
        "responseElements": {"requestId": "58F9FF2D3DF792092E12044C"},
        "userIdentity": {"principalId": "262561392693583141"},
    }


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "dth_ray", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_events_setup_creates_queue_dlq_redrive_alarm_and_prints_least_privilege(moto_server, tmp_path):
    name = f"dth-{uuid.uuid4().hex[:8]}"
    sns = moto_server.client("sns")
    topic = sns.create_topic(Name=f"{name}-alerts")["TopicArn"]
    env = {"MOTOQ_ACCESS_KEY_ID": "moto-events", "MOTOQ_SECRET_ACCESS_KEY": "moto-events-secret"}
    args = ["events", "setup", f"events.queue_name={name}", f"events.endpoint={moto_server.endpoint}",
            "events.region=us-east-1", "events.credentials=env:MOTOQ", "events.max_receives=4",
            f"alerts.sns_topic_arn={topic}", "source.bucket=src-bucket", f"report={tmp_path / 'setup.json'}"]
    first = _cli(*args, env=env)
    assert first.returncode == 0, first.stderr
    out = json.loads(first.stdout)
    assert out == json.loads((tmp_path / "setup.json").read_text())
    assert "moto-events-secret" not in first.stdout + first.stderr
    sqs = moto_server.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=out["queue_url"], AttributeNames=["All"])["Attributes"]
    redrive = json.loads(attrs["RedrivePolicy"])
    assert redrive["deadLetterTargetArn"] == out["dead_letter_queue_arn"]
    assert int(redrive["maxReceiveCount"]) == 4
    assert out["dead_letter_queue_url"].endswith(f"/{name}-dlq")
    [s3_policy] = json.loads(attrs["Policy"])["Statement"]
    assert s3_policy["Principal"] == {"Service": "s3.amazonaws.com"}
    assert s3_policy["Action"] == "sqs:SendMessage" and s3_policy["Resource"] == out["queue_arn"]
    # Only that bucket, and only while the queue's own account owns it (a deleted bucket's name re-created
    # in another account must not be able to send).
    queue_account = out["queue_arn"].split(":")[4]
    assert s3_policy["Condition"] == {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::src-bucket"},
                                      "StringEquals": {"aws:SourceAccount": queue_account}}
    assert out["s3_source_account"] == queue_account
    # The forwarder may do exactly one thing: send to this queue.
    assert out["policies"]["forwarder"]["Statement"] == [
        {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": out["queue_arn"]}]
    # Who can send, and what a sender can do (copy, and delete only within the job's scope and limit).
    who = out["who_can_send"]
    assert "S3 event notifications of bucket src-bucket" in who and "policies.forwarder" in who
    assert "events.max_delete=1000 per events.max_delete_window=1h" in who and "source.prefix_list" in who
    assert f"who can send: {who}" in first.stderr
    alarms = moto_server.client("cloudwatch").describe_alarms(AlarmNames=[out["alarm"]])["MetricAlarms"]
    assert alarms[0]["AlarmActions"] == [topic]
    assert alarms[0]["Dimensions"] == [{"Name": "QueueName", "Value": f"{name}-dlq"}]
    again = _cli(*args, env=env)  # idempotent
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["queue_url"] == out["queue_url"]
    bad = _cli("events", "setup", "events.queue_name=no/slash")
    assert bad.returncode == 2 and "events.queue_name" in bad.stderr


def test_events_setup_queue_policy_for_a_bucket_of_another_account(moto_server):
    name = f"dth-{uuid.uuid4().hex[:8]}"
    env = {"MOTOQ_ACCESS_KEY_ID": "moto-events", "MOTOQ_SECRET_ACCESS_KEY": "moto-events-secret"}
    common = [f"events.endpoint={moto_server.endpoint}", "events.region=us-east-1",
              "events.credentials=env:MOTOQ"]
    done = _cli("events", "setup", f"events.queue_name={name}", *common, "source.bucket=partner-logs",
                "events.source_account=111122223333", env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    sqs = moto_server.client("sqs")
    attrs = sqs.get_queue_attributes(QueueUrl=out["queue_url"], AttributeNames=["Policy"])
    [statement] = json.loads(attrs["Attributes"]["Policy"])["Statement"]
    assert statement["Condition"] == {"ArnLike": {"aws:SourceArn": "arn:aws:s3:::partner-logs"},
                                      "StringEquals": {"aws:SourceAccount": "111122223333"}}
    assert out["s3_source_account"] == "111122223333"
    # Without an S3 bucket no queue policy is written: only IAM identities (the forwarder's user) can send.
    plain = _cli("events", "setup", f"events.queue_name={name}-plain", *common, env=env)
    assert plain.returncode == 0, plain.stderr
    plain_out = json.loads(plain.stdout)
    assert plain_out["s3_notifications_from"] is None and plain_out["s3_source_account"] is None
    plain_attrs = moto_server.client("sqs").get_queue_attributes(QueueUrl=plain_out["queue_url"],
                                                                 AttributeNames=["All"])["Attributes"]
    assert "Policy" not in plain_attrs
    bad = _cli("events", "setup", f"events.queue_name={name}", *common, "source.bucket=partner-logs",
               "events.source_account=1111-2222", env=env)
    assert bad.returncode == 2 and "events.source_account" in bad.stderr


def _load_forwarder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("oss_forwarder_index", FORWARDER)
    index = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(index)
    return index


def _drain(sqs, url: str) -> list[dict]:
    got = []
    while True:
        answer = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        msgs = answer.get("Messages", [])
        if not msgs:
            return got
        got.extend(msgs)
        sqs.delete_message_batch(QueueUrl=url, Entries=[{"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]}
                                                         for i, m in enumerate(msgs)])


def test_fc_forwarder_sends_oss_events_to_sqs_in_batches(moto_server, monkeypatch, caplog):
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=f"fwd-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    secret = "fc-forwarder-secret-value"
    monkeypatch.setenv("QUEUE_URL", url)
    monkeypatch.setenv("REGION_NAME", "us-east-1")
    monkeypatch.setenv("SQS_ENDPOINT", moto_server.endpoint)
    monkeypatch.setenv("ALLOWED_BUCKETS", "src-bucket")
    monkeypatch.setenv("ACCESS_KEY", "fc-forwarder-key")
    monkeypatch.setenv("SECRET_KEY", secret)
    index = _load_forwarder()
    with open(FORWARDER, encoding="utf-8") as handle:
        assert "dth_ray" not in handle.read().split('"""', 2)[2]  # standalone: deployable without dth_ray

    records = [_oss_record("ObjectCreated:PutObject", f"logs/part-{i:02d} +x.parquet", 100 + i) for i in range(12)]
    records += [_oss_record("ObjectRemoved:DeleteObjects", "logs/old"),
                _oss_record("ObjectModified:UpdateObjectMeta", "logs/meta")]
    with caplog.at_level(logging.DEBUG):
        answer = json.loads(index.handler(json.dumps({"events": records}).encode(), None))
    assert answer == {"received": 14, "forwarded": 13, "dropped": 0, "ignored": 1}
    assert secret not in caplog.text  # not even in botocore's debug lines
    ours = " ".join(r.getMessage() for r in caplog.records if r.name == "oss_forwarder_index")
    assert "forwarded 13 of 14" in ours and "fc-forwarder-key" not in ours

    got = _drain(sqs, url)
    events = [e for m in got for e in parse_body(m["Body"]).events]
    assert sorted((e.key, e.kind) for e in events) == sorted(
        [(f"logs/part-{i:02d} +x.parquet", CREATED) for i in range(12)] + [("logs/old", REMOVED)])
    assert {e.fmt for e in events} == {OSS} and {e.bucket for e in events} == {"src-bucket"}
    assert all(json.loads(m["Body"])["events"][0]["eventSource"] == "acs:oss" for m in got)  # records as sent


def _with_bucket(record: dict, bucket: str) -> dict:
    record["oss"]["bucket"].update(name=bucket, arn=f"acs:oss:cn-hangzhou:1237050315505689:{bucket}")
    return record


def test_fc_forwarder_drops_events_of_buckets_not_allowed(moto_server, monkeypatch, caplog):
    sqs = moto_server.client("sqs")
    url = sqs.create_queue(QueueName=f"fwd-{uuid.uuid4().hex[:8]}")["QueueUrl"]
    secret = "fc-forwarder-json-secret"
    monkeypatch.setenv("QUEUE_URL", url)
    monkeypatch.setenv("REGION_NAME", "us-east-1")
    monkeypatch.setenv("SQS_ENDPOINT", moto_server.endpoint)
    # the migration secret's JSON format, the one value rotated at once
    keys = {"access_key_id": "fc-json-key", "secret_access_key": secret}
    monkeypatch.setenv("SQS_CREDENTIALS", json.dumps(keys))
    index = _load_forwarder()
    records = [_oss_record("ObjectCreated:PutObject", "logs/kept.parquet", 10),
               _with_bucket(_oss_record("ObjectRemoved:DeleteObject", "logs/kept.parquet"), "other-bucket"),
               _with_bucket(_oss_record("ObjectCreated:PutObject", "x"), "evil\nbucket"),
               _with_bucket(_oss_record("ObjectRemoved:DeleteObjects", "logs/old"), "logs-2"),
               {"eventName": "ObjectRemoved:DeleteObject", "oss": {"object": {"key": "no-bucket"}}}]
    body = json.dumps({"events": records}).encode()

    # No allowlist: the forwarder refuses to run and sends nothing.
    monkeypatch.delenv("ALLOWED_BUCKETS", raising=False)
    with pytest.raises(RuntimeError, match="ALLOWED_BUCKETS"):
        index.handler(body, None)
    monkeypatch.setenv("ALLOWED_BUCKETS", " , ")
    with pytest.raises(RuntimeError, match="ALLOWED_BUCKETS"):
        index.handler(body, None)
    assert _drain(sqs, url) == []

    monkeypatch.setenv("ALLOWED_BUCKETS", "src-bucket, logs-2")
    with caplog.at_level(logging.DEBUG):
        answer = json.loads(index.handler(body, None))
    assert answer == {"received": 5, "forwarded": 2, "dropped": 3, "ignored": 0}
    warnings = [r.getMessage() for r in caplog.records
                if r.name == "oss_forwarder_index" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "dropped 3 events" in warnings[0]
    assert "'other-bucket': 1" in warnings[0] and "\n" not in warnings[0]  # names logged, escaped
    assert secret not in caplog.text and "fc-json-key" not in warnings[0]
    got = [json.loads(m["Body"])["events"][0] for m in _drain(sqs, url)]
    assert sorted((r["oss"]["bucket"]["name"], r["oss"]["object"]["key"]) for r in got) == [
        ("logs-2", "logs/old"), ("src-bucket", "logs/kept.parquet")]

    monkeypatch.setenv("SQS_CREDENTIALS", "access_key_id=fc-json-key")  # not JSON: refused, value not echoed
    with pytest.raises(RuntimeError, match="SQS_CREDENTIALS must be JSON") as refused:
        index.handler(body, None)
    assert "fc-json-key" not in str(refused.value)
