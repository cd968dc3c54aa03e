"""Operations end to end, the CLI in a subprocess on a local Ray: a DEBUG run with JSON logs shows no key
anywhere; a secret rotated mid-run does not fail the job; and (once the driver calls dth_ray.ops) CloudWatch
sums equal the report and one SNS alarm arrives per run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.contract.test_credentials_refresh import KEY1, KEY2, RestartableRclone, _secret
from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import s3_client, seed_objects

CLI = [sys.executable, "-m", "dth_ray"]
BASE_AWS = ("base-aws-key-id-e2e", "base-aws-secret-e2e-value")


def cli_env(moto, extra: dict) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("E2E", "AWS_"))}
    env.update({"AWS_ENDPOINT_URL_SECRETS_MANAGER": moto.endpoint, "AWS_ACCESS_KEY_ID": BASE_AWS[0],
                "AWS_SECRET_ACCESS_KEY": BASE_AWS[1], "AWS_REGION": "us-east-1", "MOTO_ACCESS_KEY_ID": "moto-key",
                "MOTO_SECRET_ACCESS_KEY": "moto-secret"})
    env.update(extra)
    return env


@pytest.fixture
def source_secret(moto_server, rclone_pair):
    """The source's keys in a Secrets Manager secret on moto (read by every transfer actor)."""
    sm = moto_server.client("secretsmanager")
    name = f"dth-e2e-src-{uuid.uuid4().hex[:8]}"
    src = rclone_pair.source
    sm.create_secret(Name=name, SecretString=_secret((src.access_key, src.secret_key)))
    yield name
    sm.delete_secret(SecretId=name, ForceDeleteWithoutRecovery=True)


