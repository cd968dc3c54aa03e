"""watch deletes within their rails: crafted SQS events (moto), rclone stores; a storm stops at the limit."""

from __future__ import annotations

import json
import uuid

import pytest

from dth_ray.compose import load_settings
from dth_ray.runtime.driver import run_sync
from tests.integration.helpers import listing, s3_overrides
from tests.integration.watch_helpers import (
    RunningWatch,
    SqsQueue,
    dth_body,
    oss_body,
    s3_body,
    wait_for,
    watch_overrides,
)
from tests.servers.s3_servers import seed_objects


@pytest.fixture
def alert_topic(moto_server):
    """An SNS topic with an SQS queue subscribed; yields (arn, drain()), drain() returning what arrived."""
    SqsQueue(moto_server)  # puts the MOTOQ_* keys in the environment
    sns, sqs = moto_server.client("sns"), moto_server.client("sqs")
    name = f"rails-{uuid.uuid4().hex[:8]}"
    arn = sns.create_topic(Name=name)["TopicArn"]
    queue = sqs.create_queue(QueueName=name)["QueueUrl"]
    attrs = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]
    queue_arn = attrs["QueueArn"]
    sns.subscribe(TopicArn=arn, Protocol="sqs", Endpoint=queue_arn)

    def drain() -> list[dict]:
        out = []
        while True:
            got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            got = got.get("Messages", [])
            if not got:
                return out
            for m in got:
                out.append(json.loads(m["Body"]))
                sqs.delete_message(QueueUrl=queue, ReceiptHandle=m["ReceiptHandle"])

    yield arn, drain
    sqs.delete_queue(QueueUrl=queue)
    sns.delete_topic(TopicArn=arn)


@pytest.mark.parametrize("workers", ["in_process", "ray"])
def test_a_storm_of_deletes_stops_at_the_limit(e2e_env, moto_server, alert_topic, unique_prefix, tmp_path,
                                               request, workers):
    """Limit 5 per hour, 20 events needing a delete (removals, and created events whose source is gone):
    exactly 5 deletes, 15 skipped and counted, the messages acknowledged, one SNS alert; a scan with
    sync.delete=true then deletes the rest."""
    pair = e2e_env
    if workers == "ray":  # the limit is the driver's, whatever runs the reconciles: actors too
        request.getfixturevalue("ray_local")
    arn, drain = alert_topic
    src_prefix, dst_prefix = unique_prefix + "src/", unique_prefix + "dst/"
    bucket = pair.source.bucket
    gone = [f"k{i:02d}" for i in range(20)]  # at the destination, no longer at the source
    live = ["live-1", "live-2", "live-3"]
    seed_objects(pair.destination.client(), pair.destination.bucket, {dst_prefix + k: b"old" for k in gone})
    seed_objects(pair.source.client(), bucket, {src_prefix + k: b"new" for k in live})
    # 20 events that each need a delete: ObjectRemoved (S3 and OSS) and "created" ones whose source is gone.
    bodies = [s3_body(bucket, [("ObjectRemoved:Delete", src_prefix + k, 0)]) for k in gone[:8]]
    bodies += [oss_body(bucket, [("ObjectRemoved:DeleteObject", src_prefix + k, 0)]) for k in gone[8:14]]
    bodies += [dth_body(src_prefix + k, 3) for k in gone[14:17]]
    bodies += [s3_body(bucket, [("ObjectCreated:Put", src_prefix + k, 3)]) for k in gone[17:]]
    bodies += [dth_body(src_prefix + k, 3) for k in live]
    q = SqsQueue(moto_server)
    overrides = [*watch_overrides(pair, moto_server, q, src_prefix, dst_prefix, str(tmp_path / "m.sqlite")),
                 "events.max_delete=5", "events.max_delete_window=1h", f"alerts.sns_topic_arn={arn}",
                 f"alerts.endpoint={moto_server.endpoint}", "alerts.credentials=env:MOTOQ",
                 "events.batch_keys=4"]
    dst = pair.destination.client()
    with RunningWatch(overrides, in_process=2 if workers == "in_process" else 0) as w:
        q.send(bodies)
        wait_for(lambda: w.service.metrics.events["reconciled"] >= 23, 120, "every key reconciled")
        wait_for(lambda: w.idle() and q.depth() == 0, 60, "queue drained")
        final = w.stop()
    left = {k[len(dst_prefix):] for k in listing(dst, pair.destination.bucket, dst_prefix)}
    assert len(set(gone) - left) == 5, "exactly events.max_delete deletes"
    assert left - set(gone) == set(live)
    assert final["outcomes"] == {"deleted": 5, "delete_skipped": 15, "copied": 3}, final["outcomes"]
    deletes = final["deletes"]
    assert deletes["skipped"] == 15 and deletes["alerts"] == 1 and deletes["max_delete"] == 5
    assert deletes["in_window"] == 5
    assert sorted(deletes["skipped_keys"]) == sorted(src_prefix + k for k in left if k in gone)
    assert final["messages"]["deleted"] == len(bodies), "skipped deletes are acknowledged"
    alerts = drain()
    assert len(alerts) == 1, alerts
    assert "delete limit reached" in alerts[0]["Subject"]
    assert alerts[0]["MessageAttributes"]["status"]["Value"] == "delete_limit"
    assert "events.max_delete=5" in alerts[0]["Message"] and "sync.delete=true" in alerts[0]["Message"]

    # The next scan with sync.delete=true (within sync.max_delete) deletes what was skipped.
    scan = run_sync(load_settings([*s3_overrides(pair, src_prefix, dst_prefix, str(tmp_path / "m.sqlite")),
                                   "sync.delete=true", "sync.max_delete=15"]), in_process=2).to_json()
    assert scan["status"] == "succeeded" and scan["objects"]["deleted"] == 15, scan["errors"]
    assert set(listing(dst, pair.destination.bucket, dst_prefix)) == {dst_prefix + k for k in live}


