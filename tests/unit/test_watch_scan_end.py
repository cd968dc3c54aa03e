"""How `dth-ray watch` records a scheduled scan that the service's stop ends before it had a run (while it was
planning): 'interrupted', a routine end logged at INFO, not a failed scan ('error', WARNING and a traceback).
The scan itself is replaced by one that raises what `run_sync` raises then: the watch's own handling is tested."""

from __future__ import annotations

import logging

from dth_ray.compose import load_settings
from dth_ray.runtime.interrupts import Interrupted, Interrupts
from dth_ray.sync import watch as watch_mod


def test_a_scan_stopped_while_planning_ends_interrupted_not_error(tmp_path, monkeypatch, caplog):
    settings = load_settings(["source.type=memory", "source.bucket=ws", "destination.type=memory",
                              "destination.bucket=wd", f"manifest.path={tmp_path / 'm.sqlite'}"])
    service = watch_mod.WatchService(settings, in_process=1)
    stop = Interrupts()

    def stopped_while_planning(*args, **kwargs):
        raise Interrupted(stop, "interrupted while planning; nothing was started")

    monkeypatch.setattr(watch_mod, "run_sync", stopped_while_planning)
    service._scan_interrupts = stop
    caplog.set_level(logging.INFO, logger="dth_ray.sync.watch")
    service._scan_main()
    service._scan_finished()
    assert service.metrics.last_scan["status"] == "interrupted"
    assert service.metrics.scans["interrupted"] == 1 and not service.metrics.scans.get("error")
    ends = [r for r in caplog.records if "scheduled scan interrupted" in r.getMessage()]
    assert ends and ends[0].levelno == logging.INFO
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
