"""Direct export of a MaxCompute table to S3 (`maxcompute.mode=direct`), a client of the scheduler.

Per selected partition a Tunnel download session (its id and exact row count are recorded, so a rerun reads
the same snapshot), cut into row-range shards that export actors (maxcompute/worker.py) turn into Parquet
files; when the last shard of a partition is in, its files are checked at the destination and `_SUCCESS` (the
manifest of files, rows and bytes) is written. File bytes go from the Tunnel to S3 inside the actors, never
through Ray. A failed shard is retried (bounded) from its first row, its deterministic file names overwritten,
so a retry never adds rows; a lost actor's shard is done again the same way.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from dth_ray.errors import DthError, IntegrityError, error_class
from dth_ray.maxcompute.client import MaxComputeClient, PartitionInfo, TableInfo
from dth_ray.maxcompute.common import Outcome, job_name, preflight_destination, select_partitions, state_path
from dth_ray.maxcompute.lake import Lake
from dth_ray.maxcompute.parquet_sink import LoopThread
from dth_ray.maxcompute.plan import (
    FileInfo,
    PartitionPlan,
    ShardOutcome,
    ShardTask,
    Spec,
    hive_path,
    is_data_file,
    row_ranges,
    spec_text,
    success_manifest,
)
from dth_ray.maxcompute.state import DONE, ExportState
from dth_ray.maxcompute.worker import ExportWorker
from dth_ray.runtime.interrupts import Interrupts
from dth_ray.runtime.scheduler import Item, Scheduler, Workers
from dth_ray.settings import Settings
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
SHARD_ATTEMPTS = 3
ACTOR_LOSSES = 3


class _Direct:
    """One direct export run: plans, dispatch and per-partition finalisation."""

    def __init__(self, settings: Settings, client: MaxComputeClient, table: TableInfo, lake: Lake,
                 state: ExportState, outcome: Outcome):
        self.settings, self.client, self.table, self.lake = settings, client, table, lake
        self.state, self.outcome = state, outcome
        self.plans: dict[Spec, PartitionPlan] = {}
        self.failed: set[Spec] = set()
        self.shards = {"planned": 0, "resumed": 0, "exported": 0, "retried": 0}

    def folder(self, spec: Spec) -> str:
        return self.settings.destination.prefix + hive_path(spec)

    def plan(self, part: PartitionInfo) -> PartitionPlan | None:
        """The partition's plan (continuing a recorded one when its snapshot is still readable), or None when
        it was exported before and has not changed since."""
        shard_rows = self.settings.config.maxcompute.shard_rows
        folder = self.folder(part.spec)
        record = self.state.partition(part.spec)
        if record and record.status == DONE and record.modified == part.last_modified and \
                self.lake.has_success(folder):
            return None
        if record and record.status == DONE:
            self.lake.remove_success(folder)  # the partition changed (or lost its marker): export it again
        if record and record.status != DONE and record.modified == part.last_modified and \
                record.shard_rows == shard_rows:
            download_id, count = self.client.session(part.spec, record.download_id)
            if download_id == record.download_id and count == record.record_count:
                return PartitionPlan(part.spec, download_id, count, row_ranges(count, shard_rows),
                                     done=self.state.shards_done(part.spec))
        else:
            download_id, count = self.client.session(part.spec)
        self.state.start_partition(part.spec, download_id, count, shard_rows, part.last_modified)
        return PartitionPlan(part.spec, download_id, count, row_ranges(count, shard_rows))

    def tasks(self, plan: PartitionPlan) -> list[ShardTask]:
        return [ShardTask(plan.spec, i, plan.shards[i][0], plan.shards[i][1], plan.download_id,
                          self.folder(plan.spec)) for i in plan.pending]

    def fail(self, spec: Spec, error: str) -> None:
        if spec not in self.failed:
            self.failed.add(spec)
            self.outcome.failures.append({"partition": spec_text(spec), "error": error})

    def finalize(self, plan: PartitionPlan) -> None:
        """Check the partition's files at the destination, clear leftovers, then write `_SUCCESS` last."""
        folder = self.folder(plan.spec)
        files: list[FileInfo] = [f for i in sorted(plan.done) for f in plan.done[i]]
        rows = sum(f.rows for f in files)
        if rows != plan.record_count:
            raise IntegrityError(f"exported {rows} rows, the download session holds {plan.record_count}")
        self.lake.abort_uploads(folder)
        listed = self.lake.check_files(folder, files)
        keep = {f.key for f in files}
        strays = [k for k in listed if k not in keep and is_data_file(k[len(folder):])]
        if strays:
            log.info("removing %d files an interrupted attempt left in %s", len(strays), folder)
            self.lake.delete(strays)
        manifest = success_manifest(self.table.name, plan.spec, files, plan.record_count, "direct",
                                    {"download_id": plan.download_id})
        self.lake.write_success(folder, manifest)
        self.state.set_status(plan.spec, DONE)
        self.outcome.partitions.append({"partition": spec_text(plan.spec), "path": folder, "status": "exported",
                                        "rows": rows, "files": len(files), "bytes": sum(f.size for f in files)})

    def settle(self, plan: PartitionPlan) -> None:
        """Finalize the partition once its last shard is in."""
        if plan.spec in self.failed or plan.pending:
            return
        try:
            self.finalize(plan)
        except DthError as exc:
            self.fail(plan.spec, f"{error_class(exc)}: {exc}")


