"""`runtime.ray=auto` (the default) as users get it, through `dth-ray sync` in its own process: a run the driver
finishes alone never starts Ray (no `ray_up_s`, one `nodes` entry for this machine); a run the driver alone
would take longer than `runtime.ray_pays_after_s` over starts Ray mid-run and its actors take shards; and
`runtime.ray=always` starts Ray at once."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from tests.integration.helpers import listing, s3_overrides
from tests.servers.counting_proxy import CountingProxy
from tests.servers.s3_servers import seed_objects


def _sync(pair, prefix: str, tmp_path, *extra: str, puts: CountingProxy | None = None) -> dict:
    """`puts`: a proxy in front of the destination, counting what reaches it."""
    report = tmp_path / "report.json"
    args = [*s3_overrides(pair, prefix, "od/" + prefix, str(tmp_path / "m.sqlite")), f"report={report}", *extra]
    if puts is not None:
        args = [a.replace(pair.destination.endpoint, puts.endpoint) for a in args]
    done = subprocess.run([sys.executable, "-m", "dth_ray", "sync", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(report.read_text())


def _seed(pair, prefix: str, count: int) -> dict[str, bytes]:
    items = {f"{prefix}p{i % 12:02d}/o{i:04d}": os.urandom(1000 + i % 500) for i in range(count)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    return items


BIG_BYTES = 40 * 1024**2  # above the near budget (transfer.near_buffer_size=24MiB), below transfer.buffer_size


def _seed_big(pair, prefix: str) -> dict[str, bytes]:
    items = {f"{prefix}big.bin": os.urandom(BIG_BYTES)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    return items


def test_a_run_the_driver_finishes_alone_never_starts_ray(e2e_env, unique_prefix, tmp_path):
    items = {**_seed(e2e_env, unique_prefix, 300), **_seed_big(e2e_env, unique_prefix)}
    puts = CountingProxy(e2e_env.destination.endpoint).start()
    try:
        report = _sync(e2e_env, unique_prefix, tmp_path, puts=puts)
    finally:
        puts.stop()
    assert report["status"] == "succeeded" and report["objects"]["copied"] == len(items)
    assert report["runtime"]["ray_up_s"] is None and report["runtime"]["actors_up_s"] is None
    assert report["nodes"] == [{"node_id": f"local:{socket.gethostname()}", "objects": len(items),
                                "bytes": sum(len(b) for b in items.values())}]
    assert len(listing(e2e_env.destination.client(), e2e_env.destination.bucket, "od/" + unique_prefix)) == 301
    assert puts.max_put_bytes == BIG_BYTES, "no Ray: the whole budget, one PUT"


def test_a_run_too_long_for_the_driver_alone_starts_ray_and_actors_share_it(e2e_env, unique_prefix, tmp_path):
    items = _seed(e2e_env, unique_prefix, 400)
    # At a job-wide 10 source requests/s 400 GETs take ~40 s: far past a 2 s threshold, and long enough for
    # actors to come up on a loaded machine (Ray up took 15 s at a load average of 6).
    report = _sync(e2e_env, unique_prefix, tmp_path, "transfer.max_requests_per_s=10", "runtime.ray_pays_after_s=2")
    runtime = report["runtime"]
    assert report["status"] == "succeeded" and report["objects"]["copied"] == len(items)
    assert runtime["ray_up_s"] is not None and runtime["actors_up_s"] is not None
    assert runtime["ray_up_s"] >= 2.0, "Ray started once the backlog said so, not at once"
    lane = runtime["driver_lane"]["objects"]
    assert 0 < lane < len(items), "the driver copied, and so did the actors"
    assert sum(n["objects"] for n in report["nodes"]) == len(items)


def test_runtime_ray_always_starts_ray_at_once(e2e_env, unique_prefix, tmp_path):
    big = _seed_big(e2e_env, unique_prefix)
    _seed(e2e_env, unique_prefix, 40)
    # A backlog that would never pay for Ray (an hour's threshold): `always` starts it anyway, at the start.
    puts = CountingProxy(e2e_env.destination.endpoint).start()
    try:
        report = _sync(e2e_env, unique_prefix, tmp_path, "runtime.ray=always", "runtime.ray_pays_after_s=3600",
                       puts=puts)
    finally:
        puts.stop()
    assert report["status"] == "succeeded" and report["objects"]["copied"] == 41
    assert report["runtime"]["ray_up_s"] is not None
    # With Ray on this machine every worker (the driver lane too) holds the near budget of a near source:
    # an object larger goes in parts, whichever worker copied it.
    assert puts.max_put_bytes == 8 * 1024**2, "the 40 MiB object in 8 MiB parts (three fit the near budget)"
    got = e2e_env.destination.client().get_object(Bucket=e2e_env.destination.bucket, Key=f"od/{unique_prefix}big.bin")
    assert got["Body"].read() == big[f"{unique_prefix}big.bin"]
