"""Crash resume: SIGKILL the driver mid-upload and rerun (part-level resume, bounded re-sends, nothing left
open, each object counted once); SIGKILL a transfer actor and the run still completes exactly."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time

import pytest

from dth_ray.compose import load_settings
from dth_ray.naming import job_name
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.manifests import open_manifest
from tests.integration.helpers import listing, md5_of, s3_overrides
from tests.servers.counting_proxy import CountingProxy
from tests.servers.s3_servers import seed_objects

MiB = 1024 * 1024
PART = 16 * MiB  # the default part size for these object sizes (checked against the report below)


@pytest.fixture
def proxy(e2e_env):
    p = CountingProxy(e2e_env.destination.endpoint).start()
    yield p
    p.stop()


def _sync_cmd(pair, proxy, src_prefix, dst_prefix, manifest, report) -> list[str]:
    args = s3_overrides(pair, src_prefix, dst_prefix, manifest)
    args = [a if not a.startswith("destination.endpoint=") else f"destination.endpoint={proxy.endpoint}"
            for a in args]
    # Test-sized objects (80-100 MiB) that still go up in parts (the default threshold is 200 MiB).
    return [sys.executable, "-m", "dth_ray", "sync", *args, f"report={report}", "transfer.multipart_threshold=64MiB"]


def _kill_when(proc: subprocess.Popen, proxy: CountingProxy, at_bytes: int, timeout_s: float = 240) -> int:
    """SIGKILL the driver once the destination has received `at_bytes`; returns the PUTs in flight then."""
    deadline = time.monotonic() + timeout_s
    while proxy.snapshot()[0] < at_bytes:
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.02)
    before = proxy.snapshot()[1]
    os.kill(proc.pid, signal.SIGKILL)
    after = proxy.snapshot()[1]
    proc.wait(60)
    return max(before, after)


def _open_uploads(client, bucket: str, prefix: str) -> list:
    return client.list_multipart_uploads(Bucket=bucket, Prefix=prefix).get("Uploads", [])


@pytest.fixture(params=["sqlite", "dynamodb"])
def manifest_overrides(request, tmp_path, unique_prefix) -> list[str]:
    """Where the job's manifest lives: the embedded SQLite file or DynamoDB on a moto server over HTTP."""
    if request.param == "sqlite":
        return []
    moto = request.getfixturevalue("moto_server")
    os.environ.update({"MOTOM_ACCESS_KEY_ID": "moto-manifest", "MOTOM_SECRET_ACCESS_KEY": "moto-manifest-secret"})
    return ["manifest=dynamodb", f"manifest.endpoint={moto.endpoint}", "manifest.region=us-east-1",
            "manifest.credentials=env:MOTOM", f"manifest.table=resume-{unique_prefix.strip('/')}"]


