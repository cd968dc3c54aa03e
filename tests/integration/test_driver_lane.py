"""The driver lane is one more worker of the scheduler's pool: it runs shards alone when there is no Ray, and on
the embedded cluster it keeps copying beside the actors once they are up, counting exactly."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import pytest

from dth_ray.compose import load_settings
from dth_ray.errors import ConfigError
from dth_ray.model import Shard, ShardTask
from dth_ray.runtime.manifest_sqlite import SqliteManifest
from dth_ray.runtime.scheduler import Item, Scheduler, Workers
from dth_ray.runtime.worker import TransferWorker
from tests.integration.helpers import listing, s3_overrides
from tests.servers.counting_proxy import CountingProxy
from tests.servers.s3_servers import seed_objects


class _Shards:
    """A minimal scheduler client: collects results."""

    def __init__(self):
        self.done: list = []

    def on_item_done(self, item, result, where):
        self.done.append((item, result, where))

    def on_item_failed(self, item, error, where):
        raise AssertionError(f"{item.key} failed: {error}")

    def redo(self, item, where, lost):
        return item

    def on_tick(self, scheduler):
        return None


def test_the_driver_lane_runs_shards_as_a_worker_of_the_pool(e2e_env, unique_prefix, tmp_path):
    """With no Ray at all, the scheduler's in-process worker (the driver lane) runs every shard, each once,
    and every finished shard leaves a done checkpoint."""
    pair = e2e_env
    items = {f"{unique_prefix}s{p:02d}/o{i}": bytes([p]) * (i + 1) for p in range(12) for i in range(5)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    settings = load_settings(s3_overrides(pair, unique_prefix, "sw/" + unique_prefix, str(tmp_path / "m.sqlite")))
    shards = [Shard(f"s{p}", f"{unique_prefix}s{p:02d}/") for p in range(12)]
    manifest = SqliteManifest(settings.manifest.path, "job-startup")
    run_id = manifest.start_run(shards)
    scheduler = Scheduler(Workers(build_local=lambda: TransferWorker(settings.worker, manifest, "lane")))
    client = _Shards()
    try:
        outcome = scheduler.run(client, [Item(s.shard_id, "run_shard", (ShardTask(s, run_id=run_id),)) for s in shards])
    finally:
        scheduler.close()
    assert outcome.completed and not outcome.unfinished
    assert sorted(item.key for item, _, _ in client.done) == sorted(s.shard_id for s in shards)
    assert all(result.tally.copied == 5 and not result.error for _, result, _ in client.done)
    assert all(where.local for _, _, where in client.done)
    done_checkpoints = {cp.shard.shard_id for cp in manifest.checkpoints(run_id) if cp.status == "done"}
    assert done_checkpoints == {s.shard_id for s in shards}
    copied = listing(pair.destination.client(), pair.destination.bucket, "sw/" + unique_prefix)
    assert len(copied) == 60


def test_a_planning_error_in_the_lane_reaches_the_driver(e2e_env, unique_prefix, tmp_path):
    """The lane plans the run in its own loop while Ray starts; when planning fails, the scheduler's wait()
    raises that error in the driver's thread and nothing is dispatched."""
    settings = load_settings(s3_overrides(e2e_env, unique_prefix, "pe/" + unique_prefix, str(tmp_path / "m.sqlite")))
    manifest = SqliteManifest(settings.manifest.path, "job-plan-error")
    scheduler = Scheduler(Workers(build_local=lambda: TransferWorker(settings.worker, manifest, "lane")))

    async def plan():
        raise ConfigError("source.prefix='x' lists nothing")

    client = _Shards()
    try:
        scheduler.start(client, scheduler.run_local(plan))
        with pytest.raises(ConfigError, match="lists nothing"):
            scheduler.wait()
    finally:
        scheduler.close()
    assert client.done == []


def test_a_fresh_sync_copies_in_the_driver_before_and_after_the_actors_are_up(e2e_env, unique_prefix, tmp_path):
    """`dth-ray sync` in its own process starts its own Ray: the driver copies from the start, and it is still
    copying after the first transfer actor came up (it is one more worker, not a stopgap); objects and bytes
    split exactly between the driver and the actors. A request cap stretches the run well past Ray's start."""
    pair = e2e_env
    items = {f"{unique_prefix}p{p:02d}/o{i:02d}": os.urandom(2048 + i) for p in range(30) for i in range(20)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    report_path = tmp_path / "report.json"
    args = [*s3_overrides(pair, unique_prefix, "fresh/" + unique_prefix, str(tmp_path / "m.sqlite")),
            "transfer.max_requests_per_s=30", f"report={report_path}", "runtime.ray=always"]  # ~40 s in all
    done = subprocess.run([sys.executable, "-m", "dth_ray", "sync", *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(report_path.read_text())
    runtime, lane = report["runtime"], report["runtime"]["driver_lane"]

    assert report["objects"]["copied"] == len(items) == sum(n["objects"] for n in report["nodes"])
    assert runtime["ray_up_s"] is not None and runtime["actors_up_s"] is not None
    assert runtime["ray_up_s"] <= runtime["actors_up_s"]
    assert lane["last_shard_done_s"] > runtime["actors_up_s"] + 1.0, "the driver kept copying beside the actors"
    assert 0 < lane["objects"] < len(items), "the driver and the actors both copied"
    assert 0 < lane["bytes"] < sum(len(body) for body in items.values())
    copied = listing(pair.destination.client(), pair.destination.bucket, "fresh/" + unique_prefix)
    assert len(copied) == len(items)


def test_beside_ray_a_worker_holds_the_near_budget_for_a_near_source(e2e_env, unique_prefix, tmp_path):
    """A worker beside Ray (`with_ray`) whose source answers within 10 ms (the kernel's round trip on its
    connections: loopback here) holds `transfer.near_buffer_size` (24 MiB): a 40 MiB object goes in 8 MiB
    parts (three fit the budget), no PUT body above that reaches the destination. Without Ray the same worker sends it as one PUT."""
    pair = e2e_env
    items = {f"{unique_prefix}a-first": os.urandom(1 << 20), f"{unique_prefix}z-big": os.urandom(40 << 20)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    largest = {}
    for beside_ray in (True, False):
        puts = CountingProxy(pair.destination.endpoint).start()
        overrides = [o.replace(pair.destination.endpoint, puts.endpoint) for o in s3_overrides(
            pair, unique_prefix, f"nb{beside_ray:d}/{unique_prefix}", str(tmp_path / f"m{beside_ray:d}.sqlite"))]
        settings = load_settings(overrides)
        assert settings.worker.transfer.near_buffer_bytes == 24 * 1024**2
        manifest = SqliteManifest(settings.manifest.path, "job-near")
        shard = Shard("s0", unique_prefix)
        run_id = manifest.start_run([shard])
        lane = functools.partial(TransferWorker, settings.worker, manifest, "lane",
                                 with_ray=(lambda: True) if beside_ray else (lambda: False))
        scheduler = Scheduler(Workers(build_local=lane))
        client = _Shards()
        try:
            outcome = scheduler.run(client, [Item("s0", "run_shard", (ShardTask(shard, run_id=run_id),))])
        finally:
            scheduler.close()
            puts.stop()
        assert outcome.completed and client.done[0][1].tally.copied == 2
        got = pair.destination.client().get_object(Bucket=pair.destination.bucket,
                                                   Key=f"nb{beside_ray:d}/{unique_prefix}z-big")
        assert got["Body"].read() == items[f"{unique_prefix}z-big"]
        largest[beside_ray] = puts.max_put_bytes
    assert largest == {True: 8 << 20, False: 40 << 20}
