"""Aliyun OSS → S3 on a local Ray: unmodified oss2 in the actors against the OSS protocol test endpoint."""

from __future__ import annotations

import hashlib
import random

import pytest

from dth_ray.compose import load_settings
from dth_ray.runtime.driver import run_sync
from tests.integration.conftest import OSS_KEY
from tests.integration.helpers import listing, md5_of
from tests.servers.oss_server import OssTestServer

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def oss():
    with OssTestServer(*OSS_KEY, region="cn-hangzhou") as server:
        server.create_bucket("oss-src")
        yield server


def test_oss_to_s3_copies_verifies_and_skips_archived(oss, e2e_env, ray_local, unique_prefix, tmp_path):
    pair = e2e_env
    rng = random.Random(5)
    items = {f"{unique_prefix}dt=2026-11-{d:02d}/part-{i}.parquet": rng.randbytes(rng.randint(0, 30_000))
             for d in range(1, 4) for i in range(30)}
    items[unique_prefix + "big/export.parquet"] = rng.randbytes(66 * MiB)
    items[unique_prefix + "sp ace+plus%pct"] = b"odd"
    for key, body in items.items():
        oss.put_object("oss-src", key, body, headers={"Content-Type": "application/x-parquet",
                                                      "x-oss-meta-table": "orders"})
    oss.put_object("oss-src", unique_prefix + "cold/old.bin", b"frozen", storage_class="Archive")
    cfg = load_settings([
        "source=oss", "source.bucket=oss-src", f"source.endpoint={oss.endpoint}",
        "source.region=cn-hangzhou", f"source.prefix={unique_prefix}", "source.credentials=env:E2EOSS",
        "destination=s3", f"destination.bucket={pair.destination.bucket}",
        f"destination.endpoint={pair.destination.endpoint}", f"destination.prefix=lake/{unique_prefix}",
        "destination.credentials=env:E2EDST", f"manifest.path={tmp_path / 'm.sqlite'}", "progress=off"])

    report = run_sync(cfg).to_json()

    assert report["status"] == "succeeded", report["failures"]
    assert report["objects"] == {"listed": len(items) + 1, "copied": len(items), "skipped": 1, "failed": 0}
    assert report["skipped_reasons"] == {"unreadable:Archive": 1}
    dst = pair.destination.client()
    got = listing(dst, pair.destination.bucket, f"lake/{unique_prefix}")
    assert set(got) == {f"lake/{k}" for k in items}
    for key in [unique_prefix + "big/export.parquet", unique_prefix + "sp ace+plus%pct",
                unique_prefix + "dt=2026-11-02/part-7.parquet"]:
        assert md5_of(dst, pair.destination.bucket, "lake/" + key) == hashlib.md5(items[key]).hexdigest()
    head = dst.head_object(Bucket=pair.destination.bucket, Key=f"lake/{unique_prefix}dt=2026-11-01/part-3.parquet")
    assert head["ContentType"] == "application/x-parquet"
    assert {k.lower(): v for k, v in head["Metadata"].items()} == {"table": "orders"}

    # A same-size overwrite at the source: OSS and S3 ETags differ in kind for multipart objects, so only
    # the ETag recorded at copy time can reveal it.
    key = unique_prefix + "dt=2026-11-03/part-0.parquet"
    oss.put_object("oss-src", key, bytes(len(items[key])))
    again = run_sync(cfg).to_json()
    assert again["objects"]["copied"] == 1
    assert again["objects"]["skipped"] == len(items)
    assert md5_of(dst, pair.destination.bucket, "lake/" + key) == hashlib.md5(bytes(len(items[key]))).hexdigest()