def test_driver_sigkill_twice_then_rerun_resends_only_parts_in_flight(e2e_env, proxy, unique_prefix, tmp_path,
                                                                      manifest_overrides):
    pair = e2e_env
    rng = random.Random(7)
    items = {f"{unique_prefix}big/{i}.bin": rng.randbytes(100 * MiB) for i in range(2)}  # 7 parts each
    items.update({f"{unique_prefix}small/{i:03d}": rng.randbytes(rng.randint(1, 20_000)) for i in range(200)})
    seed_objects(pair.source.client(), pair.source.bucket, items)
    data_bytes = sum(len(b) for b in items.values())
    dst_prefix = "resume/" + unique_prefix
    report_path = tmp_path / "report.json"
    cmd = _sync_cmd(pair, proxy, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite"), report_path)
    cmd += manifest_overrides
    env = dict(os.environ)

    in_flight_at_kills = []
    for at in (40 * MiB, 120 * MiB):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        in_flight_at_kills.append(_kill_when(proc, proxy, at))
        assert not report_path.exists(), "a killed run writes no report"

    # What the manifest holds after the last kill: parts recorded as sent must not be sent again.
    cfg = load_settings(cmd[4:])
    manifest = open_manifest(cfg.manifest, job_name(cfg))
    try:
        recorded_parts = sum(len(u.parts) for key in {k for k, _ in manifest.open_uploads()}
                             for u in manifest.find_uploads(key))
    finally:
        manifest.close()

    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    report = json.loads(report_path.read_text())
    assert report["resumed"] is True
    assert report["part_size_bytes"] == PART
    assert report["resumed_parts"] == recorded_parts, "every part recorded as sent was reused, none re-sent"
    objects = report["objects"]
    assert objects["listed"] == len(items), report
    # Exact across the executions: what the killed drivers copied counts once, as copied, never as skipped.
    assert objects["copied"] == len(items) and objects["skipped"] == 0 and objects["failed"] == 0, report
    assert sum(n["objects"] for n in report["nodes"]) == len(items), report

    dst = pair.destination.client()
    got = listing(dst, pair.destination.bucket, dst_prefix)
    assert set(got) == {dst_prefix + k[len(unique_prefix):] for k in items}
    for key, body in items.items():
        assert md5_of(dst, pair.destination.bucket, dst_prefix + key[len(unique_prefix):]) == \
            hashlib.md5(body).hexdigest(), key
    assert _open_uploads(dst, pair.destination.bucket, dst_prefix) == []

    sent = proxy.snapshot()[0]
    allowance = sum(in_flight_at_kills) * PART
    assert sent <= data_bytes + allowance, (
        f"sent {sent:,} bytes for {data_bytes:,} of data; in flight at the kills: {in_flight_at_kills}")

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    second = json.loads(report_path.read_text())
    assert second["resumed"] is False and second["objects"]["copied"] == 0


def test_transfer_actor_sigkill_mid_run_still_completes_exactly(e2e_env, ray_local, unique_prefix, tmp_path):
    import ray
    from ray._private import state as ray_state  # the public state API needs the dashboard, which is off

    pair = e2e_env
    rng = random.Random(11)
    items = {f"{unique_prefix}p{i % 8}/o{i:04d}": rng.randbytes(rng.randint(1, 30_000)) for i in range(1200)}
    items[f"{unique_prefix}p0/big.bin"] = rng.randbytes(80 * MiB)
    seed_objects(pair.source.client(), pair.source.bucket, items)
    overrides = s3_overrides(pair, unique_prefix, "ak/" + unique_prefix, str(tmp_path / "m.sqlite"))
    cfg = load_settings([*overrides, "transfer.max_requests_per_s=400",  # slow enough to kill mid-run
                       "transfer.multipart_threshold=64MiB"])
    killed: list[int] = []

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            alive = [a for a in ray_state.actors().values()
                     if a["ActorClassName"] == "TransferWorker" and a["State"] == "ALIVE"]
            copied = len(listing(pair.destination.client(), pair.destination.bucket, "ak/" + unique_prefix))
            if alive and copied >= 200:
                pid = alive[0]["Pid"]
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.2)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    report = run_sync(cfg).to_json()
    thread.join()
    assert killed, "the test never killed an actor"
    assert ray.is_initialized()
    assert report["status"] == "succeeded", report
    objects = report["objects"]
    assert objects["listed"] == len(items) and objects["failed"] == 0, report
    # The killed actor's copies count once, as copied (a fresh destination: nothing to skip).
    assert objects["copied"] == len(items) and objects["skipped"] == 0, report
    assert sum(n["objects"] for n in report["nodes"]) == len(items), report
    dst = pair.destination.client()
    got = listing(dst, pair.destination.bucket, "ak/" + unique_prefix)
    assert len(got) == len(items)
    for key, body in items.items():
        assert got["ak/" + key]["Size"] == len(body)
    assert md5_of(dst, pair.destination.bucket, "ak/" + unique_prefix + "p0/big.bin") == \
        hashlib.md5(items[f"{unique_prefix}p0/big.bin"]).hexdigest()
    assert _open_uploads(dst, pair.destination.bucket, "ak/" + unique_prefix) == []
