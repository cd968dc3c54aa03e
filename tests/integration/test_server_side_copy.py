"""Same service, same identity: objects are copied with CopyObject (no bytes through dth_ray), metadata kept."""

from __future__ import annotations

import hashlib
import os

from dth_ray.compose import load_settings
from dth_ray.runtime.driver import run_sync
from tests.integration.helpers import listing


def test_same_service_uses_server_side_copy(moto_server, e2e_env, ray_local, unique_prefix, tmp_path):
    s3 = moto_server.client()
    for bucket in ("ssc-src", "ssc-dst"):
        if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=bucket)
    bodies = {f"{unique_prefix}k{i}": os.urandom(1000 + i) for i in range(15)}
    for key, body in bodies.items():
        s3.put_object(Bucket="ssc-src", Key=key, Body=body, ContentType="text/csv", Metadata={"team": "a"})
    def config(dst_prefix: str, *extra: str):
        return load_settings([
            "source.bucket=ssc-src", f"source.endpoint={moto_server.endpoint}", "source.credentials=env:E2ESRC",
            f"source.prefix={unique_prefix}", "destination.bucket=ssc-dst",
            f"destination.endpoint={moto_server.endpoint}", "destination.credentials=env:E2ESRC",
            f"destination.prefix={dst_prefix}", f"manifest.path={tmp_path / dst_prefix[:4]}.sqlite", "progress=off",
            *extra])

    cfg = config(f"copy/{unique_prefix}")

    report = run_sync(cfg).to_json()

    assert report["objects"] == {"listed": 15, "copied": 15, "skipped": 0, "failed": 0}
    assert report["server_side_copies"] == 15
    got = listing(s3, "ssc-dst", f"copy/{unique_prefix}")
    assert len(got) == 15
    for key, body in bodies.items():
        obj = s3.get_object(Bucket="ssc-dst", Key=f"copy/{key}")
        assert hashlib.md5(obj["Body"].read()).digest() == hashlib.md5(body).digest()
        assert obj["ContentType"] == "text/csv" and obj["Metadata"] == {"team": "a"}

    off = config(f"byte/{unique_prefix}", "transfer.server_side_copy=false")
    again = run_sync(off).to_json()
    assert again["objects"]["copied"] == 15 and again["server_side_copies"] == 0
