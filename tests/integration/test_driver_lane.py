"""The driver lane copies shards from the shared queue (beside the dispatch loop) until it is empty or told to
stop, counting exactly; on the embedded cluster it keeps copying beside the actors once they are up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections import deque

import pytest

from dth_ray.cli import load_config
from dth_ray.errors import ConfigError
from dth_ray.model import Shard
from dth_ray.runtime.driver import DriverLane, WorkItem
from dth_ray.runtime.manifest_sqlite import SqliteManifest
from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import seed_objects


def test_driver_lane_takes_shards_until_stopped(e2e_env, unique_prefix, tmp_path):
    pair = e2e_env
    items = {f"{unique_prefix}s{p:02d}/o{i}": bytes([p]) * (i + 1) for p in range(12) for i in range(5)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    cfg = load_config(s3_overrides(pair, unique_prefix, "sw/" + unique_prefix, str(tmp_path / "m.sqlite")))
    shards = [Shard(f"s{p}", f"{unique_prefix}s{p:02d}/") for p in range(12)]
    manifest = SqliteManifest(cfg.manifest.path, "job-startup")
    manifest.start_run(shards)
    queue: deque = deque(WorkItem(s) for s in shards)

    worker = DriverLane(cfg, manifest, lambda: (manifest.run_id, queue)).start()
    assert worker.begun() == (manifest.run_id, queue)
    deadline = time.monotonic() + 60
    while len(queue) > 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop_taking()
    worker.join()
    done = worker.harvest()

    taken = {item.shard.shard_id for item, _ in done}
    assert len(done) + len(queue) == 12, "every shard is either done by the worker or still queued"
    assert taken.isdisjoint({item.shard.shard_id for item in queue})
    assert all(result.tally.copied == 5 and not result.error for _, result in done)
    done_checkpoints = {cp.shard.shard_id for cp in manifest.checkpoints(manifest.run_id) if cp.status == "done"}
    assert done_checkpoints == taken, "each finished shard left a done checkpoint"
    copied = listing(pair.destination.client(), pair.destination.bucket, "sw/" + unique_prefix)
    assert len(copied) == 5 * len(done)
    assert manifest.progress().copied == 5 * len(done)
    assert not worker.alive()


def test_a_planning_error_in_the_lane_reaches_the_driver(e2e_env, unique_prefix, tmp_path):
    """The lane plans the run in its own thread while Ray starts; when planning fails, `begun()` raises that
    error in the driver's thread and the lane copies nothing."""
    cfg = load_config(s3_overrides(e2e_env, unique_prefix, "pe/" + unique_prefix, str(tmp_path / "m.sqlite")))
    manifest = SqliteManifest(cfg.manifest.path, "job-plan-error")

    def plan():
        raise ConfigError("source.prefix='x' lists nothing")

    lane = DriverLane(cfg, manifest, plan).start()
    with pytest.raises(ConfigError, match="lists nothing"):
        lane.begun()
    lane.join()
    assert not lane.alive() and lane.harvest() == []


def test_a_fresh_sync_copies_in_the_driver_before_and_after_the_actors_are_up(e2e_env, unique_prefix, tmp_path):
    """`dth-ray sync` in its own process starts its own Ray: the driver copies from the start, and it is still
    copying after the first transfer actor came up (it is one more worker, not a stopgap); objects and bytes
    split exactly between the driver and the actors. A request cap stretches the run well past Ray's start."""
    pair = e2e_env
    items = {f"{unique_prefix}p{p:02d}/o{i:02d}": os.urandom(2048 + i) for p in range(30) for i in range(20)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    report_path = tmp_path / "report.json"
    args = [*s3_overrides(pair, unique_prefix, "fresh/" + unique_prefix, str(tmp_path / "m.sqlite")),
            "transfer.max_requests_per_s=50", f"report={report_path}"]
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