class _Exports:
    """The scheduler's client: one export shard per actor at a time (memory stays per shard)."""

    def __init__(self, run: _Direct):
        self.run = run

    def on_item_done(self, item: Item, result: ShardOutcome, where) -> Item | None:
        task: ShardTask = item.args[0]
        run = self.run
        if task.spec in run.failed:
            return None  # its partition failed meanwhile: nothing to finalize
        if result.error:
            if result.retryable:
                run.shards["retried"] += 1
                return replace(item, args=(replace(task, attempt=task.attempt + 1),), attempt=item.attempt + 1)
            run.fail(task.spec, f"shard {task.shard} (rows {task.start}+{task.rows}): {result.error}")
            return None
        run.state.shard_done(task.spec, task.shard, task.start, result.rows, result.files)
        run.shards["exported"] += 1
        plan = run.plans[task.spec]
        plan.done[task.shard] = result.files
        run.settle(plan)
        return None

    def on_item_failed(self, item: Item, error: str, where) -> None:
        task: ShardTask = item.args[0]
        self.run.fail(task.spec, f"shard {task.shard} (rows {task.start}+{task.rows}): {error}")

    def redo(self, item: Item, where, lost: bool) -> Item | None:
        task: ShardTask = item.args[0]
        if lost:
            log.warning("export actor lost on shard %s/%d", spec_text(task.spec), task.shard)
        return None if task.spec in self.run.failed else item

    def on_tick(self, scheduler) -> None:
        return None


def run_direct(settings: Settings, interrupts: Interrupts | None = None) -> dict:
    outcome = Outcome()
    preflight_destination(settings)
    client = MaxComputeClient(settings.config.source, settings.config.maxcompute)
    table, parts = select_partitions(client, settings)
    job = job_name(settings)
    state = ExportState(state_path(settings), job)
    loop = LoopThread()
    store = open_store(settings.destination)
    run = _Direct(settings, client, table, Lake(store, loop), state, outcome)
    try:
        tasks: list[ShardTask] = []
        for part in parts:
            try:
                plan = run.plan(part)
            except DthError as exc:
                run.fail(part.spec, f"{error_class(exc)}: {exc}")
                continue
            if plan is None:
                outcome.skipped += 1
                continue
            run.plans[part.spec] = plan
            run.shards["planned"] += len(plan.shards)
            run.shards["resumed"] += len(plan.done)  # finished by an earlier, interrupted run: not read again
            tasks.extend(run.tasks(plan))
            run.settle(plan)  # an empty partition, or one whose shards all finished before an interruption
        if tasks:
            # A threaded actor: one shard at a time, beside the scheduler's stop, log and close calls (Ray makes
            # the whole thread pool up front, so not the transfer actors' 256).
            workers = Workers(actor_class=ExportWorker, actor_args=lambda: (settings,),
                              actors=settings.transfer.actors, max_actors=len(tasks), per_actor=1, max_concurrency=8)
            scheduler = Scheduler(workers, interrupts or Interrupts(), max_attempts=SHARD_ATTEMPTS,
                                  max_losses=ACTOR_LOSSES)
            try:
                scheduler.run(_Exports(run), [Item(f"{spec_text(t.spec)}#{t.shard}", "export", (t,)) for t in tasks],
                              settings.runtime)
            finally:
                scheduler.close()
        for plan in run.plans.values():
            if plan.pending and plan.spec not in run.failed:
                run.fail(plan.spec, f"{len(plan.pending)} shards did not finish")
        return outcome.report(settings, job, table.name, len(parts), {"shards": run.shards})
    finally:
        loop.run(store.aclose())
        loop.close()
        state.close()
