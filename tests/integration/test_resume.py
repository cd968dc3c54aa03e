"""Crash resume: SIGKILL the driver mid-upload and rerun (part-level resume, bounded re-sends, nothing left
open, each object counted once); the same bound fails a run with part reuse switched off; SIGKILL a transfer
actor and the run still completes exactly."""

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
from dataclasses import dataclass

import pytest

from dth_ray.compose import load_settings
from dth_ray.model import PartInfo
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
    # Test-sized objects (100 MiB) that still go up in parts (the default threshold is 200 MiB), one part of
    # each at a time: with the default 8 per object, 16 parts of 16 MiB would all be in flight at once and a
    # kill would land before any part had finished, leaving nothing recorded to resume. Reads paced to 32 MB/s
    # (about 6.5 s for all the data), so a kill lands mid-way even on an idle machine, after a DynamoDB
    # manifest's 2 s flush has made a part durable.
    return [sys.executable, "-m", "dth_ray", "sync", *args, f"report={report}", "transfer.multipart_threshold=64MiB",
            "transfer.parts_in_flight=1", "transfer.max_bandwidth=32MB"]


def _recorded(cfg) -> dict[str, dict[int, PartInfo]]:
    """Destination key -> the parts the job's manifest records as sent, over its open uploads."""
    manifest = open_manifest(cfg.manifest, job_name(cfg))
    try:
        out: dict[str, dict[int, PartInfo]] = {}
        for key in {k for k, _ in manifest.open_uploads()}:
            for upload in manifest.find_uploads(key):
                out.setdefault(key, {}).update(upload.parts)
        return out
    finally:
        manifest.close()


def _kill_when(proc: subprocess.Popen, proxy: CountingProxy, cfg, at_bytes: int,
               timeout_s: float = 240) -> int:
    """SIGKILL the driver once the destination has received `at_bytes` more and the manifest records at least
    one part; returns the bytes the destination received after the kill (bodies that were in flight)."""
    deadline = time.monotonic() + timeout_s
    start = proxy.snapshot()[0]
    while proxy.snapshot()[0] - start < at_bytes or not any(_recorded(cfg).values()):
        assert proc.poll() is None, f"the run ended before the kill point: {proc.stdout.read()}"
        assert time.monotonic() < deadline, "the run never reached the kill point"
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    killed_at = proxy.snapshot()[0]
    proc.wait(60)
    return _quiet(proxy) - killed_at


def _quiet(proxy: CountingProxy, still_s: float = 2.0, timeout_s: float = 60) -> int:
    """Wait until no PUT is in flight and no byte arrives for `still_s` (a killed driver's Ray workers may
    send for a moment longer); returns the byte count then."""
    deadline = time.monotonic() + timeout_s
    last, since = proxy.snapshot()[0], time.monotonic()
    while time.monotonic() - since < still_s:
        assert time.monotonic() < deadline, "the destination never went quiet after the kill"
        time.sleep(0.1)
        now, in_flight = proxy.snapshot()
        if now != last or in_flight:
            last, since = now, time.monotonic()
    return last


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


@dataclass
class Resumed:
    """Two killed runs and the final one: what the manifest recorded, what was left, what the last run sent."""

    cmd: list[str]
    items: dict[str, bytes]
    dst_prefix: str
    report: dict
    recorded_parts: int  # parts the manifest recorded as sent, over the uploads left open by the kills
    pending_bytes: int  # bytes of the objects not at the destination when the final run started
    recorded_bytes: int  # bytes of those objects' recorded parts
    after_kills: list[int]  # bytes the destination received after each kill (bodies in flight then)
    final_sent: int  # PUT payload bytes (objects and parts) the destination received during the final run
    final_failed: int  # of those, bodies answered other than 2xx or cut off (sent again by the client)

    @property
    def bound(self) -> int:
        """What the final run may send: what is left, less the recorded parts, plus what it had to send again."""
        return self.pending_bytes - self.recorded_bytes + self.final_failed

    def describe(self) -> str:
        return (f"final run sent {self.final_sent:,} payload bytes, bound {self.bound:,} (left {self.pending_bytes:,}"
                f" - recorded {self.recorded_bytes:,} in {self.recorded_parts} parts + sent again after failures "
                f"{self.final_failed:,}); resumed_parts {self.report['resumed_parts']}; arrived after the kills "
                f"{self.after_kills}")


