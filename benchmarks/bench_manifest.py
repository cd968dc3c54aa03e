"""Manifest cost of a batch job: DynamoDB writes per object for 100,000 small objects (issue target ≤ 0.05).

Runs `dth-ray sync` with its shipped defaults between two `rclone serve s3` endpoints, once with
`manifest=dynamodb` on a moto server (the only non-default settings: where the manifest lives) and once with
the default SQLite manifest, then a second, no-change run of each. Reads the counts from the report's
`manifest` block (write requests and items written, as the backend issued them). Writes
benchmarks/results/manifest-<date>.json and prints a Markdown table.

usage: python benchmarks/bench_manifest.py [--objects 100000] [--object-bytes 1024] [--prefixes 100]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from dth_ray.locals3 import RcloneS3, free_port

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def seed_on_disk(root: str, bucket: str, objects: int, size: int, prefixes: int) -> int:
    """Write the objects straight into the directory `rclone serve s3` serves (much faster than PUTs)."""
    rng = random.Random(1)
    total = 0
    for i in range(objects):
        folder = Path(root, bucket, f"p{i % prefixes:03d}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"obj-{i:07d}").write_bytes(rng.randbytes(size))
        total += size
    return total


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)  # noqa: S310 - loopback only
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def sync(src: RcloneS3, dst: RcloneS3, bucket: str, dst_prefix: str, extra: list[str], work: Path) -> dict:
    report = work / f"report-{time.monotonic_ns()}.json"
    cmd = [str(BIN / "dth-ray"), "sync", f"source.bucket={bucket}", f"source.endpoint={src.endpoint}",
           "source.credentials=env:BSRC", f"destination.bucket={bucket}", f"destination.prefix={dst_prefix}",
           f"destination.endpoint={dst.endpoint}", "destination.credentials=env:BDST", f"report={report}",
           "progress=off", *extra]
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"sync failed: {done.stdout}\n{done.stderr[-3000:]}")
    out = json.loads(report.read_text())
    out["wall_s"] = time.monotonic() - started
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--object-bytes", type=int, default=1024)
    parser.add_argument("--prefixes", type=int, default=100)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dth-bench-manifest-"))
    bucket = "bench-manifest"
    src = RcloneS3("benchsrc", "bench-source-secret", root=str(work / "src"))
    dst = RcloneS3("benchdst", "bench-destination-secret", root=str(work / "dst"))
    os.makedirs(work / "dst" / bucket)
    t0 = time.monotonic()
    seed_on_disk(src.root, bucket, args.objects, args.object_bytes, args.prefixes)
    print(f"seeded {args.objects:,} objects in {time.monotonic() - t0:.0f}s", flush=True)
    os.environ.update({"BSRC_ACCESS_KEY_ID": "benchsrc", "BSRC_SECRET_ACCESS_KEY": "bench-source-secret",
                       "BDST_ACCESS_KEY_ID": "benchdst", "BDST_SECRET_ACCESS_KEY": "bench-destination-secret",
                       "MOTO_ACCESS_KEY_ID": "moto", "MOTO_SECRET_ACCESS_KEY": "moto-secret"})
    moto, moto_endpoint = start_moto()
    rows = []
    try:
        src.start()
        dst.start()
        setups = {
            "dynamodb": ["manifest=dynamodb", f"manifest.endpoint={moto_endpoint}", "manifest.region=us-east-1",
                         "manifest.credentials=env:MOTO", "manifest.table=bench-manifest"],
            "sqlite": [f"manifest.path={work / 'manifest.sqlite'}"],
        }
        for name, extra in setups.items():
            for run in ("first", "no-change rerun"):
                report = sync(src, dst, bucket, f"{name}/", extra, work)
                m, o = report["manifest"], report["objects"]
                rows.append({"manifest": name, "run": run, "objects_listed": o["listed"],
                             "objects_copied": o["copied"], "writes": m["writes"],
                             "items_written": m["items_written"],
                             "writes_per_object": m["writes"] / o["listed"],
                             "items_per_object": m["items_written"] / o["listed"],
                             "wall_s": round(report["wall_s"], 1), "objects_per_s": report["objects_per_s"]})
                print(json.dumps(rows[-1]), flush=True)
    finally:
        src.stop()
        dst.stop()
        moto.kill()
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "objects": args.objects, "object_bytes": args.object_bytes,
              "prefixes": args.prefixes, "loadavg": os.getloadavg(), "rows": rows,
              "flags": "shipped defaults; only the manifest location differs (manifest=dynamodb on moto)"}
    out = HERE / "results" / f"manifest-{time.strftime('%Y-%m-%d-%H%M')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print("\n| manifest | run | objects | write requests | items written | writes/object | items/object | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['manifest']} | {r['run']} | {r['objects_listed']:,} | {r['writes']:,} | "
              f"{r['items_written']:,} | {r['writes_per_object']:.4f} | {r['items_per_object']:.4f} | "
              f"{r['wall_s']} |")
    print(f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
