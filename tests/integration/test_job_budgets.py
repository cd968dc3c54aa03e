"""Job-wide budgets: `transfer.max_requests_per_s` holds for the whole job at the source, whatever the number of
workers — counted where the requests land (the in-memory store's call log; a proxy in front of the real S3
server with the driver lane and two Ray actors) — and the budget is used, not starved."""

from __future__ import annotations

import bisect
import json
import os
import subprocess
import sys

from dth_ray.runtime.driver import run_sync
from dth_ray.stores.memory import MemoryStore
from tests.integration.helpers import s3_overrides
from tests.integration.test_runtime_in_memory import assert_exact, dataset, seed, settings_for
from tests.servers.fault_proxy import FaultProxy
from tests.servers.s3_servers import seed_objects


def busiest(times: list[float], window_s: float) -> int:
    """The most requests in any `window_s` of `times` (sorted)."""
    return max((bisect.bisect_right(times, t + window_s) - i for i, t in enumerate(times)), default=0)


def test_two_in_process_workers_share_the_budget(tmp_path, buckets):
    objects = dataset(small=900)
    seed(buckets[0], objects)
    calls = MemoryStore.faults(buckets[0])
    start = len(calls.times)
    report = run_sync(settings_for(tmp_path, buckets, "transfer.max_requests_per_s=150"), in_process=2)
    assert_exact(report, objects, buckets, copied=len(objects))
    times = calls.times[start:]
    span_s = times[-1] - times[0]
    assert busiest(times, 2.0) <= 150 * 2 * 1.1 + 1, busiest(times, 2.0)
    assert len(times) / span_s >= 0.6 * 150, f"{len(times)} requests in {span_s:.1f}s: the budget was starved"


def test_the_lane_and_two_actors_keep_the_job_under_its_budget_at_the_source(e2e_env, unique_prefix, tmp_path):
    pair = e2e_env
    items = {f"{unique_prefix}p{i % 8}/o{i:05d}": os.urandom(512 + i % 256) for i in range(4400)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    with FaultProxy(pair.source.endpoint) as proxy:
        report = tmp_path / "report.json"
        args = [*s3_overrides(pair, unique_prefix, "budget/" + unique_prefix, str(tmp_path / "m.sqlite")),
                f"source.endpoint={proxy.endpoint}", "runtime.ray=always", "transfer.actors=2",
                "transfer.max_requests_per_s=200", f"report={report}"]
        done = subprocess.run([sys.executable, "-m", "dth_ray", "sync", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=600)
        times = list(proxy.request_times)
    assert done.returncode == 0, done.stderr[-2000:]
    out = json.loads(report.read_text())
    assert out["status"] == "succeeded" and out["objects"]["copied"] == len(items)
    assert out["runtime"]["actors_up_s"] is not None, "the actors took part"
    assert len(times) >= len(items)
    peak = busiest(times, 10.0)
    assert peak <= 200 * 10 * 1.1, f"{peak} source requests in one 10 s window"
    span_s = times[-1] - times[0]
    assert len(times) / span_s >= 0.5 * 200, f"{len(times)} requests in {span_s:.1f}s: the budget was starved"
