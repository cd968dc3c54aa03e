"""`dth-ray console` over HTTP (its browser tests are in test_console_browser.py): a real sync with failures
planted, then the console as a subprocess on the same manifest — the jobs list and the job page with their
counts, failed keys escaped and paged, no credential anywhere; a run whose heartbeat stopped shows as
interrupted; the token guards any address but loopback; every response has a strict CSP; and a job with a
million failed keys still answers in under a second."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import pytest

from dth_ray.compose import load_config
from dth_ray.errors import PermissionDenied, Throttled
from dth_ray.model import Shard
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.manifest import LiveRecord, ObjectRecord
from dth_ray.runtime.manifest_sqlite import SqliteManifest
from dth_ray.runtime.manifests import open_manifest
from dth_ray.settings import resolve
from dth_ray.stores.memory import MemoryStore
from tests.integration.console_helpers import REPO, Console, get
from tests.integration.test_runtime_in_memory import seed, settings_for

SECRET = "console-test-secret-value-4b1d"
TOKEN = "console-token-0123456789abcdef"
EVIL = "bad/<img src=x onerror=alert(1)>"


def _objects() -> dict[str, bytes]:
    objects = {f"ok/{i:03d}": bytes([i % 251]) * (100 + i) for i in range(60)}
    objects.update({f"bad/{i:03d}": b"x" * 50 for i in range(12)})
    objects[EVIL] = b"evil"
    objects.update({f"slow/{i:02d}": b"s" * 20 for i in range(4)})
    return objects


@pytest.fixture
def finished_job(tmp_path, buckets, monkeypatch):
    """A run that failed with 13 denied keys and 4 throttled ones (tried 3 times each), on SQLite."""
    monkeypatch.setenv("CONSOLESRC_ACCESS_KEY_ID", "AKIACONSOLETEST")
    monkeypatch.setenv("CONSOLESRC_SECRET_ACCESS_KEY", SECRET)
    seed(buckets[0], _objects())
    MemoryStore.faults(buckets[0]).fail("get", PermissionDenied("access denied", "AccessDenied"), times=None,
                                        key_prefix="bad/")
    MemoryStore.faults(buckets[0]).fail("get", Throttled("slow down", None, "SlowDown"), times=None,
                                        key_prefix="slow/")
    settings = settings_for(tmp_path, buckets, "job=console-e2e", "transfer.max_attempts=3",
                            "source.credentials=env:CONSOLESRC")
    report = run_sync(settings, in_process=2)
    assert report.status == "failed" and report.tally.failed == 17 and report.tally.listed == 77
    return settings


def test_jobs_list_and_job_page_show_the_run_its_failures_and_commands(finished_job):
    manifest_path = finished_job.manifest.path
    console = Console(f"manifest.path={manifest_path}")
    try:
        status, headers, body = get(console.base, "/")
        assert status == 200 and headers["content-security-policy"].startswith("default-src 'none'")
        assert "script-src 'self'" in headers["content-security-policy"] and headers["x-frame-options"] == "DENY"
        row = re.search(r'<tr class="job" data-job="console-e2e">(.*?)</tr>', body).group(1)
        assert 'class="state failed"' in row and '<span class="objects">77</span>' in row
        assert '<td class="failed">17</td>' in row and "memory://" in row

        status, _, api = get(console.base, "/api/jobs")
        (job,) = json.loads(api)["jobs"]
        run = job["latest"]
        assert (run["state"], run["objects_done"], run["copied"], run["failed"]) == ("failed", 77, 60, 17)
        assert run["percent"] == 100.0 and not run["stale"]

        status, headers, page = get(console.base, "/job?job=console-e2e")
        assert status == 200 and "default-src 'none'" in headers["content-security-policy"]
        assert 'id="throughput-chart"' in page and "<polyline" in page
        assert 'id="runs"' in page and 'id="shard-grid"' in page
        failures = re.findall(r'<tr class="failure"><td class="key"><code>(.*?)</code></td><td>(.*?)</td>'
                              r'<td>(.*?)</td><td class="attempts">(\d+)</td>', page)
        assert len(failures) == 17
        assert ("bad/000", "PermissionDenied", "AccessDenied", "1") in failures
        assert ("slow/00", "Throttled", "SlowDown", "3") in failures
        assert "bad/&lt;img src=x onerror=alert(1)&gt;" in page and EVIL not in page  # escaped, never markup
        assert "source.credentials=env:CONSOLESRC" in page and SECRET not in page and SECRET not in api
        assert f"dth-ray status job=console-e2e manifest.path={manifest_path}" in page

        _, _, detail = get(console.base, "/api/job?job=console-e2e")
        d = json.loads(detail)
        assert [r["run_id"] for r in d["runs"]] == [1] and d["runs"][0]["resumed"] is False
        assert d["throughput"] and d["commands"]["resume"].startswith("dth-ray sync source.type=memory")
        assert get(console.base, "/job?job=nope")[0] == 404
        assert get(console.base, "/static/console.js")[0] == 200
        assert get(console.base, "/", method="POST")[0] == 405
        assert get(console.base, "/", {"Host": "attacker.example"})[0] == 403, "DNS rebinding guard"
        assert get(console.base, "/", {"Host": f"localhost:{console.port}"})[0] == 200
    finally:
        console.stop()


def test_a_rerun_shows_as_resumed_and_its_copies_leave_the_failure_list(finished_job, buckets):
    MemoryStore.faults(buckets[0]).clear()
    report = run_sync(finished_job, in_process=2)
    assert report.status == "succeeded" and report.resumed
    console = Console(f"manifest.path={finished_job.manifest.path}")
    try:
        d = json.loads(get(console.base, "/api/job?job=console-e2e")[2])
        assert d["run"]["state"] == "succeeded" and d["run"]["resumed"] and d["run"]["executions"] == 2
        assert d["failures"] == [], "every failed key was copied by the second execution"
    finally:
        console.stop()


def test_a_run_whose_heartbeat_stopped_shows_interrupted(tmp_path):
    path = str(tmp_path / "m.sqlite")
    manifest = SqliteManifest(path, "cut-off")
    run = manifest.start_run([Shard("s", "a/")], "s3://a/", "s3://b/", ["source.bucket=a"])
    manifest.publish(LiveRecord(run, heartbeat=time.time() - 60, objects=10, total_objects=40))
    console = Console(f"manifest.path={path}")
    try:
        (job,) = json.loads(get(console.base, "/api/jobs")[2])["jobs"]
        assert (job["latest"]["state"], job["latest"]["stale"]) == ("interrupted", True)
        assert "no heartbeat for 1m" in get(console.base, "/")[2]
        manifest.publish(LiveRecord(run, heartbeat=time.time(), objects=20, total_objects=40, bytes_per_s=5e6))
        (job,) = json.loads(get(console.base, "/api/jobs")[2])["jobs"]
        assert (job["latest"]["state"], job["latest"]["objects_done"], job["latest"]["percent"]) == (
            "running", 20, 50.0)
    finally:
        console.stop()
        manifest.close()


def test_a_console_off_loopback_needs_its_token(tmp_path):
    path = str(tmp_path / "m.sqlite")
    SqliteManifest(path, "guarded").close()
    refused = subprocess.run([sys.executable, "-m", "dth_ray", "console", f"manifest.path={path}",
                              "console.host=0.0.0.0", "console.port=0"], capture_output=True, text=True,
                             timeout=60, env={**os.environ, "PYTHONPATH": REPO})
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "console.token" in refused.stderr
    console = Console(f"manifest.path={path}", "console.host=0.0.0.0", "console.token=env:CONSOLE_TOKEN",
                      env={"CONSOLE_TOKEN": TOKEN})
    try:
        assert f"?token={TOKEN}" in console.url
        for where in ("/", "/api/jobs", "/job?job=guarded", "/static/console.js"):
            status, headers, body = get(console.base, where)
            assert status == 401 and headers["www-authenticate"].startswith("Bearer"), where
            assert TOKEN not in body and "default-src 'none'" in headers["content-security-policy"]
        assert get(console.base, "/", {"Authorization": "Bearer wrong-token-0123456789"})[0] == 401
        assert get(console.base, "/api/jobs", {"Authorization": f"Bearer {TOKEN}"})[0] == 200
        status, headers, _ = get(console.base, f"/job?job=guarded&token={TOKEN}")
        assert status == 303 and headers["location"] == "/job?job=guarded", "the token leaves the URL"
        cookie = headers["set-cookie"].split(";")[0]
        assert TOKEN not in cookie and "HttpOnly" in headers["set-cookie"]
        assert get(console.base, "/", {"Cookie": cookie})[0] == 200
        assert get(console.base, "/", {"Cookie": "dth_console=forged"})[0] == 401
    finally:
        console.stop()


@pytest.mark.timeout(600)
def test_a_job_with_a_million_failed_keys_answers_within_a_second(tmp_path, capsys):
    """Built through the manifest's own batch write path; the job page reads one page of failures by key."""
    path = str(tmp_path / "big.sqlite")
    manifest = open_manifest(settings_for(tmp_path, ("unused-src", "unused-dst"), f"manifest.path={path}").manifest,
                             "million")
    shards = [Shard(f"s{i:02d}", f"k/{i:02d}") for i in range(20)]
    run = manifest.start_run(shards, "s3://big/", "s3://lake/", ["source.bucket=big"])
    started = time.monotonic()
    batch = 20_000
    for start in range(0, 1_000_000, batch):
        manifest.record([ObjectRecord(f"k/{i % 20:02d}/{i:07d}", 1, "e", f"k/{i:07d}", "", "failed",
                                      "PermissionDenied: access denied", code="AccessDenied", attempts=1)
                         for i in range(start, start + batch)])
    built_s = time.monotonic() - started
    manifest.publish(LiveRecord(run, heartbeat=time.time(), objects=1_000_000, total_objects=2_000_000,
                                failed=1_000_000, samples=((time.time() - 5, 0, 0), (time.time(), 10**6, 0))))
    manifest.close()
    console = Console(f"manifest.path={path}")
    try:
        timings = {}
        for where in ("/", "/job?job=million", "/job?job=million&after=k/10/0500010", "/api/job?job=million"):
            get(console.base, where)  # first touch: the OS's file cache, the console's open manifest
            started = time.monotonic()
            status, _, body = get(console.base, where)
            timings[where] = time.monotonic() - started
            assert status == 200, where
        page = get(console.base, "/job?job=million&after=k/10/0500010")[2]
        keys = re.findall(r'<td class="key"><code>(.*?)</code>', page)
        assert keys[0] == "k/10/0500030" and len(keys) == 50 and keys == sorted(keys)
        assert 'class="next"' in page
        with capsys.disabled():
            print(f"\nconsole, 1,000,000 failed keys in SQLite (built in {built_s:.1f} s): "
                  + ", ".join(f"{w} {t * 1000:.0f} ms" for w, t in timings.items()))
        assert max(timings.values()) < 1.0, timings
    finally:
        console.stop()


