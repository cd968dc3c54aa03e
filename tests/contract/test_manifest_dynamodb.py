"""The manifest contract against DynamoManifest on moto's DynamoDB over HTTP (a server these tests start),
plus what only the buffered DynamoDB backend can get wrong: batching, flush failures, key limits, cost."""

from __future__ import annotations

import json
import logging
import pickle
import time
import uuid
from collections import deque

import pytest

from dth_ray.config import ManifestConfig, ManifestType
from dth_ray.errors import ConfigError, DthError, Fatal, PermissionDenied, Throttled, Transient
from dth_ray.model import Shard, Tally
from dth_ray.runtime import dynamodb_table
from dth_ray.runtime.dynamodb_table import BATCH_WRITE_ITEMS, endpoint_url
from dth_ray.runtime.manifest import DONE, PENDING, Checkpoint, LiveReport, ObjectRecord
from dth_ray.runtime.manifest_dynamodb import DynamoManifest
from dth_ray.runtime.manifests import open_manifest
from tests.contract.manifest_suite import ManifestContract, parts, rec, upload
from tests.servers.tcp_proxy import TcpProxy

TABLE = "dth-contract"
KEY_ID = "AKIAMOTOLEAKCHECK4242"
SECRET = "moto-secret-MUST-NOT-LEAK-7f3a9c"


def dynamo_config(endpoint: str, **overrides) -> ManifestConfig:
    values = {"type": ManifestType.dynamodb, "table": TABLE, "region": "us-east-1", "endpoint": endpoint,
              "credentials": "env:MOTO", "flush_interval_s": 3600.0}  # nothing flushes unless a test says so
    return ManifestConfig(**{**values, **overrides})


