"""Inventory planning at scale: plan 10 million keys from an S3 Inventory in Parquet, served by `rclone serve s3`
from local disk; report keys/s and the planner's peak memory (PSS).

Three processes, so each number belongs to one of them: (1) a generator writes the inventory (unsorted keys,
S3's Parquet schema, `--files` files of 128 Ki-row row groups) under a folder that (2) `rclone serve s3`
serves as buckets; (3) a fresh Python process runs the product's `plan_from_inventory` (the driver's planning
step: GET the manifest and files, partition by key range on local disk, PUT one staged Parquet file per shard
back to the inventory bucket) while a thread samples its /proc/self/smaps_rollup PSS every 50 ms.

usage: python benchmarks/bench_inventory.py [--keys 10000000] [--files 10] [--workdir DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SOURCE_BUCKET, INVENTORY_BUCKET = "bench-source", "bench-inventory"
KEYS = ("BENCHINVENTORYKEY", "bench-inventory-secret")


def generate(keys: int, files: int, root: Path) -> str:
    """Write the inventory under root/INVENTORY_BUCKET; returns the manifest's key."""
    import hashlib

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    sys.path.insert(0, str(REPO))
    from tests.servers.inventories import _PARQUET_SCHEMA

    base = f"inventory/{SOURCE_BUCKET}/all"
    # An inventory promises no order: ids in the order i × 1,000,003 mod keys (a permutation, the prime being
    # coprime to any key count it does not divide).
    order = pc.remainder(pc.add(pc.multiply(pa.array(range(keys), pa.int64()), 1_000_003), 12_345), keys)
    entries = []
    step = -(-keys // files)
    for index in range(files):
        ids = order.slice(index * step, step)
        part = ids

        def padded(values, width: int) -> pa.Array:
            return pc.utf8_lpad(pc.cast(values, pa.string()), width, "0")

        key = pc.binary_join_element_wise("data/", padded(pc.divide(ids, 10_000), 4), "/",
                                          padded(pc.remainder(ids, 997), 3), "/obj-", padded(ids, 9), ".bin", "")
        n = len(part)
        table = pa.table({
            "bucket": pa.array([SOURCE_BUCKET] * n), "key": key, "version_id": pa.nulls(n, pa.string()),
            "is_latest": pa.array([True] * n), "is_delete_marker": pa.array([False] * n),
            "size": pc.remainder(ids, 100_000).cast(pa.int64()),
            "last_modified_date": pa.array([1_767_225_600_000] * n, pa.timestamp("ms", tz="UTC")),
            "e_tag": padded(ids, 32), "storage_class": pa.array(["STANDARD"] * n),
            "is_multipart_uploaded": pa.array([False] * n)})
        name = f"{base}/data/{index:04d}-bench.parquet"
        path = root / INVENTORY_BUCKET / name
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table, path, row_group_size=131_072, compression="snappy")
        data = path.read_bytes()
        entries.append({"key": name, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = {"sourceBucket": SOURCE_BUCKET, "destinationBucket": f"arn:aws:s3:::{INVENTORY_BUCKET}",
                "version": "2016-11-30", "creationTimestamp": "1767225600000", "fileFormat": "Parquet",
                "fileSchema": _PARQUET_SCHEMA, "files": entries}
    manifest_key = f"{base}/2026-01-01T00-00Z/manifest.json"
    (root / INVENTORY_BUCKET / manifest_key).parent.mkdir(parents=True, exist_ok=True)
    (root / INVENTORY_BUCKET / manifest_key).write_text(json.dumps(manifest))
    (root / SOURCE_BUCKET).mkdir(exist_ok=True)
    return manifest_key


def _pss_kib() -> int:
    with open("/proc/self/smaps_rollup") as handle:
        for line in handle:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


def plan(endpoint: str, manifest_key: str) -> dict:
    """Run the product's planning step once; its numbers."""
    import asyncio

    from dth_ray.compose import load_settings
    from dth_ray.runtime.inventory import plan_from_inventory
    from dth_ray.runtime.staging import remove_staged

    os.environ.update({"BENCH_ACCESS_KEY_ID": KEYS[0], "BENCH_SECRET_ACCESS_KEY": KEYS[1]})
    settings = load_settings([
        "source=s3", f"source.bucket={SOURCE_BUCKET}", f"source.endpoint={endpoint}", "source.addressing_style=path",
        "source.credentials=env:BENCH", f"source.inventory=s3://{INVENTORY_BUCKET}/{manifest_key}",
        "destination.type=memory", "destination.bucket=bench-destination", "job=bench-inventory", "progress=off"])
    baseline, peak, stop = _pss_kib(), [0], threading.Event()

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _pss_kib())
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    wall, cpu = time.monotonic(), time.process_time()
    planned = asyncio.run(plan_from_inventory(settings, actors=8))
    wall, cpu = time.monotonic() - wall, time.process_time() - cpu
    stop.set()
    sampler.join()
    asyncio.run(remove_staged(settings, planned.shards))
    keys = planned.info["source"]["objects"]
    return {"keys": keys, "shards": len(planned.shards), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
            "keys_per_s": round(keys / wall), "baseline_pss_mib": round(baseline / 1024, 1),
            "peak_pss_mib": round(peak[0] / 1024, 1), "files": planned.info["source"]["files"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("step", nargs="?", default="all", choices=("all", "generate", "plan"))
    parser.add_argument("--keys", type=int, default=10_000_000)
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--workdir", default="")
    parser.add_argument("--endpoint", default="")
    parser.add_argument("--manifest", default="")
    parser.add_argument("--out", default="")
    args = parser.parse_args(argv)
    if args.step == "generate":
        print(generate(args.keys, args.files, Path(args.workdir)))
        return
    if args.step == "plan":
        print(json.dumps(plan(args.endpoint, args.manifest)))
        return
    from dth_ray.locals3 import RcloneS3

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    with tempfile.TemporaryDirectory(prefix="bench-inventory-", dir=args.workdir or None) as work:
        started = time.monotonic()
        manifest_key = subprocess.run([sys.executable, __file__, "generate", "--keys", str(args.keys), "--files",
                                       str(args.files), "--workdir", work], env=env, check=True,
                                      capture_output=True, text=True).stdout.strip()
        generated_s = time.monotonic() - started
        server = RcloneS3(*KEYS, root=work).start()
        try:
            line = subprocess.run([sys.executable, __file__, "plan", "--endpoint", server.endpoint, "--manifest",
                                   manifest_key], env=env, check=True, capture_output=True, text=True).stdout
        finally:
            server.stop(remove_root=False)
    result = {**json.loads(line.strip().splitlines()[-1]), "generate_s": round(generated_s, 1),
              "load_average": os.getloadavg(), "commit": _commit(), "at": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime())}
    print(json.dumps(result, indent=1))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


if __name__ == "__main__":
    main()
