"""Parsers of the three event formats (real bodies as S3, OSS/Function Compute and DTH send them) and the
scope that selects the job's events."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

from dth_ray.keyfilter import KeyFilter
from dth_ray.sync.events import CREATED, DTH, OSS, REMOVED, S3, EventScope, newer, parse_body, parse_time

# An S3 event notification as delivered to SQS (AWS documentation's example, event structure version 2.1).
S3_PUT = {
    "Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-west-2",
        "eventTime": "2024-05-01T12:00:00.123Z", "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AIDAJDPLRKLG7UEXAMPLE"},
        "requestParameters": {"sourceIPAddress": "172.16.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810",
                             "x-amz-id-2": "FMyUVURIY8/IgAtTv8xRjskZQpcIZ9KG4V5Wp6S7S/JRWeUWerMUE5JgHvANOjpD"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "testConfigRule",
               "bucket": {"name": "src-bucket", "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                          "arn": "arn:aws:s3:::src-bucket"},
               "object": {"key": "logs/2024/sp+ace+%26+plus%2B%E6%97%A5.txt", "size": 1024,
                          "eTag": "d41d8cd98f00b204e9800998ecf8427e", "versionId": "096fKKXTRTtl3on89fVO.nfljtsv6qko",
                          "sequencer": "0055AED6DCD90281E5"}},
    }],
}
S3_DELETE = {"Records": [{
    "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-west-2",
    "eventTime": "2024-05-01T12:00:01.000Z", "eventName": "ObjectRemoved:Delete",
    "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": "src-bucket", "arn": "arn:aws:s3:::src-bucket"},
           "object": {"key": "logs/a.txt", "sequencer": "0055AED6DCD90281F0"}},
}]}
S3_TEST = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Time": "2024-05-01T11:59:00.000Z",
           "Bucket": "src-bucket", "RequestId": "5582815E1AEA5ADF", "HostId": "8cLeGAmw098X5cv4Zkwcmo8vvZa3eH3eKxsPzbB9wrR+YstdA6Knx4Ip8EXAMPLE"}

# An Aliyun OSS event as Function Compute's OSS trigger passes it (Aliyun documentation's example).
OSS_PUT = {"events": [{
    "eventName": "ObjectCreated:PutObject", "eventSource": "acs:oss", "eventTime": "2024-05-01T12:00:02.000Z",
    "eventVersion": "1.0",
    "oss": {"bucket": {"arn": "acs:oss:cn-hangzhou:1237050315505689:src-bucket", "name": "src-bucket",
                       "ownerIdentity": "1237050315505689", "virtualBucket": ""},
            "object": {"deltaSize": 122539, "eTag": "688A7BF4F233DC9C88A80BF985AB7329",
                       "key": "logs/image/a b+c.jpg", "size": 122539},
            "ossSchemaVersion": "1.0", "ruleId": "9adac8e253828f4f7c0466d941fa3db81161e853"},
    "region": "cn-hangzhou", "requestParameters": {"sourceIPAddress": "140.205.128.221"},
    "responseElements": {"requestId": "58F9FF2D3DF792092E12044C"}, "userIdentity": {"principalId": "262561392693583141"},
}]}
OSS_DELETE_MANY = {"events": [
    {"eventName": "ObjectRemoved:DeleteObjects", "eventSource": "acs:oss", "eventTime": "2024-05-01T12:00:03.000Z",
     "oss": {"bucket": {"name": "src-bucket"}, "object": {"key": f"logs/gone-{i}", "size": 0}}}
    for i in range(3)
] + [{"eventName": "ObjectModified:UpdateObjectMeta", "eventSource": "acs:oss",
      "oss": {"bucket": {"name": "src-bucket"}, "object": {"key": "logs/meta"}}}]}


def test_s3_put_url_decodes_key_and_keeps_order_fields():
    parsed = parse_body(json.dumps(S3_PUT))
    assert parsed.error == "" and parsed.ignored == ()
    (event,) = parsed.events
    assert event.key == "logs/2024/sp ace & plus+日.txt"  # '+' is a space, %2B a plus
    assert (event.bucket, event.kind, event.fmt, event.size) == ("src-bucket", CREATED, S3, 1024)
    assert event.sequencer == "0055AED6DCD90281E5"
    assert event.etag == "d41d8cd98f00b204e9800998ecf8427e"
    assert abs(event.event_time_s - 1714564800.123) < 1e-6


def test_s3_delete_and_test_event():
    (event,) = parse_body(json.dumps(S3_DELETE)).events
    assert (event.kind, event.key, event.size) == (REMOVED, "logs/a.txt", -1)
    test = parse_body(json.dumps(S3_TEST))
    assert test.events == () and test.ignored == ("test_event",) and test.error == ""


def test_s3_inside_sns_envelope():
    envelope = {"Type": "Notification", "MessageId": "x", "TopicArn": "arn:aws:sns:us-west-2:1:t",
                "Message": json.dumps(S3_PUT), "Timestamp": "2024-05-01T12:00:00.200Z"}
    (event,) = parse_body(json.dumps(envelope)).events
    assert event.key.startswith("logs/2024/sp ace")


def test_s3_other_event_names_are_ignored_with_reason():
    body = {"Records": [dict(S3_PUT["Records"][0], eventName="ObjectTagging:Put"),
                        dict(S3_PUT["Records"][0], eventName="LifecycleExpiration:Delete")]}
    parsed = parse_body(json.dumps(body))
    assert parsed.ignored == ("event:ObjectTagging:Put",)
    assert [e.kind for e in parsed.events] == [REMOVED]


def test_oss_keys_are_raw_and_batches_parse():
    (event,) = parse_body(json.dumps(OSS_PUT)).events
    assert event.key == "logs/image/a b+c.jpg"  # OSS keys are not URL-encoded: '+' stays '+'
    assert (event.bucket, event.kind, event.fmt, event.size) == ("src-bucket", CREATED, OSS, 122539)
    assert event.etag == "688A7BF4F233DC9C88A80BF985AB7329"
    assert event.event_time_s == parse_time("2024-05-01T12:00:02Z")
    many = parse_body(json.dumps(OSS_DELETE_MANY).encode())
    assert [(e.key, e.kind) for e in many.events] == [(f"logs/gone-{i}", REMOVED) for i in range(3)]
    assert many.ignored == ("event:ObjectModified:UpdateObjectMeta",)


def test_oss_base64_body_as_mns_delivers_it():
    body = base64.b64encode(json.dumps(OSS_PUT).encode()).decode()
    (event,) = parse_body(body).events
    assert event.key == "logs/image/a b+c.jpg"


def test_dth_body_is_raw_key_dated_by_sent_time():
    (event,) = parse_body(json.dumps({"key": "logs/x+y z.bin", "size": 42}), sent_time_s=1714564805.5).events
    assert (event.key, event.size, event.kind, event.fmt, event.bucket) == ("logs/x+y z.bin", 42, CREATED, DTH, "")
    assert event.event_time_s == 1714564805.5
    listed = parse_body(json.dumps([{"key": "a", "size": 1}, {"key": "b", "size": 2}]))
    assert [e.key for e in listed.events] == ["a", "b"]


def test_unknown_bodies_are_errors_not_exceptions():
    for body in ["not json at all", "[1, 2]", json.dumps({"hello": 1}), "", json.dumps("text")]:
        parsed = parse_body(body)
        assert parsed.error and parsed.events == (), body


def test_scope_ignores_other_buckets_prefixes_filtered_and_disabled_deletes():
    scope = EventScope("src-bucket", "logs/", deletes=False, key_filter=KeyFilter(exclude=["*.tmp"]))
    make = parse_body
    put = make(json.dumps(S3_PUT)).events[0]
    assert scope.reason_to_ignore(put) == ""
    other = make(json.dumps({"Records": [dict(S3_PUT["Records"][0], s3={
        "bucket": {"name": "another"}, "object": {"key": "logs/a"}})]})).events[0]
    assert scope.reason_to_ignore(other) == "other_bucket"
    outside = make(json.dumps({"key": "elsewhere/a", "size": 1})).events[0]
    assert scope.reason_to_ignore(outside) == "outside_prefix"
    assert scope.reason_to_ignore(make(json.dumps({"key": "logs/a.tmp"})).events[0]) == "filtered"
    assert scope.reason_to_ignore(make(json.dumps(S3_DELETE)).events[0]) == "deletes_disabled"
    assert EventScope("src-bucket", "logs/").reason_to_ignore(make(json.dumps(S3_DELETE)).events[0]) == ""
    dth = make(json.dumps({"key": "logs/a"})).events[0]  # DTH carries no bucket: assumed ours
    assert scope.reason_to_ignore(dth) == ""


def test_newer_by_sequencer_then_time_then_arrival():
    (a,) = parse_body(json.dumps(S3_PUT)).events
    b = replace(parse_body(json.dumps(S3_DELETE)).events[0], key=a.key)
    assert newer(a, b) and not newer(b, a)  # ...F0 > ...E5 (and padded lengths compare numerically)
    short = replace(a, sequencer="FF", event_time_s=9e9)
    assert newer(short, a)  # 0x55AED6DCD90281E5 > 0xFF although the string sorts lower, time notwithstanding
    oss_old, oss_new = parse_body(json.dumps(OSS_PUT)).events[0], parse_body(json.dumps(OSS_DELETE_MANY)).events[0]
    assert newer(oss_old, oss_new) and not newer(oss_new, oss_old)
    undated = parse_body(json.dumps({"key": "k"})).events[0]
    assert newer(undated, undated)  # equal or unknown: the later arrival wins


def test_parse_time_variants():
    assert parse_time("1970-01-01T00:00:01Z") == 1.0
    assert parse_time("1970-01-01T01:00:00+01:00") == 0.0
    assert parse_time("1970-01-01T00:00:00.5") == 0.5
    assert parse_time("yesterday") == 0.0 and parse_time(None) == 0.0
