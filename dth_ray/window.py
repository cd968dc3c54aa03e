"""Transfer windows (`schedule.window=HH:MM-HH:MM` in `schedule.timezone`): when batch transfer may run.

A window repeats daily; its end may be past midnight (`22:00-06:00`); seconds are optional (`HH:MM:SS`).
Local wall-clock times in a zone with daylight saving: a day's window starts and ends at those local times,
so a window across a DST change lasts an hour more or less that day; a time that does not exist that day (in
the spring gap) is read as the same wall time an hour later, per zoneinfo's `fold` rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, time, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

_SPEC = re.compile(r"(\d{1,2}):(\d{2})(?::(\d{2}))?-(\d{1,2}):(\d{2})(?::(\d{2}))?")


@dataclass(frozen=True, slots=True)
class Window:
    """A daily window from `start` to `end` (local times in `zone`); `end` <= `start` means it ends the next
    day; `start == end` is refused (say nothing at all instead)."""

    start: time
    end: time
    zone: str = "UTC"

    def _tz(self) -> ZoneInfo:
        return ZoneInfo(self.zone)

    def _spans(self, now: datetime) -> list[tuple[datetime, datetime]]:
        """The windows that start on the local day before, of and after `now` (UTC-aware)."""
        tz = self._tz()
        day = now.astimezone(tz).date()
        out = []
        for offset in (-1, 0, 1):
            d = day + timedelta(days=offset)
            begins = datetime.combine(d, self.start, tz)
            ends = datetime.combine(d + timedelta(days=1) if self.end <= self.start else d, self.end, tz)
            out.append((begins.astimezone(timezone.utc), ends.astimezone(timezone.utc)))
        return out

    def is_open(self, now: datetime) -> bool:
        return any(b <= now < e for b, e in self._spans(now))

    def closes_at(self, now: datetime) -> datetime | None:
        """When the window open at `now` ends (None when it is closed)."""
        return next((e for b, e in self._spans(now) if b <= now < e), None)

    def opens_at(self, now: datetime) -> datetime:
        """When the next window begins (`now` itself when one is open)."""
        if self.is_open(now):
            return now
        return min(b for b, _ in self._spans(now) if b > now)

    def hours_per_day(self) -> float:
        """Its length (a nominal day: the DST day's extra or missing hour aside)."""
        start = self.start.hour * 3600 + self.start.minute * 60 + self.start.second
        end = self.end.hour * 3600 + self.end.minute * 60 + self.end.second
        return ((end - start) % 86400) / 3600

    def describe(self) -> str:
        return f"{self.start.isoformat()}-{self.end.isoformat()} {self.zone}"


def parse_window(spec: str, zone: str = "UTC", key: str = "schedule.window") -> Window | None:
    """`HH:MM[:SS]-HH:MM[:SS]` in `zone` (an IANA name); '' means no window. Raises ValueError naming the key."""
    spec = spec.strip()
    if not spec:
        return None
    m = _SPEC.fullmatch(spec.replace(" ", ""))
    if m is None:
        raise ValueError(f"{key}={spec!r} must look like HH:MM-HH:MM (e.g. 22:00-06:00)")
    h1, m1, s1, h2, m2, s2 = (int(g or 0) for g in m.groups())
    try:
        start, end = time(h1, m1, s1), time(h2, m2, s2)
    except ValueError:
        raise ValueError(f"{key}={spec!r} has a time that does not exist (hours 0-23, minutes 0-59)") from None
    if start == end:
        raise ValueError(f"{key}={spec!r} starts and ends at the same time; leave it empty for no window")
    try:
        ZoneInfo(zone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"schedule.timezone={zone!r} is not a time zone name (e.g. UTC, Asia/Shanghai)") from None
    return Window(start, end, zone)
