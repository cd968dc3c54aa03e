"""What a run shows while it goes: one progress model fed by the runtime (planning counters, then a snapshot of
the run every tick), and the two ways to show it — a live bar on a terminal (rich), or stats lines (text or
JSON) at a fixed interval for pipes, files, CI and `ray job submit`.

Counts move when an object completes (as the report's and the metrics' do); bytes also move while a large
object is in flight, as its ranges land. The rate is over a moving window, the ETA is what is left of the
planned total (an estimate until the listing ends: shards not listed yet count at the average of those
listed) at that rate.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from dth_ray.model import Tally
from dth_ray.settings import Settings

_WINDOW_S = 20.0  # the rate's moving window


@dataclass(frozen=True, slots=True)
class Snapshot:
    """The run so far: every result known (settled or not) and the objects and bytes being copied now (of
    which `bytes_landed` have already been read), and an estimate of the planned total."""

    tally: Tally
    objects_in_flight: int = 0
    bytes_in_flight: int = 0
    shards_done: int = 0
    shards_total: int = 0
    total_objects: int = 0  # estimated planned total (listed so far + the shards not listed yet)
    total_bytes: int = 0
    bytes_landed: int = 0  # of the bytes in flight, those already read
    objects_ahead: int = 0  # listed by the shards, not decided yet (part of the planned total)
    bytes_ahead: int = 0
    errors: dict[str, int] = field(default_factory=dict)  # store requests that failed (retried), by class


@dataclass
class View:
    """What a renderer draws."""

    phase: str
    elapsed_s: float
    objects: int = 0
    bytes: int = 0
    total_objects: int = 0
    total_bytes: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_per_s: float = 0.0
    objects_per_s: float = 0.0
    eta_s: float | None = None
    retries: int = 0
    throttled: int = 0
    prefixes_listed: int = 0
    keys_seen: int = 0
    shards_planned: int = 0
    shards_done: int = 0

    @property
    def percent(self) -> float | None:
        if self.total_bytes:
            return min(100.0, 100.0 * self.bytes / self.total_bytes)
        if self.total_objects:
            return min(100.0, 100.0 * self.objects / self.total_objects)
        return None


CHECKING = "checking"  # the first phase: preflight of the stores (no stats lines yet)


class ProgressModel:
    """Shared by the runtime (writers) and a renderer (reader); thread-safe."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self._lock = threading.Lock()
        self._phase = CHECKING
        self._planning = [0, 0, 0]  # prefixes listed, keys seen, shards planned
        self._snap: Snapshot | None = None
        self._samples: deque[tuple[float, int, int]] = deque()  # (time, bytes done or landed, objects done)

    def planned(self, prefixes: int = 0, keys: int = 0, shards: int = 0) -> None:
        """Planning listed `prefixes` more prefixes and saw `keys` more keys; `shards` planned so far."""
        with self._lock:
            if self._phase == CHECKING:
                self._phase = "planning"
            self._planning[0] += prefixes
            self._planning[1] += keys
            self._planning[2] = max(self._planning[2], shards)

    def update(self, snap: Snapshot, phase: str = "copying") -> None:
        with self._lock:
            self._snap, self._phase = snap, phase
            now = time.monotonic()
            self._samples.append((now, snap.tally.bytes_listed + snap.bytes_landed, snap.tally.listed))
            while self._samples and now - self._samples[0][0] > _WINDOW_S and len(self._samples) > 2:
                self._samples.popleft()

    def phase(self, phase: str) -> None:
        with self._lock:
            self._phase = phase

    def view(self) -> View:
        with self._lock:
            snap, phase = self._snap, self._phase
            prefixes, keys, shards = self._planning
            samples = list(self._samples)
        v = View(phase, time.monotonic() - self.started, prefixes_listed=prefixes, keys_seen=keys,
                 shards_planned=shards)
        if snap is None:
            return v
        t = snap.tally
        v.objects, v.bytes = t.listed, t.bytes_listed + snap.bytes_landed
        v.copied, v.skipped, v.failed = t.copied, t.skipped, t.failed
        v.total_objects = max(snap.total_objects, v.objects)
        v.total_bytes = max(snap.total_bytes, v.bytes)
        v.retries = sum(snap.errors.values())
        v.throttled = snap.errors.get("Throttled", 0)
        v.shards_done, v.shards_planned = snap.shards_done, max(shards, snap.shards_total)
        if len(samples) >= 2 and samples[-1][0] > samples[0][0]:
            span = samples[-1][0] - samples[0][0]
            v.bytes_per_s = (samples[-1][1] - samples[0][1]) / span
            v.objects_per_s = (samples[-1][2] - samples[0][2]) / span
        left_bytes, left_objects = v.total_bytes - v.bytes, v.total_objects - v.objects
        # The slower of the two paces: many small objects left go at their objects' rate, not the bytes' one.
        etas = [left / rate for left, rate in ((left_bytes, v.bytes_per_s), (left_objects, v.objects_per_s))
                if left > 0 and rate > 0]
        if etas:
            v.eta_s = max(etas)
        elif v.total_objects and not left_objects:
            v.eta_s = 0.0
        return v


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB"


