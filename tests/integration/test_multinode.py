"""A sync on a three-node Ray cluster (ray.cluster_utils.Cluster): every node copies, counts stay exact."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import seed_objects

SCRIPT = textwrap.dedent("""
    import json, sys
    from ray.cluster_utils import Cluster
    from dth_ray.compose import load_settings
    from dth_ray.runtime.driver import run_sync

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    cfg = load_settings(json.loads(sys.argv[1]) + [f"runtime.address={cluster.address}", "transfer.actors=6"])
    report = run_sync(cfg).to_json()
    print("REPORT" + json.dumps(report))
    import ray
    ray.shutdown()
    cluster.shutdown()
""")


def test_sync_spreads_over_every_node(rclone_pair, tmp_path, unique_prefix):
    pair = rclone_pair
    items = {f"{unique_prefix}p{i % 12}/o{i}": os.urandom(2000 + i) for i in range(240)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    env = dict(os.environ, NODESRC_ACCESS_KEY_ID=pair.source.access_key,
               NODESRC_SECRET_ACCESS_KEY=pair.source.secret_key, NODEDST_ACCESS_KEY_ID=pair.destination.access_key,
               NODEDST_SECRET_ACCESS_KEY=pair.destination.secret_key)
    overrides = [o.replace("env:E2ESRC", "env:NODESRC").replace("env:E2EDST", "env:NODEDST")
                 for o in s3_overrides(pair, unique_prefix, "mn/" + unique_prefix, str(tmp_path / "m.sqlite"))]

    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(overrides)], env=env, capture_output=True,
                          text=True, timeout=300)

    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT", 1)[1].splitlines()[0])
    context = f"report={report} stderr={done.stderr[-1500:]}"
    assert report["objects"] == {"listed": 240, "copied": 240, "skipped": 0, "failed": 0}, context
    nodes = report["nodes"]
    assert len(nodes) == 3, context
    assert all(n["objects"] > 0 for n in nodes), nodes
    assert sum(n["objects"] for n in nodes) == 240
    assert sum(n["bytes"] for n in nodes) == sum(len(b) for b in items.values())
    assert len(listing(pair.destination.client(), pair.destination.bucket, "mn/" + unique_prefix)) == 240
