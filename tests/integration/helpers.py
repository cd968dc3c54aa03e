"""Helpers for end-to-end tests: config overrides for the rclone pair and reading a destination back."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile

from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.context import CopySettings
from dth_ray.engine.copier import Copier
from dth_ray.engine.limits import Limits
from dth_ray.engine.ratelimit import AdaptiveLimit

MiB = 1024 * 1024
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_on_own_ray(script: str, home, timeout_s: float = 300) -> subprocess.CompletedProcess:
    """`python -c script` with a fresh HOME (its Ray token) and Ray temp folder, no RAY_* from this session:
    the script starts its own embedded Ray, apart from the test session's."""
    home.mkdir(exist_ok=True)
    ray_tmp = tempfile.mkdtemp(prefix="dthown-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_")}
    env.update(HOME=str(home), RAY_TMPDIR=ray_tmp, PYTHONPATH=REPO)
    try:
        return subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                              timeout=timeout_s)
    finally:
        shutil.rmtree(ray_tmp, ignore_errors=True)


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


def copier_for(src, dst, **settings) -> Copier:
    """A Copier between two real stores with test-sized limits (64 MiB of buffers, 16 requests, no rate caps)
    and 5 MiB parts from 5 MiB on; `settings` override any CopySettings field."""
    limits = Limits(ByteBudget(64 * MiB), AdaptiveLimit(16))
    base = dict(multipart_threshold_bytes=5 * MiB, part_size_bytes=5 * MiB, parts_in_flight=1, max_attempts=4)
    return Copier(src, dst, src.features, dst.features, CopySettings(**{**base, **settings}), limits)


async def copy_listed(copier: Copier, src, dst, key: str, dst_key: str):
    """List `key` at the real source `src` and copy it with `copier` to `dst_key`; returns the outcome and the
    uploads left open in dst_key's folder, and closes both stores."""
    try:
        listed = (await src.list_page(key)).objects[0]
        outcome = await copier.copy(listed, dst_key)
        return outcome, await dst.list_uploads(dst_key.rsplit("/", 1)[0] + "/")
    finally:
        await src.aclose()
        await dst.aclose()
