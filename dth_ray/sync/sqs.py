"""SQS control plane for `dth-ray watch` and `dth-ray events setup`, through boto3 (a few calls per batch of
messages, so the SDK's per-request cost does not matter here; object bytes never go through it).

Credentials follow the `credentials` spec like the stores'; keys are resolved here and never logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass

from dth_ray.config import EventsConfig
from dth_ray.credentials import resolve
from dth_ray.errors import ConfigError

log = logging.getLogger(__name__)
_BATCH = 10  # SQS batch calls take at most 10 entries


def region_of(ev: EventsConfig) -> str:
    """events.region, else the region in the queue URL, else the SDK's default, else us-east-1."""
    if ev.region:
        return ev.region
    match = re.search(r"sqs[.-]([a-z]{2}(?:-[a-z]+)+-\d)\.", ev.queue_url) or re.search(
        r"//([a-z]{2}(?:-[a-z]+)+-\d)\.queue\.", ev.queue_url)
    if match:
        return match.group(1)
    return os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"


def client(ev: EventsConfig, service: str = "sqs", bounded: bool = False):
    """A boto3 client for `service` (sqs, cloudwatch) with events.* endpoint, region and credentials;
    `bounded`: for a check before work starts, giving up within about 15 s (dth_ray.awsenv.bounded_config;
    the long-polling client waits events.wait_s + 10 s per try). Raises ConfigError for a bad credentials spec."""
    import boto3
    from botocore.config import Config

    from dth_ray.awsenv import bounded_config

    region = region_of(ev)
    creds = resolve(ev.credentials, "events", region)
    kwargs: dict = {"region_name": region, "config": bounded_config() if bounded else Config(
        retries={"max_attempts": 5, "mode": "standard"}, max_pool_connections=16, connect_timeout=10,
        read_timeout=max(30, ev.wait_s + 10))}
    if ev.endpoint:
        kwargs["endpoint_url"] = ev.endpoint
    if creds is not None:
        kwargs.update(aws_access_key_id=creds.access_key_id, aws_secret_access_key=creds.secret_access_key,
                      aws_session_token=creds.session_token or None)
    return boto3.client(service, **kwargs)


def _code(exc: Exception) -> str:
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code", "") or type(exc).__name__


@dataclass
class Received:
    """One received message: what the service needs to parse, hold and acknowledge it."""

    message_id: str
    receipt: str
    body: str
    receive_count: int
    sent_s: float


