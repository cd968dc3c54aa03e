"""Ray metrics on the node's Prometheus endpoint, scraped over HTTP: the counters move during a run and
their totals equal the report when it ends."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from tests.integration.helpers import s3_overrides
from tests.servers.s3_servers import seed_objects

SCRIPT = textwrap.dedent("""
    import json, re, socket, sys, threading, time, urllib.request
    import ray
    from dth_ray.compose import load_settings
    from dth_ray.runtime.driver import run_sync

    overrides = json.loads(sys.argv[1])
    sock = socket.socket(); sock.bind(("127.0.0.1", 0)); port = sock.getsockname()[1]; sock.close()
    ray.init(address="local", num_cpus=2, include_dashboard=False, _metrics_export_port=port,
             _system_config={"metrics_report_interval_ms": 1000})
    cfg = load_settings(overrides)
    out = {}
    runner = threading.Thread(target=lambda: out.update(report=run_sync(cfg).to_json()))

    def totals():
        try:
            body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        except OSError:
            return {}
        sums = {}
        for line in body.splitlines():
            m = re.match(r'ray_(dth_[a-z_]+?)(?:_total)?\\{(.*)\\} ([0-9.e+]+)$', line)
            if m:
                result = re.search(r'result="(\\w+)"', m.group(2))
                name = m.group(1) + (":" + result.group(1) if result else "")
                sums[name] = sums.get(name, 0.0) + float(m.group(3))
        return sums

    runner.start()
    during = []
    while runner.is_alive():
        during.append(totals().get("dth_objects:copied", 0.0))
        time.sleep(1.0)
    runner.join()
    report = out["report"]
    deadline = time.time() + 60
    final = totals()
    while time.time() < deadline and final.get("dth_objects:copied") != report["objects"]["copied"]:
        time.sleep(1.0)
        final = totals()
    print("RESULT" + json.dumps({"during": during, "final": final, "report": report}))
""")


def test_prometheus_counters_move_and_match_the_report(e2e_env, unique_prefix, tmp_path):
    pair = e2e_env
    items = {f"{unique_prefix}m{i % 6}/o{i}": os.urandom(3000) for i in range(900)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    overrides = s3_overrides(pair, unique_prefix, "metrics/" + unique_prefix, str(tmp_path / "m.sqlite"))
    overrides.append("transfer.max_requests_per_s=60")  # a run long enough to be scraped while it goes
    done = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(overrides)], env=dict(os.environ),
                          capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.split("RESULT", 1)[1].splitlines()[0])
    report, final, during = result["report"], result["final"], result["during"]
    assert report["objects"]["copied"] == 900
    assert any(0 < v < 900 for v in during), f"counters seen moving during the run: {during}"
    assert final.get("dth_objects:copied") == 900, final
    assert final.get("dth_bytes_copied") == report["bytes"]["copied"], final
    assert "dth_backlog_bytes" in final and "dth_transfer_actors" in final, sorted(final)