def stats_line(v: View) -> str:
    """One readable line (a stats line in a log, like rclone's --stats)."""
    if v.phase == CHECKING:
        return f"checking the source and destination · {v.elapsed_s:,.0f}s"
    if v.phase == "planning" and not v.objects:
        return (f"planning: {v.prefixes_listed:,} prefixes listed, {v.keys_seen:,} keys seen, "
                f"{v.shards_planned:,} shards · {v.elapsed_s:,.0f}s")
    pct = f"{v.percent:.0f}%" if v.percent is not None else "-"
    eta = f"ETA {v.eta_s:,.0f}s" if v.eta_s is not None else "ETA -"
    return (f"{v.phase}: {pct} · {_mb(v.bytes)} of ~{_mb(v.total_bytes)} · {v.objects:,} of ~{v.total_objects:,} "
            f"objects ({v.copied:,} copied, {v.skipped:,} skipped, {v.failed:,} failed) · "
            f"{v.bytes_per_s / 1e6:,.1f} MB/s · {v.objects_per_s:,.0f} obj/s · {eta} · retries {v.retries:,}"
            f" (throttled {v.throttled:,}) · {v.elapsed_s:,.0f}s")


def stats_event(v: View) -> dict:
    """The same as a JSON log event with named fields."""
    return {"event": "progress", "phase": v.phase, "elapsed_s": round(v.elapsed_s, 1), "objects": v.objects,
            "total_objects": v.total_objects, "bytes": v.bytes, "total_bytes": v.total_bytes,
            "percent": None if v.percent is None else round(v.percent, 1), "copied": v.copied,
            "skipped": v.skipped, "failed": v.failed, "bytes_per_s": round(v.bytes_per_s, 1),
            "objects_per_s": round(v.objects_per_s, 1),
            "eta_s": None if v.eta_s is None else round(v.eta_s, 1), "retries": v.retries,
            "throttled": v.throttled, "prefixes_listed": v.prefixes_listed, "keys_seen": v.keys_seen,
            "shards_planned": v.shards_planned, "shards_done": v.shards_done}


class StatsLines:
    """A stats line every `interval_s` on stderr (JSON events with `as_json`), whatever the log level."""

    def __init__(self, model: ProgressModel, interval_s: float, as_json: bool = False, stream=None):
        self.model, self.interval_s, self.as_json = model, interval_s, as_json
        self._stream = stream or sys.stderr
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dth-stats", daemon=True)

    def start(self) -> StatsLines:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.emit()

    def emit(self) -> None:
        v = self.model.view()
        if v.phase == CHECKING:
            return  # no lines until the stores answered: bad input or an unreachable store ends in one line
        text = json.dumps(stats_event(v)) if self.as_json else stats_line(v)
        self._stream.write(text + "\n")
        self._stream.flush()

    def close(self, final: bool = True) -> None:
        self._stop.set()
        self._thread.join(5)
        if final:
            self.emit()  # the final state, once


