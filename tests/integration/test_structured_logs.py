"""The runtime's JSON log lines carry their events' fields; watch logs routine at INFO, problems WARNING."""

from __future__ import annotations

import io
import json
import logging
import threading
import time

import pytest

from dth_ray.errors import Transient
from dth_ray.ops.logs import JsonFormatter
from dth_ray.plan.shard import shard_covers
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.manifests import open_manifest
from dth_ray.stores.memory import MemoryStore
from dth_ray.sync.watch import WatchService
from tests.integration.test_runtime_in_memory import dataset, seed, settings_for


@pytest.fixture
def json_log():
    """The `dth_ray` loggers at INFO into a JsonFormatter over a captured stream; returns a reader of the
    lines as dicts (each line must be one JSON object)."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("dth_ray")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    logger.removeHandler(handler)
    logger.setLevel(level)


def _shard_of(settings, run_id: int, key: str) -> str:
    """The id of the run's shard holding `key`, from the manifest's checkpoints."""
    manifest = open_manifest(settings.manifest, settings.job)
    try:
        return next(cp.shard.shard_id for cp in manifest.checkpoints(run_id) if shard_covers(cp.shard, key))
    finally:
        manifest.close()


def test_a_copy_failure_is_one_json_line_with_its_fields(tmp_path, buckets, json_log):  # noqa: F811
    objects = dataset(small=30)
    seed(buckets[0], objects)
    # every PUT of this key answers 503: the copier tries transfer.max_attempts=2 times, then gives up
    MemoryStore.faults(buckets[1]).fail("put", Transient("S3 503 SlowDown", code="ServiceUnavailable"),
                                        times=None, key_prefix="p1/o0001")
    settings = settings_for(tmp_path, buckets)
    report = run_sync(settings, in_process=1)
    assert report.status == "failed" and report.tally.failed == 1
    failed = [doc for doc in json_log() if doc["msg"].startswith("copy failed")]
    assert len(failed) == 1, json_log()
    doc = failed[0]
    assert doc["level"] == "WARNING" and doc["logger"] == "dth_ray.runtime.worker"
    assert "key=p1/o0001" in doc["msg"], "the message stays readable"
    assert doc["key"] == "p1/o0001" and doc["attempt"] == 2
    assert (doc["error_class"], doc["error_code"]) == ("Transient", "ServiceUnavailable")
    assert doc["job"] == settings.job and doc["run_id"] == report.run_id
    assert doc["shard"] == _shard_of(settings, report.run_id, "p1/o0001")


def test_a_shard_retry_is_one_json_line_with_its_fields(tmp_path, buckets, json_log):  # noqa: F811
    objects = dataset(small=30)
    seed(buckets[0], objects)
    # planning lists p3/ once; the shard's own first listing fails, its second attempt succeeds
    MemoryStore.faults(buckets[0]).fail("list_page", Transient("listing broke", code="InternalError"),
                                        times=1, key_prefix="p3/", after=1)
    settings = settings_for(tmp_path, buckets)
    report = run_sync(settings, in_process=1)
    assert report.status == "succeeded" and report.tally.copied == len(objects)
    retries = [doc for doc in json_log() if "trying again from its watermark" in doc["msg"]]
    assert len(retries) == 1, json_log()
    doc = retries[0]
    assert doc["level"] == "WARNING" and doc["logger"] == "dth_ray.runtime.driver"
    assert "'p3/'" in doc["msg"] and "attempt 1 failed" in doc["msg"]
    assert doc["attempt"] == 1 and doc["error_class"] == "Transient" and "listing broke" in doc["error"]
    assert doc["job"] == settings.job and doc["run_id"] == report.run_id
    assert doc["shard"] == _shard_of(settings, report.run_id, "p3/o0003")


@pytest.mark.parametrize("scan", ["succeeded", "failed"])
def test_watch_logs_routine_events_at_info_and_problems_at_warning(tmp_path, buckets, json_log, scan):  # noqa: F811
    objects = dataset(small=12)
    seed(buckets[0], objects)
    if scan == "failed":  # keys refused after planning: every object of the scan fails
        MemoryStore.faults(buckets[0]).fail("get", Transient("S3 500", code="InternalError"), times=None)
    settings = settings_for(tmp_path, buckets, "schedule.on_start=true", "schedule.interval=1h")
    service = WatchService(settings, in_process=1)
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while service.metrics.scans["runs"] < 1:
        assert time.monotonic() < deadline and runner.is_alive(), "the scan on start did not finish"
        time.sleep(0.05)
    service.stop("test")
    runner.join(60)
    assert not runner.is_alive()
    docs = json_log()
    lines = [doc for doc in docs if doc["logger"] == "dth_ray.sync.watch"]

    def line(start: str) -> dict:
        found = [doc for doc in lines if doc["msg"].startswith("watch: " + start)]
        assert len(found) == 1, (start, lines)
        return found[0]

    assert line(f"job {settings.job}; events off; schedule 1h")["level"] == "INFO"
    assert line("scheduled scan starting")["level"] == "INFO" and line("stopping (test)")["level"] == "INFO"
    finished = line(f"scheduled scan {scan} in")
    assert finished["level"] == ("INFO" if scan == "succeeded" else "WARNING"), finished
    assert finished["status"] == scan and finished["run_id"] >= 1
    assert all(doc["job"] == settings.job for doc in lines), lines
    # the service's own stop, with nothing in flight, is routine for the scheduler too
    stopping = [doc for doc in docs
                if doc["logger"] == "dth_ray.runtime.scheduler" and doc["msg"].startswith("stopping")]
    assert stopping and all(doc["level"] == "INFO" for doc in stopping), stopping
