"""The progress model and what shows it: counts, percent of the planned total, a windowed rate and an ETA;
stats lines and JSON events; the planning phase before any object is known."""

import io
import json
import time

from dth_ray.model import Tally
from dth_ray.runtime.progress import ProgressModel, Snapshot, StatsLines, progress_line, stats_line


def test_progress_line_has_rate_and_eta():
    tally = Tally(listed=100, copied=40, skipped=2, failed=1, bytes_copied=40_000_000)
    line = progress_line(Snapshot(tally, bytes_in_flight=20_000_000), 4.0)
    assert "copied 40" in line and "skipped 2" in line and "failed 1" in line
    assert "10.0 MB/s" in line and "10 obj/s" in line
    assert "ETA 2s" in line


def test_planning_is_shown_before_any_object_is_known():
    model = ProgressModel()
    model.planned(prefixes=12, keys=3000)
    model.planned(prefixes=3, keys=10, shards=40)
    line = stats_line(model.view())
    assert line.startswith("planning: 15 prefixes listed, 3,010 keys seen, 40 shards")


def test_percent_rate_and_eta_come_from_the_planned_total_and_a_moving_window():
    model = ProgressModel()
    model.update(Snapshot(Tally(listed=10, copied=10, bytes_listed=10_000_000), total_objects=100,
                          total_bytes=100_000_000))
    time.sleep(0.2)
    # 20 MB more, half of it still in flight but already read: bytes move before the object completes.
    model.update(Snapshot(Tally(listed=20, copied=20, bytes_listed=20_000_000), bytes_landed=10_000_000,
                          total_objects=100, total_bytes=100_000_000, errors={"Throttled": 2, "Transient": 1}))
    v = model.view()
    assert v.bytes == 30_000_000 and v.percent == 30.0
    assert 60e6 < v.bytes_per_s < 110e6  # 20 MB in ~0.2 s
    # 70 MB left at ~100 MB/s is ~0.7 s, but 80 objects left at ~50/s is ~1.6 s: the slower pace wins.
    assert v.eta_s is not None and 1.1 < v.eta_s < 2.3
    assert (v.retries, v.throttled) == (3, 2)
    assert "30%" in stats_line(v) and "retries 3 (throttled 2)" in stats_line(v)


def test_stats_lines_are_text_or_json_events_with_named_fields():
    model = ProgressModel()
    model.update(Snapshot(Tally(listed=5, copied=5, bytes_listed=500), total_objects=10, total_bytes=1000))
    text, as_json = io.StringIO(), io.StringIO()
    StatsLines(model, 60, stream=text).emit()
    StatsLines(model, 60, as_json=True, stream=as_json).emit()
    assert text.getvalue().startswith("copying: 50%")
    event = json.loads(as_json.getvalue())
    assert event["event"] == "progress" and event["percent"] == 50.0 and event["objects"] == 5
    assert event["total_objects"] == 10 and event["copied"] == 5


def test_stats_lines_come_at_every_interval():
    model, out = ProgressModel(), io.StringIO()
    model.phase("planning")
    lines = StatsLines(model, 0.05, stream=out).start()
    time.sleep(0.3)
    lines.close()
    assert len(out.getvalue().splitlines()) >= 4


def test_no_stats_line_while_the_stores_are_checked_nor_after_an_error():
    """Bad input or an unreachable store ends in one line: the error's."""
    model, out = ProgressModel(), io.StringIO()
    lines = StatsLines(model, 0.02, stream=out).start()
    time.sleep(0.15)
    lines.close(final=False)
    assert out.getvalue() == ""
    assert stats_line(model.view()).startswith("checking the source and destination")
