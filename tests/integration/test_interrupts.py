"""`dth-ray sync` as a user runs it (its own embedded Ray and driver lane), stopped and broken on purpose:
SIGINT/SIGTERM in each phase (planning, copying, finishing) exit 130/143 with no traceback and the next
invocation resumes to exact counts; a second signal exits at once; a lane whose every shard fails before any
actor is up (keys refused right after the preflight) exits 1 and a rerun completes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.faultbed import FaultBed, dataset, env_for, wait_for
from tests.servers.fault_proxy import Rule, stall, status
from tests.servers.s3_servers import RclonePair


@pytest.fixture(scope="module")
def pair(tmp_path_factory, e2e_env):
    pair = RclonePair(str(tmp_path_factory.mktemp("interrupt-pair")))
    yield pair
    pair.stop()


@pytest.fixture
def bed(pair, unique_prefix, tmp_path):
    bed = FaultBed(pair, unique_prefix, tmp_path)
    yield bed
    bed.stop()


def sync(bed: FaultBed, report, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "dth_ray", "sync", *bed.overrides(f"report={report}", *extra)]
    return subprocess.Popen(cmd, env=env_for(bed.pair), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(proc: subprocess.Popen, timeout_s: float = 180) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=timeout_s)
    return proc.returncode, out, err


def load(report) -> dict:
    return json.loads(report.read_text())


def test_sigint_while_copying_exits_130_and_the_rerun_resumes_exactly(bed, tmp_path):
    bed.seed(dataset(bed.prefix, small=200, large=1))
    bed.dst_proxy.add(Rule(stall(0.03), op="PutObject"))
    report = tmp_path / "report.json"
    proc = sync(bed, report)
    wait_for(lambda: bed.dst_proxy.counts.get("0-PutObject-stall", {}).get("injected", 0) >= 30, what="30 PUTs")
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err and "rerun the same command to resume" in err
    first = load(report)
    assert first["status"] == "interrupted" and first["unfinished"]
    o = first["objects"]
    assert o["listed"] == o["copied"] + o["skipped"] + o["failed"]
    bed.clear()
    code, out, err = finish(sync(bed, report))
    assert code == 0, err[-2000:]
    second = load(report)
    assert second["resumed"] and second["run_id"] == first["run_id"]
    bed.check(second, copied=len(bed.objects))


def test_sigterm_while_planning_exits_143_with_nothing_started(bed, tmp_path):
    bed.seed(dataset(bed.prefix, small=30, large=0))
    # The planner's listings carry a delimiter; hold the second one (the first is the preflight's probe).
    bed.src_proxy.add(Rule(stall(30), op="ListObjectsV2", query_has=("delimiter",), after=1, times=1))
    report = tmp_path / "report.json"
    proc = sync(bed, report)
    wait_for(lambda: bed.src_proxy.counts.get("0-ListObjectsV2-stall", {}).get("injected", 0) >= 1,
             what="the stalled planning listing")
    proc.send_signal(signal.SIGTERM)
    code, out, err = finish(proc, 60)
    assert code == 143, err[-2000:]
    assert "Traceback" not in err and "interrupted while planning" in err
    bed.clear()
    code, out, err = finish(sync(bed, report))
    assert code == 0, err[-2000:]
    bed.check(load(report), copied=len(bed.objects))


def test_sigint_while_finishing_exits_130_and_the_rerun_finishes(bed, tmp_path):
    """Finishing: the copies are done and sync.delete is deleting what the source no longer has."""
    bed.seed(dataset(bed.prefix, small=40, large=0))
    client = bed.pair.destination.client()
    for i in range(3):
        client.put_object(Bucket=bed.pair.destination.bucket, Key=f"{bed.dst_prefix}d1/stale-{i}", Body=b"x")
    bed.dst_proxy.add(Rule(stall(30), op="DeleteObject", times=1))
    report = tmp_path / "report.json"
    proc = sync(bed, report, "sync.delete=true")
    wait_for(lambda: bed.dst_proxy.counts.get("0-DeleteObject-stall", {}).get("injected", 0) >= 1,
             what="the stalled delete")
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc, 60)
    assert code == 130, err[-2000:]
    assert "Traceback" not in err
    assert load(report)["status"] == "interrupted"
    bed.clear()
    code, out, err = finish(sync(bed, report, "sync.delete=true"))
    assert code == 0, err[-2000:]
    bed.check(load(report))
    code, out, err = finish(sync(bed, report, "sync.delete=true"))  # a new run deletes what is left
    assert code == 0, err[-2000:]
    assert not [k for k in bed.destination() if "stale" in k]


def test_ctrl_c_again_and_again_each_exits_130_and_the_last_run_completes(bed, tmp_path):
    bed.seed(dataset(bed.prefix, small=240, large=1))
    bed.dst_proxy.add(Rule(stall(0.03), op="PutObject"))
    report = tmp_path / "report.json"
    def puts() -> int:
        return bed.dst_proxy.counts.get("0-PutObject-stall", {}).get("injected", 0)

    for _ in range(3):
        before = puts()
        proc = sync(bed, report)
        wait_for(lambda before=before: puts() >= before + 15, what="15 more PUTs")
        proc.send_signal(signal.SIGINT)
        code, out, err = finish(proc)
        assert code == 130 and "Traceback" not in err, err[-2000:]
    bed.clear()
    code, out, err = finish(sync(bed, report))
    assert code == 0, err[-2000:]
    final = load(report)
    assert final["resumed"]
    bed.check(final, copied=len(bed.objects))


def test_a_second_signal_exits_at_once(bed, tmp_path):
    bed.seed(dataset(bed.prefix, small=20, large=1))
    bed.dst_proxy.add(Rule(stall(60), op="UploadPart", times=1))  # in flight past the stop grace
    proc = sync(bed, tmp_path / "report.json")
    wait_for(lambda: bed.dst_proxy.counts.get("0-UploadPart-stall", {}).get("injected", 0) >= 1,
             what="the stalled part")
    proc.send_signal(signal.SIGINT)
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGINT)
    code, out, err = finish(proc, 30)
    assert code == 130 and time.monotonic() - started < 10, err[-2000:]
    assert "again: exiting now" in err and "Traceback" not in err


def test_keys_refused_after_the_preflight_fail_every_shard_in_the_lane_then_a_rerun_completes(bed, tmp_path):
    """Every shard's listing is refused once planning is done: the driver lane fails them all, possibly before
    any actor is up. The run must not claim success: exit 1 naming the shards; the rerun resumes that run and
    copies everything exactly."""
    bed.seed(dataset(bed.prefix, small=60, large=0))
    # The preflight's probe and the planner's 6 listings (the prefix, then d0/..d4/) pass; then keys "rotate".
    bed.src_proxy.add(Rule(status(403, "InvalidAccessKeyId"), op="ListObjectsV2", after=7))
    report = tmp_path / "report.json"
    code, out, err = finish(sync(bed, report))
    assert code == 1, err[-2000:]
    first = load(report)
    assert first["status"] == "failed" and first["objects"]["copied"] == 0
    assert first["errors"] and all("PermissionDenied" in e for e in first["errors"]), first["errors"]
    bed.clear()
    code, out, err = finish(sync(bed, report))
    assert code == 0, err[-2000:]
    second = load(report)
    assert second["resumed"] and second["run_id"] == first["run_id"]
    bed.check(second, copied=len(bed.objects))


def test_the_destination_down_right_after_preflight_fails_the_run_and_a_rerun_completes(pair, bed, tmp_path):
    bed.seed(dataset(bed.prefix, small=80, large=1))
    bed.dst_proxy.add(Rule(status(503), after=1))  # everything after the preflight's probe
    report = tmp_path / "report.json"
    code, out, err = finish(sync(bed, report, "transfer.max_attempts=2"))
    assert code == 1, err[-2000:]
    first = load(report)
    assert first["status"] == "failed" and first["objects"]["copied"] == 0
    bed.clear()
    code, out, err = finish(sync(bed, report))
    assert code == 0, err[-2000:]
    bed.check(load(report), copied=len(bed.objects))
