"""`dth-ray watch` writes the same kind of stats lines as a sync on stderr, whatever log_level says: one
readable line per interval (messages, events, outcomes, lag, held, scans), or a JSON event under
log.format=json; none with progress=none."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from dth_ray.compose import load_settings
from dth_ray.ops.logs import setup_logging
from dth_ray.sync.watch import WatchService
from tests.integration.test_runtime_in_memory import dataset, seed


@pytest.fixture(autouse=True)
def _logging_as_it_was():
    """These tests set logging up as the CLI does; the tests after them get the root logger back as it was."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    for handler in handlers:
        if handler not in root.handlers:
            root.addHandler(handler)
    root.setLevel(level)


def _serve(tmp_path, buckets, *extra: str) -> None:
    src, dst = buckets
    settings = load_settings(["source.type=memory", f"source.bucket={src}", "destination.type=memory",
                              f"destination.bucket={dst}", f"manifest.path={tmp_path / 'm.sqlite'}",
                              "schedule.on_start=true", "schedule.interval=1h", "events.report_interval_s=0.2",
                              "progress_interval=0.2s", "log_level=ERROR", *extra])
    setup_logging(settings.config)  # as the CLI does before it starts the service
    service = WatchService(settings, in_process=1)
    runner = threading.Thread(target=service.run, daemon=True)
    runner.start()
    deadline = time.monotonic() + 60
    while service.metrics.scans["runs"] < 1:
        assert time.monotonic() < deadline and runner.is_alive(), "the scan on start did not finish"
        time.sleep(0.05)
    time.sleep(0.5)  # a few intervals after the scan
    service.stop("test")
    runner.join(60)
    assert not runner.is_alive()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_watch_prints_stats_lines_at_every_interval(tmp_path, buckets, capsys, fmt):
    seed(buckets[0], dataset(small=10))
    _serve(tmp_path, buckets, "progress=lines", f"log.format={fmt}")
    err = capsys.readouterr().err.splitlines()
    if fmt == "text":
        stats = [line for line in err if line.startswith("watch: ") and " messages, " in line]
        assert len(stats) >= 2, err
        assert "scans {" in stats[-1] and "'succeeded': 1" in stats[-1] and "lag p95" in stats[-1]
    else:
        events = [json.loads(line) for line in err if line.startswith("{")]
        stats = [e for e in events if e.get("event") == "watch_stats"]
        assert len(stats) >= 2, err
        assert stats[-1]["scans"]["succeeded"] == 1 and stats[-1]["messages"] == 0 and "latency_s" in stats[-1]


def test_progress_none_prints_no_stats(tmp_path, buckets, capsys):
    seed(buckets[0], dataset(small=10))
    _serve(tmp_path, buckets, "progress=none")
    err = capsys.readouterr().err
    assert " messages, " not in err and "watch_stats" not in err
