"""DynamoDB manifest writes counted at the server: a real `dth-ray sync` of 5,000 small objects on Ray (and a
no-change rerun) through a counting proxy in front of moto; the write requests and items the server saw equal
the report's own counters, and stay well under 0.05 items per object (benchmarks/bench_manifest.py runs the
same count at 100,000 objects)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.integration.helpers import s3_overrides
from tests.servers.dynamodb_counter import WRITE_OPS, DynamoCounter
from tests.servers.s3_servers import seed_objects

OBJECTS = 5_000


@pytest.fixture
def counter(moto_server):
    proxy = DynamoCounter(moto_server.endpoint).start()
    yield proxy
    proxy.stop()


def _sync(cmd: list[str], report) -> dict:
    done = subprocess.run(cmd, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr[-3000:]
    return json.loads(report.read_text())


def test_server_counts_equal_the_reports_counters(e2e_env, counter, unique_prefix, tmp_path):
    pair = e2e_env
    items = ((f"{unique_prefix}p{i % 50:02d}/o{i:05d}", i.to_bytes(4, "big") * 64) for i in range(OBJECTS))
    seed_objects(pair.source.client(), pair.source.bucket, items)
    os.environ.update({"MOTOC_ACCESS_KEY_ID": "moto-counted", "MOTOC_SECRET_ACCESS_KEY": "moto-counted-secret"})
    report_path = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "dth_ray", "sync",
           *s3_overrides(pair, unique_prefix, "counted/" + unique_prefix, str(tmp_path / "unused.sqlite")),
           "manifest=dynamodb", f"manifest.endpoint={counter.endpoint}", "manifest.region=us-east-1",
           "manifest.credentials=env:MOTOC", f"manifest.table=counted-{unique_prefix.strip('/')}",
           "runtime.ray=always", f"report={report_path}"]

    seen = []
    for run in ("first", "no-change rerun"):
        before = counter.counts()
        report = _sync(cmd, report_path)
        after = counter.counts()
        writes = after["write_requests"] - before["write_requests"]
        items_written = after["items_written"] - before["items_written"]
        assert report["objects"]["listed"] == OBJECTS, report["objects"]
        assert report["objects"]["copied"] == (OBJECTS if run == "first" else 0), report["objects"]
        assert (writes, items_written) == (report["manifest"]["writes"], report["manifest"]["items_written"]), (
            run, after["by_operation"], report["manifest"])
        assert items_written / OBJECTS <= 0.05 and writes / OBJECTS <= 0.05, (run, writes, items_written)
        seen.append(after)
    # No write was refused (DescribeTable's one ResourceNotFound before CreateTable is how the table is made).
    assert not any(c["errors"] for op, c in seen[-1]["by_operation"].items() if op in WRITE_OPS), seen[-1]
