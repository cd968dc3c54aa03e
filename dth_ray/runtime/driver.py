"""`dth-ray sync` (and `plan`, a dry run): the sync client of the scheduler.

Lifecycle: preflight (nothing written on bad configuration) → start: the driver lane plans the run, or resumes
the job's unfinished one, while Ray starts → run: shards over the pool, a lost worker's shard redone from its
checkpoint, progress every tick → finish: deletes (sync.delete), leftover uploads aborted, the invariants
checked, the run's end recorded, the report. A run is `succeeded` only when every planned shard finished and
the counts add up: listed = copied + skipped + failed; the shards' tallies (as the manifest holds them) sum to
the run's; the nodes' objects sum to the copied ones. Anything else is `failed` (or `interrupted` on a
signal), with the unfinished shards named and kept for the next invocation to resume.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from dataclasses import replace
from datetime import datetime, timezone

from dth_ray.errors import DthError, NotFound
from dth_ray.model import Shard, ShardResult, ShardTask, Tally
from dth_ray.naming import describe, store_overrides
from dth_ray.ops import Ops
from dth_ray.ops.logs import error_fields, fields
from dth_ray.plan.autoscale import Backlog, ScalePolicy, ray_pays, remaining_s
from dth_ray.plan.parts import choose_part_size
from dth_ray.report import (
    FAILED,
    INTERRUPTED,
    PAUSED,
    SUCCEEDED,
    DeleteSummary,
    NodeShare,
    RunReport,
    Startup,
)
from dth_ray.runtime import deletes
from dth_ray.runtime.autoscaling import Elasticity
from dth_ray.runtime.credcheck import CredentialGate
from dth_ray.runtime.dryrun import DryRunChanges
from dth_ray.runtime.interrupts import Interrupted, Interrupts
from dth_ray.runtime.jobmanifest import JobManifest
from dth_ray.runtime.jobs import adopt_legacy_job
from dth_ray.runtime.live import LivePublisher
from dth_ray.runtime.manifest import (
    DONE,
    RUNNING,
    Checkpoint,
    Manifest,
    RunInfo,
)
from dth_ray.runtime.manifest import FAILED as RUN_FAILED
from dth_ray.runtime.manifest import INTERRUPTED as RUN_INTERRUPTED
from dth_ray.runtime.manifest import PAUSED as RUN_PAUSED
from dth_ray.runtime.metrics import DriverMetrics
from dth_ray.runtime.objectreport import finish_report, remove_parts
from dth_ray.runtime.pace import JobPace
from dth_ray.runtime.planning import plan_shards
from dth_ray.runtime.pool import Slot
from dth_ray.runtime.preflight import check_stores
from dth_ray.runtime.progress import ProgressModel, Snapshot
from dth_ray.runtime.rayhost import ray_is_up
from dth_ray.runtime.scheduler import Item, Scheduler, Workers
from dth_ray.runtime.staging import planned_info, remove_staged
from dth_ray.runtime.worker import TransferWorker
from dth_ray.settings import Settings
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
SHARD_ATTEMPTS = 3
MAX_LOSSES = 5
# Shards a worker runs at once. A shard lists, then copies, then is done: several overlap one shard's listing
# round trips with another's copies. The driver lane holds 8 (measured at 150 ms RTT, 301 objects in 21
# shards: 4 → 8 cut the copy from 6.5-6.9 s to 5.3-5.8 s; 16 was no better); an actor holds 4, so that shards
# stay queued for actors on nodes that join later (with 8, two actors took all 16 shards of the autoscaling
# test before any node joined).
SHARDS_PER_LANE = 8
SHARDS_PER_ACTOR = 4
# What the workers report about the objects in flight and those listed but not decided (Progress → Snapshot).
_IN_FLIGHT = ("objects_in_flight", "bytes_in_flight", "bytes_landed", "objects_ahead", "bytes_ahead")
EARLIER = "earlier-executions"  # the `nodes` entry for what earlier executions of a resumed run copied


def run_sync(settings: Settings, progress: ProgressModel | None = None, *, one_time: bool = True,
             interrupts: Interrupts | None = None, in_process: int = 0) -> RunReport:
    """Run one sync to completion (resuming the job's unfinished run, if any) and return its report.
    `one_time=False` (a scheduled scan of `dth-ray watch`) alarms on failure only, and does not resume a run
    that ended failed (it lists everything again). `in_process=N` runs on N in-process workers and never
    starts Ray (tests of the runtime without servers or Ray).

    Raises ConfigError before anything is written when a store is unreachable, missing or refuses us (and,
    on a cluster, before any shard is dispatched when a transfer actor cannot use the credentials);
    Interrupted when a signal stops it before it has a run to report.
    """
    changes = DryRunChanges.of(settings)
    try:
        settings = settings.with_stores(*check_stores(settings.source, settings.destination, settings.inventory))
        if progress is not None:
            progress.phase("planning")
        settings = adopt_legacy_job(settings)  # a job an earlier release named job-<hex> resumes under that name
        closed = _window_closed(settings)
        if closed is not None:
            return closed
        ops = Ops(settings.config, settings.job, one_time=one_time)
        try:
            run = SyncRun(settings, ops, progress, interrupts or Interrupts(), one_time, in_process, changes)
            report = run.run()
            ops.finished(report)
        except BaseException as exc:
            ops.aborted(exc)
            raise
        finally:
            ops.close()
    finally:
        if changes is not None:
            changes.close(keep=False)  # a no-op once the run published its list
    return report


def _window_closed(settings: Settings) -> RunReport | None:
    """A `paused` report, with nothing started, when schedule.window is closed now (dry runs list anyway)."""
    window = settings.schedule.window
    now = datetime.now(timezone.utc)
    if window is None or settings.dry_run or window.is_open(now):
        return None
    opens = window.opens_at(now).isoformat(timespec="seconds")
    log.warning("outside the transfer window %s: nothing started; the next one opens at %s", window.describe(),
                opens)
    return RunReport(status=PAUSED, job=settings.job, run_id=0, source=describe(settings.source),
                     destination=describe(settings.destination), tally=Tally(), duration_s=0.0, paused_until=opens)


class SyncRun:
    """One execution of a sync run: the scheduler's client (hooks run in the scheduler's thread)."""

    def __init__(self, settings: Settings, ops: Ops, progress: ProgressModel | None, interrupts: Interrupts,
                 one_time: bool = True, in_process: int = 0, changes: DryRunChanges | None = None):
        """`in_process=N`: N in-process workers and no Ray, instead of the pool the settings call for;
        `changes`: a dry run's would-copy/delete objects go there."""
        self.s = settings
        self.changes = changes
        self.ops = ops
        self.progress = progress
        self.interrupts = interrupts
        self.one_time = one_time
        self.started = time.monotonic()
        self.run_id = 0
        self.recount_since = 0.0  # whole seconds: stores keep LastModified at second precision
        self.resumed = False
        self.executions = 1
        self.shards: dict[str, Shard] = {}
        self.latest: dict[str, Tally] = {}  # each shard's newest known tally (final once done or failed)
        self.done: set[str] = set()
        self.failed: dict[str, str] = {}
        self.last_error: dict[str, str] = {}
        self.errors: list[str] = []
        self.nodes: dict[str, list[int]] = {}
        self.attributed: dict[str, tuple[int, int, int, int]] = {}  # shard -> copied, bytes, recovered (+bytes)
        self.lost_on: dict[str, str] = {}  # shard -> the node that copied what a redo finds (lost or earlier)
        self.live: dict[str, tuple[int, Tally]] = {}
        self.in_flight = (0,) * len(_IN_FLIGHT)
        self.seq = 0
        self.lane = Startup()
        self.plan_workers = settings.default_workers()  # set by run() once it knows whether a lane runs
        self.manifest: JobManifest | None = None
        self.scheduler: Scheduler | None = None
        self.elastic: Elasticity | None = None
        self.metrics = DriverMetrics(settings.job)
        self.pace = JobPace(settings.transfer.max_requests_per_s, settings.transfer.max_bandwidth_bytes_per_s)
        self.uncertain = False  # a lost worker's delete candidates are gone
        self.ray_on_demand = False
        self.ray_asked = False
        self.copy_started: float | None = None  # when the plan was ready and copying began
        self.base = Tally()  # what earlier executions of a resumed run had settled (for the rates)
        self.done_before: set[str] = set()  # shards finished by earlier executions
        self.in_process = in_process
        self.publisher: LivePublisher | None = None  # the run's live record for `dth-ray console`
        self.inventory: dict | None = None  # the inventories the run was planned from (report)
        self.stale_parts: list[str] = []  # report_objects parts of shards a resumed run redoes from scratch

    # ---- the run

    def run(self) -> RunReport:
        s = self.s
        lane = s.runtime.embedded and not ray_is_up()  # a laptop driving a remote cluster never moves bytes
        self.manifest = JobManifest(s.manifest, s.job, (s.worker.log_level, s.worker.log_format))
        self.publisher = LivePublisher(self.manifest.local)
        if self.in_process:
            workers = Workers(build_local=lambda: TransferWorker(s.worker, self.manifest.local, with_ray=lambda: False),
                              local_workers=self.in_process, per_local=SHARDS_PER_ACTOR)
        else:
            workers = Workers(
                # The lane holds the near budget from when Ray is wanted (before it is up: the lane copies
                # while Ray starts).
                build_local=(lambda: TransferWorker(s.worker, self.manifest.local, "lane",
                                                    with_ray=scheduler.ray_wanted)) if lane else None,
                actor_class=TransferWorker, per_actor=SHARDS_PER_ACTOR, per_local=SHARDS_PER_LANE, peers=True,
                actor_args=lambda: (s.worker, self.manifest.actor_name(scheduler, self.run_id)),
                actors=s.transfer.actors)
        lane = workers.build_local is not None
        self.plan_workers = self._plan_workers(lane)
        # The embedded default starts Ray only when the backlog says it pays (see on_tick); a driver joining a
        # cluster, or runtime.ray=always, has it from the start.
        self.ray_on_demand = lane and not self.in_process and s.runtime.ray_on_demand
        scheduler = self.scheduler = Scheduler(workers, self.interrupts, s.transfer.progress_interval_s,
                                               max_attempts=SHARD_ATTEMPTS, max_losses=MAX_LOSSES,
                                               ray_on_demand=self.ray_on_demand)
        self.interrupts.install()
        try:
            return self._run(scheduler, lane)
        finally:
            self.manifest.close()

    def _plan_workers(self, lane: bool) -> int:
        """Workers the listing is cut for (about 4 shards each): this machine's (or `transfer.actors`), with
        the driver lane counted by its shard slots (two actors' worth), so the lane cannot take every shard
        while Ray starts and leave the actors nothing."""
        workers = self.s.default_workers()
        if lane and not self.in_process:  # in-process workers (tests) hold SHARDS_PER_ACTOR each, like actors
            return workers + SHARDS_PER_LANE // SHARDS_PER_ACTOR
        return workers

    def _run(self, scheduler: Scheduler, lane: bool) -> RunReport:
        s = self.s
        try:
            if lane:
                planned = scheduler.run_local(self._begin_async)  # listing a far source overlaps Ray's start
            else:
                planned = concurrent.futures.Future()
                planned.set_result(self._begin())
            client = self
            if not lane and scheduler.workers.actor_class is not None:  # keys are read on the cluster's nodes
                client = CredentialGate(self, scheduler)
                planned = client.hold(planned)
            scheduler.start(client, planned)
            if scheduler.workers.actor_class is None or self.ray_on_demand:
                pass  # in-process workers only, or Ray once it pays (started by wait(), on the main thread)
            elif lane or not ray_is_up():
                scheduler.start_ray(s.runtime)
            else:
                scheduler.attach_ray()
            outcome = scheduler.wait(s.runtime if self.ray_on_demand else None)
            if not self.shards and outcome.interrupted:
                raise Interrupted(self.interrupts, "the transfer window closed while planning; nothing was started"
                                  if self.interrupts.paused else "interrupted while planning; nothing was started")
            for item, where in outcome.unfinished:
                self._unfinished(item, where)
            summary = self._deletes(scheduler) if s.delete.enabled and self._complete() else None
        finally:
            scheduler.close()
            if self.elastic is not None:
                self.elastic.release()
            self.manifest.local.flush()  # the lane's records (a DynamoDB manifest buffers them)
        return self._finish(summary)

    def _begin(self) -> list[Item]:
        return asyncio.run(self._begin_async())

    async def _begin_async(self) -> list[Item]:
        """Resume the job's unfinished run from its checkpoints, or plan and start a new run."""
        m = self.manifest.local
        latest = None if self.s.dry_run or not self.s.resume else m.latest_run()
        if latest is not None and self._resumable(latest.status):
            items = self._resume(latest, m)
            if items is not None:
                self.inventory = await planned_info(self.s, list(self.shards.values()))
                if self.stale_parts and self.s.worker.report is not None:
                    await remove_parts(self.s.worker.report, self.stale_parts)
                return items
        if self.s.inventory is not None:
            from dth_ray.runtime.inventory import (
                plan_from_inventory,  # pyarrow: only runs that read inventories
            )

            planned = await plan_from_inventory(self.s, self.plan_workers, self.progress)
            shards, self.inventory = planned.shards, planned.info
        else:
            shards = await plan_shards(self.s.source, self.plan_workers, progress=self.progress)
        started = time.time()
        self.run_id = 0 if self.s.dry_run else m.start_run(shards, *self._pairing())
        self.recount_since = math.floor(started)
        self.shards = {sh.shard_id: sh for sh in shards}
        self.copy_started = time.monotonic()
        return [self._item(ShardTask(sh, run_id=self.run_id)) for sh in shards]

    def _pairing(self) -> tuple[str, str, list[str]]:
        """The job's stores as the report names them and the overrides naming them, for the manifest's list
        of jobs (`dth-ray console`)."""
        return describe(self.s.source), describe(self.s.destination), store_overrides(self.s.config)

    def _resumable(self, status: str) -> bool:
        """A live or dead run (running) and an interrupted one resume; a failed one only on a one-time sync
        (a scan of `watch` lists everything again instead)."""
        return status in (RUNNING, RUN_INTERRUPTED, RUN_PAUSED) or (status == RUN_FAILED and self.one_time)

    def _resume(self, latest: RunInfo, manifest: Manifest) -> list[Item] | None:
        """Items for the shards of the latest run left to do: unfinished ones from their checkpoints, and
        finished ones with failed objects from scratch (objects copied by earlier executions are found again and
        counted copied, see ShardTask). None when a failed run has nothing left (a new run is started)."""
        checkpoints = manifest.checkpoints(latest.run_id)
        redo = [cp for cp in checkpoints if cp.status != DONE or cp.tally.failed]
        if not redo and latest.status == RUN_FAILED:
            return None
        run_id = latest.run_id
        manifest.resume_run(run_id, *self._pairing())
        self.run_id, self.resumed, self.executions = run_id, True, latest.executions + 1
        self.recount_since = math.floor(latest.started)
        self.shards = {cp.shard.shard_id: cp.shard for cp in checkpoints}
        items, stale = [], []
        for cp in checkpoints:
            sid = cp.shard.shard_id
            self.lost_on[sid] = EARLIER
            if cp in redo and cp.status == DONE:
                stale.extend(key for key, _ in cp.tally.report_parts)  # the redo writes its rows afresh
                self.latest[sid] = Tally()
                items.append(self._item(ShardTask(cp.shard, "", None, self.recount_since, run_id)))
                continue
            self.latest[sid] = cp.tally
            self._attribute(sid, cp.tally, EARLIER)
            if cp.status == DONE:
                self.done.add(sid)
            else:
                items.append(self._item(ShardTask(cp.shard, cp.watermark, cp.tally, self.recount_since, run_id)))
        self.uncertain = any(cp.tally.dst_only for cp in checkpoints if cp.status == DONE)
        self.done_before = set(self.done)
        for tally in self.latest.values():
            self.base.merge(tally)
        self.copy_started = time.monotonic()
        self.stale_parts = stale
        log.info("resuming run %d of job %s: %d of %d shards to do", run_id, self.s.job, len(items),
                 len(checkpoints), extra=fields(job=self.s.job, run_id=run_id))
        return items

    def _item(self, task: ShardTask, attempt: int = 1) -> Item:
        self.seq += 1
        return Item(task.shard.shard_id, "run_shard", (ShardTask(task.shard, task.watermark, task.base,
                                                                 task.recount_since, task.run_id, self.seq),),
                    attempt=attempt)

    # ---- hooks (the scheduler's thread)

    def on_item_done(self, item: Item, result: ShardResult, where: Slot) -> Item | None:
        task: ShardTask = item.args[0]
        sid = task.shard.shard_id
        self._attribute(sid, result.tally, where.node_id)
        if self.changes is not None:  # taken once: a retry continues from this tally without them
            self.changes.add(result.tally.changes)
            result.tally.changes = []
        self.latest[sid] = result.tally
        self.live.pop(sid, None)
        if where.local:  # the report's start-up section: what the driver copied itself
            base = task.base or Tally()
            self.lane.lane_objects += result.tally.copied - base.copied
            self.lane.lane_bytes += result.tally.bytes_copied - base.bytes_copied
        if result.interrupted:
            return None  # left for the next invocation: the shard stays unfinished
        if result.error:
            self.last_error[sid] = result.error
            log.warning("shard %r: attempt %d failed: %s; trying again from its watermark", task.shard.prefix,
                        item.attempt, result.error,
                        extra=fields(job=self.s.job, run_id=self.run_id or None, shard=sid,
                                     attempt=item.attempt, error_class=result.error.partition(":")[0],
                                     error=result.error))
            return self._item(ShardTask(task.shard, result.watermark, result.tally, 0.0, self.run_id),
                              item.attempt + 1)
        self.done.add(sid)
        if where.local:
            self.lane.lane_shards += 1
            self.lane.lane_done_s = time.monotonic() - self.started
        return None

    def on_item_failed(self, item: Item, error: str, where: Slot | None) -> None:
        task: ShardTask = item.args[0]
        sid = task.shard.shard_id
        last = self.last_error.get(sid)
        self.failed[sid] = error
        self.latest.setdefault(sid, task.base or Tally())
        self.errors.append(f"shard {task.shard.prefix!r}: {error}" + (f"; last error: {last}" if last else ""))

    def redo(self, item: Item, where: Slot, lost: bool) -> Item | None:
        """The shard again from its newest checkpoint; what the lost attempt settled there is that node's."""
        task: ShardTask = item.args[0]
        sid = task.shard.shard_id
        watermark, base = task.watermark, task.base
        cp = self._checkpoint(sid)
        if cp is not None and cp.watermark >= task.watermark and cp.tally.listed >= (base.listed if base else 0):
            watermark, base = cp.watermark, cp.tally
            self._attribute(sid, cp.tally, where.node_id)
            self.latest[sid] = cp.tally
        self.lost_on[sid] = where.node_id
        if lost and self.s.worker.note_extras:
            self.uncertain = True
        return self._item(ShardTask(task.shard, watermark, base, self.recount_since, self.run_id), item.attempt)

    def _checkpoint(self, sid: str) -> Checkpoint | None:
        if not self.run_id:
            return None
        found = [cp for cp in self.manifest.both("checkpoint", self.run_id, sid) if cp is not None]
        return max(found, key=lambda cp: (cp.watermark, cp.tally.listed), default=None)

    def _attribute(self, sid: str, tally: Tally, node_id: str) -> None:
        """Credit the growth of a shard's copies since last seen: recovered objects to the node that copied
        them (the lost one, or earlier executions), the rest to `node_id`."""
        copied, nbytes, rec, rec_bytes = self.attributed.get(sid, (0, 0, 0, 0))
        grown_rec, grown_rec_bytes = tally.recovered - rec, tally.recovered_bytes - rec_bytes
        own = (tally.copied - copied - grown_rec, tally.bytes_copied - nbytes - grown_rec_bytes)
        for node, (objects, size) in ((node_id, own), (self.lost_on.get(sid, node_id), (grown_rec, grown_rec_bytes))):
            if objects or size:
                share = self.nodes.setdefault(node or "unknown", [0, 0])
                share[0] += objects
                share[1] += size
        self.attributed[sid] = (tally.copied, tally.bytes_copied, tally.recovered, tally.recovered_bytes)

    def on_tick(self, scheduler: Scheduler) -> None:
        window = self.s.schedule.window
        if window is not None and not self.s.dry_run and not self.interrupts.requested.is_set():
            now = datetime.now(timezone.utc)
            if not window.is_open(now):
                log.warning("the transfer window %s closed: pausing at a safe point (the run continues in the next "
                            "one)", window.describe())
                self.interrupts.pause(window.opens_at(now))
        snap = self.snapshot()
        self._pace_tick(snap)
        if self.ray_on_demand and self.copy_started is not None and not self.ray_asked:
            backlog = self._backlog(snap, scheduler)
            if ray_pays(backlog, self.s.runtime.ray_pays_after_s):
                log.info("starting Ray: about %.0f s of work left for the driver alone (%d objects, %d bytes)",
                         remaining_s(backlog) or 0.0, backlog.left_objects, backlog.left_bytes)
                self.ray_asked = True
                scheduler.want_ray()
        if self.elastic is None and scheduler.ray_up_at is not None and self._autoscale():
            self.elastic = Elasticity(True, self.s.transfer.actors == 0,
                                      ScalePolicy(max_slots=self.s.runtime.max_transfer_slots), scheduler.grow)
            import ray

            self.elastic.known_nodes = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
        if self.elastic is not None:
            self.elastic.tick(scheduler.pending, snap.bytes_in_flight)
        actors = scheduler.actor_count
        self.metrics.update(snap.objects_in_flight, snap.bytes_in_flight, scheduler.pending, actors,
                            self.elastic.requested if self.elastic is not None else 0)
        elapsed = time.monotonic() - self.started
        self.ops.progress(snap, actors, elapsed)
        if self.progress is not None:
            self.progress.update(snap)
        if self.publisher is not None and not self.s.dry_run:
            self.publisher.tick(snap, self.run_id, self._running())

    def _running(self) -> list[str]:
        """The shards being copied now (those with a live tally, not ended)."""
        return [sid for sid in self.live if sid not in self.done and sid not in self.failed]

    def _pace_tick(self, snap: Snapshot) -> None:
        """The job's budgets split anew among the workers (and a throttle's back-off spread to all)."""
        reports: dict[str, tuple[float, ...]] = {}
        for part in self.manifest.both("pace_reports"):
            reports.update(part)
        update = self.pace.tick(reports, snap.errors.get("Throttled", 0))
        if update is not None:
            self.manifest.both("set_shares", *update)

    def _backlog(self, snap: Snapshot, scheduler: Scheduler) -> Backlog:
        """This execution's work so far and an estimate of what is left: the shards not started yet, at the
        average of those started (a lower bound: running shards are only partly listed), plus what is in flight."""
        t = snap.tally
        done_objects, done_bytes = t.listed - self.base.listed, t.bytes_listed - self.base.bytes_listed
        queued = scheduler.queued
        started = max(1, len(self.shards) - queued - len(self.done_before))
        return Backlog(time.monotonic() - self.copy_started, done_objects, done_bytes,
                       queued * done_objects // started + snap.objects_in_flight + snap.objects_ahead,
                       queued * done_bytes // started + snap.bytes_in_flight + snap.bytes_ahead)

    def _autoscale(self) -> bool:
        """Autoscaling for a run on a real cluster (runtime.autoscale=auto: any address but the embedded one)."""
        mode = self.s.runtime.autoscale
        return mode == "on" or (mode == "auto" and not self.s.runtime.embedded)

    def snapshot(self) -> Snapshot:
        """Every result known so far: final tallies of ended shards, live ones of running shards (the newest
        attempt's), and what is in flight."""
        changes = self.manifest.both("progress")
        for change in changes:
            for sid, (seq, tally) in change.shards.items():
                if sid not in self.done and sid not in self.failed and seq >= self.live.get(sid, (0, None))[0]:
                    self.live[sid] = (seq, tally)
        self.in_flight = tuple(sum(getattr(c, name) for c in changes) for name in _IN_FLIGHT)
        errors: dict[str, int] = {}
        for change in changes:
            for name, count in change.errors.items():
                errors[name] = errors.get(name, 0) + count
        total = Tally(max_failures=0)
        for sid, tally in self.latest.items():
            total.merge(self.live[sid][1] if sid in self.live else tally)
        for sid, (_, tally) in self.live.items():
            if sid not in self.latest:
                total.merge(tally)
        snap = Snapshot(total, shards_done=len(self.done), shards_total=len(self.shards), errors=errors,
                        **dict(zip(_IN_FLIGHT, self.in_flight, strict=True)))
        if self.scheduler is not None and self.copy_started is not None:
            left = self._backlog(snap, self.scheduler)
            snap = replace(snap, total_objects=total.listed + left.left_objects,
                           total_bytes=total.bytes_listed + left.left_bytes)
        return snap

    # ---- finishing (the main thread, the loop ended)

    def _unfinished(self, item: Item, where: Slot | None) -> None:
        """An item the loop stopped with (an interrupt): what its checkpoint settled is its worker's. Only
        shards have one: the nodes' credentials check (CredentialGate), stopped before it ran, has nothing."""
        if item.method != "run_shard":
            return
        task: ShardTask = item.args[0]
        cp = self._checkpoint(task.shard.shard_id)
        if cp is not None and where is not None and cp.tally.listed >= (task.base.listed if task.base else 0):
            self._attribute(task.shard.shard_id, cp.tally, where.node_id)
            self.latest[task.shard.shard_id] = cp.tally

    def _complete(self) -> bool:
        return not self.failed and len(self.done) == len(self.shards) and not self.interrupts.requested.is_set()

    def _deletes(self, scheduler: Scheduler) -> DeleteSummary:
        """Phase two of sync.delete (runtime/deletes.py), with the same workers."""
        found = deletes.Candidates()
        for sid in self.done:
            found.add(self.latest[sid])
        deletes.gather(self.s, found, list(self.shards.values()))
        if self.changes is not None:
            self.changes.add(found.changes)
        summary = DeleteSummary(found.count, found.destination_objects,
                                max_delete=self.s.delete.text or "unlimited",
                                partial=self.uncertain or found.partial)
        refusal = deletes.check_limit(self.s, found, summary)
        if refusal:
            self.errors.append(refusal)
            return summary
        if self.s.dry_run or not found.keys:
            return summary
        client = deletes.DeleteRun(summary)
        scheduler.start(client, deletes.delete_items(found))
        outcome = scheduler.wait()
        if outcome.unfinished:
            self.errors.append(f"sync.delete: interrupted with {len(outcome.unfinished)} batches not done")
        self.errors.extend(deletes.finish_summary(summary))
        return summary

    def _finish(self, deleted: DeleteSummary | None) -> RunReport:
        s = self.s
        total = Tally()
        for sid in sorted(self.shards):
            total.merge(self.latest.get(sid, Tally()))
        unfinished = [sid for sid in sorted(self.shards) if sid not in self.done and sid not in self.failed]
        interrupted = self.interrupts.requested.is_set()
        paused = self.interrupts.paused
        status = (PAUSED if paused else INTERRUPTED) if interrupted else FAILED if (
            unfinished or self.failed or self.errors or total.failed) else SUCCEEDED
        if unfinished and not interrupted:
            self.errors.append(f"{len(unfinished)} shards did not finish (an internal error): run {self.run_id} "
                               f"is kept for the next invocation")
        self.errors.extend(self._accounting(total))
        if status == SUCCEEDED and self.errors:
            status = FAILED
        if status == SUCCEEDED and not s.dry_run:
            self.errors.extend(self._abort_leftovers())
            status = FAILED if self.errors else SUCCEEDED
        report = RunReport(
            status=status, job=s.job, run_id=self.run_id, source=describe(s.source),
            destination=describe(s.destination), tally=total, duration_s=time.monotonic() - self.started,
            resumed=self.resumed, executions=self.executions, dry_run=s.dry_run, part_size_bytes=self._part_size(total), errors=self.errors,
            unfinished=[f"{self.shards[sid].prefix!r} (shard {sid})" for sid in unfinished],
            nodes=[NodeShare(n, o, b) for n, (o, b) in sorted(self.nodes.items())], startup=self._startup(),
            deletes=deleted, interrupted_by=self.interrupts.name if interrupted else "",
            paused_until=self.interrupts.paused_until.isoformat(timespec="seconds") if paused else "",
            autoscaler={"slot_requests": self.elastic.requests, "actors": self.scheduler.actors_started}
            if self.elastic is not None else None)
        if self.changes is not None:
            report.sample = self.changes.sample
            report.dry_run_list = self.changes.path
            report.dry_run_listed = self.changes.written
            self.changes.close(keep=not (unfinished or self.failed or interrupted))
        report.inventory = self.inventory
        if s.worker.report is not None and self.run_id and not s.dry_run:
            report.objects_report = self._objects_report(total)
        if status == SUCCEEDED or s.dry_run:  # a run left to resume keeps the shards' staged inventory rows
            asyncio.run(remove_staged(s, list(self.shards.values())))
        if not s.dry_run and self.run_id:
            run_state = {SUCCEEDED: "succeeded", FAILED: RUN_FAILED, INTERRUPTED: RUN_INTERRUPTED,
                         PAUSED: RUN_PAUSED}[status]
            self.manifest.call("finish_run", run_state, report.to_json())
            self.manifest.call("flush")
            if self.publisher is not None:  # the history's last point: what the report says
                self.publisher.tick(Snapshot(total, shards_done=len(self.done), shards_total=len(self.shards),
                                             total_objects=total.listed, total_bytes=total.bytes_listed),
                                    self.run_id, phase=run_state, force=True)
        if self.progress is not None:  # the last frame shows what the report says
            self.progress.update(Snapshot(total, shards_done=len(self.done), shards_total=len(self.shards),
                                          total_objects=total.listed, total_bytes=total.bytes_listed),
                                 "finished")
        counts = self.manifest.both("write_counts")
        report.manifest = {"type": s.manifest.type.value, "writes": sum(c[0] for c in counts),
                           "items_written": sum(c[1] for c in counts)}
        return report

    def _objects_report(self, total: Tally) -> dict | None:
        """report_objects: the parts' manifest.json written, and the JSON report's section (None: not written)."""
        try:
            return asyncio.run(finish_report(self.s.worker.report, self.run_id, total))
        except DthError as exc:
            self.errors.append(f"report_objects: its manifest.json could not be written ({type(exc).__name__}: {exc})")
            return None

    def _accounting(self, total: Tally) -> list[str]:
        """The invariants of a finished run, as error lines ([] when they hold)."""
        problems = []
        settled = total.copied + total.skipped + total.failed + (total.would_copy if self.s.dry_run else 0)
        if total.listed != settled:
            problems.append(f"accounting: {total.listed} listed but {settled} settled")
        copied = sum(o for o, _ in self.nodes.values())
        nbytes = sum(b for _, b in self.nodes.values())
        if self.s.worker.report is not None and not self.s.dry_run and total.report_rows != total.listed:
            problems.append(f"accounting: report_objects has {total.report_rows} rows for {total.listed} objects")
        if (copied, nbytes) != (total.copied, total.bytes_copied):
            problems.append(f"accounting: nodes copied {copied} objects / {nbytes} bytes, the shards "
                            f"{total.copied} / {total.bytes_copied}")
        if self.run_id and not self.s.dry_run:
            stored = Tally()
            for cp in self.manifest.call("checkpoints", self.run_id):
                if cp.status == DONE:
                    stored.merge(cp.tally)
            mine = Tally()
            for sid in self.done:
                mine.merge(self.latest[sid])
            if (stored.listed, stored.copied, stored.bytes_copied) != (mine.listed, mine.copied, mine.bytes_copied):
                problems.append(f"accounting: the manifest's finished shards hold {stored.listed} listed / "
                                f"{stored.copied} copied, the run {mine.listed} / {mine.copied}")
        for problem in problems:
            log.error("%s", problem, extra=fields(job=self.s.job, run_id=self.run_id or None))
        return problems

    def _abort_leftovers(self) -> list[str]:
        """Abort the uploads the job opened and no longer needs (a failed run keeps them to continue)."""
        leftover = self.manifest.call("open_uploads")
        if not leftover:
            return []
        settled = asyncio.run(abort_uploads(self.s, leftover))
        for dst_key, upload_id in settled:
            self.manifest.call("upload_closed", dst_key, upload_id)
        if len(settled) < len(leftover):
            return [f"{len(leftover) - len(settled)} multipart uploads could not be aborted"]
        return []

    def _part_size(self, total: Tally) -> int:
        if total.part_size_bytes:
            return total.part_size_bytes
        from dth_ray.stores.s3 import FEATURES as S3_FEATURES

        return choose_part_size(0, S3_FEATURES, self.s.transfer.part_size_bytes)

    def _startup(self) -> Startup:
        sched = self.scheduler
        self.lane.ray_up_s = None if sched.ray_up_at is None else sched.ray_up_at - self.started
        self.lane.actors_up_s = None if sched.first_actor_at is None else sched.first_actor_at - self.started
        return self.lane


async def abort_uploads(settings: Settings, uploads: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Abort uploads the job opened and no longer needs, including any a crash left unrecorded behind an
    intent (empty upload id); returns the entries that are settled and can leave the manifest."""
    from dth_ray.engine.resume import sweep_intent

    known: dict[str, set[str]] = {}
    for dst_key, upload_id in uploads:
        known.setdefault(dst_key, set()).add(upload_id)
    store = open_store(settings.destination)
    settled = []
    try:
        for dst_key, upload_id in uploads:
            try:
                if upload_id:
                    await store.abort_multipart(dst_key, upload_id)
                else:
                    await sweep_intent(store, dst_key, known[dst_key])
            except NotFound:
                pass  # already gone
            except DthError as exc:
                log.warning("could not abort upload key=%s error=%s", dst_key, type(exc).__name__,
                            extra=fields(job=settings.job, key=dst_key, **error_fields(exc)))
                continue
            settled.append((dst_key, upload_id))
    finally:
        await store.aclose()
    return settled

