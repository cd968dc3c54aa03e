"""The Grafana dashboard's queries against a run's real metrics, and on Prometheus with Ray's own config."""

# An embedded Ray with its dashboard (which writes Ray's prometheus.yml and file-SD list) and a metrics export
# port; a sync over the local rclone servers; every dashboard query checked against the scraped series under
# Prometheus's labelling rules, then run through a real Prometheus started with Ray's file, when one is
# installed (Debian's `prometheus` package).

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
import urllib.parse
import urllib.request
import uuid
from pathlib import Path

import pytest

from tests import promql
from tests.integration.helpers import s3_overrides
from tests.servers.s3_servers import seed_objects

ROOT = Path(__file__).resolve().parents[2]
OBJECTS = 60

# The driver side of a deployment: Ray started as `ray start --head` would (dashboard on, so Ray writes its
# prometheus.yml and file-SD list), a sync whose series are scraped while it runs, then a feeder actor that
# keeps the real metric classes reporting (Ray drops a gauge a few export intervals after its last update, and
# a clean sync emits no failures, request errors or watch latencies) until the test says stop.
SCRIPT = textwrap.dedent("""
    import json, os, socket, sys, threading, time, urllib.request
    import ray
    from dth_ray.compose import load_settings
    from dth_ray.runtime.driver import run_sync

    overrides, work = json.loads(sys.argv[1]), sys.argv[2]

    def free_port():
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return sock.getsockname()[1]

    def status(**fields):
        with open(os.path.join(work, "status.tmp"), "w") as f:
            json.dump(fields, f)
        os.replace(os.path.join(work, "status.tmp"), os.path.join(work, "status.json"))

    port = free_port()
    ray.init(address="local", num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
             dashboard_port=free_port(), _metrics_export_port=port, _temp_dir=os.path.join(work, "ray"),
             log_to_driver=False, _system_config={"metrics_report_interval_ms": 1000})
    session = ray._private.worker._global_node.get_session_dir_path()
    cfg = load_settings(overrides)
    out = {}
    runner = threading.Thread(target=lambda: out.update(report=run_sync(cfg).to_json()))
    runner.start()
    seen = {}  # every ray_dth_* series the endpoint showed during the run: its last sample line
    while runner.is_alive():
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        lines = [line for line in body.splitlines() if line.startswith("ray_dth_")]
        seen.update((line.rsplit(" ", 1)[0], line) for line in lines)
        time.sleep(0.5)
    runner.join()

    @ray.remote(num_cpus=0)
    class Feeder:
        def run(self, job, stop, until):
            from dth_ray.model import Tally
            from dth_ray.runtime.metrics import ActorMetrics, DriverMetrics, EventLatency

            actor, driver, events, n = ActorMetrics(job), DriverMetrics(job), EventLatency(job), 0
            while not os.path.exists(stop) and time.time() < until:
                n += 1
                actor.add(Tally(copied=n, failed=n, bytes_copied=1000 * n), {"Throttled": 1},
                          requests_in_flight=3, parts_in_flight=1)
                driver.update(backlog_objects=500 - n % 500, backlog_bytes=10**6, shards_pending=4, actors=2,
                              requested_slots=2)
                events.event_landed(0.1 * (1 + n % 7))
                time.sleep(0.5)
            return n

    stop = os.path.join(work, "stop")
    feeding = Feeder.remote().run.remote(cfg.job, stop, time.time() + 400)
    status(phase="feeding", port=port, job=cfg.job, session=session, report=out["report"],
           seen="\\n".join(sorted(seen.values())))
    fed = ray.get(feeding)
    ray.shutdown()
    status(phase="done", fed=fed)
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_for(path: Path, phase: str, proc: subprocess.Popen, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if path.exists() and (doc := json.loads(path.read_text())).get("phase") == phase:
            return doc
        if proc.poll() is not None:
            raise AssertionError(f"driver exited {proc.returncode}: {proc.stderr.read()[-3000:]}")
        time.sleep(0.5)
    raise AssertionError(f"no {phase!r} after {timeout_s} s")


@pytest.fixture(scope="module")
def deployment(e2e_env, tmp_path_factory):
    """The running driver script: its metrics port, job, Ray session dir, report and post-sync scrape."""
    pair = e2e_env
    prefix = f"t-{uuid.uuid4().hex[:10]}/"
    seed_objects(pair.source.client(), pair.source.bucket,
                 {f"{prefix}d{i % 4}/o{i}": os.urandom(2000 + i) for i in range(OBJECTS)})
    # a short directory: Ray's Unix sockets live under it (108-byte path limit)
    work = Path(tmp_path_factory.mktemp("dash", numbered=True))
    short = Path("/tmp") / f"dthdash-{uuid.uuid4().hex[:8]}"
    short.symlink_to(work)
    overrides = s3_overrides(pair, prefix, "dash/" + prefix, str(work / "m.sqlite"))
    # a run of several seconds (at 20 requests/s), so its series are scraped while it goes
    overrides += [f"job=dash-{uuid.uuid4().hex[:6]}", "runtime.ray=always", "transfer.max_requests_per_s=20"]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, json.dumps(overrides), str(short)], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        yield _wait_for(work / "status.json", "feeding", proc, 300)
        (work / "stop").touch()
        done = _wait_for(work / "status.json", "done", proc, 120)
        assert done["fed"] > 0
        assert proc.wait(60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        short.unlink()


def _scrape(port: int) -> list[tuple[str, dict[str, str]]]:
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return promql.parse_exposition(body)


def _ray_scrape_config(session: str) -> tuple[Path, dict]:
    """Ray's generated prometheus.yml for this session, and its one target group (file-SD list)."""
    config = Path(session).parent / "session_latest" / "metrics" / "prometheus" / "prometheus.yml"
    text = config.read_text()
    assert "job_name: 'ray'" in text and "honor_labels" not in text, text
    sd_file = Path(session) / "prom_metrics_service_discovery.json"
    assert f"'{sd_file}'" in text, text
    groups = json.loads(sd_file.read_text())
    return config, groups[0]


def test_scraped_series_answer_every_dashboard_query(deployment):
    job, report = deployment["job"], deployment["report"]
    assert report["status"] == "succeeded" and report["objects"]["copied"] == OBJECTS, report
    # the run's own series, scraped while it ran: every metric of a sync, under dth_job, and no `job` label
    seen = promql.parse_exposition(deployment["seen"] + "\n")
    names = {name for name, _ in seen}
    assert {"ray_dth_bytes_copied_total", "ray_dth_objects_total", "ray_dth_requests_in_flight",
            "ray_dth_parts_in_flight", "ray_dth_backlog_objects", "ray_dth_backlog_bytes",
            "ray_dth_shards_pending",
            "ray_dth_transfer_actors", "ray_dth_requested_slots"} <= names, sorted(names)
    assert all(labels.get("dth_job") == job and "job" not in labels for _, labels in seen), seen
    assert {labels["result"] for name, labels in seen if name == "ray_dth_objects_total"} == {"copied"}

    # what Prometheus stores under Ray's scrape config: the target group's labels win (`job="ray"`)
    _, group = _ray_scrape_config(deployment["session"])
    assert group["labels"] == {"job": "ray"}
    target = {**group["labels"], "instance": f"127.0.0.1:{deployment['port']}"}
    deadline = time.monotonic() + 60
    while True:  # the feeder's first values reach the endpoint within a metrics report interval or two
        scraped = _scrape(deployment["port"])
        stored = [(name, promql.scrape_labels(labels, target)) for name, labels in scraped]
        problems = _unanswered(promql.load(), stored, job)
        if not problems or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert not problems, problems
    assert all(labels["job"] == "ray" and labels["dth_job"] == job and "exported_job" not in labels
               for name, labels in stored if name.startswith("ray_dth_")), "the job stays in dth_job"


def _unanswered(dashboard: dict, stored: list[tuple[str, dict[str, str]]], job: str) -> list:
    """What the dashboard asks of these series that they cannot answer: the job missing from the $dth_job
    picker, a metric absent, a label selected or grouped on that the metric's series lack, a selector that
    matches no series."""
    series: dict[str, list[dict[str, str]]] = {}
    for name, labels in stored:
        series.setdefault(name, []).append(labels)
    problems: list = []
    metric, label = promql.label_values_query(promql.variables(dashboard)["dth_job"]["query"])
    if job not in {labels.get(label) for labels in series.get(metric, [])}:
        problems.append(("$dth_job picker", metric, label))
    for where, query in promql.targets(dashboard):
        expr = promql.fill(query["expr"], {"dth_job": job})
        for selector in promql.selectors(expr):
            if selector.metric not in series:
                problems.append((where, "no series", selector.metric))
                continue
            known = set().union(*series[selector.metric])
            missing = ({name for name, _, _ in selector.matchers} | promql.grouping(expr)) - known
            if missing:
                problems.append((where, "no such label", selector.metric, sorted(missing)))
            elif not any(promql.matches(labels, selector.matchers) for labels in series[selector.metric]):
                problems.append((where, "matches nothing", selector))
    return problems


def _prometheus_binary() -> str | None:
    return os.environ.get("PROMETHEUS_BIN") or shutil.which("prometheus")


def _query(port: int, path: str, **params) -> dict:
    url = f"http://127.0.0.1:{port}{path}?{urllib.parse.urlencode(params, doseq=True)}"
    doc = json.load(urllib.request.urlopen(url, timeout=10))
    assert doc["status"] == "success", doc
    return doc["data"]


@pytest.mark.skipif(_prometheus_binary() is None, reason="no prometheus binary (apt-get install prometheus)")
def test_dashboard_queries_return_data_from_prometheus_with_rays_config(deployment, tmp_path):
    job = deployment["job"]
    config, _ = _ray_scrape_config(deployment["session"])
    port = _free_port()
    prometheus = subprocess.Popen([_prometheus_binary(), f"--config.file={config}",
                                   f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                                   f"--web.listen-address=127.0.0.1:{port}"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dashboard = promql.load()
    queries = {where: promql.fill(t["expr"], {"dth_job": job}) for where, t in promql.targets(dashboard)}
    answers: dict[str, list] = {}
    try:
        # Ray's file scrapes every 10 s and rate() needs two samples: allow a few scrape rounds
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline:
            if prometheus.poll() is not None:
                raise AssertionError(f"prometheus exited {prometheus.returncode}: "
                                     f"{prometheus.stderr.read()[-2000:]}")
            try:
                answers = {where: _query(port, "/api/v1/query", query=q)["result"]
                           for where, q in queries.items()}
            except OSError:
                answers = {}
            if answers and all(_has_a_number(result) for result in answers.values()):
                break
            time.sleep(2)
        empty = sorted(where for where, result in answers.items() if not _has_a_number(result))
        assert answers and not empty, f"queries without data: {empty}"
        metric, label = promql.label_values_query(promql.variables(dashboard)["dth_job"]["query"])
        assert job in _query(port, f"/api/v1/label/{label}/values", **{"match[]": metric})
        stored = _query(port, "/api/v1/series", **{"match[]": f'{{__name__=~"ray_dth_.*", dth_job="{job}"}}'})
        assert stored and all(s["job"] == "ray" and "exported_job" not in s for s in stored), stored[:3]
        # grouped by dth_job, each panel's series is this job's (the legend's {{dth_job}} is filled)
        throughput = answers["Throughput (bytes/s)/A"]
        assert [r["metric"] for r in throughput] == [{"dth_job": job}], throughput
    finally:
        prometheus.terminate()
        try:
            prometheus.wait(30)
        except subprocess.TimeoutExpired:
            prometheus.kill()
            prometheus.wait()


def _has_a_number(result: list) -> bool:
    return any(math.isfinite(float(r["value"][1])) for r in result)
