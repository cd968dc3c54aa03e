"""A Ray node dies mid-run (ray.cluster_utils.Cluster, removed without grace): its shards are redone on the
surviving nodes from their checkpoints, the run succeeds, and every object arrives, counted once as copied
(what the dead node copied included) with `nodes` summing to the copied objects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import seed_objects

SCRIPT = textwrap.dedent("""
    import json, sys, threading, time
    import boto3
    from botocore.config import Config
    from ray.cluster_utils import Cluster
    from dth_ray.compose import load_settings
    from dth_ray.runtime.driver import run_sync

    overrides, dst_endpoint, dst_bucket, dst_prefix, at = json.loads(sys.argv[1])
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    doomed = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    cfg = load_settings(overrides + [f"runtime.address={cluster.address}", "transfer.actors=6"])
    out = {}
    runner = threading.Thread(target=lambda: out.update(report=run_sync(cfg).to_json()))
    runner.start()
    s3 = boto3.client("s3", endpoint_url=dst_endpoint, region_name="us-east-1",
                      config=Config(s3={"addressing_style": "path"}))
    while runner.is_alive():
        got = s3.list_objects_v2(Bucket=dst_bucket, Prefix=dst_prefix).get("KeyCount", 0)
        if got >= at:
            cluster.remove_node(doomed, allow_graceful=False)
            print("REMOVED", got, flush=True)
            break
        time.sleep(0.2)
    runner.join()
    print("REPORT" + json.dumps(out["report"]))
    import ray
    ray.shutdown()
    cluster.shutdown()
""")


def test_node_killed_mid_run_its_work_is_redone_elsewhere(rclone_pair, tmp_path, unique_prefix):
    pair = rclone_pair
    items = {f"{unique_prefix}p{i % 12}/o{i}": os.urandom(1000 + i) for i in range(600)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    env = dict(os.environ, NODESRC_ACCESS_KEY_ID=pair.source.access_key,
               NODESRC_SECRET_ACCESS_KEY=pair.source.secret_key, NODEDST_ACCESS_KEY_ID=pair.destination.access_key,
               NODEDST_SECRET_ACCESS_KEY=pair.destination.secret_key,
               AWS_ACCESS_KEY_ID=pair.destination.access_key, AWS_SECRET_ACCESS_KEY=pair.destination.secret_key)
    dst_prefix = "nl/" + unique_prefix
    overrides = [o.replace("env:E2ESRC", "env:NODESRC").replace("env:E2EDST", "env:NODEDST")
                 for o in s3_overrides(pair, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite"))]
    overrides.append("transfer.max_requests_per_s=20")  # slow enough that the node dies mid-run
    args = [overrides, pair.destination.endpoint, pair.destination.bucket, dst_prefix, 60]

    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(args)], env=env, capture_output=True,
                          text=True, timeout=400)

    assert done.returncode == 0, done.stderr[-3000:]
    assert "REMOVED" in done.stdout, "the node was removed while the run was going"
    report = json.loads(done.stdout.split("REPORT", 1)[1].splitlines()[0])
    context = f"report={report} stderr={done.stderr[-2000:]}"
    assert report["status"] == "succeeded", context
    objects = report["objects"]
    assert objects["listed"] == 600 and objects["failed"] == 0, context
    # The dead node's copies count once, as copied (its prefix was empty: nothing to skip), and `nodes`
    # credits them to it: the nodes sum to the copied objects.
    assert objects["copied"] == 600 and objects["skipped"] == 0, context
    assert sum(n["objects"] for n in report["nodes"]) == 600, context
    assert sum(n["bytes"] for n in report["nodes"]) == report["bytes"]["copied"], context
    got = listing(pair.destination.client(), pair.destination.bucket, dst_prefix)
    assert len(got) == 600
    for key, body in items.items():
        assert got[dst_prefix + key[len(unique_prefix):]]["Size"] == len(body), key
