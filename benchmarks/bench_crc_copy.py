"""Client CPU of a multipart copy into S3: each part's Content-MD5 against CRC64NVME in its place."""

# usage: python benchmarks/bench_crc_copy.py [--mib 512] [--rounds 3]
# The source is an in-process memory bucket (its reads cost the same in every mode) holding two objects of
# --mib: one written in parts (a multipart ETag: no whole-object check, so only the per-part digests differ)
# and one written whole (an MD5 ETag: the whole-object MD5 check runs in every mode). The destination is
# `rclone serve s3` in its own process (only this process's CPU is counted), 8 MiB parts, 4 in flight, with
# destination.checksum=md5 (Content-MD5 per part, today's path) or crc64nvme (CRC64NVME per part, no MD5; rclone
# ignores it, which does not change what the client spends). Writes benchmarks/results/crc-copy-<date>.json
# and prints a Markdown table (benchmarks/README.md has the latest).

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import statistics
import time
from pathlib import Path

import boto3
from botocore.config import Config

from dth_ray.config import ChecksumMode, StoreConfig, StoreType
from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.context import CopySettings
from dth_ray.engine.copier import Copier
from dth_ray.engine.limits import Limits
from dth_ray.engine.ratelimit import AdaptiveLimit
from dth_ray.locals3 import RcloneS3
from dth_ray.model import ObjectHeaders, PartInfo
from dth_ray.stores import open_store

HERE = Path(__file__).resolve().parent
MiB = 1024 * 1024
PART = 8 * MiB
KEYS = ("BENCHCRCKEY", "bench-crc-secret")


async def _seed(store, mib: int) -> None:
    """'parts.bin' written in 8 MiB parts (multipart ETag) and 'whole.bin' by one PUT (MD5 ETag)."""
    body = os.urandom(mib * MiB)
    await store.put("whole.bin", body, ObjectHeaders(), hashlib.md5(body).digest())
    upload = await store.create_multipart("parts.bin", ObjectHeaders())
    parts = []
    for number, start in enumerate(range(0, len(body), PART), 1):
        chunk = body[start:start + PART]
        etag = await store.upload_part("parts.bin", upload, number, chunk, hashlib.md5(chunk).digest())
        parts.append(PartInfo(number, etag, len(chunk)))
    await store.complete_multipart("parts.bin", upload, parts)


async def _copy(src, endpoint: str, mode: ChecksumMode, key: str, round_: int) -> dict:
    os.environ["BENCHCRC_ACCESS_KEY_ID"], os.environ["BENCHCRC_SECRET_ACCESS_KEY"] = KEYS
    dst = open_store(StoreConfig(type=StoreType.s3, bucket="bench", endpoint=endpoint, credentials="env:BENCHCRC",
                                 checksum=mode))
    settings = CopySettings(multipart_threshold_bytes=PART, part_size_bytes=PART, parts_in_flight=4,
                            max_attempts=2)
    copier = Copier(src, dst, src.features, dst.features, settings,
                    Limits(ByteBudget(256 * MiB), AdaptiveLimit(16)))
    meta = (await src.head(key)).meta
    try:
        wall0, cpu0 = time.perf_counter(), time.process_time()
        outcome = await copier.copy(meta, f"{mode.value}/{round_}/{key}")
        wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    finally:
        await dst.aclose()
    return {"wall_s": wall, "cpu_s": cpu, "verified": outcome.verified_source, "bytes": meta.size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=512)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    src = open_store(StoreConfig(type=StoreType.memory, bucket="bench-crc-src"))
    asyncio.run(_seed(src, args.mib))
    server = RcloneS3(*KEYS, root=":memory:").start()
    try:
        boto3.client("s3", endpoint_url=server.endpoint, region_name="us-east-1", aws_access_key_id=KEYS[0],
                     aws_secret_access_key=KEYS[1], config=Config(s3={"addressing_style": "path"})
                     ).create_bucket(Bucket="bench")
        runs: dict[tuple[str, str], list[dict]] = {}
        load_before = os.getloadavg()
        for round_ in range(args.rounds):
            for key in ("parts.bin", "whole.bin"):
                for mode in (ChecksumMode.md5, ChecksumMode.crc64nvme):  # interleaved: the load drifts
                    runs.setdefault((key, mode.value), []).append(asyncio.run(_copy(src, server.endpoint, mode,
                                                                                  key, round_)))
        load_after = os.getloadavg()
    finally:
        server.stop()
    results = []
    for (key, mode), rounds in runs.items():
        gb = rounds[0]["bytes"] / 1e9
        cpu = [r["cpu_s"] / gb for r in rounds]
        results.append({"object": key, "mode": mode, "rounds": len(rounds), "bytes": rounds[0]["bytes"],
                        "cpu_s_per_gb": [round(v, 3) for v in cpu],
                        "cpu_s_per_gb_median": round(statistics.median(cpu), 3),
                        "mb_s_median": round(statistics.median(r["bytes"] / 1e6 / r["wall_s"] for r in rounds), 1),
                        "verified_source": all(r["verified"] for r in rounds)})
    started = time.strftime("%Y-%m-%d-%H%M", time.gmtime())
    doc = {"started_utc": started, "load_average_before": [round(v, 2) for v in load_before],
           "load_average_after": [round(v, 2) for v in load_after], "cores": os.cpu_count(), "results": results}
    out = HERE / "results" / f"crc-copy-{started}.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"| source object | per part | client CPU s/GB (median of {args.rounds}) | rounds | MB/s (median) |")
    print("|---|---|---|---|---|")
    for r in results:
        print(f"| {r['object']} | {r['mode']} | {r['cpu_s_per_gb_median']:.3f} | "
              f"{', '.join(f'{v:.3f}' for v in r['cpu_s_per_gb'])} | {r['mb_s_median']:,.0f} |")
    print(f"\nload average before {doc['load_average_before']}, after {doc['load_average_after']}\n"
          f"written: {out.relative_to(HERE.parent)}")


if __name__ == "__main__":
    main()