class Queue:
    """One SQS queue: long-polling receive, batched delete and visibility changes, moving poison aside."""

    def __init__(self, ev: EventsConfig):
        self.ev = ev
        self.url = ev.queue_url
        self._client = client(ev)
        self.redrive = False  # the queue has a redrive policy: SQS moves poison itself
        self.dead_letter_url = ev.dead_letter_queue_url

    def check(self) -> None:
        """Fail fast (within about 15 s) with a one-line ConfigError when the queue is missing, refuses us or
        does not answer."""
        checker = client(self.ev, bounded=True)
        try:
            attrs = checker.get_queue_attributes(QueueUrl=self.url, AttributeNames=["All"])["Attributes"]
        except Exception as exc:  # botocore raises many types; all mean the queue is unusable
            raise ConfigError(f"events.queue_url={self.url!r} is not usable ({_code(exc)})") from None
        self.redrive = "RedrivePolicy" in attrs

    def receive(self, max_messages: int = _BATCH) -> list[Received]:
        """Up to `max_messages` messages (long polling events.wait_s), invisible for events.visibility_timeout_s."""
        out = self._client.receive_message(
            QueueUrl=self.url, MaxNumberOfMessages=min(_BATCH, max_messages), WaitTimeSeconds=self.ev.wait_s,
            VisibilityTimeout=self.ev.visibility_timeout_s,
            AttributeNames=["ApproximateReceiveCount", "SentTimestamp"])  # (older SDKs lack MessageSystemAttributeNames)
        return [Received(m["MessageId"], m["ReceiptHandle"], m.get("Body", ""),
                         int(m.get("Attributes", {}).get("ApproximateReceiveCount", "1")),
                         int(m.get("Attributes", {}).get("SentTimestamp", "0")) / 1000.0)
                for m in out.get("Messages", [])]

    def delete(self, receipts: list[str]) -> int:
        """Delete messages by receipt handle (batches of 10); returns how many failed (they come back)."""
        failed = 0
        for i in range(0, len(receipts), _BATCH):
            chunk = receipts[i:i + _BATCH]
            try:
                out = self._client.delete_message_batch(
                    QueueUrl=self.url, Entries=[{"Id": str(n), "ReceiptHandle": r} for n, r in enumerate(chunk)])
                failed += len(out.get("Failed", []))
            except Exception as exc:
                log.warning("SQS delete failed for %d messages: %s", len(chunk), _code(exc))
                failed += len(chunk)
        return failed

    def set_visibility(self, receipts: list[str], seconds: int) -> None:
        """Extend (or, with 0, release) messages' visibility, batches of 10; failures are logged."""
        for i in range(0, len(receipts), _BATCH):
            chunk = receipts[i:i + _BATCH]
            try:
                self._client.change_message_visibility_batch(QueueUrl=self.url, Entries=[
                    {"Id": str(n), "ReceiptHandle": r, "VisibilityTimeout": seconds} for n, r in enumerate(chunk)])
            except Exception as exc:
                log.warning("SQS visibility change failed for %d messages: %s", len(chunk), _code(exc))

    def move_aside(self, message: Received, reason: str) -> bool:
        """Send a poison message to events.dead_letter_queue_url, then delete it here. False if not sent."""
        try:
            self._client.send_message(QueueUrl=self.dead_letter_url, MessageBody=message.body, MessageAttributes={
                "dth_reason": {"DataType": "String", "StringValue": reason[:256]},
                "dth_source_message_id": {"DataType": "String", "StringValue": message.message_id}})
        except Exception as exc:
            log.error("could not move poison message %s aside: %s", message.message_id, _code(exc))
            return False
        self.delete([message.receipt])
        return True


def least_privilege_policies(queue_arn: str, dead_letter_arn: str) -> dict:
    """IAM policies: the forwarder may only send to the queue; the watch service may consume it (and move
    poison to the dead-letter queue)."""
    return {
        "forwarder": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": queue_arn}]},
        "watch": {"Version": "2012-10-17", "Statement": [
            {"Effect": "Allow", "Action": ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                                           "sqs:GetQueueAttributes"], "Resource": queue_arn},
            {"Effect": "Allow", "Action": ["sqs:SendMessage"], "Resource": dead_letter_arn}]},
    }


def s3_notification_policy(queue_arn: str, bucket: str, source_account: str = "") -> dict:
    """The queue policy letting S3 event notifications of `bucket` (owned by `source_account`, default the
    queue's account) send to the queue. Both conditions matter: aws:SourceArn names the bucket, and
    aws:SourceAccount pins its owner, since a bucket name can be deleted and re-created in another account."""
    partition, account = queue_arn.split(":")[1], queue_arn.split(":")[4]
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "S3EventNotifications", "Effect": "Allow", "Principal": {"Service": "s3.amazonaws.com"},
        "Action": "sqs:SendMessage", "Resource": queue_arn,
        "Condition": {"ArnLike": {"aws:SourceArn": f"arn:{partition}:s3:::{bucket}"},
                      "StringEquals": {"aws:SourceAccount": source_account or account}}}]}


