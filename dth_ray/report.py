"""The typed report of one sync run; the JSON report, the summary line, metrics and alarms all derive from it."""

from __future__ import annotations

from dataclasses import dataclass, field

from dth_ray.model import Change, Tally

SUCCEEDED, FAILED, INTERRUPTED = "succeeded", "failed", "interrupted"
PAUSED = "paused"  # stopped by schedule.window's end; the next invocation in a window continues the run


@dataclass(frozen=True, slots=True)
class NodeShare:
    """Objects and bytes one node copied in this run. Besides Ray node ids, `earlier-executions` holds what
    executions of a resumed run before this one copied."""

    node_id: str
    objects: int
    bytes: int


@dataclass
class Startup:
    """Where a run's start-up time went (seconds from its start; None: did not happen)."""

    ray_up_s: float | None = None
    actors_up_s: float | None = None
    lane_shards: int = 0
    lane_objects: int = 0
    lane_bytes: int = 0
    lane_done_s: float | None = None


@dataclass
class DeleteSummary:
    """`sync.delete`: candidates found, what was deleted, kept (back at the source) or failed."""

    candidates: int = 0
    destination_objects: int = 0
    deleted: int = 0
    kept: int = 0
    failed: int = 0
    max_delete: str = "unlimited"
    partial: bool = False
    failures: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class RunReport:
    """One run's outcome. `status` is succeeded only when every planned item finished and the counts add up
    (runtime/driver.py checks that before setting it)."""

    status: str
    job: str
    run_id: int
    source: str
    destination: str
    tally: Tally
    duration_s: float
    resumed: bool = False
    executions: int = 1  # of this run: 1 + the times it was resumed
    dry_run: bool = False
    part_size_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    unfinished: list[str] = field(default_factory=list)  # shards not finished (to resume), described
    nodes: list[NodeShare] = field(default_factory=list)
    startup: Startup = field(default_factory=Startup)
    deletes: DeleteSummary | None = None
    interrupted_by: str = ""  # the signal's name
    paused_until: str = ""  # paused: when the next transfer window opens (ISO 8601, UTC)
    manifest: dict = field(default_factory=dict)
    autoscaler: dict | None = None
    sample: list[Change] = field(default_factory=list)  # dry run: the first would-copy and would-delete keys
    dry_run_list: str = ""  # dry run: where every change was written (dry_run_list=PATH)
    dry_run_listed: int = 0  # the lines written there
    inventory: dict | None = None  # planned from inventories: which, of when (runtime/inventory.py)
    objects_report: dict | None = None  # report_objects: where the rows are (runtime/objectreport.py)

    @property
    def ok(self) -> bool:
        return self.status == SUCCEEDED

    def to_json(self) -> dict:
        t, d = self.tally, self.duration_s
        objects = {"listed": t.listed, "copied": t.copied, "skipped": t.skipped, "failed": t.failed}
        nbytes = {"copied": t.bytes_copied, "listed": t.bytes_listed}
        if self.dry_run:
            objects.update(would_copy=t.would_copy, would_copy_multipart=t.would_copy_multipart)
            nbytes.update(would_copy=t.would_copy_bytes, would_copy_multipart=t.would_copy_multipart_bytes)
        if self.deletes is not None:
            objects["would_delete" if self.dry_run else "deleted"] = (
                self.deletes.candidates if self.dry_run else self.deletes.deleted)
        out = {
            "status": self.status, "job": self.job, "run_id": self.run_id, "resumed": self.resumed,
            "executions": self.executions,
            "dry_run": self.dry_run, "source": self.source, "destination": self.destination,
            "objects": objects, "bytes": nbytes, "skipped_reasons": dict(sorted(t.skipped_reasons.items())),
            "recovered": {"objects": t.recovered, "bytes": t.recovered_bytes},
            "duration_s": round(d, 3),
            "bytes_per_s": round(t.bytes_copied / d, 1) if d > 0 else 0.0,
            "objects_per_s": round(t.copied / d, 1) if d > 0 else 0.0,
            "part_size_bytes": self.part_size_bytes, "server_side_copies": t.server_side_copies,
            "spread_parts": t.spread_parts, "resumed_parts": t.resumed_parts,
            "failures": [{"key": f.key, "error": f.error} for f in t.failures]
            + [{"key": k, "error": f"delete: {e}"} for k, e in (self.deletes.failures if self.deletes else [])[:100]],
            "errors": list(self.errors), "unfinished": list(self.unfinished),
            "nodes": [{"node_id": n.node_id, "objects": n.objects, "bytes": n.bytes} for n in self.nodes],
            "runtime": {
                "ray_up_s": _round(self.startup.ray_up_s), "actors_up_s": _round(self.startup.actors_up_s),
                "driver_lane": {"shards": self.startup.lane_shards, "objects": self.startup.lane_objects,
                                "bytes": self.startup.lane_bytes,
                                "last_shard_done_s": _round(self.startup.lane_done_s)},
            },
        }
        if self.deletes is not None:
            out["deletes"] = {k: v for k, v in vars(self.deletes).items() if k != "failures"}
        if self.interrupted_by:
            out["interrupted_by"] = self.interrupted_by
        if self.paused_until:
            out["paused_until"] = self.paused_until
        if self.manifest:
            out["manifest"] = dict(self.manifest)
        if self.autoscaler is not None:
            out["autoscaler"] = dict(self.autoscaler)
        if self.inventory is not None:
            out["inventory"] = dict(self.inventory)
        if self.objects_report is not None:
            out["report_objects"] = dict(self.objects_report)
        if self.dry_run:
            out["sample"] = [c.to_json() for c in self.sample]
            if self.dry_run_list:
                out["dry_run_list"] = {"path": self.dry_run_list, "lines": self.dry_run_listed}
        return out

    def summary(self) -> str:
        """The line the CLI prints (failures and errors on the lines after it)."""
        t = self.tally
        if self.dry_run:
            line = (f"dry run: {t.listed:,} listed, would copy {t.would_copy:,} objects "
                    f"({t.would_copy_bytes / 1e6:,.1f} MB), {t.skipped:,} skipped, nothing written")
            if self.deletes is not None:
                line += f"; would delete {self.deletes.candidates:,}"
            for change in self.sample:
                line += f"\n  would {change.action}: {change.key!r} ({change.size:,} bytes, {change.reason})"
            if self.dry_run_list:
                line += f"\n  all of them: {self.dry_run_list} ({self.dry_run_listed:,} lines)"
            elif len(self.sample) < t.would_copy + (self.deletes.candidates if self.deletes else 0):
                line += "\n  (the first keys of each; dry_run_list=PATH writes them all)"
        else:
            d = self.duration_s
            line = (f"{self.status}: {t.listed:,} listed, {t.copied:,} copied, {t.skipped:,} skipped, "
                    f"{t.failed:,} failed; {t.bytes_copied / 1e6:,.1f} MB in {d:.1f}s "
                    f"({(t.bytes_copied / d if d > 0 else 0) / 1e6:,.1f} MB/s, "
                    f"{(t.copied / d if d > 0 else 0):,.0f} objects/s)")
            if self.deletes is not None:
                line += f"; {self.deletes.deleted:,} deleted"
            if self.paused_until:
                line += (f"\n  outside the transfer window (schedule.window): the next one opens at "
                         f"{self.paused_until}; run the same command then to continue")
        if self.inventory is not None:
            source = self.inventory["source"]
            line += (f"\n  planned from the inventory of {source['created']} ({source['objects']:,} objects); "
                     "objects added since are left to the next scan")
        if self.objects_report is not None:
            line += f"\n  completion report: {self.objects_report['manifest']} ({self.objects_report['rows']:,} rows)"
        for failure in t.failures[:5]:
            line += f"\n  failed: {failure.key!r}: {failure.error}"
        for error in self.errors[:5]:
            line += f"\n  error: {error}"
        if self.unfinished:
            line += (f"\n  unfinished: {len(self.unfinished)} shard(s), e.g. {self.unfinished[0]}; run {self.run_id} "
                     f"of job {self.job} is kept: rerun the same command to resume it")
        return line


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)
