"""Schedule ticks (interval, 5-field cron in UTC) and the policy: skip while a scan runs, defer while event
transfers are in flight but never beyond max_defer."""

from __future__ import annotations

import calendar

import pytest

from dth_ray.config import ScheduleConfig
from dth_ray.errors import ConfigError
from dth_ray.settings import parse_interval, resolve_schedule
from dth_ray.sync.schedule import DEFER, RUN, SKIP, WAIT, Cron, Schedule


def utc(*args: int) -> float:
    return float(calendar.timegm((*args, 0, 0, 0, 0)[:9]))


def test_interval_ticks_and_none():
    s = Schedule(parse_interval("1h"), None, 600, now_s=1000.0)
    assert s.next_due_s == 4600.0
    assert s.decide(4599.0, False, 0).action == WAIT
    assert s.decide(4600.0, False, 0).action == RUN
    assert s.next_due_s == 8200.0
    assert parse_interval("none") is None and parse_interval("off") is None
    off = Schedule(None, None, 600, now_s=0.0)
    assert not off.enabled and off.decide(1e9, False, 0).action == WAIT
    with pytest.raises(ConfigError, match="schedule.interval"):
        parse_interval("soon")


def test_on_start_runs_at_once():
    s = Schedule.from_settings(resolve_schedule(ScheduleConfig(interval="30m", on_start=True)), now_s=50.0)
    assert s.decide(50.0, False, 0).action == RUN
    assert s.next_due_s == 50.0 + 1800


def test_tick_during_running_scan_is_skipped_with_reason_and_next_tick_planned():
    s = Schedule(10.0, None, 600, now_s=0.0)
    assert s.decide(10.0, False, 0).action == RUN
    d = s.decide(20.5, True, 0)  # the scan started at 10 is still running at the tick of 20
    assert d.action == SKIP and "still running" in d.reason
    assert s.next_due_s == 30.0 and s.skipped == 1
    assert s.decide(21.0, True, 0).action == WAIT  # one log line per tick, not per call
    d = s.decide(75.0, True, 0)  # several ticks passed during one long scan: skipped once, not replayed
    assert d.action == SKIP and s.next_due_s == 80.0


def test_events_in_flight_defer_a_tick_at_most_max_defer():
    s = Schedule(100.0, None, max_defer_s=30.0, now_s=0.0)
    first = s.decide(100.0, False, 7)
    assert first.action == DEFER and "7 event-driven transfers" in first.reason
    assert s.decide(110.0, False, 3) == type(first)(DEFER)  # still deferring, no new log line
    forced = s.decide(130.0, False, 5)  # max_defer reached: the scan runs anyway
    assert forced.action == RUN and "max_defer" in forced.reason
    assert s.next_due_s == 200.0


def test_deferral_ends_when_events_drain():
    s = Schedule(100.0, None, max_defer_s=600.0, now_s=0.0)
    assert s.decide(100.0, False, 2).action == DEFER
    d = s.decide(104.0, False, 0)
    assert d.action == RUN and "finished" in d.reason and s.deferred == 1


def test_cron_next_times_utc():
    every_15 = Cron.parse("*/15 * * * *")
    assert every_15.next_after(utc(2024, 5, 1, 12, 7, 30)) == utc(2024, 5, 1, 12, 15)
    assert every_15.next_after(utc(2024, 5, 1, 12, 45)) == utc(2024, 5, 1, 13, 0)
    nightly = Cron.parse("30 2 * * *")
    assert nightly.next_after(utc(2024, 5, 1, 2, 30)) == utc(2024, 5, 2, 2, 30)
    weekdays = Cron.parse("0 9 * * mon-fri")
    assert weekdays.next_after(utc(2024, 5, 3, 10, 0)) == utc(2024, 5, 6, 9, 0)  # Friday → Monday
    sunday7 = Cron.parse("0 0 * * 7")
    assert sunday7.next_after(utc(2024, 5, 1)) == utc(2024, 5, 5)
    either = Cron.parse("0 0 13 * 5")  # the 13th OR a Friday (Vixie cron)
    assert either.next_after(utc(2024, 5, 1)) == utc(2024, 5, 3)
    leap = Cron.parse("0 0 29 2 *")
    assert leap.next_after(utc(2024, 3, 1)) == utc(2028, 2, 29)
    assert Cron.parse("@hourly").next_after(utc(2024, 1, 1, 0, 0, 1)) == utc(2024, 1, 1, 1, 0)
    assert Cron.parse("0 0 1 jan,jul *").next_after(utc(2024, 2, 1)) == utc(2024, 7, 1)


def test_cron_schedule_and_errors():
    s = Schedule.from_settings(resolve_schedule(ScheduleConfig(cron="0 * * * *", interval="none")),
                               now_s=utc(2024, 5, 1, 12, 30))
    assert s.next_due_s == utc(2024, 5, 1, 13, 0)
    for bad in ["* * * *", "61 * * * *", "*/0 * * * *", "5-1 * * * *", "0 0 30 2 *", "x * * * *"]:
        with pytest.raises(ConfigError, match="schedule.cron"):
            Cron.parse(bad)