def setup(ev: EventsConfig, s3_bucket: str = "", alarm_topic_arn: str = "") -> dict:
    """Create (or update) the queue, its dead-letter queue `<name>-dlq` and the redrive policy (maxReceiveCount
    = events.max_receives); with `alarm_topic_arn` (alerts.sns_topic_arn), a CloudWatch alarm on dead-letter
    depth in the queue's region; with `s3_bucket`, a queue policy letting only that bucket's S3 event
    notifications in (aws:SourceArn, and aws:SourceAccount = events.source_account or the queue's account).
    Idempotent.

    Returns what was set up, with the least-privilege policies. Raises ConfigError for a bad queue name or
    events.source_account, or when SQS refuses.
    """
    name = ev.queue_name or ev.queue_url.rstrip("/").rsplit("/", 1)[-1]
    if not name or not re.fullmatch(r"[A-Za-z0-9_-]{1,76}", name):
        raise ConfigError("events setup needs events.queue_name (1-76 of A-Z a-z 0-9 _ -) or events.queue_url")
    if ev.source_account and not re.fullmatch(r"\d{12}", ev.source_account):
        raise ConfigError(f"events.source_account={ev.source_account!r} is not a 12-digit AWS account id")
    sqs = client(ev)
    try:
        dlq_url = sqs.create_queue(QueueName=f"{name}-dlq")["QueueUrl"]
        sqs.set_queue_attributes(QueueUrl=dlq_url, Attributes={"MessageRetentionPeriod": str(14 * 86400)})
        dlq_arn = sqs.get_queue_attributes(QueueUrl=dlq_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        url = sqs.create_queue(QueueName=name)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        redrive = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": ev.max_receives}
        attributes = {"RedrivePolicy": json.dumps(redrive), "VisibilityTimeout": str(ev.visibility_timeout_s),
                      "ReceiveMessageWaitTimeSeconds": str(ev.wait_s), "MessageRetentionPeriod": str(4 * 86400)}
        if s3_bucket:
            attributes["Policy"] = json.dumps(s3_notification_policy(arn, s3_bucket, ev.source_account))
        sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    except Exception as exc:
        raise ConfigError(f"events setup: SQS refused ({_code(exc)})") from None
    alarm = ""
    if alarm_topic_arn:
        alarm = f"{name}-dlq-not-empty"
        try:
            client(ev, "cloudwatch").put_metric_alarm(
                AlarmName=alarm, AlarmDescription=f"dth-ray: messages in {name}-dlq (poison events)",
                Namespace="AWS/SQS", MetricName="ApproximateNumberOfMessagesVisible",
                Dimensions=[{"Name": "QueueName", "Value": f"{name}-dlq"}], Statistic="Maximum", Period=300,
                EvaluationPeriods=1, Threshold=1, ComparisonOperator="GreaterThanOrEqualToThreshold",
                TreatMissingData="notBreaching", AlarmActions=[alarm_topic_arn])
        except Exception as exc:
            raise ConfigError(f"events setup: CloudWatch refused the alarm ({_code(exc)})") from None
    return {"queue_url": url, "queue_arn": arn, "dead_letter_queue_url": dlq_url, "dead_letter_queue_arn": dlq_arn,
            "redrive_policy": redrive, "s3_notifications_from": s3_bucket or None,
            "s3_source_account": (ev.source_account or arn.split(":")[4]) if s3_bucket else None,
            "alarm": alarm or None,
            "policies": least_privilege_policies(arn, dlq_arn), "who_can_send": who_can_send(s3_bucket, ev)}


def who_can_send(s3_bucket: str, ev: EventsConfig) -> str:
    """What `events setup` tells its user about the queue as an attack surface (printed and in its JSON)."""
    allowed = f"S3 event notifications of bucket {s3_bucket}" if s3_bucket else "no one outside this account"
    return (f"The queue policy lets in {allowed}; inside the account, only identities IAM grants "
            "sqs:SendMessage on this queue can send: give that to the forwarder alone (policies.forwarder). "
            "Whoever can send to it can make dth-ray watch copy and, with events.deletes=true (the default), "
            "delete destination objects whose source key is gone — only within the job's scope "
            "(source.prefix, source.prefix_list, filter.*, destination.prefix) and at most "
            f"events.max_delete={ev.max_delete} per events.max_delete_window={ev.max_delete_window}.")
