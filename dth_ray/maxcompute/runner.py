"""Export a MaxCompute table to S3: the driver of `source=maxcompute`.

Direct mode: per selected partition a Tunnel download session (its id and exact row count are recorded, so a
rerun reads the same snapshot), cut into row-range shards that export actors turn into Parquet files; when
the last shard of a partition is in, its files are checked at the destination and `_SUCCESS` (the manifest
of files, rows and bytes) is written. Only this module blocks on `ray.get`/`ray.wait`; file bytes go from
the Tunnel to S3 inside the actors and never through Ray. Unload mode lives in `unload.py`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections import deque
from dataclasses import dataclass, field

from dth_ray.config import MaxComputeMode, SyncConfig
from dth_ray.errors import ConfigError, DthError, IntegrityError, NotFound, PermissionDenied, error_class
from dth_ray.maxcompute.client import MaxComputeClient, PartitionInfo, TableInfo
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
    matches,
    parse_spec,
    row_ranges,
    spec_text,
    success_manifest,
    unknown_filter_keys,
)
from dth_ray.maxcompute.state import DONE, ExportState
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
_SHARD_ATTEMPTS = 3
_ACTOR_LOSSES = 3


def job_name(cfg: SyncConfig) -> str:
    """The job: named by the user, or derived from the table and the destination."""
    if cfg.job:
        return cfg.job
    mc, dst = cfg.maxcompute, cfg.destination
    pairing = (f"maxcompute://{mc.project}.{mc.table}@{cfg.source.endpoint or cfg.source.region} -> "
               f"{dst.type.value}://{dst.bucket}/{dst.prefix}@{dst.endpoint} [{mc.mode.value}]")
    return "mc-" + hashlib.sha256(pairing.encode()).hexdigest()[:12]


def state_path(cfg: SyncConfig) -> str:
    """The job state lives beside the SQLite manifest (also when the manifest itself is in DynamoDB)."""
    from dth_ray.runtime.manifest import default_sqlite_path

    return os.path.join(os.path.dirname(os.path.abspath(cfg.manifest.path or default_sqlite_path())),
                        "maxcompute.sqlite")


def select_partitions(client: MaxComputeClient, cfg: SyncConfig) -> tuple[TableInfo, list[PartitionInfo]]:
    """The table and the partitions `maxcompute.partitions` selects. Raises ConfigError for an unknown table,
    refused credentials, an unknown partition key, or filters that select nothing."""
    try:
        table = client.table()
        filters = [parse_spec(f) for f in cfg.maxcompute.partitions]
        unknown = unknown_filter_keys(filters, list(table.partition_keys))
        if unknown:
            raise ConfigError(f"maxcompute.partitions names {', '.join(unknown)}, not a partition key of "
                              f"{table.name} ({', '.join(table.partition_keys) or 'none'})")
        parts = [p for p in client.partitions() if matches(p.spec, filters)]
    except NotFound as exc:
        raise ConfigError(f"maxcompute.table={cfg.maxcompute.table!r} in project {cfg.maxcompute.project!r} "
                          f"cannot be found ({exc})") from None
    except PermissionDenied as exc:
        raise ConfigError(f"source.credentials={cfg.source.credentials!r} were refused ({exc})") from None
    if filters and not parts:
        raise ConfigError(f"maxcompute.partitions={cfg.maxcompute.partitions!r} selects no partition of {table.name}")
    return table, parts


@dataclass
class Outcome:
    """What happened to each partition, for the report."""

    started: float = field(default_factory=time.monotonic)
    partitions: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    skipped: int = 0

    def report(self, cfg: SyncConfig, job: str, table: str, selected: int, extra: dict | None = None) -> dict:
        done = [p for p in self.partitions if p["status"] == "exported"]
        out = {
            "status": "failed" if self.failures else "succeeded",
            "mode": cfg.maxcompute.mode.value,
            "job": job,
            "table": table,
            "destination": f"{cfg.destination.type.value}://{cfg.destination.bucket}/{cfg.destination.prefix}",
            "partitions": {"selected": selected, "exported": len(done), "skipped": self.skipped,
                           "failed": len(self.failures)},
            "rows": sum(p["rows"] for p in done),
            "files": sum(p["files"] for p in done),
            "bytes": sum(p["bytes"] for p in done),
            "duration_s": round(time.monotonic() - self.started, 3),
            "details": self.partitions,
            "failures": self.failures,
        }
        out.update(extra or {})
        return out


def summary_line(report: dict) -> str:
    p = report["partitions"]
    line = (f"{report['status']}: {report['table']} ({report['mode']}): {p['selected']} partitions selected, "
            f"{p['exported']} exported, {p['skipped']} unchanged, {p['failed']} failed; {report['rows']:,} rows "
            f"in {report['files']:,} files, {report['bytes'] / 1e6:,.1f} MB, {report['duration_s']:.1f}s")
    for failure in report["failures"][:5]:
        line += f"\n  failed: {failure['partition'] or '(table)'}: {failure['error']}"
    return line


def run_maxcompute(cfg: SyncConfig) -> dict:
    """Export the table (resuming the job's interrupted export) and return the report.

    Raises ConfigError before anything is written when the table, the credentials or the destination are
    wrong."""
    if cfg.maxcompute.mode == MaxComputeMode.unload:
        from dth_ray.maxcompute.unload import run_unload

        return run_unload(cfg)
    return run_direct(cfg)


def _preflight_destination(cfg: SyncConfig) -> None:
    from dth_ray.runtime.driver import probe

    asyncio.run(probe(cfg.destination, "destination"))


class _Direct:
    """One direct export run: plans, dispatch and per-partition finalisation."""

    def __init__(self, cfg: SyncConfig, client: MaxComputeClient, table: TableInfo, lake: Lake,
                 state: ExportState, outcome: Outcome):
        self.cfg, self.client, self.table, self.lake, self.state, self.outcome = cfg, client, table, lake, state, outcome
        self.plans: dict[Spec, PartitionPlan] = {}
        self.failed: set[Spec] = set()
        self.shards = {"planned": 0, "resumed": 0, "exported": 0, "retried": 0}

    def folder(self, spec: Spec) -> str:
        return self.cfg.destination.prefix + hive_path(spec)

    def plan(self, part: PartitionInfo) -> PartitionPlan | None:
        """The partition's plan (continuing a recorded one when its snapshot is still readable), or None when
        it was exported before and has not changed since."""
        shard_rows = self.cfg.maxcompute.shard_rows
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
        if plan.spec in self.failed or plan.pending:
            return
        try:
            self.finalize(plan)
        except DthError as exc:
            self.fail(plan.spec, f"{error_class(exc)}: {exc}")


def run_direct(cfg: SyncConfig) -> dict:
    from dth_ray.runtime.driver import actor_count, start_ray

    outcome = Outcome()
    _preflight_destination(cfg)
    client = MaxComputeClient(cfg.source, cfg.maxcompute)
    table, parts = select_partitions(client, cfg)
    job = job_name(cfg)
    state = ExportState(state_path(cfg), job)
    loop = LoopThread()
    store = open_store(cfg.destination)
    run = _Direct(cfg, client, table, Lake(store, loop), state, outcome)
    try:
        queue: deque[ShardTask] = deque()
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
            queue.extend(run.tasks(plan))
            run.settle(plan)  # an empty partition, or one whose shards all finished before an interruption
        if queue:
            start_ray(cfg)
            _dispatch(cfg, run, queue, min(actor_count(cfg), len(queue)))
        for plan in run.plans.values():
            if plan.pending and plan.spec not in run.failed:
                run.fail(plan.spec, f"{len(plan.pending)} shards did not finish")
        return outcome.report(cfg, job, table.name, len(parts), {"shards": run.shards})
    finally:
        loop.run(store.aclose())
        loop.close()
        state.close()


def _dispatch(cfg: SyncConfig, run: _Direct, queue: deque[ShardTask], actors: int) -> None:
    """One shard at a time per export actor; a failed shard is retried (bounded) from its first row, its
    deterministic file names overwritten, so a retry never adds rows."""
    import ray

    from dth_ray.maxcompute.worker import ExportWorker

    worker_cls = ray.remote(ExportWorker).options(num_cpus=0, max_restarts=_ACTOR_LOSSES, max_task_retries=0)
    workers = [worker_cls.remote(cfg) for _ in range(max(1, actors))]
    idle = list(range(len(workers)))
    in_flight: dict = {}
    losses: dict[tuple, int] = {}
    try:
        while queue or in_flight:
            while queue and idle:
                task = queue.popleft()
                if task.spec in run.failed:
                    continue
                index = idle.pop()
                in_flight[workers[index].export.remote(task)] = (task, index)
            if not in_flight:
                continue
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=5.0)
            for ref in ready:
                task, index = in_flight.pop(ref)
                idle.append(index)
                try:
                    result: ShardOutcome = ray.get(ref)
                except ray.exceptions.RayActorError as exc:
                    key = (task.spec, task.shard)
                    losses[key] = losses.get(key, 0) + 1
                    log.warning("export actor lost on shard %s/%d: %s", spec_text(task.spec), task.shard,
                                type(exc).__name__)
                    if losses[key] > _ACTOR_LOSSES:
                        run.fail(task.spec, f"shard {task.shard}: export actor lost {losses[key]} times")
                    else:
                        queue.append(task)
                    continue
                _settle_shard(run, task, result, queue)
    finally:
        for ref in [w.close.remote() for w in workers]:
            try:
                ray.get(ref)
            except ray.exceptions.RayActorError:
                continue
        for worker in workers:
            ray.kill(worker)


def _settle_shard(run: _Direct, task: ShardTask, result: ShardOutcome, queue: deque[ShardTask]) -> None:
    plan = run.plans[task.spec]
    if result.error:
        if result.retryable and task.attempt < _SHARD_ATTEMPTS:
            run.shards["retried"] += 1
            queue.append(ShardTask(task.spec, task.shard, task.start, task.rows, task.download_id, task.dst_prefix,
                                   task.attempt + 1))
        else:
            run.fail(task.spec, f"shard {task.shard} (rows {task.start}+{task.rows}): {result.error}")
        return
    run.state.shard_done(task.spec, task.shard, task.start, result.rows, result.files)
    run.shards["exported"] += 1
    plan.done[task.shard] = result.files
    run.settle(plan)
