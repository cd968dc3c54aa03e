"""The shipped Grafana dashboard queries metrics the runtime emits, by `dth_job` (Prometheus owns `job`)."""

import re
from pathlib import Path

from dth_ray.runtime.metrics import JOB_TAG
from tests import promql

METRICS = Path(__file__).resolve().parents[2] / "dth_ray" / "runtime" / "metrics.py"


def test_every_panel_queries_a_metric_the_runtime_emits():
    dashboard = promql.load()
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


def test_queries_select_and_group_by_dth_job_never_job():
    assert JOB_TAG == "dth_job"
    dashboard = promql.load()
    variables = promql.variables(dashboard)
    assert variables["dth_job"]["multi"] and variables["dth_job"]["includeAll"]
    assert promql.label_values_query(variables["dth_job"]["query"]) == ("ray_dth_objects_total", "dth_job")
    assert "job" not in variables
    for where, target in promql.targets(dashboard):
        expr = target["expr"]
        assert promql.used_variables(expr) <= set(variables), where
        found = promql.selectors(expr)
        assert found, where
        for selector in found:
            labels = {label for label, _, _ in selector.matchers}
            assert not labels & {"job", "exported_job"}, (where, selector)
            if selector.metric.startswith("ray_dth_"):
                assert ("dth_job", "=~", "$dth_job") in selector.matchers, (where, selector)
        assert not promql.grouping(expr) & {"job", "exported_job"}, where
        # a legend can only show labels the aggregation keeps
        if promql.grouping(expr):
            assert promql.legend_labels(target["legendFormat"]) <= promql.grouping(expr), where


def test_selector_reading_and_prometheus_matching():
    expr = ('histogram_quantile(0.95, sum by (le, dth_job) (rate(ray_dth_event_latency_seconds_bucket'
            '{dth_job=~"$dth_job", result!="x"}[5m]))) + count(count by (ip) (ray_node_cpu_count))')
    assert promql.selectors(expr) == [
        promql.Selector("ray_dth_event_latency_seconds_bucket",
                        (("dth_job", "=~", "$dth_job"), ("result", "!=", "x"))),
        promql.Selector("ray_node_cpu_count", ())]
    assert promql.grouping(expr) == {"le", "dth_job", "ip"}
    assert promql.fill('{a=~"$dth_job", b="${dth}"}', {"dth": "x", "dth_job": "j.1"}) == '{a=~"j.1", b="x"}'
    assert promql.matches({"dth_job": "j1"}, (("dth_job", "=~", "j1|j2"), ("result", "!=", "failed")))
    assert not promql.matches({"dth_job": "j10"}, (("dth_job", "=~", "j1"),)), "regexes are anchored"
    assert promql.matches({}, (("result", "=", ""),)), "a missing label matches the empty string"
    # Ray's prometheus.yml has no honor_labels: a scraped `job` is kept only as exported_job
    stored = promql.scrape_labels({"job": "mine", "dth_job": "mine", "empty": ""},
                                  {"job": "ray", "instance": "h:1"})
    assert stored == {"exported_job": "mine", "dth_job": "mine", "job": "ray", "instance": "h:1"}
