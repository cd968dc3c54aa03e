"""Helpers for end-to-end tests: config overrides for the rclone pair and reading a destination back."""

from __future__ import annotations

import hashlib


def s3_overrides(pair, src_prefix: str, dst_prefix: str, manifest: str) -> list[str]:
    return [
        "source=s3", f"source.bucket={pair.source.bucket}", f"source.endpoint={pair.source.endpoint}",
        f"source.prefix={src_prefix}", "source.credentials=env:E2ESRC",
        "destination=s3", f"destination.bucket={pair.destination.bucket}",
        f"destination.endpoint={pair.destination.endpoint}", f"destination.prefix={dst_prefix}",
        "destination.credentials=env:E2EDST", f"manifest.path={manifest}", "progress=off",
    ]


def listing(client, bucket: str, prefix: str) -> dict[str, dict]:
    out = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            out[obj["Key"]] = obj
    return out


def md5_of(client, bucket: str, key: str) -> str:
    return hashlib.md5(client.get_object(Bucket=bucket, Key=key)["Body"].read()).hexdigest()
