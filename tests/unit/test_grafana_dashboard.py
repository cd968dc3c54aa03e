"""The Grafana dashboard shipped in deploy/ queries only metrics the runtime emits, under Prometheus names."""

import json
import re
from pathlib import Path

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dth-ray-dashboard.json"
METRICS = Path(__file__).resolve().parents[2] / "dth_ray" / "runtime" / "metrics.py"


def test_every_panel_queries_a_metric_the_runtime_emits():
    dashboard = json.loads(DASHBOARD.read_text())
    source = METRICS.read_text()
    emitted = set(re.findall(r'"(dth_[a-z_]+)"', source))
    assert {"dth_bytes_copied", "dth_objects", "dth_request_errors", "dth_backlog_bytes"} <= emitted
    queried = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            queried |= set(re.findall(r"ray_(dth_[a-z_]+?)(?:_total|_bucket)?\{", target["expr"]))
    assert queried and queried <= emitted, queried - emitted
    assert {"throughput", "backlog", "failed", "nodes"} <= {w for p in dashboard["panels"]
                                                          for w in re.findall(r"[a-z]+", p["title"].lower())}