def test_debug_json_run_never_shows_a_key(rclone_pair, moto_server, source_secret, tmp_path, unique_prefix):
    pair = rclone_pair
    keys = {unique_prefix + f"obj-{i:03d}": os.urandom(200 + i) for i in range(40)}
    seed_objects(pair.source.client(), pair.source.bucket, keys)
    manifest = tmp_path / "state" / "m.sqlite"
    report = tmp_path / "report.json"
    args = [*s3_overrides(pair, unique_prefix, "logs/" + unique_prefix, str(manifest)),
            f"source.credentials=secret:{source_secret}", f"report={report}", "log_level=DEBUG", "log.format=json",
            "metrics.cloudwatch=true", f"metrics.endpoint={moto_server.endpoint}", "metrics.credentials=env:MOTO",
            "metrics.interval_s=1", f"job=logs-{unique_prefix.strip('/')}"]
    dst = pair.destination
    result = subprocess.run([*CLI, "sync", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=cli_env(moto_server, {"E2EDST_ACCESS_KEY_ID": dst.access_key,
                                                      "E2EDST_SECRET_ACCESS_KEY": dst.secret_key}))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["objects"] == {"listed": 40, "copied": 40, "skipped": 0, "failed": 0}

    secrets = [pair.source.secret_key, pair.source.access_key, dst.secret_key, dst.access_key, BASE_AWS[1],
               BASE_AWS[0], "moto-secret"]
    blobs = {"stdout": result.stdout, "stderr": result.stderr, "report": report.read_text()}
    blobs.update({p.name: p.read_bytes().decode("latin-1") for p in manifest.parent.iterdir()})
    for name, blob in blobs.items():
        for secret in secrets:
            assert secret not in blob, f"{secret[:3]}… appears in {name}"

    json_lines = [line for line in result.stderr.splitlines() if line.startswith("{")]
    assert json_lines, result.stderr[-2000:]
    docs = [json.loads(line) for line in json_lines]
    assert all({"ts", "level", "logger", "msg"} <= set(doc) for doc in docs)
    info_and_up = [doc for doc in docs if doc["level"] != "DEBUG"]
    assert not [doc for doc in info_and_up if any(key in doc["msg"] for key in keys)], "per-object lines at INFO"


def test_secret_rotated_mid_run_does_not_fail_the_job(rclone_pair, moto_server, tmp_path, unique_prefix):
    """The destination's keys live in a secret; mid-run the secret gets a new key and the server drops the old
    one. Every transfer actor re-reads the secret on its next refused request; nothing fails."""
    sm = moto_server.client("secretsmanager")
    secret = f"dth-e2e-dst-{uuid.uuid4().hex[:8]}"
    sm.create_secret(Name=secret, SecretString=_secret(KEY1))
    server = RestartableRclone(str(tmp_path / "dst"), [KEY1])
    try:
        s3_client(server.endpoint, *KEY1).create_bucket(Bucket="rotating")
        src = rclone_pair.source
        count = 300
        seed_objects(src.client(), src.bucket, {unique_prefix + f"r-{i:04d}": os.urandom(512) for i in range(count)})
        report = tmp_path / "report.json"
        args = ["source=s3", f"source.bucket={src.bucket}", f"source.endpoint={src.endpoint}",
                f"source.prefix={unique_prefix}", "source.credentials=env:E2ESRC", "destination=s3",
                "destination.bucket=rotating", f"destination.endpoint={server.endpoint}",
                f"destination.credentials=secret:{secret}", f"manifest.path={tmp_path / 'm.sqlite'}",
                "progress=off", "transfer.actors=2", "transfer.max_requests_per_s=25", f"report={report}"]
        env = cli_env(moto_server, {"E2ESRC_ACCESS_KEY_ID": src.access_key,
                                    "E2ESRC_SECRET_ACCESS_KEY": src.secret_key})
        proc = subprocess.Popen([*CLI, "sync", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        try:
            old = s3_client(server.endpoint, *KEY1)
            deadline = time.monotonic() + 120
            copied_before = 0
            while time.monotonic() < deadline and proc.poll() is None:
                copied_before = len(listing(old, "rotating", ""))
                if copied_before >= 30:
                    break
                time.sleep(0.1)
            assert 30 <= copied_before < count, f"the run was not caught mid-way ({copied_before} copied)"
            sm.put_secret_value(SecretId=secret, SecretString=_secret(KEY2))
            server.restart([KEY2])
            stdout, stderr = proc.communicate(timeout=300)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        assert proc.returncode == 0, stderr[-3000:]
        data = json.loads(report.read_text())
        assert data["status"] == "succeeded"
        assert data["objects"] == {"listed": count, "copied": count, "skipped": 0, "failed": 0}
        assert len(listing(s3_client(server.endpoint, *KEY2), "rotating", "")) == count
        assert KEY1[1] not in stdout + stderr and KEY2[1] not in stdout + stderr
    finally:
        server.stop()
        sm.delete_secret(SecretId=secret, ForceDeleteWithoutRecovery=True)


def test_cloudwatch_sums_and_one_alarm_match_the_report(rclone_pair, moto_server, tmp_path, unique_prefix):
    import datetime

    pair = rclone_pair
    seed_objects(pair.source.client(), pair.source.bucket,
                 {unique_prefix + f"m-{i:03d}": os.urandom(300 + i) for i in range(30)})
    sns, sqs = moto_server.client("sns"), moto_server.client("sqs")
    name = f"dth-e2e-{uuid.uuid4().hex[:8]}"
    arn = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=sqs.get_queue_attributes(
        QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])
    job = f"cw-{uuid.uuid4().hex[:8]}"
    report = tmp_path / "report.json"
    args = [*s3_overrides(pair, unique_prefix, "cw/" + unique_prefix, str(tmp_path / "m.sqlite")),
            f"report={report}", f"job={job}", "metrics.cloudwatch=true", f"metrics.endpoint={moto_server.endpoint}",
            "metrics.credentials=env:MOTO", "metrics.interval_s=1", f"alerts.sns_topic_arn={arn}",
            f"alerts.endpoint={moto_server.endpoint}", "alerts.credentials=env:MOTO"]
    dst, src = pair.destination, pair.source
    result = subprocess.run([*CLI, "sync", *args], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env=cli_env(moto_server, {"E2EDST_ACCESS_KEY_ID": dst.access_key,
                                                      "E2EDST_SECRET_ACCESS_KEY": dst.secret_key,
                                                      "E2ESRC_ACCESS_KEY_ID": src.access_key,
                                                      "E2ESRC_SECRET_ACCESS_KEY": src.secret_key}))
    assert result.returncode == 0, result.stderr[-3000:]
    data = json.loads(report.read_text())
    cw = moto_server.client("cloudwatch")
    now = datetime.datetime.now(datetime.timezone.utc)

    def total(metric: str) -> float:
        points = cw.get_metric_statistics(Namespace="DTH-Ray", MetricName=metric,
                                          Dimensions=[{"Name": "Job", "Value": job}],
                                          StartTime=now - datetime.timedelta(hours=1),
                                          EndTime=now + datetime.timedelta(minutes=5), Period=7200,
                                          Statistics=["Sum"])["Datapoints"]
        return sum(p["Sum"] for p in points)

    assert total("TransferredObjects") == data["objects"]["copied"] == 30
    assert total("CompletedBytes") == data["bytes"]["copied"]
    assert total("FailedObjects") == data["objects"]["failed"]
    messages = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
    assert len(messages) == 1
    assert json.loads(messages[0]["Body"])["MessageAttributes"]["job"]["Value"] == job
