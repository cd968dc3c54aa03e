"""A driver joining a Ray cluster whose nodes lack the `env:NAME` keys the driver has: one transfer actor checks
the credentials before any shard is dispatched, and the command fails in seconds with exit 2 and a line saying
that keys are read where the actors run (ray.cluster_utils.Cluster, nodes started without the variables)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

from tests.servers.s3_servers import seed_objects

REPO = Path(__file__).resolve().parents[2]
SCRIPT = textwrap.dedent("""
    import json, os, sys, time
    from ray.cluster_utils import Cluster

    args, keys = json.loads(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    os.environ.update(keys)  # the driver has the keys; the nodes, started before, do not
    from dth_ray.cli import main

    started = time.monotonic()
    status = main(args + [f"runtime.address={cluster.address}"])
    print("RESULT" + json.dumps({"status": status, "elapsed_s": time.monotonic() - started}), flush=True)
    import ray
    ray.shutdown()
    cluster.shutdown()
""")


def test_keys_missing_on_the_nodes_fail_before_any_shard(rclone_server, tmp_path):
    prefix = f"nodes-{uuid.uuid4().hex[:10]}/"
    seed_objects(rclone_server.client(), rclone_server.bucket, {f"{prefix}o{i}": os.urandom(64) for i in range(20)})
    keys = {"NODEKEYS_ACCESS_KEY_ID": rclone_server.access_key, "NODEKEYS_SECRET_ACCESS_KEY": rclone_server.secret_key}
    args = [f"source.bucket={rclone_server.bucket}", f"source.endpoint={rclone_server.endpoint}",
            f"source.prefix={prefix}", "source.credentials=env:NODEKEYS", "destination=local",
            f"destination.path={tmp_path / 'out'}", f"manifest.path={tmp_path / 'm.sqlite'}", "progress=off"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NODEKEYS", "AWS_"))}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)

    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps([["sync", *args], keys])], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)

    assert "RESULT" in done.stdout, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1].splitlines()[0])
    context = f"{result} stderr={done.stderr[-2000:]}"
    assert result["status"] == 2, context
    assert result["elapsed_s"] < 30, context
    errors = [line for line in done.stderr.splitlines() if line.startswith("dth-ray: error:")]
    assert len(errors) == 1, context
    assert errors[0].startswith("dth-ray: error: source.credentials=env:NODEKEYS needs NODEKEYS_ACCESS_KEY_ID and "
                                "NODEKEYS_SECRET_ACCESS_KEY set (checked on a transfer actor on node "), context
    assert "credentials are read where the actors run" in errors[0]
    assert not (tmp_path / "out").exists(), "no shard was dispatched"
