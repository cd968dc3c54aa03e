"""Faults injected at a proxy in front of real rclone S3 servers (SigV4 checked), on the source and on the
destination: 500s, 503 SlowDown, connection resets, truncated bodies, a flipped byte in a GET body (ETag
unchanged), stalls longer than the read timeout; and a source object overwritten mid-copy, the destination
SIGKILLed and restarted on the same port. Every run ends either succeeded with the destination equal to the
source and exact counts, or failed — after which a rerun (faults cleared) completes exactly. A poller reads
every object the destination shows during the runs: none may ever be torn or corrupt. No multipart upload is
left open after a succeeded run. Fault counts are kept in each test's tmp folder (src-/dst-faults.json)."""

from __future__ import annotations

import threading

import pytest

from dth_ray.compose import load_settings
from dth_ray.runtime.driver import run_sync
from tests.integration.faultbed import FaultBed, dataset, wait_for
from tests.servers.fault_proxy import Rule, flip, reset, reset_mid_body, slowdown, stall, status, truncate
from tests.servers.s3_servers import RclonePair

# Which faults, where, how often (rules are tried in order; the first that fires decides).
SCENARIOS = {
    "source-500s": [("src", Rule(status(500), op="GetObject", probability=0.15)),
                    ("src", Rule(status(500), op="ListObjectsV2", times=3))],
    "source-slowdown": [("src", Rule(slowdown(retry_after=0.2), op="ListObjectsV2", times=4)),
                        ("src", Rule(slowdown(), op="GetObject", probability=0.1))],
    "source-resets": [("src", Rule(reset(), op="GetObject", probability=0.1)),
                      ("src", Rule(reset_mid_body(), op="GetObject", ranged=True, times=3))],
    "source-truncated": [("src", Rule(truncate(), op="GetObject", probability=0.1)),
                         ("src", Rule(truncate(0.3), op="ListObjectsV2", times=2))],
    "source-flipped-byte": [("src", Rule(flip(), op="GetObject", ranged=False, times=6)),
                            ("src", Rule(flip(), op="GetObject", ranged=True, times=3))],
    "source-stalls": [("src", Rule(stall(4.0), op="GetObject", times=3))],
    "destination-500s": [("dst", Rule(status(500), op="PutObject", probability=0.15)),
                         ("dst", Rule(status(500), op="UploadPart", times=2)),
                         ("dst", Rule(slowdown(), op="CompleteMultipartUpload", times=1))],
    "destination-resets": [("dst", Rule(reset(), op="UploadPart", times=4)),
                           ("dst", Rule(reset(), op="PutObject", probability=0.05))],
    "destination-truncated-listing": [("dst", Rule(truncate(), op="ListObjectsV2", times=3))],
    "destination-stalls": [("dst", Rule(stall(4.0), op="PutObject", times=2)),
                           ("dst", Rule(stall(4.0), op="UploadPart", times=1))],
    "mixed-both-sides": [("src", Rule(status(503), probability=0.05)),
                         ("src", Rule(truncate(), op="GetObject", probability=0.05)),
                         ("dst", Rule(status(500), probability=0.05)),
                         ("dst", Rule(reset(), op="PutObject", probability=0.03))],
}


@pytest.fixture(scope="module")
def fault_pair(tmp_path_factory, e2e_env):
    """Servers of this module's own (a scenario may kill one), with the session's keys (env:E2ESRC/E2EDST)."""
    pair = RclonePair(str(tmp_path_factory.mktemp("fault-pair")))
    yield pair
    pair.stop()


@pytest.fixture
def bed(fault_pair, unique_prefix, tmp_path):
    bed = FaultBed(fault_pair, unique_prefix, tmp_path)
    yield bed
    bed.stop()