def test_the_console_reads_a_dynamodb_manifest(moto_server, monkeypatch, unique_prefix):
    monkeypatch.setenv("MOTOC_ACCESS_KEY_ID", "moto-console")
    monkeypatch.setenv("MOTOC_SECRET_ACCESS_KEY", "moto-console-secret")
    args = ["manifest=dynamodb", f"manifest.endpoint={moto_server.endpoint}", "manifest.region=us-east-1",
            "manifest.credentials=env:MOTOC", f"manifest.table=console-{unique_prefix.strip('/')}"]
    settings = resolve(load_config(args, check=False), check=False)
    manifest = open_manifest(settings.manifest, "dynamo-job")
    run = manifest.start_run([Shard("s", "")], "oss://logs/", "s3://lake/", ["source=oss", "source.bucket=logs"])
    manifest.record([ObjectRecord(f"k/{i:03d}", 1, "e", f"k/{i:03d}", "", "failed", "Transient: reset",
                                  code="RequestTimeout", attempts=5) for i in range(60)])
    manifest.publish(LiveRecord(run, heartbeat=time.time(), objects=60, total_objects=100, failed=60))
    manifest.close()
    console = Console(*args)
    try:
        (job,) = json.loads(get(console.base, "/api/jobs")[2])["jobs"]
        assert (job["job"], job["latest"]["state"], job["latest"]["failed"]) == ("dynamo-job", "running", 60)
        d = json.loads(get(console.base, "/api/job?job=dynamo-job")[2])
        assert len(d["failures"]) == 50 and d["failures_next"] == "k/049"
        assert d["failures"][0]["attempts"] == 5 and d["failures"][0]["code"] == "RequestTimeout"
        assert "manifest.credentials=env:MOTOC" in d["commands"]["status"]
        page = json.loads(get(console.base, "/api/job?job=dynamo-job&after=k/049")[2])
        assert [f["key"] for f in page["failures"]] == [f"k/{i:03d}" for i in range(50, 60)]
    finally:
        console.stop()
