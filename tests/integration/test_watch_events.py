"""dth-ray watch, event-driven: SQS on moto over HTTP, source and destination on two rclone S3 servers,
transfer actors on the session's Ray. 200 mixed events of the three formats land; a key overwritten 10 times
in a second ends equal to the final source; a create followed by a delete leaves nothing; poison moves aside."""

from __future__ import annotations

import hashlib
import random

import pytest

from tests.integration.helpers import listing, md5_of
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

ODD = ["sp ace.txt", "plus+sign.bin", "pct%41.txt", "日本語/ファイル.csv", "a&b=c?.txt"]


def test_200_mixed_events_land(e2e_env, ray_local, moto_server, unique_prefix, tmp_path):
    pair = e2e_env
    rng = random.Random(4)
    keys = [f"{unique_prefix}d{i % 4}/obj-{i:03d}" for i in range(200 - len(ODD))] + [unique_prefix + k for k in ODD]
    items = {k: rng.randbytes(rng.randint(0, 30_000)) for k in keys}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    bucket = pair.source.bucket
    q = SqsQueue(moto_server)
    bodies = []
    s3_keys, oss_keys, dth_keys = keys[0::3], keys[1::3], keys[2::3]
    for i in range(0, len(s3_keys), 2):  # S3 notifications, two records a message, URL-encoded keys
        bodies.append(s3_body(bucket, [("ObjectCreated:Put", k, len(items[k])) for k in s3_keys[i:i + 2]]))
    for i in range(0, len(oss_keys), 5):  # OSS events, five records a message, raw keys
        bodies.append(oss_body(bucket, [("ObjectCreated:PutObject", k, len(items[k])) for k in oss_keys[i:i + 5]]))
    bodies += [dth_body(k, len(items[k])) for k in dth_keys]
    # Not ours: a test event, another bucket, a key outside source.prefix.
    bodies += ['{"Service":"Amazon S3","Event":"s3:TestEvent","Time":"2024-05-01T00:00:00.000Z","Bucket":"x"}',
               s3_body("another-bucket", [("ObjectCreated:Put", keys[0], 1)]),
               oss_body(bucket, [("ObjectCreated:PutObject", "elsewhere/x", 1)])]
    rng.shuffle(bodies)
    dst_prefix = "events/" + unique_prefix
    with RunningWatch(watch_overrides(pair, moto_server, q, unique_prefix, dst_prefix,
                                      str(tmp_path / "m.sqlite"))) as w:
        q.send(bodies)
        dst = pair.destination.client()
        wait_for(lambda: len(listing(dst, pair.destination.bucket, dst_prefix)) >= len(items), 120, "200 objects")
        wait_for(lambda: w.idle() and q.depth() == 0, 60, "queue drained")
        final = w.stop()
    got = listing(dst, pair.destination.bucket, dst_prefix)
    assert set(got) == {dst_prefix + k[len(unique_prefix):] for k in keys}
    for k in keys[::7] + [unique_prefix + o for o in ODD]:
        assert md5_of(dst, pair.destination.bucket, dst_prefix + k[len(unique_prefix):]) == \
            hashlib.md5(items[k]).hexdigest(), k
    assert final["outcomes"].get("copied", 0) == 200 and final["outcomes"].get("failed", 0) == 0
    assert final["messages"]["deleted"] == len(bodies) - 3 and final["messages"]["nothing_to_do"] == 3
    assert final["events"]["ignored"] == {"test_event": 1, "other_bucket": 1, "outside_prefix": 1}
    assert final["latency_s"]["count"] == 200 and final["latency_s"]["p95"] < 30


