"""schedule.window on the real runtime (in-memory stores, no Ray): a sync outside its window starts nothing and
exits 75; one whose window closes mid-copy checkpoints, pauses and reports when the next window opens; the next
invocation inside a window continues the same run without sending again what was copied."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import datetime, timedelta, timezone

from dth_ray.runtime.driver import run_sync
from dth_ray.stores.memory import MemoryStore
from tests.integration.test_runtime_in_memory import assert_exact, dataset, seed, settings_for


def window(start_in_s: float, end_in_s: float) -> str:
    now = datetime.now(timezone.utc)
    return f"{(now + timedelta(seconds=start_in_s)):%H:%M:%S}-{(now + timedelta(seconds=end_in_s)):%H:%M:%S}"


def test_outside_the_window_nothing_starts(tmp_path, buckets):
    seed(buckets[0], dataset(small=20))
    report = run_sync(settings_for(tmp_path, buckets, f"schedule.window={window(3600, 7200)}"), in_process=1)
    assert report.status == "paused" and report.run_id == 0 and report.tally.listed == 0
    opens = datetime.fromisoformat(report.paused_until)
    assert timedelta(minutes=59) < opens - datetime.now(timezone.utc) < timedelta(minutes=61)
    src_calls, dst_calls = MemoryStore.faults(buckets[0]).calls, MemoryStore.faults(buckets[1]).calls
    assert src_calls["list_page"] <= 1, "the preflight probe at most"
    assert src_calls["get"] + src_calls["get_into"] == 0 and dst_calls["put"] == 0
    assert "outside the transfer window" in report.summary()


def test_the_window_closing_mid_copy_pauses_and_the_next_window_continues(tmp_path, buckets):
    objects = dataset(small=240)
    seed(buckets[0], objects)
    MemoryStore.faults(buckets[1]).delay("put", 0.2)  # 2 workers × 4 at a time: ~6 s in all
    closes = window(-3600, 2.5)
    first = run_sync(settings_for(tmp_path, buckets, f"schedule.window={closes}", "transfer.concurrency=4"),
                     in_process=2)
    assert first.status == "paused", first.errors
    assert first.unfinished and 0 < first.tally.copied < len(objects)
    assert first.tally.listed == first.tally.copied + first.tally.skipped + first.tally.failed
    assert datetime.fromisoformat(first.paused_until) - datetime.now(timezone.utc) > timedelta(hours=22)
    puts_before = MemoryStore.faults(buckets[1]).calls["put"]
    MemoryStore.faults(buckets[1]).clear()

    second = run_sync(settings_for(tmp_path, buckets, f"schedule.window={window(-3600, 3600)}"), in_process=2)
    assert second.resumed and second.run_id == first.run_id
    assert_exact(second, objects, buckets, copied=len(objects))
    # What the first window copied is not sent again (the objects in flight at the pause at most once more).
    resent = MemoryStore.faults(buckets[1]).calls["put"] - puts_before - (len(objects) - first.tally.copied)
    assert resent <= 2 * 4, resent


def test_the_cli_exits_75_and_says_when_the_window_opens(tmp_path):
    src, dst = tmp_path / "src", tmp_path / "dst"
    src.mkdir()
    dst.mkdir()
    (src / "a").write_bytes(b"x")
    cli = subprocess.run([sys.executable, "-m", "dth_ray", "sync", "source=local", f"source.path={src}",
                          "destination=local", f"destination.path={dst}", f"manifest.path={tmp_path / 'm.db'}",
                          f"schedule.window={window(600, 1200)}", "schedule.timezone=Asia/Shanghai",
                          "progress=none"], capture_output=True, text=True, timeout=120)
    assert cli.returncode == 75, cli.stdout + cli.stderr
    assert cli.stdout.startswith("paused: 0 listed")
    assert "outside the transfer window (schedule.window): the next one opens at" in cli.stdout
    assert list(dst.iterdir()) == []


def test_a_signal_after_a_pause_still_stops_gently():
    """The window's pause is not a first signal: a Ctrl-C then is the first, not an exit at once."""
    from dth_ray.runtime.interrupts import Interrupts

    interrupts = Interrupts()
    interrupts.pause(datetime.now(timezone.utc))
    assert interrupts.paused and interrupts.exit_status == 75
    done = threading.Event()

    def signal_now():
        interrupts._handle(2, None)  # what the SIGINT handler runs
        done.set()

    thread = threading.Thread(target=signal_now)
    thread.start()
    thread.join(5)
    assert done.is_set() and interrupts.signum == 2 and not interrupts.paused and interrupts.exit_status == 130