def _kill_twice_then_finish(pair, proxy, unique_prefix, tmp_path, extra: list[str]) -> Resumed:
    rng = random.Random(7)
    items = {f"{unique_prefix}big/{i}.bin": rng.randbytes(100 * MiB) for i in range(2)}  # 7 parts each
    items.update({f"{unique_prefix}small/{i:03d}": rng.randbytes(rng.randint(1, 20_000)) for i in range(200)})
    seed_objects(pair.source.client(), pair.source.bucket, items)
    dst_prefix = "resume/" + unique_prefix
    report_path = tmp_path / "report.json"
    cmd = [*_sync_cmd(pair, proxy, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite"), report_path), *extra]
    env, cfg = dict(os.environ), load_settings(cmd[4:])

    after_kills = []
    for at in (40 * MiB, 40 * MiB):
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        after_kills.append(_kill_when(proc, proxy, cfg, at))
        assert not report_path.exists(), "a killed run writes no report"

    # What the manifest holds after the last kill, and what the destination already has.
    recorded = _recorded(cfg)
    present = listing(pair.destination.client(), pair.destination.bucket, dst_prefix)
    pending = {dst_prefix + k[len(unique_prefix):]: len(b) for k, b in items.items()
               if present.get(dst_prefix + k[len(unique_prefix):], {}).get("Size") != len(b)}
    recorded_bytes = sum(p.size for key, parts in recorded.items() if key in pending for p in parts.values())

    sent_before, failed_before = proxy.payload()
    final = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stdout + final.stderr
    return Resumed(cmd, items, dst_prefix, json.loads(report_path.read_text()),
                   sum(len(parts) for parts in recorded.values()), sum(pending.values()), recorded_bytes,
                   after_kills, proxy.payload()[0] - sent_before, proxy.payload()[1] - failed_before)


def test_driver_sigkill_twice_then_rerun_resends_only_parts_in_flight(e2e_env, proxy, unique_prefix, tmp_path,
                                                                      manifest_overrides):
    pair = e2e_env
    run = _kill_twice_then_finish(pair, proxy, unique_prefix, tmp_path, manifest_overrides)
    report, items, dst_prefix = run.report, run.items, run.dst_prefix
    assert run.recorded_parts >= 1, "the kills left no recorded part: nothing to prove resume with"
    # Counted at the destination, not by the product: the final run sends what was left less every recorded
    # part (plus only what it had to send again); a run that reused nothing would also send the recorded
    # parts, at least one part (16 MiB) over this bound.
    print(run.describe())
    assert run.final_sent <= run.bound, run.describe()
    assert report["resumed"] is True
    assert report["part_size_bytes"] == PART
    assert report["resumed_parts"] == run.recorded_parts, (
        "every part recorded as sent is reused, none re-sent: " + run.describe())
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

    again = subprocess.run(run.cmd, env=dict(os.environ), capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    second = json.loads((tmp_path / "report.json").read_text())
    assert second["resumed"] is False and second["objects"]["copied"] == 0


def test_resume_bound_catches_a_run_that_reuses_no_part(e2e_env, proxy, unique_prefix, tmp_path):
    """The same scenario with part reuse switched off (transfer.resume_parts=false, a diagnostic switch):
    the copy is still complete and right, but the final run's bytes break the bound the test above holds."""
    pair = e2e_env
    run = _kill_twice_then_finish(pair, proxy, unique_prefix, tmp_path, ["transfer.resume_parts=false"])
    assert run.recorded_parts >= 1
    assert run.report["resumed"] is True and run.report["resumed_parts"] == 0
    assert run.report["objects"]["failed"] == 0
    got = listing(pair.destination.client(), pair.destination.bucket, run.dst_prefix)
    assert len(got) == len(run.items)
    print(run.describe())
    assert run.final_sent >= run.pending_bytes > run.bound, run.describe()


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
