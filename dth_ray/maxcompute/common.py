"""What the two MaxCompute export modes share: the job's name and state, the partitions selected, the outcome
and its report, and the destination's preflight."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from dataclasses import dataclass, field

from dth_ray.errors import ConfigError, NotFound, PermissionDenied
from dth_ray.maxcompute.client import MaxComputeClient, PartitionInfo, TableInfo
from dth_ray.maxcompute.plan import matches, parse_spec, unknown_filter_keys
from dth_ray.runtime.manifest import default_sqlite_path
from dth_ray.runtime.preflight import probe
from dth_ray.settings import Settings


def job_name(settings: Settings) -> str:
    """The job: named by the user, or derived from the table and the destination."""
    if settings.config.job:
        return settings.config.job
    mc, dst = settings.config.maxcompute, settings.config.destination
    pairing = (f"maxcompute://{mc.project}.{mc.table}@{settings.config.source.endpoint or settings.config.source.region} -> "
               f"{dst.type.value}://{dst.bucket}/{dst.prefix}@{dst.endpoint} [{mc.mode.value}]")
    return "mc-" + hashlib.sha256(pairing.encode()).hexdigest()[:12]


def state_path(settings: Settings) -> str:
    """The job state lives beside the SQLite manifest (also when the manifest itself is in DynamoDB)."""
    return os.path.join(os.path.dirname(os.path.abspath(settings.manifest.path or default_sqlite_path())),
                        "maxcompute.sqlite")


def select_partitions(client: MaxComputeClient, settings: Settings) -> tuple[TableInfo, list[PartitionInfo]]:
    """The table and the partitions `maxcompute.partitions` selects. Raises ConfigError for an unknown table,
    refused credentials, an unknown partition key, or filters that select nothing."""
    try:
        table = client.table()
        filters = [parse_spec(f) for f in settings.config.maxcompute.partitions]
        unknown = unknown_filter_keys(filters, list(table.partition_keys))
        if unknown:
            raise ConfigError(f"maxcompute.partitions names {', '.join(unknown)}, not a partition key of "
                              f"{table.name} ({', '.join(table.partition_keys) or 'none'})")
        parts = [p for p in client.partitions() if matches(p.spec, filters)]
    except NotFound as exc:
        raise ConfigError(f"maxcompute.table={settings.config.maxcompute.table!r} in project {settings.config.maxcompute.project!r} "
                          f"cannot be found ({exc})") from None
    except PermissionDenied as exc:
        raise ConfigError(f"source.credentials={settings.config.source.credentials!r} were refused ({exc})") from None
    if filters and not parts:
        raise ConfigError(f"maxcompute.partitions={settings.config.maxcompute.partitions!r} selects no partition of {table.name}")
    return table, parts


@dataclass
class Outcome:
    """What happened to each partition, for the report."""

    started: float = field(default_factory=time.monotonic)
    partitions: list[dict] = field(default_factory=list)
    failures: list[dict] = field(default_factory=list)
    skipped: int = 0

    def report(self, settings: Settings, job: str, table: str, selected: int, extra: dict | None = None) -> dict:
        done = [p for p in self.partitions if p["status"] == "exported"]
        out = {
            "status": "failed" if self.failures else "succeeded",
            "mode": settings.config.maxcompute.mode.value,
            "job": job,
            "table": table,
            "destination": f"{settings.config.destination.type.value}://{settings.config.destination.bucket}/{settings.config.destination.prefix}",
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


def preflight_destination(settings: Settings) -> None:
    asyncio.run(probe(settings.destination, "destination"))
