"""Inventory-driven planning against real local servers on a local Ray: an S3 Inventory in Parquet beside a
`rclone serve s3` source (its requests counted by a forwarding proxy) and an OSS bucket inventory in CSV on
the OSS protocol endpoint. Each job copies exactly the inventoried objects, as they are now, and the source
server sees no LIST request."""

from __future__ import annotations

import hashlib
import random

import pytest

from dth_ray.checksums import crc64ecma
from dth_ray.compose import load_settings
from dth_ray.runtime.driver import run_sync
from tests.integration.conftest import OSS_KEY
from tests.integration.helpers import listing, md5_of, s3_overrides
from tests.servers.fault_proxy import FaultProxy, Rule, stall
from tests.servers.inventories import Row, oss_inventory, s3_inventory
from tests.servers.oss_server import OssTestServer

MiB = 1024 * 1024


def _bodies(prefix: str, count: int, seed: int) -> dict[str, bytes]:
    rng = random.Random(seed)
    items = {f"{prefix}part-{i // 20}/obj-{i:03d}.bin": rng.randbytes(rng.randint(0, 20_000)) for i in range(count)}
    items[prefix + "sp ace+plus%pct.txt"] = b"odd key"
    items[prefix + "big/large.bin"] = rng.randbytes(12 * MiB + 7)
    return items


def test_an_s3_parquet_inventory_copies_exactly_its_objects_with_no_list(e2e_env, ray_local, unique_prefix,
                                                                         tmp_path):
    pair = e2e_env
    src = pair.source.client()
    items = _bodies(unique_prefix, 120, 3)
    for key, body in items.items():
        src.put_object(Bucket=pair.source.bucket, Key=key, Body=body)
    src.put_object(Bucket=pair.source.bucket, Key="elsewhere/not-in-scope", Body=b"x")
    rows = [Row(k, len(v), hashlib.md5(v).hexdigest()) for k, v in items.items()]
    rows.append(Row("elsewhere/not-in-scope", 1, hashlib.md5(b"x").hexdigest()))
    inventory_bucket = pair.source.create_bucket(f"inv-{unique_prefix[2:-1]}")
    manifest_key, files = s3_inventory(rows, "Parquet", pair.source.bucket, inventory_bucket, files=3)
    for key, data in files.items():
        src.put_object(Bucket=inventory_bucket, Key=key, Body=data)
    # After the inventory: one object deleted, one rewritten, one added.
    gone, changed, added = (unique_prefix + "part-1/obj-021.bin", unique_prefix + "part-2/obj-040.bin",
                            unique_prefix + "part-0/added-later.bin")
    src.delete_object(Bucket=pair.source.bucket, Key=gone)
    src.put_object(Bucket=pair.source.bucket, Key=changed, Body=b"rewritten since the inventory")
    src.put_object(Bucket=pair.source.bucket, Key=added, Body=b"new")

    with FaultProxy(pair.source.endpoint) as proxy:
        lists = [proxy.add(Rule(stall(0), op=op, probability=0.0, name=op)) for op in ("ListObjectsV2", "ListObjects")]
        overrides = s3_overrides(pair, unique_prefix, f"inv/{unique_prefix}", str(tmp_path / "m.sqlite"))
        overrides[overrides.index(f"source.endpoint={pair.source.endpoint}")] = f"source.endpoint={proxy.endpoint}"
        cfg = load_settings([*overrides, f"source.inventory=s3://{inventory_bucket}/{manifest_key}",
                             f"report_objects={tmp_path / 'report'}"])
        report = run_sync(cfg).to_json()
        counts = proxy.counts
        requests = proxy.requests

    assert requests > 0, "the source was reached through the proxy"
    assert all(counts[rule.name]["matched"] == 0 for rule in lists), counts
    assert report["status"] == "succeeded", (report["errors"], report["failures"])
    assert report["objects"] == {"listed": len(items), "copied": len(items) - 1, "skipped": 1, "failed": 0}
    assert report["skipped_reasons"] == {"gone_since_inventory": 1}
    assert report["inventory"]["source"]["format"] == "PARQUET"
    assert report["inventory"]["source"]["created"] == "2026-01-01T00:00:00Z"
    assert report["report_objects"]["rows"] == len(items)
    dst = pair.destination.client()
    got = listing(dst, pair.destination.bucket, f"inv/{unique_prefix}")
    assert set(got) == {f"inv/{k}" for k in items if k != gone}, "exactly the inventoried objects"
    assert md5_of(dst, pair.destination.bucket, f"inv/{changed}") == hashlib.md5(
        b"rewritten since the inventory").hexdigest(), "a changed object is copied as it is now"
    for key in (unique_prefix + "big/large.bin", unique_prefix + "sp ace+plus%pct.txt"):
        assert md5_of(dst, pair.destination.bucket, f"inv/{key}") == hashlib.md5(items[key]).hexdigest()
    leftover = listing(src, inventory_bucket, "")
    assert set(leftover) == set(files), "the staged rows were removed"


@pytest.fixture(scope="module")
def oss():
    with OssTestServer(*OSS_KEY, region="cn-hangzhou") as server:
        server.create_bucket("oss-inv-src")
        server.create_bucket("oss-inventory")
        yield server


def test_an_oss_csv_inventory_copies_exactly_its_objects_with_no_list(oss, e2e_env, ray_local, unique_prefix,
                                                                      tmp_path):
    pair = e2e_env
    items = _bodies(unique_prefix, 80, 5)
    rows = []
    for key, body in items.items():
        etag = oss.put_object("oss-inv-src", key, body)
        rows.append(Row(key, len(body), etag, storage_class="Standard", crc64=str(crc64ecma(body))))
    manifest_key, files = oss_inventory(rows, "oss-inv-src", "oss-inventory", files=3)
    for key, data in files.items():
        oss.put_object("oss-inventory", key, data)
    gone, added = unique_prefix + "part-3/obj-060.bin", unique_prefix + "part-0/added.bin"
    with oss._lock:
        del oss._buckets["oss-inv-src"].objects[gone]
    oss.put_object("oss-inv-src", added, b"new since the inventory")
    cfg = load_settings([
        "source=oss", "source.bucket=oss-inv-src", f"source.endpoint={oss.endpoint}", "source.region=cn-hangzhou",
        f"source.prefix={unique_prefix}", "source.credentials=env:E2EOSS",
        f"source.inventory=oss://oss-inventory/{manifest_key}",
        "destination=s3", f"destination.bucket={pair.destination.bucket}",
        f"destination.endpoint={pair.destination.endpoint}", f"destination.prefix=oss/{unique_prefix}",
        "destination.credentials=env:E2EDST", f"manifest.path={tmp_path / 'm.sqlite'}", "progress=off"])
    oss.reset_counters()

    report = run_sync(cfg).to_json()

    assert oss.requests["ListObjectsV2"] + oss.requests["ListObjects"] == 0, dict(oss.requests)
    assert oss.requests["GetObject"] > 0
    assert report["status"] == "succeeded", (report["errors"], report["failures"])
    assert report["objects"] == {"listed": len(items), "copied": len(items) - 1, "skipped": 1, "failed": 0}
    assert report["skipped_reasons"] == {"gone_since_inventory": 1}
    assert report["inventory"]["source"]["format"] == "CSV"
    dst = pair.destination.client()
    got = listing(dst, pair.destination.bucket, f"oss/{unique_prefix}")
    assert set(got) == {f"oss/{k}" for k in items if k != gone}
    key = unique_prefix + "sp ace+plus%pct.txt"
    assert md5_of(dst, pair.destination.bucket, f"oss/{key}") == hashlib.md5(items[key]).hexdigest()
