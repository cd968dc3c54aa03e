"""dth-ray watch, scheduled: the batch sync runs on its ticks; a tick while the previous scan still runs is
skipped with a log line saying why; the scan's result is in the service's report."""

from __future__ import annotations

import logging
import random
import time

from tests.integration.helpers import listing, s3_overrides
from tests.integration.watch_helpers import RunningWatch, wait_for
from tests.servers.s3_servers import seed_objects


def test_tick_during_running_scan_is_skipped(e2e_env, ray_local, unique_prefix, tmp_path, caplog):
    pair = e2e_env
    rng = random.Random(9)
    items = {f"{unique_prefix}s{i % 6}/o-{i:04d}": rng.randbytes(2000) for i in range(300)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    dst_prefix = "scheduled/" + unique_prefix
    overrides = [*s3_overrides(pair, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite")),
                 "events=none", "schedule.interval=1s", "schedule.on_start=true", f"report={tmp_path / 'w.json'}"]
    caplog.set_level(logging.INFO, logger="dth_ray.sync.watch")
    with RunningWatch(overrides) as w:
        # A scan (actors start, 300 objects listed and copied) takes longer than the 1 s interval.
        wait_for(lambda: w.service.metrics.scans["skipped"] >= 1 and w.service.metrics.scans["runs"] >= 1, 120,
                 "a skipped tick and a finished scan")
        final = w.stop()
    skipped = [r.getMessage() for r in caplog.records if "scheduled scan skipped" in r.getMessage()]
    assert skipped and "the previous scan is still running" in skipped[0]
    # The first scan succeeded; the next tick's scan may have begun just before the stop and then ends
    # 'interrupted' (resumed by the next start), never 'error'.
    assert final["scans"]["succeeded"] >= 1 and not final["scans"].get("error")
    assert final["scans"]["last"]["status"] in ("succeeded", "interrupted"), final["scans"]["last"]
    assert final["scans"]["runs"] >= 1 and final["scans"]["skipped"] >= 1
    got = listing(pair.destination.client(), pair.destination.bucket, dst_prefix)
    assert len(got) == len(items)
    assert (tmp_path / "w.json").read_text().count('"skipped"') >= 1


def test_event_transfers_defer_a_tick_at_most_max_defer(e2e_env, ray_local, moto_server, unique_prefix, tmp_path,
                                                        caplog):
    from tests.integration.watch_helpers import SqsQueue, dth_body, watch_overrides

    pair = e2e_env
    rng = random.Random(10)
    items = {f"{unique_prefix}big-{i}": rng.randbytes(3 * 1024 * 1024) for i in range(4)}
    seed_objects(pair.source.client(), pair.source.bucket, items)
    q = SqsQueue(moto_server)
    dst_prefix = "deferred/" + unique_prefix
    overrides = [*watch_overrides(pair, moto_server, q, unique_prefix, dst_prefix, str(tmp_path / "m.sqlite")),
                 "schedule.interval=1h", "schedule.max_defer=1s", "transfer.max_bandwidth=1MB",
                 "events.visibility_timeout_s=10"]
    caplog.set_level(logging.INFO, logger="dth_ray.sync.watch")
    with RunningWatch(overrides) as w:
        q.send([dth_body(k, len(b)) for k, b in items.items()])  # ~6 s of transfers at 2 × 1 MB/s
        wait_for(lambda: w.service.busy()[2] > 0, 60, "event transfers in flight")
        w.service.schedule.next_due_s = time.time()  # the hourly tick falls due now, mid-transfer
        wait_for(lambda: w.service.metrics.scans["runs"] >= 1, 120, "the scan, run despite the event stream")
        wait_for(lambda: w.idle() and q.depth() == 0, 60, "queue drained")
        final = w.stop()
    lines = [r.getMessage() for r in caplog.records]
    assert any("scheduled scan deferred" in m and "event-driven transfers in flight" in m for m in lines), lines
    assert any("scheduled scan starting" in m and "max_defer reached" in m for m in lines), lines
    assert final["scans"]["deferred"] == 1 and final["scans"]["last"]["status"] == "succeeded"
    assert final["events"]["rechecked"] >= 1  # keys the events touched during the scan were checked again
    # The transfers outlived half the visibility timeout: their messages were kept invisible, not redelivered.
    assert final["messages"]["visibility_extended"] >= 1 and final["messages"]["received"] == len(items)
    got = listing(pair.destination.client(), pair.destination.bucket, dst_prefix)
    assert {k[len(dst_prefix):] for k in got} == {k[len(unique_prefix):] for k in items}
