"""Objects above the copy cutoff (CopyObject's 5 GiB limit) are copied server-side in parts with UploadPartCopy:
no bytes through the client, headers carried over, the size checked. A service that accepts UploadPartCopy but
stores empty parts (rclone serve s3) is caught before Complete, and the bytes are then moved by the client."""

from __future__ import annotations

import asyncio
import os

from dth_ray.config import StoreConfig, StoreType
from dth_ray.engine.copier import Copier
from dth_ray.stores import open_store
from tests.integration.helpers import MiB, copier_for


def _copier(src, dst, bucket: str) -> Copier:
    return copier_for(src, dst, parts_in_flight=2, max_attempts=3, server_side_bucket=bucket,
                      copy_cutoff_bytes=5 * MiB)


def _copy(endpoint: str, src_bucket: str, key: str, dst_key: str, dst_bucket: str):
    """Copy `key` of `src_bucket` to `dst_key` of `dst_bucket` on one service (one identity, env:E2ESRC)."""
    async def main():
        src = open_store(StoreConfig(type=StoreType.s3, bucket=src_bucket, endpoint=endpoint,
                                     credentials="env:E2ESRC"))
        dst = open_store(StoreConfig(type=StoreType.s3, bucket=dst_bucket, endpoint=endpoint,
                                     credentials="env:E2ESRC"))
        try:
            listed = (await src.list_page(key)).objects[0]
            copier = _copier(src, dst, src_bucket)  # reads (HEAD, and GETs on the fallback path): source bucket
            outcome = await copier.copy(listed, dst_key)
            uploads = await dst.list_uploads(dst_key)
            return outcome, uploads
        finally:
            await src.aclose()
            await dst.aclose()

    return asyncio.run(main())


def test_large_object_is_copied_server_side_in_parts(moto_server, e2e_env, unique_prefix):
    s3 = moto_server.client()
    for bucket in ("ssp-src", "ssp-dst"):
        if bucket not in [b["Name"] for b in s3.list_buckets()["Buckets"]]:
            s3.create_bucket(Bucket=bucket)
    key = unique_prefix + "big.bin"
    body = os.urandom(12 * MiB + 5)
    s3.put_object(Bucket="ssp-src", Key=key, Body=body, ContentType="application/x-parquet",
                  Metadata={"table": "orders"})

    outcome, uploads = _copy(moto_server.endpoint, "ssp-src", key, "parts/" + key, "ssp-dst")

    assert outcome.server_side, "no byte went through the client"
    assert outcome.part_size_bytes == 5 * MiB and outcome.dst_etag.endswith("-3")
    obj = s3.get_object(Bucket="ssp-dst", Key="parts/" + key)
    assert obj["Body"].read() == body
    assert obj["ContentType"] == "application/x-parquet" and obj["Metadata"] == {"table": "orders"}
    assert uploads == []


def test_empty_parts_from_a_look_alike_fall_back_to_moving_the_bytes(rclone_pair, e2e_env, unique_prefix):
    server = rclone_pair.source  # one rclone serve s3 as both source and destination: one service
    key = unique_prefix + "big.bin"
    body = os.urandom(11 * MiB)
    server.client().put_object(Bucket=server.bucket, Key=key, Body=body)

    outcome, uploads = _copy(server.endpoint, server.bucket, key, "parts/" + key, server.bucket)

    assert not outcome.server_side, "the empty parts were refused; the client copied the bytes"
    assert outcome.verified_source
    got = server.client().get_object(Bucket=server.bucket, Key="parts/" + key)["Body"].read()
    assert got == body
    assert uploads == [], "the upload with empty parts was aborted"