@pytest.mark.parametrize("manifest", ["sqlite", "dynamodb"])
def test_overwrites_and_create_then_delete_end_at_the_final_source_state(e2e_env, ray_local, moto_server,
                                                                        unique_prefix, tmp_path, manifest):
    pair = e2e_env
    src, bucket = pair.source.client(), pair.source.bucket
    q = SqsQueue(moto_server)
    hot, reordered = unique_prefix + "hot key.bin", unique_prefix + "reordered.bin"
    brief, brief2, existing = unique_prefix + "brief", unique_prefix + "brief-reversed", unique_prefix + "existing"
    src.put_object(Bucket=bucket, Key=existing, Body=b"was here")
    dst_prefix = "events/" + unique_prefix
    dst = pair.destination.client()
    makers = [lambda k, n: s3_body(bucket, [("ObjectCreated:Put", k, n)]),
              lambda k, n: oss_body(bucket, [("ObjectCreated:PutObject", k, n)]), dth_body]
    overrides = watch_overrides(pair, moto_server, q, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite"))
    if manifest == "dynamodb":  # records (flushed before a message is deleted) on DynamoDB, moto over HTTP; keys the actors know
        overrides += ["manifest=dynamodb", f"manifest.endpoint={moto_server.endpoint}", "manifest.region=us-east-1",
                      "manifest.credentials=env:E2ESRC", f"manifest.table=watch-{unique_prefix.strip('/')}"]
    with RunningWatch(overrides) as w:
        q.send([makers[0](existing, 8)])
        wait_for(lambda: dst_prefix + "existing" in listing(dst, pair.destination.bucket, dst_prefix), 60, "existing")
        late = []
        for i in range(10):  # ten overwrites within a second, each announced at once (sizes differ)
            body = f"version {i} ".encode() * (i + 1) * 100
            src.put_object(Bucket=bucket, Key=hot, Body=body)
            q.send([makers[i % 3](hot, len(body))])
            src.put_object(Bucket=bucket, Key=reordered, Body=body[::-1])
            late.append(makers[(i + 1) % 3](reordered, len(body)))
        final_hot, final_reordered = body, body[::-1]
        q.send(late[::-1])  # these arrive newest first: the oldest event is processed last
        # Created then deleted (events in order, and the delete announced before the create), and an object
        # the destination already holds deleted at the source.
        src.put_object(Bucket=bucket, Key=brief, Body=b"short-lived")
        q.send([oss_body(bucket, [("ObjectCreated:PutObject", brief, 11)])])
        src.delete_object(Bucket=bucket, Key=brief)
        q.send([s3_body(bucket, [("ObjectRemoved:Delete", brief, 0)])])
        src.put_object(Bucket=bucket, Key=brief2, Body=b"short-lived too")
        src.delete_object(Bucket=bucket, Key=brief2)
        q.send([oss_body(bucket, [("ObjectRemoved:DeleteObject", brief2, 0)]), dth_body(brief2, 15)])
        src.delete_object(Bucket=bucket, Key=existing)
        q.send([oss_body(bucket, [("ObjectRemoved:DeleteObject", existing, 0)])])
        wait_for(lambda: w.idle() and q.depth() == 0, 90, "queue drained")
        final = w.stop()
    got = listing(dst, pair.destination.bucket, dst_prefix)
    assert set(got) == {dst_prefix + "hot key.bin", dst_prefix + "reordered.bin"}, sorted(got)
    assert md5_of(dst, pair.destination.bucket, dst_prefix + "hot key.bin") == hashlib.md5(final_hot).hexdigest()
    assert md5_of(dst, pair.destination.bucket, dst_prefix + "reordered.bin") == \
        hashlib.md5(final_reordered).hexdigest()
    assert final["outcomes"].get("failed", 0) == 0
    assert final["outcomes"].get("deleted", 0) >= 1  # existing (brief may be gone before its create is read)
    assert final["events"].get("behind", 0) + final["events"].get("merged", 0) > 0  # coalesced per key


def test_poison_moves_aside_and_deletes_can_be_disabled(e2e_env, ray_local, moto_server, unique_prefix, tmp_path):
    pair = e2e_env
    src, bucket = pair.source.client(), pair.source.bucket
    q = SqsQueue(moto_server)
    dlq = SqsQueue(moto_server, q.name + "-dlq")
    keep = unique_prefix + "keep"
    src.put_object(Bucket=bucket, Key=keep, Body=b"keep me")
    dst_prefix = "events/" + unique_prefix
    dst = pair.destination.client()
    dst.put_object(Bucket=pair.destination.bucket, Key=dst_prefix + "gone-at-source", Body=b"stays")
    overrides = [*watch_overrides(pair, moto_server, q, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite")),
                 f"events.dead_letter_queue_url={dlq.url}", "events.deletes=false"]
    with RunningWatch(overrides) as w:
        q.send(["this is { not an event", dth_body(keep, 7),
                s3_body(bucket, [("ObjectRemoved:Delete", unique_prefix + "gone-at-source", 0)])])
        wait_for(lambda: w.idle() and q.depth() == 0 and dlq.depth() == 1, 60, "poison moved aside")
        final = w.stop()
    moved = dlq.sqs.receive_message(QueueUrl=dlq.url, MessageAttributeNames=["All"])["Messages"][0]
    assert moved["Body"] == "this is { not an event"
    assert moved["MessageAttributes"]["dth_reason"]["StringValue"].startswith("unparseable")
    assert final["messages"]["poison"] == 1 and final["poison"][0]["action"].startswith("moved")
    assert final["events"]["ignored"] == {"deletes_disabled": 1}
    got = listing(dst, pair.destination.bucket, dst_prefix)
    assert set(got) == {dst_prefix + "keep", dst_prefix + "gone-at-source"}


def test_a_message_received_too_often_is_poison(e2e_env, ray_local, moto_server, unique_prefix, tmp_path):
    pair = e2e_env
    key = unique_prefix + "often.bin"
    seed_objects(pair.source.client(), pair.source.bucket, {key: b"x" * 100})
    q, dlq = SqsQueue(moto_server), SqsQueue(moto_server)
    q.send([dth_body(key, 100)])
    for _ in range(3):  # another consumer received it three times and never finished it
        got = q.sqs.receive_message(QueueUrl=q.url, MaxNumberOfMessages=1, WaitTimeSeconds=1)["Messages"]
        q.sqs.change_message_visibility(QueueUrl=q.url, ReceiptHandle=got[0]["ReceiptHandle"],
                                        VisibilityTimeout=0)
    overrides = [*watch_overrides(pair, moto_server, q, unique_prefix, "often/" + unique_prefix,
                                  str(tmp_path / "m.sqlite")),
                 f"events.dead_letter_queue_url={dlq.url}", "events.max_receives=3"]
    with RunningWatch(overrides) as w:
        wait_for(lambda: w.idle() and q.depth() == 0 and dlq.depth() == 1, 60, "poison moved aside")
        final = w.stop()
    assert final["messages"]["poison"] == 1
    assert final["poison"][0]["reason"] == "received 4 times"
    assert listing(pair.destination.client(), pair.destination.bucket, "often/") == {}, "poison is not acted on"
