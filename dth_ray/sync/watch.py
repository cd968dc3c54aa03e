"""`dth-ray watch`: a long-running service combining event-driven sync (SQS) and the scheduled batch sync.

Threads: receivers long-poll SQS in batches and hand messages over; the scheduler (dth_ray.runtime.scheduler,
whose client this service is) calls `on_tick` on every tick and whenever a receiver wakes it: messages are
parsed (dth_ray.sync.events), coalesced per key (dth_ray.sync.coalesce) and handed to the scheduler as batches
of keys for the transfer actors (TransferWorker.apply_events: read the source's current state, copy or
delete); results come back through `on_item_done`, which acknowledges; the schedule (dth_ray.sync.schedule)
says when to start a batch run (run_sync, in a thread of its own); an acker thread makes the SQS
delete/visibility calls. A message is deleted only when every event in it was reconciled and
the records are in the manifest; it stays invisible (extended) while its work runs; failures make it visible
again after a backoff; poison (unparseable, or received more than events.max_receives times) goes to
events.dead_letter_queue_url, or is left to the queue's redrive policy, or — with neither — is dropped with
an error line. A reconcile may delete only with a grant of the delete rail (dth_ray/sync/deletelimit.py:
events.max_delete per events.max_delete_window, counted here, whatever the event said). SIGTERM/SIGINT:
stop receiving, give in-flight transfers events.shutdown_timeout_s to finish, release everything else
(visible at once), so a restart loses nothing; an interrupted scan resumes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import queue as queue_mod
import sys
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import datetime, timezone

from dth_ray.config import EventsType, StoreType, check_delete_scope
from dth_ray.errors import ConfigError
from dth_ray.files import write_private
from dth_ray.ops.alerts import Alerter
from dth_ray.ops.logs import fields
from dth_ray.plan.prefix_list import prefixes_under
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.interrupts import Interrupted, Interrupts
from dth_ray.runtime.jobmanifest import JobManifest
from dth_ray.runtime.metrics import EventLatency
from dth_ray.runtime.pace import JobPace
from dth_ray.runtime.preflight import check_stores, probe
from dth_ray.runtime.scheduler import Item, Scheduler, Workers
from dth_ray.runtime.worker import TransferWorker
from dth_ray.settings import Settings
from dth_ray.sync.coalesce import Coalescer
from dth_ray.sync.deletelimit import EventDeletes
from dth_ray.sync.events import CREATED, DTH, REMOVED, Event, EventScope, parse_body
from dth_ray.sync.schedule import DEFER, RUN, SKIP, Schedule
from dth_ray.sync.sqs import Queue, Received

log = logging.getLogger(__name__)
_LATENCY_SAMPLES = 10_000
_MAX_RECHECK = 100_000  # keys events touched during a scan, checked again once it ends
_HEARTBEAT_S = 1.0
_FAIL_BACKOFF_S = 10  # a failed message becomes visible again after this × its receive count (max 300 s)
_TICK_S = 0.05  # the scheduler's tick: the schedule and held messages are looked at this often
_PACE_S = 1.0  # how often the event workers' budget shares are worked out


@dataclass
class _Held:
    """A received message whose events are being worked on."""

    msg: Received
    outstanding: int = 0
    failed: bool = False
    extended_at: float = field(default_factory=time.monotonic)
    origins: list[float] = field(default_factory=list)


class WatchMetrics:
    """Counters of the service, as the report file and log lines show them."""

    def __init__(self) -> None:
        self.started = time.time()
        self.messages: Counter = Counter()
        self.events: Counter = Counter()
        self.ignored: Counter = Counter()
        self.outcomes: Counter = Counter()
        self.latency: deque[float] = deque(maxlen=_LATENCY_SAMPLES)
        self.scans: Counter = Counter()
        self.last_scan: dict | None = None
        self.poison: list[dict] = []  # the most recent poison messages (id, reason, what happened)

    def latency_summary(self) -> dict:
        values = sorted(self.latency)
        if not values:
            return {"count": 0}

        def pct(p: float) -> float:
            return round(values[min(len(values) - 1, int(p * len(values)))], 3)

        return {"count": len(values), "p50": pct(0.50), "p95": pct(0.95), "p99": pct(0.99), "max": round(values[-1], 3)}

    def to_dict(self, state: str, extra: dict) -> dict:
        return {"status": state, "started": self.started, "uptime_s": round(time.time() - self.started, 1),
                "messages": dict(self.messages), "events": {**self.events, "ignored": dict(self.ignored)},
                "outcomes": dict(self.outcomes), "latency_s": self.latency_summary(),
                "scans": {**self.scans, "last": self.last_scan}, "poison": self.poison[-20:], **extra}


def _write_json(path: str, doc: dict) -> None:
    write_private(path, json.dumps(doc, indent=2, ensure_ascii=False) + "\n")


class WatchService:
    """The service; `run()` blocks until `stop()` (signal handlers call it) and returns the final report."""

    def __init__(self, settings: Settings, in_process: int = 0):
        """`in_process=N`: N in-process transfer workers and no Ray (tests of the service without a Ray
        session; its scheduled scans run in-process too). Raises ConfigError."""
        self.settings = settings
        self.in_process = in_process
        cfg = self.cfg = settings.config
        ev = cfg.events
        self.events_on = ev.type == EventsType.sqs
        if self.events_on and cfg.source.type == StoreType.maxcompute:
            raise ConfigError("events=sqs does not apply to source=maxcompute (its exports run on the schedule)")
        if self.events_on and not ev.queue_url:
            raise ConfigError("events=sqs needs events.queue_url")
        if self.events_on and cfg.dry_run:
            raise ConfigError("dry_run=true is not supported with events=sqs (events are acted on; try dth-ray plan)")
        self.schedule = Schedule.from_settings(settings.schedule, time.time())  # raises ConfigError (cron)
        if not self.events_on and not self.schedule.enabled:
            raise ConfigError("dth-ray watch has nothing to do: set events=sqs and/or schedule.interval/cron")
        if self.events_on and ev.deletes:
            check_delete_scope(cfg, events_deletes=True)
        # Events honour source.prefix_list as a scan does: keys outside the listed prefixes are not ours.
        listed = prefixes_under(cfg.source.prefix_list, cfg.source.prefix) if cfg.source.prefix_list else []
        self.scope = EventScope(cfg.source.bucket, cfg.source.prefix, ev.deletes, settings.worker.key_filter,
                                tuple(listed))
        limit = settings.event_deletes
        self.deletes = EventDeletes(self.events_on and ev.deletes, limit.max_count, limit.window_s,
                                    limit.window, settings.job,
                                    self._alert if cfg.alerts.sns_topic_arn else None, time.monotonic)
        self._alerter: Alerter | None = None
        self.metrics = WatchMetrics()
        self._ray_metrics = EventLatency(settings.job)
        self._stop = threading.Event()
        self.interrupts = Interrupts()
        self._inbox: queue_mod.Queue[Received] = queue_mod.Queue()
        self._acks: queue_mod.Queue = queue_mod.Queue()
        self._held: dict[str, _Held] = {}
        self._coalescer = Coalescer()
        self._queue: Queue | None = None
        self._scheduler: Scheduler | None = None
        self._batches = 0
        self._scan: threading.Thread | None = None
        self._scan_result: dict | None = None
        self._scan_interrupts: Interrupts | None = None
        self._touched: set[str] | None = None  # keys reconciled while a scan runs (None: no scan running)
        self._paused_until: float | None = None  # a scan paused at the window's end continues then (epoch s)
        t = settings.transfer
        self._pace = JobPace(t.max_requests_per_s, t.max_bandwidth_bytes_per_s)  # the event workers' budgets
        self._manifest: JobManifest | None = None
        self._next_pace = 0.0
        self._threads: list[threading.Thread] = []
        self._next_heartbeat = self._next_report = time.monotonic()
        self.stop_reason = ""

    # ---- lifecycle

    def stop(self, reason: str = "stop requested") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            log.info("watch: stopping (%s)", reason, extra={"job": self.settings.job})
        self._stop.set()
        self.interrupts.request()

    def run(self, handle_signals: bool = False) -> dict:
        """Preflight (one-line ConfigError when a store or the queue is unusable), then serve until stop().
        `handle_signals` (main thread only): the first SIGTERM/SIGINT stops the service cleanly, a second one
        exits at once."""
        settings, cfg = self.settings, self.cfg
        if cfg.source.type != StoreType.maxcompute:  # a table export checks its table when each scan starts
            check_stores(settings.source, settings.destination)
        else:
            asyncio.run(probe(settings.destination, "destination"))
        # a bad setting fails here
        manifest = self._manifest = JobManifest(settings.manifest, settings.job,
                                                  (settings.worker.log_level, settings.worker.log_format))
        if self.events_on:
            self._queue = Queue(cfg.events)
            self._queue.check()
        if handle_signals:
            self.interrupts.install()
        per_actor = max(1, 2 * settings.transfer.concurrency // cfg.events.batch_keys)
        if self.in_process:
            workers = Workers(build_local=(lambda: TransferWorker(settings.worker, manifest.local))
                              if self.events_on else None, local_workers=self.in_process, per_local=per_actor)
        else:
            workers = Workers(actor_class=TransferWorker if self.events_on else None,
                              actor_args=lambda: (settings.worker, manifest.actor_name(scheduler, 0)),
                              actors=cfg.events.actors or settings.transfer.actors, per_actor=per_actor)
        scheduler = self._scheduler = Scheduler(workers, self.interrupts, _TICK_S,
                                                stop_grace_s=cfg.events.shutdown_timeout_s)
        try:
            scheduler.start_local()  # the in-process workers, if any
            scheduler.start(self, [])
            if not self.in_process:
                scheduler.start_ray(settings.runtime)
            if self.events_on:
                self._start_thread(self._acker, "dth-watch-acker")
                for n in range(cfg.events.receivers):
                    self._start_thread(self._receiver, f"dth-watch-receive-{n}")
            log.info("watch: job %s; events %s; schedule %s", settings.job,
                     cfg.events.queue_url if self.events_on else "off",
                     cfg.schedule.cron or (cfg.schedule.interval if self.schedule.enabled else "off"),
                     extra={"job": settings.job})
            outcome = scheduler.wait()
            if not self._stop.is_set():
                self.stop(self.interrupts.name or "stop requested")
            self._shutdown(outcome)
        finally:
            scheduler.close(timeout_s=10.0)
            manifest.close()
        if cfg.report:
            _write_json(cfg.report, self.report("stopped"))
        return self.report("stopped")

    def _start_thread(self, target, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def busy(self) -> tuple[int, int, int]:
        """(messages held, keys pending, keys running): safe to call from any thread."""
        return len(self._held), self._coalescer.pending, self._coalescer.running

    def report(self, state: str = "running") -> dict:
        """The metrics as JSON-ready data (safe from another thread: a copy racing an update is retried)."""
        for _ in range(5):
            try:
                return self._report(state)
            except RuntimeError:  # a dict changed size while being copied
                time.sleep(0.001)
        return self._report(state)

    def _report(self, state: str) -> dict:
        extra = {"job": self.settings.job, "queue_url": self.cfg.events.queue_url if self.events_on else None,
                 "held_messages": len(self._held), "keys_pending": self._coalescer.pending,
                 "keys_running": self._coalescer.running, "stop_reason": self.stop_reason or None,
                 "deletes": self.deletes.report()}
        return self.metrics.to_dict(state, extra)

    # ---- threads

    def _receiver(self) -> None:
        assert self._queue is not None
        limit = self.cfg.events.max_held
        while not self._stop.is_set():
            if len(self._held) + self._inbox.qsize() >= limit:
                time.sleep(0.05)  # back-pressure: the held messages bound memory
                continue
            if not self.cfg.events.outside_window and not self._window_open():
                self._stop.wait(1.0)  # events.outside_window=false: messages wait in the queue for the window
                continue
            try:
                batch = self._queue.receive()
            except Exception as exc:  # a failed receive is retried after a pause; the loop ends with stop()
                log.warning("watch: SQS receive failed (%s); retrying", type(exc).__name__)
                self._stop.wait(2.0)
                continue
            if self._stop.is_set() and batch:
                self._queue.set_visibility([m.receipt for m in batch], 0)  # not ours to work on any more
                return
            for message in batch:
                self._inbox.put(message)
            if batch and self._scheduler is not None:
                self._scheduler.wake()

    def _acker(self) -> None:
        """SQS deletes and visibility changes, off the main loop; queued deletes go out 10 per call. Ends at
        the "quit" op (queued last by the shutdown, so everything before it is done)."""
        assert self._queue is not None
        while True:
            op, payload = self._acks.get()
            deletes: list[str] = []
            while op == "delete":
                deletes.extend(payload)
                if len(deletes) >= 10:
                    op, payload = "", None
                    break
                try:
                    op, payload = self._acks.get_nowait()
                except queue_mod.Empty:
                    op, payload = "", None
            if deletes:
                self.metrics.messages["delete_failed"] += self._queue.delete(deletes)
            if op == "quit":
                return
            if op == "visibility":
                receipts, seconds = payload
                self._queue.set_visibility(receipts, seconds)
            elif op == "dlq":
                message, reason = payload
                self._queue.move_aside(message, reason)
            elif op == "alert":
                self._send_alert(*payload)

    def _alert(self, subject: str, text: str) -> None:
        """An alert from the delete rail: sent by the acker thread (SNS calls never block the loop)."""
        self._acks.put(("alert", (subject, text)))

    def _send_alert(self, subject: str, text: str) -> None:
        try:
            if self._alerter is None:
                self._alerter = Alerter(self.cfg.alerts)
            self._alerter.notice(self.settings.job, "delete_limit", subject, text)
        except Exception as exc:  # a broken alerts setting must not stop the service
            log.warning("watch: alert could not be sent (%s)", type(exc).__name__)

    # ---- the scheduler's client

    def finished(self) -> bool:
        return self._stop.is_set()

    def on_tick(self, scheduler: Scheduler) -> None:
        """Every tick and whenever a receiver has messages: take them in, hand batches over, run the schedule."""
        if self._stop.is_set():
            return
        self._drain_inbox()
        self._dispatch()
        self._scheduler_tick()
        now = time.monotonic()
        if self.events_on and now >= self._next_pace:
            self._pace_tick()
            self._next_pace = now + _PACE_S
        if now >= self._next_heartbeat:
            self._heartbeat()
            self._next_heartbeat = now + _HEARTBEAT_S
        if now >= self._next_report:
            self._report_tick()
            self._next_report = now + min(self.cfg.events.report_interval_s, self.settings.progress_interval_s)

    def _pace_tick(self) -> None:
        """The job's budgets split among the event workers (half of them while a scan runs: it has the other
        half, see _scan_settings), and a throttle's back-off spread to all."""
        reports: dict[str, tuple[float, ...]] = {}
        for part in self._manifest.both("pace_reports"):
            reports.update(part)
        throttled = sum(p.errors.get("Throttled", 0) for p in self._manifest.both("progress"))
        self._pace.scale = 0.5 if self._scan is not None else 1.0
        update = self._pace.tick(reports, throttled)
        if update is not None:
            self._manifest.both("set_shares", *update)

    def _scan_settings(self) -> Settings:
        """A scan's settings while events are served: half of each job budget (the events keep the other)."""
        t = self.settings.transfer
        if not self.events_on or not (t.max_requests_per_s or t.max_bandwidth_bytes_per_s):
            return self.settings
        halved = dataclasses.replace(t, max_requests_per_s=t.max_requests_per_s / 2,
                                     max_bandwidth_bytes_per_s=t.max_bandwidth_bytes_per_s // 2)
        return dataclasses.replace(self.settings, worker=dataclasses.replace(self.settings.worker, transfer=halved))

    def on_item_done(self, item: Item, results: list[dict], where) -> Item | None:
        for result in results:
            self._finished(result)
        return None

    def on_item_failed(self, item: Item, error: str, where) -> None:
        self._lost_batch(item.args[0], error)

    def redo(self, item: Item, where, lost: bool) -> Item | None:
        """A batch whose actor died (Ray restarts it) fails its keys: their messages come back later."""
        self._lost_batch(item.args[0], "transfer actor lost" if lost else "the batch raised")
        return None

    def _lost_batch(self, keys: list[str], error: str) -> None:
        log.warning("watch: %d keys not reconciled: %s", len(keys), error)
        for key in keys:
            self._finished({"key": key, "outcome": "failed", "error": error, "landed_at": 0.0})

    def _drain_inbox(self, limit: int = 1000) -> None:
        for _ in range(limit):
            try:
                message = self._inbox.get_nowait()
            except queue_mod.Empty:
                return
            self._accept(message)

    def _accept(self, message: Received) -> None:
        m = self.metrics
        m.messages["received"] += 1
        held = self._held.get(message.message_id)
        if held is not None:  # delivered again while we work on it: only the newest receipt can delete it
            held.msg.receipt = message.receipt
            m.messages["redelivered_while_held"] += 1
            return
        parsed = parse_body(message.body, message.sent_s)
        if parsed.error:
            self._poison(message, f"unparseable: {parsed.error}")
            return
        if message.receive_count > self.cfg.events.max_receives:
            self._poison(message, f"received {message.receive_count} times")
            return
        m.ignored.update(parsed.ignored)
        mine: list[Event] = []
        for event in parsed.events:
            reason = self.scope.reason_to_ignore(event)
            if reason:
                m.ignored[reason] += 1
            else:
                mine.append(event)
        m.events["received"] += len(parsed.events)
        if not mine:
            m.messages["nothing_to_do"] += 1
            self._acks.put(("delete", [message.receipt]))
            return
        held = self._held[message.message_id] = _Held(message, outstanding=len(mine))
        for event in mine:
            status = self._coalescer.add(event, message.message_id)
            m.events[status] += 1
            origin = event.event_time_s if event.fmt != DTH and event.event_time_s > 0 else message.sent_s
            if message.sent_s and not message.sent_s - 3600 <= origin <= message.sent_s + 60:
                origin = message.sent_s  # an implausible event clock: the queue's is better
            held.origins.append(origin)

    def _poison(self, message: Received, reason: str) -> None:
        m = self.metrics
        m.messages["poison"] += 1
        queue = self._queue
        if queue is not None and queue.dead_letter_url:
            action = "moved to events.dead_letter_queue_url"
            self._acks.put(("dlq", (message, reason)))
        elif queue is not None and queue.redrive:
            action = "left to the queue's redrive policy"
            self._acks.put(("visibility", ([message.receipt], 0)))
        else:
            action = "dropped (no dead-letter queue and no redrive policy)"
            self._acks.put(("delete", [message.receipt]))
        log.error("watch: poison message %s: %s; %s", message.message_id, reason, action)
        m.poison.append({"message_id": message.message_id, "reason": reason, "action": action})
        del m.poison[:-100]

    def _dispatch(self) -> None:
        scheduler = self._scheduler
        if scheduler is None or not self.events_on:
            return
        capacity = max(1, scheduler.actor_count) * scheduler.workers.per_actor
        batch_keys = self.cfg.events.batch_keys
        while self._coalescer.pending and scheduler.pending < capacity:
            taken = self._coalescer.take(batch_keys)
            # Only keys holding a grant of the delete rail may delete (sync/deletelimit.py); the others
            # report a source found gone, and get a grant or are skipped when they come back.
            split: dict[bool, list[str]] = {True: [], False: []}
            for pending in taken:
                allowed = self.deletes.may_delete(pending.key, pending.latest.kind == REMOVED)
                split[allowed].append(pending.key)
            for deletes, keys in split.items():
                if keys:
                    self._batches += 1
                    scheduler.submit([Item(f"events:{self._batches}", "apply_events", (keys, deletes))])
            if self._touched is not None and len(self._touched) < _MAX_RECHECK:
                self._touched.update(p.key for p in taken)

    def _finished(self, result: dict) -> None:
        m = self.metrics
        outcome = self.deletes.settle(result["key"], result["outcome"])
        if outcome == "again":  # its delete was just allowed: the same events, reconciled once more
            self._coalescer.again(result["key"])
            return
        if outcome == "delete_skipped":
            self._ray_metrics.delete_skipped()
        ok = outcome != "failed"
        m.outcomes[outcome] += 1
        if not ok:
            error = result.get("error", "")
            log.warning("watch: key %r failed: %s", result["key"], error,
                        extra=fields(job=self.settings.job, key=result["key"], error=error or None,
                                     error_class=error.partition(":")[0] or None))
        done = self._coalescer.finish(result["key"])
        landed = result.get("landed_at") or time.time()
        for token, _event in done.tokens:
            held = self._held.get(token) if token is not None else None
            if held is None:
                continue
            held.outstanding -= 1
            held.failed |= not ok
            if ok and held.origins:
                m.latency.append(max(0.0, landed - held.origins.pop()))
                self._ray_metrics.event_landed(m.latency[-1])
            if held.outstanding == 0:
                del self._held[token]
                if held.failed:
                    m.messages["retried"] += 1
                    delay = min(300, _FAIL_BACKOFF_S * max(1, held.msg.receive_count))
                    self._acks.put(("visibility", ([held.msg.receipt], delay)))
                else:
                    m.messages["deleted"] += 1
                    self._acks.put(("delete", [held.msg.receipt]))
        m.events["reconciled"] += 1

    def _heartbeat(self) -> None:
        """Keep held messages invisible while their work runs (extend at half the visibility timeout)."""
        vis = self.cfg.events.visibility_timeout_s
        now = time.monotonic()
        due = [h for h in self._held.values() if now - h.extended_at >= vis / 2]
        for h in due:
            h.extended_at = now
        if due:
            self.metrics.messages["visibility_extended"] += len(due)
            self._acks.put(("visibility", ([h.msg.receipt for h in due], vis)))

    def _report_tick(self) -> None:
        doc = self.report("running")
        if self.cfg.report:
            _write_json(self.cfg.report, doc)
        lat = doc["latency_s"]
        line = (f"watch: {self.metrics.messages['received']:,} messages, {self.metrics.events['received']:,} "
                f"events, {self.metrics.events['reconciled']:,} reconciled {dict(self.metrics.outcomes)}, lag p95 "
                f"{lat.get('p95', '-')}s, {len(self._held)} held, scans {dict(self.metrics.scans)}")
        log.info("%s", line, extra={"job": self.settings.job})
        if self.settings.progress != "none":  # stats lines whatever log_level says (as for sync)
            event = {"event": "watch_stats", "messages": self.metrics.messages["received"],
                     "events": self.metrics.events["received"], "reconciled": self.metrics.events["reconciled"],
                     "outcomes": dict(self.metrics.outcomes), "latency_s": lat, "held": len(self._held),
                     "scans": dict(self.metrics.scans)}
            text = json.dumps(event) if self.cfg.log.format.value == "json" else line
            sys.stderr.write(text + "\n")
            sys.stderr.flush()

    # ---- the scheduled batch sync

    def _window_open(self) -> bool:
        window = self.settings.schedule.window
        return window is None or window.is_open(datetime.now(timezone.utc))

    def _scheduler_tick(self) -> None:
        if self._scan is not None and not self._scan.is_alive():
            self._scan_finished()
        running = self._scan is not None
        if not running and self._paused_until is not None and time.time() >= self._paused_until:
            self._paused_until = None  # a scan the window's end paused continues as the next one opens
            if self._window_open():
                self._start_scan("the transfer window opened: continuing the paused run")
                return
        decision = self.schedule.decide(time.time(), running, self._coalescer.running + self._coalescer.pending)
        if decision.action == RUN and not self._window_open():
            self.metrics.scans["outside_window"] += 1
            log.info("watch: scheduled scan not started: outside the transfer window %s",
                     self.settings.schedule.window.describe())
            return
        if decision.action == SKIP:
            self.metrics.scans["skipped"] += 1
            log.warning("watch: scheduled scan skipped: %s", decision.reason)
        elif decision.action == DEFER and decision.reason:
            self.metrics.scans["deferred"] += 1
            log.info("watch: scheduled scan deferred: %s", decision.reason)
        elif decision.action == RUN:
            self._start_scan(decision.reason)

    def _start_scan(self, reason: str) -> None:
        log.info("watch: scheduled scan starting%s", f" ({reason})" if reason else "", extra={"job": self.settings.job})
        # Keys whose reconcile runs now or starts during the scan race with it: checked again after it.
        self._touched = set(self._coalescer.running_keys()[:_MAX_RECHECK]) if self.events_on else None
        self._scan_result = None
        self._scan_interrupts = Interrupts()
        self._scan = threading.Thread(target=self._scan_main, name="dth-watch-scan", daemon=True)
        self._scan.start()

    def _scan_main(self) -> None:
        started = time.time()
        try:
            if self.cfg.source.type == StoreType.maxcompute:  # new and changed partitions, exported
                from dth_ray.maxcompute.runner import run_maxcompute

                report = run_maxcompute(self.settings)
                result = {"status": report["status"], "partitions": report["partitions"], "rows": report["rows"],
                          "errors": [f"{f['partition']}: {f['error']}" for f in report["failures"][:5]]}
            else:
                # A scheduled scan: alerts only on failure; stopped with the service (resumed next time).
                run = run_sync(self._scan_settings(), one_time=False, interrupts=self._scan_interrupts,
                               in_process=self.in_process)
                t = run.tally
                result = {"status": run.status, "run_id": run.run_id, "listed": t.listed, "copied": t.copied,
                          "skipped": t.skipped, "failed": t.failed,
                          "deleted": run.deletes.deleted if run.deletes else 0, "errors": run.errors[:5]}
                if run.paused_until:
                    result["paused_until"] = run.paused_until
        except Interrupted as exc:  # stopped with the service before the scan had a run (while planning)
            result = {"status": "interrupted", "error": str(exc)}
        except Exception as exc:  # the service outlives a failed scan; the next tick tries again
            log.exception("watch: scheduled scan failed")
            result = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
        result.update(started=started, finished=time.time(), duration_s=round(time.time() - started, 3))
        self._scan_result = result

    def _scan_finished(self) -> None:
        result = self._scan_result or {"status": "error", "error": "no result"}
        self._scan = None
        self.metrics.scans["runs"] += 1
        self.metrics.scans[result["status"]] += 1
        self.metrics.last_scan = result
        if result.get("paused_until"):
            self._paused_until = datetime.fromisoformat(result["paused_until"]).timestamp()
        # a scan that succeeded, paused at its window's end or stopped with the service is routine; any other
        # end is a problem to look at
        level = logging.INFO if result["status"] in ("succeeded", "paused", "interrupted") else logging.WARNING
        log.log(level, "watch: scheduled scan %s in %.1fs: %s", result["status"],
                result.get("duration_s", 0.0),
                {k: v for k, v in result.items() if k in ("listed", "copied", "failed", "deleted", "error")},
                extra=fields(job=self.settings.job, run_id=result.get("run_id"), status=result["status"]))
        touched, self._touched = self._touched, None
        # A scan may have copied an older version of a key after an event copied a newer one (each read the
        # source at a different moment): keys the events touched during the scan are reconciled once more.
        for key in sorted(touched or ()):
            self._coalescer.add(Event("", key, CREATED, fmt="recheck"), None)
        if touched:
            self.metrics.events["rechecked"] += len(touched)

    # ---- shutdown

    def _shutdown(self, outcome) -> None:
        """After the scheduler stopped: keys never started and batches abandoned at events.shutdown_timeout_s
        release their messages (visible at once, so a restart loses nothing; multipart uploads stay journaled
        for the next run); a running scan is stopped at a safe point (its run resumes next time)."""
        if self._scan_interrupts is not None:
            self._scan_interrupts.request()
        for entry in self._coalescer.release():  # never started: released at once, redelivered promptly
            for token, _event in entry.tokens:
                held = self._held.get(token) if token is not None else None
                if held is not None:
                    held.failed = True
        abandoned = sum(len(item.args[0]) for item, _ in outcome.unfinished)
        if abandoned:
            log.warning("watch: abandoning %d keys still in flight after events.shutdown_timeout_s; their "
                        "messages are released (multipart uploads stay journaled for the next run)", abandoned)
        released = [h.msg.receipt for h in self._held.values()]
        self._drain_inbox_release(released)
        if released and self._queue is not None:
            self._acks.put(("visibility", (released, 0)))
            self.metrics.messages["released"] += len(released)
        if self._queue is not None:
            self._acks.put(("quit", None))
        # Receivers release what their last long poll brings (it ends within events.wait_s); the acker makes the
        # calls queued above. Whatever is still out after that stays invisible until its visibility timeout.
        join_end = time.monotonic() + self.cfg.events.wait_s + 2.0
        for thread in self._threads:
            thread.join(timeout=max(0.0, join_end - time.monotonic()))
        if self._scan is not None:
            self._scan.join(timeout=max(5.0, self.cfg.events.shutdown_timeout_s))
            if self._scan.is_alive():
                log.warning("watch: the scheduled scan is still running; abandoned (its run resumes next time)")
            else:
                self._scan_finished()

    def _drain_inbox_release(self, receipts: list[str]) -> None:
        while True:
            try:
                receipts.append(self._inbox.get_nowait().receipt)
            except queue_mod.Empty:
                return