class LiveBar:
    """A live bar on the terminal (rich), redrawn a few times a second from the model."""

    def __init__(self, model: ProgressModel):
        from rich.console import Console
        from rich.live import Live

        self.model = model
        self._live = Live(get_renderable=self._render, console=Console(stderr=True), refresh_per_second=4,
                          transient=False)

    def start(self) -> LiveBar:
        self._live.start()
        return self

    def _render(self):
        from rich.progress_bar import ProgressBar
        from rich.table import Table

        v = self.model.view()
        grid = Table.grid(padding=(0, 1))
        if v.phase == CHECKING:
            grid.add_row(stats_line(v))
            return grid
        if v.phase == "planning" and not v.objects:
            grid.add_row(f"[bold]planning[/] {v.prefixes_listed:,} prefixes listed · {v.keys_seen:,} keys seen · "
                         f"{v.shards_planned:,} shards · {v.elapsed_s:,.0f}s")
            return grid
        pct = v.percent
        bar = ProgressBar(total=100.0, completed=pct or 0.0, width=30, pulse=pct is None)
        eta = f"ETA {v.eta_s:,.0f}s" if v.eta_s is not None else "ETA -"
        grid.add_row(bar, f"{pct:3.0f}%" if pct is not None else "  -%",
                     f"{_mb(v.bytes)} / ~{_mb(v.total_bytes)}", f"{v.bytes_per_s / 1e6:,.1f} MB/s", eta)
        detail = Table.grid()
        detail.add_row(f"{v.objects:,} / ~{v.total_objects:,} objects · {v.copied:,} copied · {v.skipped:,} "
                       f"skipped · {v.failed:,} failed · {v.objects_per_s:,.0f} obj/s · retries {v.retries:,} "
                       f"(throttled {v.throttled:,}) · {v.phase} · {v.elapsed_s:,.0f}s")
        outer = Table.grid()
        outer.add_row(grid)
        outer.add_row(detail)
        return outer

    def close(self, final: bool = True) -> None:
        if final:
            self._live.refresh()
        else:
            self._live.transient = True  # an error follows: leave its line alone on the screen
        self._live.stop()


def progress_line(p: Snapshot, elapsed_s: float) -> str:
    """One status line from a snapshot alone (no window): counts, bytes, rate, ETA of the bytes in flight."""
    t = p.tally
    rate = t.bytes_copied / elapsed_s if elapsed_s > 0 else 0.0
    obj_rate = t.copied / elapsed_s if elapsed_s > 0 else 0.0
    eta = f"ETA {p.bytes_in_flight / rate:,.0f}s" if rate > 0 and p.bytes_in_flight > 0 else "ETA -"
    return (f"\rlisted {t.listed:,} · copied {t.copied:,} · skipped {t.skipped:,} · failed {t.failed:,} · "
            f"{t.bytes_copied / 1e6:,.1f} MB · {rate / 1e6:,.1f} MB/s · {obj_rate:,.0f} obj/s · "
            f"{eta} · {elapsed_s:,.0f}s ")


@contextlib.contextmanager
def showing_progress(settings: Settings):
    """The run's progress on stderr from the first second: a live bar on a terminal, stats lines otherwise
    (`progress=auto`), or as `progress` says; yields the model the run feeds (None with progress=none)."""
    mode = settings.progress
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "lines"
    if mode == "none":
        yield None
        return
    model = ProgressModel()
    if mode == "bar":
        shown = LiveBar(model)
    else:
        shown = StatsLines(model, settings.progress_interval_s, as_json=settings.config.log.format.value == "json")
    shown.start()
    try:
        yield model
    except BaseException:
        shown.close(final=False)
        raise
    model.phase("done")
    shown.close()
