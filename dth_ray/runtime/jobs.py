"""The jobs a manifest holds (`dth-ray jobs`), and a job found again under the name an old release gave."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from datetime import datetime, timezone

from dth_ray.config import ManifestType
from dth_ray.runtime.manifest import JobInfo, default_sqlite_path
from dth_ray.runtime.manifests import open_manifest
from dth_ray.settings import ManifestSpec, Settings

log = logging.getLogger(__name__)


def _has_runs(spec: ManifestSpec, job: str) -> bool:
    manifest = open_manifest(spec, job)
    try:
        return manifest.latest_run() is not None
    finally:
        manifest.close()


def manifest_missing(spec: ManifestSpec) -> bool:
    """A SQLite manifest whose file does not exist yet: nothing ever ran there (reading would create it)."""
    sqlite = ManifestType(spec.type) is ManifestType.sqlite
    return sqlite and not os.path.exists(spec.path or default_sqlite_path())


def adopt_legacy_job(settings: Settings) -> Settings:
    """The settings to run with: under the job's earlier derived name (`job-<12 hex>`, settings.legacy_job)
    when the manifest has runs under that name and none under the readable one, so an interrupted run
    resumes and the copy-time records `compare` and `verify` rely on are found; else under the readable name.
    Either way `legacy_job` is cleared, so a second call changes nothing. Raises ConfigError, DthError (the
    manifest)."""
    legacy = settings.legacy_job
    if not legacy:
        return settings
    unchanged = dataclasses.replace(settings, legacy_job="")
    if legacy == settings.job or manifest_missing(settings.manifest):
        return unchanged
    if _has_runs(settings.manifest, settings.job) or not _has_runs(settings.manifest, legacy):
        return unchanged
    log.info("job %s: continuing under its earlier name %s, which holds its runs", settings.job, legacy)
    worker = dataclasses.replace(settings.worker, job=legacy)
    return dataclasses.replace(settings, worker=worker, legacy_job="")


def list_jobs(spec: ManifestSpec) -> list[dict]:
    """Every job in the manifest with its latest run, JSON-ready (see `job_row`), the most recently active
    first. Raises ConfigError, DthError (the manifest)."""
    if manifest_missing(spec):
        return []
    manifest = open_manifest(spec, "")
    try:
        return [job_row(info) for info in manifest.jobs()]
    finally:
        manifest.close()


def _iso(epoch_s: float) -> str | None:
    return datetime.fromtimestamp(epoch_s, timezone.utc).isoformat(timespec="seconds") if epoch_s else None


def job_row(info: JobInfo) -> dict:
    """One job: its stores, its latest run's state, and the objects and bytes that run has settled (copied,
    unchanged or failed) of its total. A succeeded run's counts come from its report; any other (running,
    interrupted, cut off, failed) counts its checkpoints, whose total is known once every shard is listed."""
    run = info.run
    report = json.loads(run.report) if run.report else {}
    source = report.get("source") or info.source
    destination = report.get("destination") or info.destination
    if info.settled is None:
        objects, nbytes = report.get("objects", {}), report.get("bytes", {})
        listed, listed_bytes = objects.get("listed", 0), nbytes.get("listed", 0)
        counts = {k: objects.get(k, 0) for k in ("copied", "skipped", "failed")}
        total, total_bytes, shards = listed, listed_bytes, None
        copied_bytes = nbytes.get("copied", 0)
    else:
        t = info.settled
        listed, listed_bytes, copied_bytes = t.listed, t.bytes_listed, t.bytes_copied
        counts = {"copied": t.copied, "skipped": t.skipped, "failed": t.failed}
        every_shard = info.shards[1] > 0 and info.shards[0] == info.shards[1]
        total, total_bytes = (listed, listed_bytes) if every_shard else (None, None)
        shards = {"done": info.shards[0], "total": info.shards[1]}
    row = {"job": info.job, "source": source, "destination": destination, "run_id": run.run_id,
           "state": run.status, "executions": run.executions, "started": _iso(run.started),
           "finished": _iso(run.finished), "objects": {"done": listed, "total": total, **counts},
           "bytes": {"done": listed_bytes, "total": total_bytes, "copied": copied_bytes}}
    if shards is not None:
        row["shards"] = shards
    return row


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} B"


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def _ago(seconds: float) -> str:
    for unit, scale in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= scale:
            return f"{seconds / scale:.0f} {unit} ago"
    return "just now"


def _when(row: dict, now: float) -> str:
    stamp = row["finished"] or row["started"]
    if not stamp:
        return "-"
    at = datetime.fromisoformat(stamp)
    return f"{at.astimezone().strftime('%Y-%m-%d %H:%M')} ({_ago(max(0.0, now - at.timestamp()))})"


def _state(row: dict) -> str:
    text = row["state"]
    if "shards" in row:
        text += f", {row['shards']['done']}/{row['shards']['total']} shards"
    if row["objects"]["failed"]:
        text += f", {row['objects']['failed']:,} failed"
    return text


def table(rows: list[dict], now: float | None = None) -> str:
    """The rows as an aligned text table (times local, with their age), one line per job."""
    now = time.time() if now is None else now
    head = ("JOB", "RUN", "STATE", "OBJECTS", "BYTES", "WHEN", "SOURCE → DESTINATION")
    lines = [head]
    for r in rows:
        o, b = r["objects"], r["bytes"]
        lines.append((r["job"], str(r["run_id"]), _state(r), f"{_count(o['done'])}/{_count(o['total'])}",
                      f"{_size(b['done'])}/{_size(b['total'])}", _when(r, now),
                      f"{r['source'] or '?'} → {r['destination'] or '?'}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(head) - 1)]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths, strict=False)) + "  " + line[-1]
                     for line in lines)