def run_until_done(bed: FaultBed, settings, runs: int = 2) -> list[dict]:
    """Run; after a failed run, clear the faults and rerun. The last run must succeed exactly (checked by the
    caller); every run's counts add up."""
    reports = []
    for _ in range(runs):
        report = run_sync(settings).to_json()
        o = report["objects"]
        assert o["listed"] == o["copied"] + o["skipped"] + o["failed"], report
        assert sum(n["objects"] for n in report["nodes"]) == o["copied"], report
        reports.append(report)
        if report["status"] == "succeeded":
            break
        assert report["status"] == "failed" and (report["errors"] or report["failures"]), report
        bed.clear()
    return reports


@pytest.mark.parametrize("scenario", sorted(SCENARIOS))
def test_injected_faults_end_exact_or_failed_then_complete(bed, ray_local, scenario):
    bed.seed(dataset(bed.prefix))
    for side, rule in SCENARIOS[scenario]:
        (bed.src_proxy if side == "src" else bed.dst_proxy).add(rule)
    settings = load_settings(bed.overrides("source.read_timeout_s=1.5", "destination.read_timeout_s=1.5"))
    with bed.poller() as poller:
        reports = run_until_done(bed, settings)
    injected = sum(c["injected"] for p in (bed.src_proxy, bed.dst_proxy) for c in p.counts.values())
    assert injected > 0, "the scenario injected faults"
    bed.check(reports[-1], copied=len(bed.objects))
    assert poller.bad == [], poller.bad
    assert poller.seen >= len(bed.objects)


def test_a_source_overwritten_mid_copy_is_copied_whole_never_torn(bed, ray_local):
    """The listed version changes while its parts are read: If-Match fails, the new version is read from its
    start; the destination only ever shows the old or the new bytes, and ends with the new ones."""
    objects = dataset(bed.prefix, small=20, large=1)
    bed.seed(objects)
    big = next(k for k in objects if "/big/" in k)
    bed.dst_proxy.add(Rule(stall(0.5), op="UploadPart", times=2))  # time to overwrite between parts
    settings = load_settings(bed.overrides("transfer.parts_in_flight=1"))  # part 2 is read after part 1 is sent
    done: list = []
    with bed.poller() as poller:
        runner = threading.Thread(target=lambda: done.append(run_sync(settings).to_json()))
        runner.start()
        wait_for(lambda: bed.dst_proxy.counts.get("0-UploadPart-stall", {}).get("matched", 0) >= 1,
                 what="the first part of the large object")
        bed.overwrite(big, bytes(reversed(objects[big])))
        runner.join(120)
    report = done[0]
    if report["status"] != "succeeded":
        bed.clear()
        report = run_sync(settings).to_json()
    bed.check(report, copied=len(objects))
    assert poller.bad == [], poller.bad


def test_the_destination_killed_and_restarted_during_the_copy(fault_pair, bed, ray_local):
    """SIGKILL the destination server mid-run and bring it back on the same port: the run ends succeeded or
    failed, and a rerun completes exactly (metadata is not compared: rclone keeps it in memory only)."""
    bed.seed(dataset(bed.prefix, small=150, large=2))
    bed.dst_proxy.add(Rule(stall(0.02), op="PutObject"))  # a run long enough to be hit
    settings = load_settings(bed.overrides("transfer.max_attempts=3"))
    done: list = []
    with bed.poller() as poller:
        runner = threading.Thread(target=lambda: done.append(run_sync(settings).to_json()))
        runner.start()
        wait_for(lambda: bed.dst_proxy.counts.get("0-PutObject-stall", {}).get("injected", 0) >= 40,
                 what="40 PUTs")
        fault_pair.destination.kill()
        threading.Event().wait(1.0)
        fault_pair.destination.restart()
        runner.join(180)
        reports = [done[0]]
        if reports[0]["status"] != "succeeded":
            bed.clear()
            reports.append(run_sync(settings).to_json())
    for report in reports:
        o = report["objects"]
        assert o["listed"] == o["copied"] + o["skipped"] + o["failed"]
    bed.check(reports[-1], copied=len(bed.objects))
    assert poller.bad == [], poller.bad
