"""Transfer windows: open/closed, where they end and when the next opens, past midnight, across DST, and
one-line errors for a bad spec or zone."""

from datetime import datetime, time, timezone

import pytest

from dth_ray.window import parse_window


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=timezone.utc)


def test_a_window_past_midnight_in_another_zone():
    w = parse_window("22:00-06:00", "Asia/Shanghai")  # UTC+8: 14:00-22:00 UTC
    assert w.is_open(utc(2026, 12, 4, 15)) and w.is_open(utc(2026, 12, 4, 21, 59, 59))
    assert not w.is_open(utc(2026, 12, 4, 22)) and not w.is_open(utc(2026, 12, 4, 13, 59))
    assert w.closes_at(utc(2026, 12, 4, 15)) == utc(2026, 12, 4, 22)
    assert w.closes_at(utc(2026, 12, 4, 12)) is None
    assert w.opens_at(utc(2026, 12, 4, 23)) == utc(2026, 12, 5, 14)
    assert w.opens_at(utc(2026, 12, 4, 15)) == utc(2026, 12, 4, 15)  # open now
    assert w.hours_per_day() == 8.0


def test_a_window_within_a_day_with_seconds():
    w = parse_window("09:30:15-09:30:45")
    assert w.start == time(9, 30, 15) and w.end == time(9, 30, 45)
    assert w.is_open(utc(2026, 1, 1, 9, 30, 15)) and not w.is_open(utc(2026, 1, 1, 9, 30, 45))
    assert w.opens_at(utc(2026, 1, 1, 9, 31)) == utc(2026, 1, 2, 9, 30, 15)


def test_local_times_hold_across_a_dst_change():
    w = parse_window("01:00-05:00", "America/New_York")
    # 2026-03-08: clocks go from 02:00 to 03:00 local; the window still ends at 05:00 local (09:00 UTC, EDT).
    assert w.closes_at(utc(2026, 3, 8, 7)) == utc(2026, 3, 8, 9)
    # The day before (EST): 05:00 local is 10:00 UTC.
    assert w.closes_at(utc(2026, 3, 7, 7)) == utc(2026, 3, 7, 10)


@pytest.mark.parametrize(("spec", "zone", "message"), [
    ("22-06", "UTC", "schedule.window='22-06' must look like HH:MM-HH:MM"),
    ("24:00-06:00", "UTC", "has a time that does not exist"),
    ("06:00-06:00", "UTC", "starts and ends at the same time"),
    ("22:00-06:00", "Mars/Olympus", "schedule.timezone='Mars/Olympus' is not a time zone name"),
])
def test_bad_windows_are_one_line_errors(spec, zone, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_window(spec, zone)


def test_no_window_is_none():
    assert parse_window("") is None and parse_window("  ") is None