@pytest.fixture
def make(moto_server, monkeypatch):
    """make(job, **config overrides) → an open DynamoManifest on moto; all are closed at teardown."""
    monkeypatch.setenv("MOTO_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("MOTO_SECRET_ACCESS_KEY", SECRET)
    opened = []

    def make(job: str, **overrides):
        endpoint = overrides.pop("endpoint", moto_server.endpoint)
        manifest = open_manifest(dynamo_config(endpoint, **overrides), job)
        assert isinstance(manifest, DynamoManifest)
        opened.append(manifest)
        return manifest

    yield make
    for manifest in opened:
        manifest.close()


def wait_for(condition, timeout_s: float = 30.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class TestDynamoManifest(ManifestContract):
    """The shared contract; `make` is the module fixture above (flush interval of an hour: reads must overlay)."""


def new_job() -> str:
    return f"dyn-{uuid.uuid4().hex[:12]}"


# -- configuration and table -------------------------------------------------------------------------------


def test_config_is_checked_before_any_request(make, monkeypatch):
    with pytest.raises(ConfigError, match="insecure_http"):
        make(new_job(), endpoint="http://dynamodb.example.com:8000")
    assert endpoint_url(dynamo_config("http://dynamodb.example.com:8000", insecure_http=True))
    assert endpoint_url(dynamo_config("dynamodb.example.com")) == "https://dynamodb.example.com"
    assert endpoint_url(dynamo_config("http://[::1]:8000")) == "http://[::1]:8000"
    with pytest.raises(ConfigError) as err:
        make(new_job(), endpoint=f"https://user:{SECRET}@dynamodb.example.com")
    assert SECRET not in str(err.value)
    for overrides, match in [({"table": "x"}, "manifest.table"), ({"flush_interval_s": 0}, "flush_interval_s"),
                             ({"credentials": "anonymous"}, "anonymous"),
                             ({"credentials": "env:DTH_NOT_SET_ANYWHERE"}, "DTH_NOT_SET_ANYWHERE_ACCESS_KEY_ID"),
                             ({"endpoint": "ftp://127.0.0.1:1"}, "http")]:
        with pytest.raises(ConfigError, match=match):
            make(new_job(), **overrides)


def test_config_pickles_for_the_actor():
    cfg = dynamo_config("http://127.0.0.1:1", table="some-table", flush_interval_s=0.5)
    assert pickle.loads(pickle.dumps(cfg)) == cfg  # the actor is built from it, inside the actor


def test_table_created_on_demand_pay_per_request_and_reused(make, moto_server):
    table = f"dth-created-{uuid.uuid4().hex[:8]}"
    first = make(new_job(), table=table)
    desc = moto_server.client("dynamodb").describe_table(TableName=table)["Table"]
    assert desc["TableStatus"] == "ACTIVE"
    assert desc["BillingModeSummary"]["BillingMode"] == "PAY_PER_REQUEST"
    assert {(k["AttributeName"], k["KeyType"]) for k in desc["KeySchema"]} == {("pk", "HASH"), ("sk", "RANGE")}
    first.start_run([])
    assert make(first.job, table=table).latest_run().run_id == first.run_id  # the existing table is reused

    other = f"dth-other-{uuid.uuid4().hex[:8]}"
    moto_server.client("dynamodb").create_table(
        TableName=other, BillingMode="PAY_PER_REQUEST", AttributeDefinitions=[{"AttributeName": "id",
                                                                                "AttributeType": "S"}],
        KeySchema=[{"AttributeName": "id", "KeyType": "HASH"}])
    with pytest.raises(ConfigError, match="key schema"):
        make(new_job(), table=other)


# -- batching ----------------------------------------------------------------------------------------------


class SpyBatches:
    """Wraps the client's batch_write_item: records each request's size; may hold some items back."""

    def __init__(self, manifest: DynamoManifest, unprocessed_calls: int = 0, hold_back: float = 0.5):
        self.sizes: list[int] = []
        self.kinds: list[list[str]] = []
        self.unprocessed_calls = unprocessed_calls
        self.hold_back = hold_back
        self.client = manifest._table._client
        self.real = self.client.batch_write_item
        self.client.batch_write_item = self

    def __call__(self, RequestItems):
        ((table, requests),) = RequestItems.items()
        self.sizes.append(len(requests))
        self.kinds.append([r["PutRequest"]["Item"]["pk"]["S"].split("#")[1] if "PutRequest" in r else "delete"
                           for r in requests])
        if self.unprocessed_calls:
            self.unprocessed_calls -= 1
            keep = int(len(requests) * (1 - self.hold_back))
            if keep:
                self.real(RequestItems={table: requests[:keep]})
            return {"UnprocessedItems": {table: requests[keep:]}}
        return self.real(RequestItems=RequestItems)

    def restore(self):
        self.client.batch_write_item = self.real


def test_batch_writes_hold_at_most_25_items_and_checkpoints_coalesce(make):
    manifest = make(new_job())
    run = manifest.start_run([Shard(f"s{i}", f"p{i}/") for i in range(3)])
    spy = SpyBatches(manifest)
    writes, items = manifest.writes, manifest.items_written
    manifest.record([rec(f"p0/{i:04d}", "failed") for i in range(260)])
    for step in range(50):  # one shard checkpointed 50 times between two flushes: one item
        manifest.record([], [Checkpoint(Shard("s0", "p0/"), PENDING, f"p0/{step:04d}", Tally(copied=step))])
    manifest.record([], [Checkpoint(Shard("s1", "p1/"), DONE, "p1/z", Tally(copied=1))])
    manifest.upload_opened(upload("p2/big", "u-1"))
    manifest.parts_sent("p2/big", "u-1", parts(range(1, 71)))
    manifest.flush()
    spy.restore()
    items_flushed = 260 * 2 + 2 + 70  # each failed key: its object item and its failure item (the console's)
    assert max(spy.sizes) <= BATCH_WRITE_ITEMS and sum(spy.sizes) == items_flushed
    assert len(spy.sizes) == -(-items_flushed // BATCH_WRITE_ITEMS)
    kinds = [kind for batch in spy.kinds for kind in batch]
    assert kinds.count("fail") == 260
    assert kinds.index("shard") > max(i for i, kind in enumerate(kinds) if kind != "shard")  # checkpoints last
    assert manifest.writes - writes == len(spy.sizes) + 1  # + the upload, written through
    assert manifest.items_written - items == items_flushed + 2  # the upload put, its key's intent deleted
    assert manifest.checkpoints(run)[0].watermark == "p0/0049"


def test_unprocessed_items_are_retried(make):
    manifest = make(new_job())
    manifest.start_run([])
    spy = SpyBatches(manifest, unprocessed_calls=3)
    manifest.record([rec(f"k/{i:03d}") for i in range(60)])
    manifest.flush()
    spy.restore()
    assert len(spy.sizes) > 3  # the held-back items were sent again
    assert manifest.pending_items == 0
    fresh = make(manifest.job)
    assert [r.key for r in fresh.records_page("k/", "", "", 100)] == [f"k/{i:03d}" for i in range(60)]


def test_items_left_unprocessed_fail_the_flush_and_stay_buffered(make, monkeypatch):
    monkeypatch.setattr(dynamodb_table, "BATCH_ATTEMPTS", 3)
    monkeypatch.setattr(dynamodb_table, "_BACKOFF_BASE_S", 0.001)
    manifest = make(new_job())
    manifest.start_run([])
    spy = SpyBatches(manifest, unprocessed_calls=10**6, hold_back=1.0)
    manifest.record([rec(f"k/{i:03d}") for i in range(30)])
    with pytest.raises(Throttled):
        manifest.flush()
    assert manifest.pending_items == 30
    assert len(manifest.records_page("k/", "", "", 100)) == 30  # still answered from the buffer
    spy.restore()
    manifest.flush()
    assert manifest.pending_items == 0
    assert len(make(manifest.job).records_page("k/", "", "", 100)) == 30


# -- flush failures ----------------------------------------------------------------------------------------


def test_background_flush_failure_is_surfaced_then_written_when_reachable(make, moto_server, monkeypatch, caplog):
    caplog.set_level(logging.DEBUG, logger="dth_ray")  # our own logs (botocore's DEBUG log shows key ids)
    monkeypatch.setattr(dynamodb_table, "_SDK_ATTEMPTS", 2)  # fewer SDK retries of a refused connection
    proxy = TcpProxy("127.0.0.1", moto_server.port)
    try:
        manifest = make(new_job(), endpoint=proxy.endpoint, flush_interval_s=0.1)
        run = manifest.start_run([Shard("s", "k/")])
        proxy.down()
        batch = [rec(f"k/{i:03d}") for i in range(40)] + [rec("k/failed", "failed")]
        manifest.record(batch, [Checkpoint(Shard("s", "k/"), DONE, "k/failed", Tally(copied=40, failed=1))])

        probes = []

        def surfaced():
            probe = f"probe/{len(probes)}"
            probes.append(probe)
            try:
                manifest.record([rec(probe)])  # raising, the call has no effect
            except DthError as exc:
                return exc
            return None

        error = wait_for(surfaced, what="the background flush error")
        assert isinstance(error, Transient)
        assert manifest.pending_items >= len(batch) + 1  # kept, not dropped
        with pytest.raises(Transient) as flush_error:
            manifest.flush()
        with pytest.raises(Transient) as close_error:
            manifest.close()
        for text in (str(error), str(flush_error.value), str(close_error.value), caplog.text):
            assert SECRET not in text and KEY_ID not in text
        assert "flush" in caplog.text

        proxy.up()
        manifest.close()  # closing again retries the flush, now reachable
        assert manifest.pending_items == 0
    finally:
        proxy.stop()

    fresh = make(manifest.job)
    assert [r.key for r in fresh.records_page("k/", "", "", 100)] == sorted(r.key for r in batch)
    assert fresh.lookup("k/failed").status == "failed"
    (cp,) = fresh.checkpoints(run)
    assert (cp.status, cp.watermark, cp.tally.copied, cp.tally.failed) == (DONE, "k/failed", 40, 1)
    assert fresh.lookup(probes[-1]) is None  # the call that raised took nothing
    assert all(fresh.lookup(p) is not None for p in probes[:-1])


def test_background_thread_flushes_and_other_readers_see_only_flushed_items(make):
    job = new_job()
    manual = make(job)
    other = make(job)
    manual.start_run([])
    manual.record([rec("a/1")])
    assert manual.lookup("a/1") is not None and other.lookup("a/1") is None
    manual.flush()
    assert other.lookup("a/1") is not None
    auto = make(job, flush_interval_s=0.05)
    auto.resume_run(manual.run_id)
    auto.record([rec("a/2")])
    wait_for(lambda: other.lookup("a/2") is not None, 10, "the background flush")


def test_errors_never_carry_sdk_text():
    import botocore.exceptions

    exc = botocore.exceptions.ClientError(
        {"Error": {"Code": "UnrecognizedClientException", "Message": f"bad token {KEY_ID} {SECRET}"},
         "ResponseMetadata": {"HTTPStatusCode": 400}}, "Query")
    mapped = dynamodb_table._map_error(exc, "query")
    assert isinstance(mapped, PermissionDenied) and mapped.code == "UnrecognizedClientException"
    assert SECRET not in str(mapped) and KEY_ID not in str(mapped)
    refused = botocore.exceptions.EndpointConnectionError(endpoint_url=f"https://{SECRET}.example")
    assert isinstance(dynamodb_table._map_error(refused, "query"), Transient)
    assert SECRET not in str(dynamodb_table._map_error(refused, "query"))


# -- key limits --------------------------------------------------------------------------------------------


def test_key_size_limits(make):
    long_job = "job/" + "j" * 2000  # longer than a partition key may be: hashed
    manifest = make(long_job)
    manifest.start_run([Shard("s", "")])
    at_limit = "é" * 512  # 1024 bytes of UTF-8: the largest sort key
    manifest.record([rec(at_limit), rec(at_limit[:-1] + "x")])
    with pytest.raises(Fatal, match="1024"):
        manifest.record([rec("ok"), rec("é" * 512 + "x")])
    assert manifest.pending_items == 2  # the refused batch took nothing
    long_key = "d/" + "k" * 1020  # the upload sk falls back to a digest of the key
    long_id = "u" * 300  # and of the upload id
    for key, upload_id in [(long_key, long_id), (long_key[:-1], "short"), (long_key + "z", long_id)]:
        manifest.upload_opened(upload(key, upload_id))
        manifest.parts_sent(key, upload_id, parts([1, 2]))
    for m in ManifestContract().now_and_reopened(make, manifest):
        assert m.lookup(at_limit).key == at_limit
        assert [r.key for r in m.records_page("é", "", "", 10)] == sorted([at_limit, at_limit[:-1] + "x"])
        (found,) = m.find_uploads(long_key)
        assert (found.upload_id, sorted(found.parts)) == (long_id, [1, 2])
        assert [u.upload_id for u in m.find_uploads(long_key[:-1])] == ["short"]
        assert m.latest_run().run_id == manifest.run_id
    m.upload_closed(long_key, long_id)
    assert m.find_uploads(long_key) == [] and len(m.open_uploads()) == 2


def test_large_report_is_kept(make):
    manifest = make(new_job())
    manifest.start_run([])
    report = {"status": "succeeded", "copied": 7, "failures": [[f"key/{i:06d}", "x" * 200] for i in range(5000)]}
    manifest.finish_run("succeeded", report)
    stored = json.loads(manifest.latest_run().report)
    assert stored["copied"] == 7 and stored["status"] == "succeeded"


# -- cost --------------------------------------------------------------------------------------------------


def simulate_batch_job(manifest, objects: int = 100_000, shards: int = 100, actors: int = 4,
                       objects_per_interval: int = 100, intervals_per_flush: int = 2, failure_every: int = 100):
    """Record a batch job's progress the way the runtime does: `actors` transfer actors each work through a
    shard; every progress interval each sends one record() with its failures and the shard's checkpoint;
    the manifest flushes every `intervals_per_flush` intervals. Returns the run id."""
    per_shard = objects // shards
    todo = deque(Shard(f"{i:04d}", f"data/{i:04d}/") for i in range(shards))
    run = manifest.start_run(list(todo))
    active: dict[int, list] = {}
    interval = 0
    while todo or active:
        for actor in range(actors):
            if actor not in active and todo:
                active[actor] = [todo.popleft(), 0, Tally()]  # (its records_page reads write nothing)
        for actor, state in list(active.items()):
            shard, start, tally = state
            end = min(start + objects_per_interval, per_shard)
            failures = []
            for i in range(start, end):
                key = f"{shard.prefix}{i:06d}.bin"
                tally.listed += 1
                tally.bytes_listed += 1024
                if i % failure_every == failure_every - 1:
                    tally.fail(key, "Transient")
                    failures.append(ObjectRecord(key, 1024, "etag", key, "", "failed", "Transient"))
                else:
                    tally.copied += 1
                    tally.bytes_copied += 1024
            checkpoint = Checkpoint(shard, DONE if end == per_shard else PENDING, key, tally)
            manifest.record(failures, [checkpoint], LiveReport(f"actor-{actor}", ((shard.shard_id, 1, tally),)))
            if end == per_shard:
                del active[actor]
            else:
                state[1] = end
        interval += 1
        if interval % intervals_per_flush == 0:
            manifest.flush()
    manifest.finish_run("succeeded", {"status": "succeeded"})
    return run


def test_writes_per_small_object_stay_below_five_percent(make, capsys):
    manifest = make(new_job())
    objects = 100_000
    started = time.monotonic()
    run = simulate_batch_job(manifest, objects)
    writes, items = manifest.writes, manifest.items_written
    with capsys.disabled():
        print(f"\nDynamoDB manifest, {objects:,} small objects, 1% failures: {writes} write requests "
              f"({writes / objects:.4f}/object), {items} items ({items / objects:.4f}/object), "
              f"{time.monotonic() - started:.1f} s on moto")
    assert writes / objects <= 0.05 and items / objects <= 0.05
    checkpoints = manifest.checkpoints(run)
    assert len(checkpoints) == 100 and all(cp.status == DONE for cp in checkpoints)
    assert sum(cp.tally.copied for cp in checkpoints) == 99_000
    assert sum(cp.tally.failed for cp in checkpoints) == 1000
    assert manifest.lookup("data/0042/000099.bin").status == "failed"


def test_read_only_never_creates_the_table(make, moto_server):
    missing = open_manifest(dynamo_config(moto_server.endpoint, table="dth-console-absent"), "job", read_only=True)
    try:
        with pytest.raises(DthError):
            missing.jobs()
    finally:
        missing.close()
    tables = dynamodb_table.DynamoTable(dynamo_config(moto_server.endpoint)).call("list_tables")["TableNames"]
    assert "dth-console-absent" not in tables
