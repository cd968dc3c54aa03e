"""Live autoscaling on Ray's fake multi-node provider (what ray.cluster_utils.AutoscalingCluster drives; its
config is given inline because the 2.60 wheel lacks the example file): a backlog makes the driver request
transfer slots, the autoscaler launches worker nodes advertising `transfer_slot`, the driver starts actors on
them and they copy; when the backlog drains the request drops to zero, and once the run is over the idle
worker nodes are removed (idle_timeout_minutes), leaving the head alone.

Scale-down needs `provider.use_node_id_as_ip` (set by the upstream example.yaml that the wheel lacks): the v1
monitor keys each node's last-used time by IP (autoscaler/_private/monitor.py update_load_metrics), while the
fake provider's internal_ip() is the node id; without the flag every fake node reports the same real IP, no
worker is ever found idle, and none is removed. The v2 autoscaler is no way out: its config loader always
merges the provider defaults, i.e. that missing example.yaml (v2/instance_manager/config.py update_configs ->
_private/util.py prepare_config -> fillout_defaults -> _private/providers.py _get_default_config).

The cluster is started on its own GCS port and temp dir and only its own processes are killed afterwards
(AutoscalingCluster.start() would `ray stop --force` every Ray on the machine)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
import time

from dth_ray.locals3 import free_port
from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import seed_objects

SCRIPT = textwrap.dedent("""
    import json, sys
    import ray
    from dth_ray.compose import load_settings
    from dth_ray.runtime.driver import run_sync

    overrides, address = json.loads(sys.argv[1])
    cfg = load_settings(overrides + [f"runtime.address={address}", "runtime.autoscale=on"])
    report = run_sync(cfg).to_json()
    print("REPORT" + json.dumps(report))
    ray.shutdown()
""")

# Polls the cluster (from a driver of its own, after the sync's driver has gone) until no node advertising
# transfer slots is left alive or the time is up; prints [seconds, alive nodes, alive transfer nodes] samples.
WATCH = textwrap.dedent("""
    import json, sys, time
    import ray

    address, limit = sys.argv[1], float(sys.argv[2])
    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    start, timeline = time.monotonic(), []
    while True:
        alive = [n for n in ray.nodes() if n["Alive"]]
        transfer = sorted(n["NodeID"] for n in alive if n["Resources"].get("transfer_slot"))
        others = sorted(n["NodeID"] for n in alive if not n["Resources"].get("transfer_slot"))
        timeline.append([round(time.monotonic() - start, 1), len(alive), len(transfer)])
        if not transfer or time.monotonic() - start > limit:
            break
        time.sleep(2)
    print("WATCH" + json.dumps({"timeline": timeline, "transfer_alive": transfer, "others_alive": others}))
    ray.shutdown()
""")
_IDLE_TIMEOUT_MIN = 0.2  # 12 s (fractions are allowed): nodes go soon after the run; during it the slot request
# and the actors (a node hosting a live actor is not idle) keep them
_SCALE_DOWN_LIMIT_S = 150


def _cluster_config(gcs_address: str) -> dict:
    return {
        "cluster_name": "dth-fake", "max_workers": 2, "upscaling_speed": 1.0,
        "idle_timeout_minutes": _IDLE_TIMEOUT_MIN,
        "provider": {"type": "fake_multinode", "gcs_address": gcs_address, "disable_launch_config_check": True,
                     "disable_node_updaters": True, "use_node_id_as_ip": True},
        "auth": {"ssh_user": "ubuntu"}, "docker": {}, "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 1}, "node_config": {}, "max_workers": 0},
            "transfer": {"resources": {"CPU": 1, "transfer_slot": 2}, "node_config": {}, "min_workers": 0,
                         "max_workers": 2},
        },
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False, "rsync_exclude": [],
        "rsync_filter": [], "initialization_commands": [], "setup_commands": [], "head_setup_commands": [],
        "worker_setup_commands": [], "head_start_ray_commands": [], "worker_start_ray_commands": [],
    }


def _cmdline(pid: str) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read()
    except OSError:
        return b""


def _cluster_pids(temp_dir: str) -> list[int]:
    return [int(pid) for pid in filter(str.isdigit, os.listdir("/proc")) if temp_dir.encode() in _cmdline(pid)]


def _kill_cluster(temp_dir: str) -> None:
    """SIGKILL every process whose command line names this cluster's temp dir (head, fake nodes, monitor)."""
    deadline = time.monotonic() + 20
    while (pids := _cluster_pids(temp_dir)) and time.monotonic() < deadline:
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, 9)
        time.sleep(0.2)


