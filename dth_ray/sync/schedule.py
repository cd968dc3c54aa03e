"""When the scheduled batch sync runs: interval or 5-field cron ticks, and the skip/defer policy (pure).

Policy at a due tick: while the previous scan still runs, the tick is skipped (the next one is scheduled);
while event-driven transfers are in flight it is deferred, but by at most `max_defer` — then the scan runs
anyway, so a steady event stream cannot starve the repair scan (per-key ordering keeps the two paths
consistent). Times are epoch seconds passed in by the caller; nothing here reads a clock.
"""

from __future__ import annotations

import calendar
import time
from dataclasses import dataclass

from dth_ray.errors import ConfigError
from dth_ray.settings import ScheduleSettings

WAIT = "wait"
RUN = "run"
SKIP = "skip"
DEFER = "defer"

_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12), ("day of week", 0, 7))
_NAMES = {
    3: {m: i + 1 for i, m in enumerate(("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct",
                                        "nov", "dec"))},
    4: {d: i for i, d in enumerate(("sun", "mon", "tue", "wed", "thu", "fri", "sat"))},
}
_MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
           "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_SEARCH_DAYS = 366 * 8  # long enough for "29 2" on a leap day with a day-of-week restriction


def _field_values(text: str, index: int) -> set[int]:
    name, low, high = _FIELDS[index]
    names = _NAMES.get(index, {})
    values: set[int] = set()

    def number(token: str) -> int:
        token = token.strip().lower()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise ValueError(f"{token!r} is not a number")
        value = int(token)
        if not low <= value <= high:
            raise ValueError(f"{value} is outside {low}-{high}")
        return value

    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ValueError(f"step {step_text!r} must be a positive number")
            step = int(step_text)
        if body == "*":
            start, end = low, high
        elif "-" in body:
            first, _, last = body.partition("-")
            start, end = number(first), number(last)
            if start > end:
                raise ValueError(f"range {body!r} runs backwards")
        else:
            start = number(body)
            end = high if step_text else start
        values.update(range(start, end + 1, step))
    if index == 4 and 7 in values:  # 7 is Sunday too
        values.discard(7)
        values.add(0)
    return values


@dataclass(frozen=True)
class Cron:
    """A parsed 5-field cron expression (minute hour day-of-month month day-of-week), evaluated in UTC.
    As in Vixie cron, when both day fields are restricted a day matching either one matches."""

    expression: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Cron:
        """Raises ConfigError naming schedule.cron for a malformed expression or one that never matches."""
        text = _MACROS.get(expression.strip().lower(), expression)
        fields = text.split()
        if len(fields) != 5:
            raise ConfigError(f"schedule.cron={expression!r} must have 5 fields: minute hour day month weekday")
        try:
            sets = [frozenset(_field_values(f, i)) for i, f in enumerate(fields)]
        except ValueError as exc:
            raise ConfigError(f"schedule.cron={expression!r}: {exc}") from None
        cron = cls(expression, *sets, any_day=fields[2] == "*", any_weekday=fields[4] == "*")
        cron.next_after(0.0)  # raises when no date ever matches (e.g. 30 2 = February 30th)
        return cron

    def _day_matches(self, year: int, month: int, day: int) -> bool:
        if month not in self.months:
            return False
        weekday = (calendar.weekday(year, month, day) + 1) % 7  # Monday=0 → Sunday=0
        if self.any_day or self.any_weekday:
            return (self.any_day or day in self.days) and (self.any_weekday or weekday in self.weekdays)
        return day in self.days or weekday in self.weekdays

    def next_after(self, t_s: float) -> float:
        """The first matching minute strictly after `t_s` (epoch seconds, UTC). Raises ConfigError if none."""
        start = int(t_s // 60 + 1) * 60
        tm = time.gmtime(start)
        year, month, day, hour, minute = tm.tm_year, tm.tm_mon, tm.tm_mday, tm.tm_hour, tm.tm_min
        hours = sorted(self.hours)
        minutes = sorted(self.minutes)
        for _ in range(_SEARCH_DAYS):
            if self._day_matches(year, month, day):
                for h in hours:
                    if h < hour:
                        continue
                    for m in minutes:
                        if h == hour and m < minute:
                            continue
                        return float(calendar.timegm((year, month, day, h, m, 0, 0, 0, 0)))
            day += 1
            hour = minute = 0
            if day > calendar.monthrange(year, month)[1]:
                day = 1
                month += 1
                if month > 12:
                    month = 1
                    year += 1
        raise ConfigError(f"schedule.cron={self.expression!r} never matches a date")


@dataclass(frozen=True, slots=True)
class Decision:
    """What to do now: wait, run, skip (this tick) or defer; `reason` for the log line (set once per tick)."""

    action: str
    reason: str = ""


class Schedule:
    """Tick times and the skip/defer policy. Call `decide(now, ...)` often (e.g. every 100 ms)."""

    def __init__(self, interval_s: float | None, cron: Cron | None, max_defer_s: float, now_s: float,
                 on_start: bool = False):
        self.interval_s = interval_s
        self.cron = cron
        self.max_defer_s = max_defer_s
        self.next_due_s: float | None = now_s if on_start else self._after(now_s)
        self._deferring_since: float | None = None
        self.skipped = 0
        self.deferred = 0

    @classmethod
    def from_settings(cls, settings: ScheduleSettings, now_s: float) -> Schedule:
        """Raises ConfigError for a cron expression that does not parse."""
        cron = Cron.parse(settings.cron) if settings.cron else None
        return cls(settings.interval_s, cron, settings.max_defer_s, now_s, settings.on_start)

    @property
    def enabled(self) -> bool:
        return self.next_due_s is not None

    def _after(self, t_s: float) -> float | None:
        if self.cron is not None:
            return self.cron.next_after(t_s)
        return t_s + self.interval_s if self.interval_s else None

    def _advance(self, due_s: float, now_s: float) -> None:
        """The next tick after `now_s` (ticks that passed meanwhile are not replayed)."""
        nxt = self._after(due_s)
        while nxt is not None and nxt <= now_s:
            nxt = self._after(nxt)
        self.next_due_s = nxt

    def decide(self, now_s: float, scan_running: bool, events_in_flight: int) -> Decision:
        """The policy at `now_s`, given whether a scan runs and how many event transfers are in flight."""
        due = self.next_due_s
        if due is None or now_s < due:
            return Decision(WAIT)
        if scan_running:
            self._deferring_since = None
            self._advance(due, now_s)
            self.skipped += 1
            return Decision(SKIP, "the previous scan is still running")
        if events_in_flight > 0:
            if self._deferring_since is None:
                self._deferring_since = now_s
                self.deferred += 1
                return Decision(DEFER, f"{events_in_flight} event-driven transfers in flight; deferring up to "
                                       f"{self.max_defer_s:.0f}s")
            if now_s - self._deferring_since < self.max_defer_s:
                return Decision(DEFER)
            reason = (f"deferred {now_s - self._deferring_since:.0f}s (schedule.max_defer reached) with "
                      f"{events_in_flight} event-driven transfers still in flight")
        else:
            reason = "deferred until event-driven transfers finished" if self._deferring_since is not None else ""
        self._deferring_since = None
        self._advance(due, now_s)
        return Decision(RUN, reason)
