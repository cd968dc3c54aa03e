"""The console's pure parts: console.* settings, the live record and its publisher (a fake clock, a real SQLite
manifest), run states and numbers, the overrides a job's commands are built from, and escaped HTML/SVG."""

from __future__ import annotations

import pytest

from dth_ray.compose import load_config
from dth_ray.console import views
from dth_ray.console.chart import shards_grid_svg, throughput_svg
from dth_ray.console.data import clean, commands, run_view
from dth_ray.errors import ConfigError
from dth_ray.model import Shard, Tally
from dth_ray.naming import store_overrides
from dth_ray.runtime.live import LivePublisher, thin
from dth_ray.runtime.manifest import LIVE_SAMPLES, LiveRecord, RunInfo
from dth_ray.runtime.manifest_sqlite import SqliteManifest
from dth_ray.runtime.progress import Snapshot
from dth_ray.settings import ManifestSpec, resolve


def console_settings(*overrides: str):
    return resolve(load_config(list(overrides), check=False), check=False, console=True).console


def test_console_settings_refuse_an_open_address_without_a_token(monkeypatch):
    assert console_settings().host == "127.0.0.1" and console_settings().port == 8266
    with pytest.raises(ConfigError, match="not a loopback address") as info:
        console_settings("console.host=0.0.0.0")
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="at least 16"):
        console_settings("console.host=0.0.0.0", "console.token=short")
    with pytest.raises(ConfigError, match="CONSOLE_T is not set"):
        console_settings("console.token=env:CONSOLE_T")
    monkeypatch.setenv("CONSOLE_T", "t" * 20)
    settings = console_settings("console.host=10.0.0.5", "console.token=env:CONSOLE_T", "console.port=0")
    assert settings.token == "t" * 20 and not settings.loopback and "t" * 20 not in repr(settings)
    with pytest.raises(ConfigError, match="console.port"):
        console_settings("console.port=70000")


def test_other_commands_never_read_the_console_token(monkeypatch):
    monkeypatch.delenv("UNSET_TOKEN", raising=False)
    cfg = load_config(["console.token=env:UNSET_TOKEN", "source.bucket=src", "destination.bucket=dst"], check=False)
    assert resolve(cfg).console.token == ""


def test_live_record_round_trips_and_goes_stale():
    record = LiveRecord(7, 100.0, objects=3, eta_s=None, running=("a", "b"), samples=((90.0, 1, 2),))
    assert LiveRecord.from_json(record.to_json()) == record
    assert not record.stale(100.0 + 15.0) and record.stale(100.0 + 15.1)


def test_thinning_keeps_the_history_bounded_and_the_newest_sample():
    samples: list = []
    for i in range(5000):
        samples = thin([*samples, (float(i), i, i)])
        assert len(samples) <= LIVE_SAMPLES + 1
    assert samples[-1] == (4999.0, 4999, 4999) and samples[0][0] == 0.0


def test_the_publisher_writes_once_an_interval(tmp_path):
    now = [1000.0]
    manifest = SqliteManifest(str(tmp_path / "m.sqlite"), "job")
    run = manifest.start_run([Shard("s", "")])
    publisher = LivePublisher(manifest, interval_s=5.0, clock=lambda: now[0])
    writes = manifest.writes
    for step in range(100):  # 100 ticks 0.1 s apart: 10 s
        now[0] = 1000.0 + step * 0.1
        publisher.tick(Snapshot(Tally(listed=step, copied=step, bytes_copied=step * 10), shards_total=1), run,
                       ["s"])
    assert publisher.published == 2 and manifest.writes - writes == 2  # at 0 s and 5 s
    live = manifest.live(run)
    assert live.objects == 50 and live.running == ("s",) and len(live.samples) == 2
    publisher.tick(Snapshot(Tally(listed=100, copied=100)), run, phase="succeeded", force=True)
    assert manifest.live(run).phase == "succeeded"
    assert publisher.tick(Snapshot(Tally()), 0, force=True) is None, "a dry run (no run id) publishes nothing"
    manifest.close()


def test_run_numbers_come_from_the_live_record_then_the_report():
    run = RunInfo(3, "running", 1000.0)
    live = LiveRecord(3, 1010.0, objects=40, total_objects=80, bytes=100, total_bytes=400, bytes_per_s=10.0,
                      eta_s=30.0)
    view = run_view(run, live, 1012.0)
    assert (view.state, view.percent, view.eta_s, view.bytes_per_s) == ("running", 25.0, 30.0, 10.0)
    stale = run_view(run, live, 1100.0)
    assert (stale.state, stale.stale, stale.eta_s, stale.bytes_per_s) == ("interrupted", True, None, 0.0)
    done = RunInfo(3, "failed", 1000.0, 1050.0, '{"objects": {"listed": 9, "copied": 7, "skipped": 0, '
                                               '"failed": 2}, "bytes": {"listed": 90}, "bytes_per_s": 1.8}')
    view = run_view(done, None, 2000.0)
    assert (view.objects_done, view.failed, view.percent, view.duration_s) == (9, 2, 100.0, 50.0)
    assert run_view(RunInfo(4, "running", 1999.0), None, 2000.0).state == "running", "no record yet: starting"


def test_store_overrides_name_the_stores_again_without_secrets():
    cfg = load_config(["source=oss", "source.bucket=logs", "source.region=cn-hangzhou",
                       "source.credentials=secret:drh-credentials", "destination.bucket=lake",
                       "destination.endpoint=https://user:pw@s3.example.com", "source.prefix=a b/",
                       "filter.include=[x/*,'y z/**']"], check=False)
    args = store_overrides(cfg)
    assert "source.credentials=secret:drh-credentials" in args and not any("pw" in a for a in args)
    again = load_config(args, check=False)
    assert again.source == cfg.source and again.filter == cfg.filter
    assert again.destination.endpoint == "https://s3.example.com"
    lines = commands("j", args, ManifestSpec(path="/tmp/my manifest.sqlite"))
    assert lines["status"] == "dth-ray status job=j 'manifest.path=/tmp/my manifest.sqlite'"
    assert lines["resume"].startswith("dth-ray sync source=oss") and "'source.prefix='\"'\"'a b/'" in lines["resume"]
    assert commands("j", [], ManifestSpec())["verify"] == ""
    assert clean("s3://b/p@http://key:secret@h:9000") == "s3://b/p@http://h:9000"


def test_html_and_svg_escape_what_they_show():
    evil = '<script>alert("x")</script>'
    job = {"job": evil, "source": evil, "destination": "d", "args": [], "latest": {
        "run_id": 1, "state": "failed", "stale": False, "started": 1.0, "finished": 2.0, "heartbeat": 0.0,
        "percent": 50.0, "objects_done": 1, "objects_total": 2, "bytes_done": 0, "bytes_total": 0,
        "bytes_per_s": 0.0, "eta_s": None, "failed": 1}}
    html = views.jobs_part([job], 3.0)
    assert evil not in html and "&lt;script&gt;" in html
    grid = shards_grid_svg([{"shard": "s", "prefix": evil, "state": "running", "listed": 1}])
    assert evil not in grid and 'class="shard running"' in grid
    chart = throughput_svg([(10.0, 2e6, 5.0), (15.0, 4e6, 9.0)], 5.0)
    assert "<polyline" in chart and 'id="throughput-chart"' in chart
    assert "no throughput samples yet" in throughput_svg([], 0.0)