def _idle_terminations(temp_dir: str) -> list[str]:
    """Node ids the v1 autoscaler terminated as idle, from this cluster's monitor log."""
    path = os.path.join(temp_dir, "session_latest", "logs", "monitor.log")
    try:
        with open(path, errors="replace") as handle:
            lines = handle.read().splitlines()
    except OSError:
        return []
    pattern = re.compile(r"Terminating the node with id (\w+) .*\(idle\)")
    return [m.group(1) for m in map(pattern.search, lines) if m]


def test_backlog_scales_the_cluster_up_and_idle_nodes_down(rclone_pair, tmp_path, unique_prefix):
    pair = rclone_pair
    items = {f"{unique_prefix}q{i % 16}/o{i}": os.urandom(800) for i in range(1600)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    port = free_port()
    address = f"127.0.0.1:{port}"
    temp_dir = tempfile.mkdtemp(prefix="dthas-", dir="/tmp")  # short: Ray's socket paths must stay < 108 bytes
    config = tmp_path / "autoscaling.json"
    config.write_text(json.dumps(_cluster_config(address)))
    env = dict(os.environ, RAY_FAKE_CLUSTER="1", AUTOSCALER_UPDATE_INTERVAL_S="1", RAY_AUTH_MODE="disabled",
               NODESRC_ACCESS_KEY_ID=pair.source.access_key, NODESRC_SECRET_ACCESS_KEY=pair.source.secret_key,
               NODEDST_ACCESS_KEY_ID=pair.destination.access_key,
               NODEDST_SECRET_ACCESS_KEY=pair.destination.secret_key)
    ray_bin = os.path.join(os.path.dirname(sys.executable), "ray")
    started = subprocess.run([ray_bin, "start", "--head", f"--port={port}", f"--autoscaling-config={config}",
                              "--num-cpus=1", f"--temp-dir={temp_dir}", "--include-dashboard=false",
                              "--disable-usage-stats"], env=env, capture_output=True, text=True, timeout=120)
    assert started.returncode == 0, started.stdout[-2000:] + started.stderr[-2000:]
    try:
        dst_prefix = "as/" + unique_prefix
        overrides = [o.replace("env:E2ESRC", "env:NODESRC").replace("env:E2EDST", "env:NODEDST")
                     for o in s3_overrides(pair, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite"))]
        overrides.append("transfer.max_requests_per_s=25")  # keep a backlog for a while
        done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps([overrides, address])], env=env,
                              capture_output=True, text=True, timeout=400)
        watched = None
        if done.returncode == 0:  # the sync's driver is gone: its actors no longer keep the nodes busy
            watched = subprocess.run([sys.executable, "-c", WATCH, address, str(_SCALE_DOWN_LIMIT_S)], env=env,
                                     capture_output=True, text=True, timeout=_SCALE_DOWN_LIMIT_S + 60)
        idle_removed = _idle_terminations(temp_dir)
    finally:
        _kill_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not _cluster_pids(temp_dir), "the test's Ray processes are gone"
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.split("REPORT", 1)[1].splitlines()[0])
    context = json.dumps({k: report.get(k) for k in ("status", "objects", "nodes", "autoscaler")})
    assert report["status"] == "succeeded" and report["objects"]["copied"] == 1600, context
    requests = report["autoscaler"]["slot_requests"]
    assert requests and max(requests) > 0 and requests[-1] == 0, context
    assert report["autoscaler"]["actors"] > 2, f"actors were started on joining nodes: {context}"
    assert len([n for n in report["nodes"] if n["objects"] > 0]) >= 2, context
    assert len(listing(pair.destination.client(), pair.destination.bucket, dst_prefix)) == 1600

    # Scale-down: the request was released, so the joined (now idle) transfer nodes are removed.
    assert watched is not None and watched.returncode == 0, (watched.stderr[-3000:] if watched else "")
    watch = json.loads(watched.stdout.split("WATCH", 1)[1].splitlines()[0])
    context = json.dumps({"watch": watch, "idle_removed": idle_removed, "nodes": report["nodes"]})
    print("scale-down:", context)  # the node-count timeline, shown by `pytest -rA`
    assert watch["transfer_alive"] == [], f"idle transfer nodes are removed: {context}"
    assert watch["timeline"][-1][1] == 1, f"only the head is left: {context}"
    joined = {n["node_id"] for n in report["nodes"] if n["objects"] > 0} - set(watch["others_alive"])  # - the head
    assert joined and joined <= set(idle_removed), f"the nodes that copied were removed as idle: {context}"
