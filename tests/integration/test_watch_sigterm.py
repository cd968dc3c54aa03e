"""SIGTERM mid-transfer: `dth-ray watch` (a real process) stops cleanly — in-flight work abandoned after
events.shutdown_timeout_s, unfinished messages released — and a rerun completes every object: nothing lost."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import time

import pytest

from tests.integration.helpers import listing, md5_of
from tests.integration.watch_helpers import (
    RunningWatch,
    SqsQueue,
    dth_body,
    oss_body,
    wait_for,
    watch_overrides,
)
from tests.servers.counting_proxy import CountingProxy
from tests.servers.s3_servers import seed_objects

MiB = 1024 * 1024


@pytest.fixture
def proxy(e2e_env):
    p = CountingProxy(e2e_env.destination.endpoint).start()
    yield p
    p.stop()


def test_sigterm_mid_transfer_loses_nothing(e2e_env, ray_local, moto_server, proxy, unique_prefix, tmp_path):
    pair = e2e_env
    rng = random.Random(11)
    items = {f"{unique_prefix}big/{i}.bin": rng.randbytes(40 * MiB) for i in range(3)}
    items.update({f"{unique_prefix}small/{i:02d}": rng.randbytes(rng.randint(1, 5000)) for i in range(20)})
    seed_objects(pair.source.client(), pair.source.bucket, items)
    q = SqsQueue(moto_server)
    dst_prefix = "sigterm/" + unique_prefix
    manifest = str(tmp_path / "m.sqlite")
    overrides = watch_overrides(pair, moto_server, q, unique_prefix, dst_prefix, manifest)
    slowed = [o if not o.startswith("destination.endpoint=") else f"destination.endpoint={proxy.endpoint}"
              for o in overrides]
    report = tmp_path / "watch.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "dth_ray", "watch", *slowed, "transfer.max_bandwidth=6MB",
         "transfer.multipart_threshold=16MiB", "events.shutdown_timeout_s=1", f"report={report}", "runtime.num_cpus=2"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        big = [k for k in items if "/big/" in k]
        q.send([dth_body(k, len(items[k])) for k in big])
        q.send([oss_body(pair.source.bucket, [("ObjectCreated:PutObject", k, len(items[k]))
                                              for k in items if "/small/" in k])])
        deadline = time.monotonic() + 120
        while proxy.snapshot()[0] < 20 * MiB:  # the large copies are under way
            assert proc.poll() is None, proc.stdout.read()
            assert time.monotonic() < deadline, "the transfers never started"
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGTERM)
        out, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, out
    assert "watch stopped (SIGTERM)" in out, out
    stopped = json.loads(report.read_text())
    assert stopped["status"] == "stopped" and stopped["messages"]["released"] >= 1
    dst = pair.destination.client()
    landed = set(listing(dst, pair.destination.bucket, dst_prefix))
    assert len(landed) < len(items)  # it really was stopped mid-way
    assert q.depth() >= 1  # the unfinished messages are still in the queue, visible again

    with RunningWatch(overrides) as w:  # the rerun (no bandwidth cap) finishes what was left
        wait_for(lambda: len(listing(dst, pair.destination.bucket, dst_prefix)) == len(items), 120, "every object")
        wait_for(lambda: w.idle() and q.depth() == 0, 60, "queue drained")
    for key, body in items.items():
        assert md5_of(dst, pair.destination.bucket, dst_prefix + key[len(unique_prefix):]) == \
            hashlib.md5(body).hexdigest(), key
