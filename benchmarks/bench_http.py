"""The S3 client's CPU per request: S3Store GETs (whole 64 KiB objects and 8 MiB ranges into a buffer) from a
local `rclone serve s3`, with and without SO_RCVLOWAT (stores/rawhttp.py), alternating, in this process.

    .venv/bin/python benchmarks/bench_http.py [--rounds 3] [--small 3000] [--ranges 200]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dth_ray.config import StoreConfig, StoreType  # noqa: E402
from dth_ray.locals3 import RcloneS3  # noqa: E402
from dth_ray.model import ByteRange  # noqa: E402
from dth_ray.stores import rawhttp  # noqa: E402
from dth_ray.stores.s3 import S3Store  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
KEY_ID, SECRET = "BENCHHTTPKEY", "bench-http-secret-key"


async def measure(store: S3Store, small: int, ranges: int) -> dict[str, float]:
    """CPU ms per request: `small` GETs of a 64 KiB object (16 at once), `ranges` 8 MiB ranged GETs into
    buffers (4 at once)."""
    out = {}
    gate = asyncio.Semaphore(16)

    async def one_small(i: int) -> None:
        async with gate:
            await store.get(f"small/{i % 100}")

    t0 = time.process_time()
    await asyncio.gather(*(one_small(i) for i in range(small)))
    out["get_64kib_ms"] = 1000 * (time.process_time() - t0) / small
    buffers = [bytearray(8 * MiB) for _ in range(4)]
    lanes = asyncio.Queue()
    for buf in buffers:
        lanes.put_nowait(buf)

    async def one_range(i: int) -> None:
        buf = await lanes.get()
        try:
            start = (i * 8 * MiB) % (120 * MiB)
            await store.get_into("large", ByteRange(start, start + 8 * MiB), memoryview(buf))
        finally:
            lanes.put_nowait(buf)

    t0 = time.process_time()
    await asyncio.gather(*(one_range(i) for i in range(ranges)))
    out["get_8mib_range_ms"] = 1000 * (time.process_time() - t0) / ranges
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--small", type=int, default=3000)
    parser.add_argument("--ranges", type=int, default=200)
    args = parser.parse_args()
    root = tempfile.mkdtemp(prefix="bench-http-")
    bucket = Path(root) / "bkt"
    (bucket / "small").mkdir(parents=True)
    for i in range(100):
        (bucket / "small" / str(i)).write_bytes(os.urandom(64 * KiB))
    (bucket / "large").write_bytes(os.urandom(128 * MiB))
    results: dict[str, list[dict[str, float]]] = {"SO_RCVLOWAT 1 MiB": [], "no SO_RCVLOWAT": []}
    lowat = rawhttp.LOWAT_BYTES
    with RcloneS3(KEY_ID, SECRET, root=root).start() as server:
        os.environ["BENCHHTTP_ACCESS_KEY_ID"], os.environ["BENCHHTTP_SECRET_ACCESS_KEY"] = KEY_ID, SECRET
        cfg = StoreConfig(type=StoreType.s3, bucket="bkt", endpoint=server.endpoint, credentials="env:BENCHHTTP")

        async def run_all() -> None:
            for _ in range(args.rounds):
                for name, value in (("SO_RCVLOWAT 1 MiB", lowat), ("no SO_RCVLOWAT", 1)):
                    rawhttp.LOWAT_BYTES = value  # the module reads it per connection and request
                    store = S3Store(cfg, "source")
                    try:
                        results[name].append(await measure(store, args.small, args.ranges))
                    finally:
                        await store.aclose()
            rawhttp.LOWAT_BYTES = lowat

        asyncio.run(run_all())
    for name, runs in results.items():
        med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        print(f"{name:18} CPU per 64 KiB GET {med['get_64kib_ms']:.3f} ms, per 8 MiB ranged GET into a buffer "
              f"{med['get_8mib_range_ms']:.2f} ms (median of {len(runs)} rounds)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
