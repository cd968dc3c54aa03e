"""A naive bucket copy with boto3, as someone would write it in an afternoon: the benchmark's "boto3-pool" peer.

List the source bucket, then a pool of 16 threads copies each object through memory: `download_fileobj` into
a BytesIO, then `upload_fileobj` to the destination (boto3's managed transfers, default TransferConfig: ranged
GETs and multipart uploads from 8 MiB on). No comparison with the destination: every run copies everything.

    python benchmarks/peers/boto3_copy.py --src-endpoint URL --dst-endpoint URL --bucket B [--prefix P/]
    keys from the environment: BSRC_ACCESS_KEY_ID / BSRC_SECRET_ACCESS_KEY, BDST_ACCESS_KEY_ID / BDST_SECRET_...

The client config has what `rclone serve s3` needs (path-style addressing, checksums only when required) and a
connection pool as large as the thread pool; nothing else is tuned.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import boto3
from botocore.config import Config


def client(endpoint: str, env_prefix: str, pool: int):
    return boto3.client(
        "s3", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id=os.environ[f"{env_prefix}_ACCESS_KEY_ID"],
        aws_secret_access_key=os.environ[f"{env_prefix}_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                      response_checksum_validation="when_required", max_pool_connections=pool))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src-endpoint", required=True)
    parser.add_argument("--dst-endpoint", required=True)
    parser.add_argument("--bucket", required=True, help="source bucket")
    parser.add_argument("--dst-bucket", help="destination bucket (default: the source bucket's name)")
    parser.add_argument("--prefix", default="", help="destination key prefix")
    parser.add_argument("--threads", type=int, default=16)
    args = parser.parse_args()
    src = client(args.src_endpoint, "BSRC", args.threads)
    dst = client(args.dst_endpoint, "BDST", args.threads)
    dst_bucket = args.dst_bucket or args.bucket
    keys = [obj["Key"] for page in src.get_paginator("list_objects_v2").paginate(Bucket=args.bucket)
            for obj in page.get("Contents", [])]

    def copy(key: str) -> int:
        buffer = io.BytesIO()
        src.download_fileobj(args.bucket, key, buffer)
        size = buffer.tell()
        buffer.seek(0)
        dst.upload_fileobj(buffer, dst_bucket, args.prefix + key)
        return size

    with ThreadPoolExecutor(args.threads) as pool:
        total = sum(pool.map(copy, keys))
    print(f"copied {len(keys)} objects, {total} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
