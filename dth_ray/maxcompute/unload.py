"""The seed's flow, made complete: UNLOAD each selected partition to OSS as Parquet (RAM role, compression),
wait for the instance, sync the produced OSS folders to S3 with the normal engine, then per partition check
that every unloaded file arrived with its size and that the files' Parquet footers add up to the partition's
row count, and only then write `_SUCCESS`.

UNLOAD appends (it never overwrites), so a partition is unloaded into a staging folder of its own, emptied
first when an earlier attempt left files there; a partition recorded as unloaded is not unloaded again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile

from dth_ray.errors import ConfigError, DthError, IntegrityError, error_class
from dth_ray.maxcompute.client import MaxComputeClient, PartitionInfo
from dth_ray.maxcompute.common import Outcome, job_name, preflight_destination, select_partitions, state_path
from dth_ray.maxcompute.lake import Lake
from dth_ray.maxcompute.parquet_sink import LoopThread, parquet_rows
from dth_ray.maxcompute.plan import (
    FileInfo,
    hive_path,
    oss_location,
    spec_text,
    success_manifest,
    unload_sql,
)
from dth_ray.maxcompute.state import DONE, UNLOADED, ExportState
from dth_ray.runtime.driver import run_sync
from dth_ray.runtime.interrupts import Interrupts
from dth_ray.runtime.preflight import probe
from dth_ray.settings import Settings, resolve
from dth_ray.stores import open_store

log = logging.getLogger(__name__)


def location_host(settings: Settings) -> str:
    """The OSS endpoint MaxCompute writes through (the seed's internal endpoint by default)."""
    mc = settings.config.maxcompute
    if mc.oss_location_endpoint:
        return mc.oss_location_endpoint
    region = mc.oss.region or settings.source.region
    if not region:
        raise ConfigError("maxcompute.oss_location_endpoint or maxcompute.oss.region is needed for unload")
    return f"oss-{region}-internal.aliyuncs.com"


def _hidden(relative_key: str) -> bool:
    """Files readers skip (Hive/Spark): any path segment starting with '_' or '.' (markers, commit metadata)."""
    return any(segment.startswith(("_", ".")) for segment in relative_key.split("/"))


def run_unload(settings: Settings, interrupts: Interrupts | None = None) -> dict:
    mc = settings.config.maxcompute
    outcome = Outcome()
    preflight_destination(settings)
    asyncio.run(probe(mc.oss, "maxcompute.oss"))
    client = MaxComputeClient(settings.config.source, mc)
    table, parts = select_partitions(client, settings)
    host = location_host(settings)
    job = job_name(settings)
    state = ExportState(state_path(settings), job)
    loop = LoopThread()
    oss_store, dst_store = open_store(mc.oss), open_store(settings.destination)
    oss, lake = Lake(oss_store, loop), Lake(dst_store, loop)
    statements: list[str] = []
    to_sync: list[PartitionInfo] = []
    sync_report: dict | None = None
    try:
        for part in parts:
            staging = mc.oss.prefix + hive_path(part.spec)
            folder = settings.destination.prefix + hive_path(part.spec)
            record = state.partition(part.spec)
            unchanged = record is not None and record.modified == part.last_modified
            if unchanged and record.status == DONE and lake.has_success(folder):
                outcome.skipped += 1
                continue
            try:
                if not (unchanged and record.status == UNLOADED):
                    lake.remove_success(folder)
                    leftovers = oss.list_all(staging)
                    if leftovers:
                        log.info("emptying %s: %d files of an earlier unload (UNLOAD appends)", staging,
                                 len(leftovers))
                        oss.delete(leftovers)
                    sql = unload_sql(mc.project, mc.table, part.spec, oss_location(host, mc.oss.bucket, staging),
                                     mc.role_arn, mc.unload_compression)
                    statements.append(sql)
                    state.start_partition(part.spec, "", -1, 0, part.last_modified, status="unloading")
                    client.run_sql(sql, mc.instance_timeout_s)
                    state.set_status(part.spec, UNLOADED)
                to_sync.append(part)
            except DthError as exc:
                outcome.failures.append({"partition": spec_text(part.spec), "error": f"{error_class(exc)}: {exc}"})
        if to_sync:
            sync_report = _sync(settings, job, [mc.oss.prefix + hive_path(p.spec) for p in to_sync],
                                interrupts).to_json()
            failed_keys = [f["key"] for f in sync_report.get("failures", [])]
            for part in to_sync:
                staging = mc.oss.prefix + hive_path(part.spec)
                bad = [k for k in failed_keys if k.startswith(staging)]
                if bad or sync_report.get("errors"):
                    reason = f"{len(bad)} files failed to copy" if bad else "; ".join(sync_report["errors"][:2])
                    outcome.failures.append({"partition": spec_text(part.spec), "error": reason})
                    continue
                try:
                    _finalize(settings, client, table.name, part, oss, lake, loop, state, outcome)
                except DthError as exc:
                    outcome.failures.append({"partition": spec_text(part.spec),
                                             "error": f"{error_class(exc)}: {exc}"})
        extra = {"unload_sql": statements, "sync": _sync_summary(sync_report)}
        return outcome.report(settings, job, table.name, len(parts), extra)
    finally:
        loop.run(oss_store.aclose())
        loop.run(dst_store.aclose())
        loop.close()
        state.close()


def _sync(settings: Settings, job: str, prefixes: list[str], interrupts: Interrupts | None):
    """The normal engine copies the staging folders (and only those) to the destination prefix."""
    cfg = settings.config
    mc = cfg.maxcompute
    handle, path = tempfile.mkstemp(prefix="dth-mc-prefixes-", suffix=".txt")
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write("".join(p + "\n" for p in prefixes))
        source = dataclasses.replace(mc.oss, prefix_list=path)
        sub = dataclasses.replace(cfg, source=source, job=f"{job}-oss", report="")
        return run_sync(resolve(sub, check=False), interrupts=interrupts)
    finally:
        os.unlink(path)


def _sync_summary(report: dict | None) -> dict | None:
    if report is None:
        return None
    keys = ("status", "objects", "bytes", "duration_s", "job", "run_id", "resumed", "errors")
    return {k: report[k] for k in keys if k in report}


def _finalize(settings: Settings, client: MaxComputeClient, table: str, part: PartitionInfo, oss: Lake,
              lake: Lake, loop: LoopThread, state: ExportState, outcome: Outcome) -> None:
    """Every unloaded file at the destination with its size, rows (from the Parquet footers) equal to the
    partition's exact count, leftovers of older unloads removed, then `_SUCCESS`."""
    mc = settings.config.maxcompute
    dst_prefix = settings.destination.prefix
    staging = mc.oss.prefix + hive_path(part.spec)
    folder = dst_prefix + hive_path(part.spec)
    staged = {k: m.size for k, m in oss.list_all(staging).items() if not _hidden(k[len(staging):])}
    expected = {dst_prefix + k[len(mc.oss.prefix):]: size for k, size in staged.items()}
    listed = lake.list_all(folder)
    for key, size in expected.items():
        if key not in listed or listed[key].size != size:
            raise IntegrityError(f"{key}: expected {size} bytes at the destination, found "
                                 f"{listed[key].size if key in listed else 'nothing'}")
    files = [FileInfo(key, parquet_rows(lake.store, key, size, loop), size, listed[key].etag)
             for key, size in sorted(expected.items())]
    _, count = client.session(part.spec)
    rows = sum(f.rows for f in files)
    if rows != count:
        raise IntegrityError(f"the unloaded files hold {rows} rows, the partition holds {count}")
    strays = [k for k in listed if k not in expected and not _hidden(k[len(folder):])]
    if strays:
        log.info("removing %d files of an earlier unload from %s", len(strays), folder)
        lake.delete(strays)
    manifest = success_manifest(table, part.spec, files, count, "unload",
                                {"staging": f"oss://{mc.oss.bucket}/{staging}"})
    lake.write_success(folder, manifest)
    state.set_status(part.spec, DONE)
    outcome.partitions.append({"partition": spec_text(part.spec), "path": folder, "status": "exported", "rows": rows,
                               "files": len(files), "bytes": sum(f.size for f in files)})