def test_event_deletes_stay_in_the_scope_of_a_scan(e2e_env, moto_server, unique_prefix, tmp_path):
    """Removed and created events for keys gone at the source delete only inside source.prefix,
    source.prefix_list and the filters, mapped under destination.prefix."""
    pair = e2e_env
    bucket = pair.source.bucket
    src_prefix, dst_prefix = unique_prefix + "src/", unique_prefix + "dst/"
    plist = tmp_path / "prefixes.txt"
    plist.write_text(f"{src_prefix}in/\n{src_prefix}also/\n")
    # At the destination; none of their source keys exist.
    at_dst = ["dst/in/a", "dst/in/b.tmp", "dst/out/c", "dst/also/d", "dst-2023/in/a", "dst/inx/e"]
    seed_objects(pair.destination.client(), pair.destination.bucket,
                 {unique_prefix + k: b"x" for k in at_dst})
    events = {  # source key -> what must happen
        "src/in/a": "deleted", "src/in/b.tmp": "filtered", "src/out/c": "outside_prefix_list",
        "src-2023/in/a": "outside_prefix", "src/inx/e": "outside_prefix_list"}
    bodies = [s3_body(bucket, [("ObjectRemoved:Delete", unique_prefix + k, 0)]) for k in events]
    bodies += [dth_body(unique_prefix + k, 1) for k in events]  # "created", source gone: deletes too
    bodies.append(oss_body(bucket, [("ObjectRemoved:DeleteObject", unique_prefix + "src/also/d", 0)]))
    q = SqsQueue(moto_server)
    overrides = [*watch_overrides(pair, moto_server, q, src_prefix, dst_prefix, str(tmp_path / "m.sqlite")),
                 f"source.prefix_list={plist}", "filter.exclude=[*.tmp]"]
    with RunningWatch(overrides, in_process=2) as w:
        q.send(bodies)
        wait_for(lambda: w.idle() and q.depth() == 0, 90, "queue drained")
        final = w.stop()
    left = {k[len(unique_prefix):] for k in listing(pair.destination.client(), pair.destination.bucket,
                                                     unique_prefix)}
    assert left == {"dst/in/b.tmp", "dst/out/c", "dst-2023/in/a", "dst/inx/e"}
    assert final["outcomes"].get("deleted", 0) == 2 and final["outcomes"].get("failed", 0) == 0
    assert final["events"]["ignored"] == {"filtered": 2, "outside_prefix_list": 4, "outside_prefix": 2}
    assert final["deletes"]["skipped"] == 0
