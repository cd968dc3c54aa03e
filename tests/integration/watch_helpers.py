"""Helpers for the watch tests: an SQS queue on moto, event bodies in the three formats, and a WatchService
running in a thread of the test process (on the session's Ray, or on in-process workers)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from datetime import datetime, timezone
from urllib.parse import quote_plus

from dth_ray.compose import load_settings
from dth_ray.sync.watch import WatchService
from tests.integration.helpers import s3_overrides

SQS_ENV = {"MOTOQ_ACCESS_KEY_ID": "moto-events", "MOTOQ_SECRET_ACCESS_KEY": "moto-events-secret"}


def iso(t: float | None = None) -> str:
    t = time.time() if t is None else t
    return datetime.fromtimestamp(t, timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.") + f"{int(t * 1000) % 1000:03d}Z"


def s3_body(bucket: str, records: list[tuple[str, str, int]], t: float | None = None) -> str:
    """An S3 event notification; records are (eventName, key, size); keys URL-encoded as S3 does."""
    out = []
    for n, (name, key, size) in enumerate(records):
        obj = {"key": quote_plus(key, safe="/"), "sequencer": f"{time.time_ns() + n:X}"}
        if name.startswith("ObjectCreated"):
            obj.update(size=size, eTag="0" * 32)
        out.append({"eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": iso(t),
                    "eventName": name, "userIdentity": {"principalId": "AWS:EXAMPLE"},
                    "s3": {"s3SchemaVersion": "1.0", "configurationId": "dth", "bucket": {
                        "name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj}})
    return json.dumps({"Records": out})


def oss_body(bucket: str, records: list[tuple[str, str, int]], t: float | None = None) -> str:
    """An OSS event as Function Compute delivers it (and the forwarder sends it on); raw keys."""
    return json.dumps({"events": [{
        "eventName": name, "eventSource": "acs:oss", "eventTime": iso(t), "eventVersion": "1.0",
        "oss": {"bucket": {"arn": f"acs:oss:cn-hangzhou:1:{bucket}", "name": bucket, "ownerIdentity": "1"},
                "object": {"deltaSize": size, "eTag": "0" * 32, "key": key, "size": size},
                "ossSchemaVersion": "1.0", "ruleId": "r"},
        "region": "cn-hangzhou"} for name, key, size in records]})


def dth_body(key: str, size: int) -> str:
    return json.dumps({"key": key, "size": size})


class SqsQueue:
    def __init__(self, moto, name: str = ""):
        os.environ.update(SQS_ENV)
        self.sqs = moto.client("sqs")
        self.name = name or f"w-{uuid.uuid4().hex[:8]}"
        self.url = self.sqs.create_queue(QueueName=self.name)["QueueUrl"]
        self.moto = moto

    def send(self, bodies: list[str]) -> None:
        for i in range(0, len(bodies), 10):
            chunk = bodies[i:i + 10]
            self.sqs.send_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(n), "MessageBody": b} for n, b in enumerate(chunk)])

    def depth(self, url: str | None = None) -> int:
        attrs = self.sqs.get_queue_attributes(QueueUrl=url or self.url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attrs["ApproximateNumberOfMessages"]) + int(attrs["ApproximateNumberOfMessagesNotVisible"])


def watch_overrides(pair, moto, queue: SqsQueue, src_prefix: str, dst_prefix: str, manifest: str) -> list[str]:
    return [*s3_overrides(pair, src_prefix, dst_prefix, manifest), "events=sqs", f"events.queue_url={queue.url}",
            f"events.endpoint={moto.endpoint}", "events.region=us-east-1", "events.credentials=env:MOTOQ",
            "events.wait_s=1", "schedule.interval=none"]


class RunningWatch:
    """A WatchService in a thread: `with RunningWatch(overrides) as w: ...`; stopped and joined on exit.
    `in_process=N`: N in-process transfer workers instead of actors on the session's Ray."""

    def __init__(self, overrides: list[str], in_process: int = 0):
        self.service = WatchService(load_settings(overrides), in_process=in_process)
        self.final: dict | None = None
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._main, daemon=True)

    def _main(self) -> None:
        try:
            self.final = self.service.run()
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def __enter__(self) -> RunningWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> dict | None:
        self.service.stop("test")
        self._thread.join(120)
        assert not self._thread.is_alive(), "watch did not stop"
        if self.error is not None:
            raise self.error
        return self.final

    def idle(self) -> bool:
        return self.service.busy() == (0, 0, 0)


def wait_for(predicate, timeout_s: float = 60.0, what: str = "condition", interval_s: float = 0.1) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(interval_s)
