"""What the console shows, read from the manifest (opened read-only): each job's latest run with its state and
numbers, and one job's detail — runs history, the shards and throughput of a run, a page of its failures and
the commands for the job. Plain JSON-ready values. No credential appears: stores are named by location (user
info and anything shaped like a secret removed) and by overrides that carry credential specs (env:NAME,
secret:ID), never values."""

from __future__ import annotations

import json
import re
import shlex
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field

from dth_ray.config import ManifestType
from dth_ray.model import Tally
from dth_ray.ops.logs import redact
from dth_ray.runtime.manifest import (
    DONE,
    INTERRUPTED,
    PLANNING,
    PUBLISH_INTERVAL_S,
    RUNNING,
    STALE_AFTER_INTERVALS,
    JobInfo,
    LiveRecord,
    Manifest,
    RunInfo,
)
from dth_ray.runtime.manifests import open_manifest
from dth_ray.settings import ManifestSpec

FAILURES_PAGE = 50  # failed keys a job page shows at a time
RUNS_SHOWN = 30  # runs in a job's history
_OPEN_MANIFESTS = 64  # per-job manifests kept open (least recently used closed beyond)
_USERINFO = re.compile(r"(://)[^/@\s]*@")


@dataclass
class RunView:
    """One run as the console shows it. `state` is the recorded status, except that a run recorded running
    whose driver stopped publishing (`stale`) shows as interrupted."""

    run_id: int
    state: str
    stale: bool = False
    started: float = 0.0
    finished: float = 0.0
    duration_s: float = 0.0
    objects_done: int = 0
    objects_total: int = 0
    bytes_done: int = 0
    bytes_total: int = 0
    copied: int = 0
    skipped: int = 0
    failed: int = 0
    bytes_per_s: float = 0.0
    objects_per_s: float = 0.0
    eta_s: float | None = None
    resumed: bool = False
    executions: int = 1
    heartbeat: float = 0.0  # when its driver last published (0: never)
    shards_done: int = 0
    shards_total: int = 0
    percent: float | None = None


@dataclass
class JobView:
    job: str
    source: str
    destination: str
    latest: RunView
    args: list[str] = field(default_factory=list)


def clean(text: str) -> str:
    """A store location as shown: no user info in a URL, nothing shaped like a credential."""
    return _USERINFO.sub(r"\1", redact(text))


def run_state(run: RunInfo, live: LiveRecord | None, now: float) -> tuple[str, bool]:
    """(state, stale): a run recorded running or planning is live only while its heartbeat is fresh (or, with
    no record yet, for as long as a first one may take)."""
    if run.status not in (RUNNING, PLANNING):
        return run.status, False
    if live is None:
        fresh = now - run.started <= STALE_AFTER_INTERVALS * PUBLISH_INTERVAL_S
    else:
        fresh = not live.stale(now)
    return (run.status, False) if fresh else (INTERRUPTED, True)


def _report(run: RunInfo) -> dict:
    try:
        return json.loads(run.report) if run.report else {}
    except ValueError:
        return {}


def run_view(run: RunInfo, live: LiveRecord | None, now: float, settled: Tally | None = None,
             shards: tuple[int, int] = (0, 0)) -> RunView:
    """The run's numbers: the live record's while it runs (or ran, for a run cut off), else its report's, else
    what its checkpoints settled."""
    state, stale = run_state(run, live, now)
    live = live if live is not None and live.run_id == run.run_id else None
    report = _report(run)
    end = run.finished or (live.heartbeat if live is not None and stale else now)
    v = RunView(run.run_id, state, stale, run.started, run.finished, max(0.0, end - run.started),
                resumed=run.executions > 1, executions=run.executions, heartbeat=live.heartbeat if live else 0.0)
    objects, nbytes = report.get("objects", {}), report.get("bytes", {})
    if live is not None:
        v.objects_done, v.objects_total, v.bytes_done, v.bytes_total = (
            live.objects, live.total_objects, live.bytes, live.total_bytes)
        v.copied, v.skipped, v.failed = live.copied, live.skipped, live.failed
        v.shards_done, v.shards_total = live.shards_done, live.shards_total
        if state in (RUNNING, PLANNING):
            v.bytes_per_s, v.objects_per_s, v.eta_s = live.bytes_per_s, live.objects_per_s, live.eta_s
    elif objects:
        v.objects_done = v.objects_total = int(objects.get("listed", 0))
        v.bytes_done = v.bytes_total = int(nbytes.get("listed", 0))
        v.copied, v.skipped = int(objects.get("copied", 0)), int(objects.get("skipped", 0))
        v.failed = int(objects.get("failed", 0))
    elif settled is not None:
        v.objects_done, v.bytes_done = settled.listed, settled.bytes_listed
        v.copied, v.skipped, v.failed = settled.copied, settled.skipped, settled.failed
    if objects and run.finished:  # a finished run's own accounting wins over its last live record
        v.copied, v.skipped = int(objects.get("copied", v.copied)), int(objects.get("skipped", v.skipped))
        v.failed = int(objects.get("failed", v.failed))
        v.bytes_per_s = float(report.get("bytes_per_s", 0.0))
        v.objects_per_s = float(report.get("objects_per_s", 0.0))
    if shards != (0, 0) and not v.shards_total:
        v.shards_done, v.shards_total = shards
    if v.bytes_total:
        v.percent = min(100.0, 100.0 * v.bytes_done / v.bytes_total)
    elif v.objects_total:
        v.percent = min(100.0, 100.0 * v.objects_done / v.objects_total)
    elif v.shards_total:
        v.percent = 100.0 * v.shards_done / v.shards_total
    elif run.status == "succeeded":
        v.percent = 100.0
    return v


def manifest_overrides(spec: ManifestSpec) -> list[str]:
    """The overrides that open this manifest (credentials as their spec), for the job's commands."""
    if spec.type is ManifestType.dynamodb:
        out = ["manifest=dynamodb", f"manifest.table={spec.table}"]
        out += [f"manifest.{name}={getattr(spec, name)}" for name in ("region", "endpoint")
                if getattr(spec, name)]
        if spec.credentials != "default":
            out.append(f"manifest.credentials={spec.credentials}")
        return out
    return [f"manifest.path={spec.path}"] if spec.path else []


def commands(job: str, args: list[str], spec: ManifestSpec) -> dict[str, str]:
    """The job's status, verify and resume commands, ready to paste into a shell ('' when the stores are not
    recorded: runs of an earlier release)."""
    tail = [f"job={job}", *manifest_overrides(spec)]
    line = lambda *words: " ".join(shlex.quote(w) for w in words)  # noqa: E731
    out = {"status": line("dth-ray", "status", *tail)}
    out["verify"] = line("dth-ray", "verify", *args, *tail) if args else ""
    out["resume"] = line("dth-ray", "sync", *args, *tail) if args else ""
    return out


def throughput(live: LiveRecord | None) -> list[tuple[float, float, float]]:
    """(epoch s, bytes/s, objects/s) between consecutive samples of a live record."""
    if live is None:
        return []
    out = []
    for (t0, b0, o0), (t1, b1, o1) in zip(live.samples, live.samples[1:], strict=False):
        if t1 > t0:
            out.append((t1, max(0.0, (b1 - b0) / (t1 - t0)), max(0.0, (o1 - o0) / (t1 - t0))))
    return out


class Reader:
    """The console's reads: one read-only manifest per job (opened on first use, the least recently used closed
    beyond _OPEN_MANIFESTS) and one to list the jobs. Thread-safe (handlers call it from worker threads)."""

    def __init__(self, spec: ManifestSpec, clock=time.time):
        self.spec = spec
        self.clock = clock
        self._lock = threading.Lock()
        self._open: OrderedDict[str, Manifest] = OrderedDict()
        self._index = open_manifest(spec, "", read_only=True)

    def _manifest(self, job: str) -> Manifest:
        with self._lock:
            found = self._open.get(job)
            if found is not None:
                self._open.move_to_end(job)
                return found
        opened = open_manifest(self.spec, job, read_only=True)
        with self._lock:
            self._open[job] = opened
            while len(self._open) > _OPEN_MANIFESTS:
                self._open.popitem(last=False)[1].close()
        return opened

    def jobs(self) -> list[dict]:
        """Every job with its latest run, the most recently active first."""
        now = self.clock()
        views = []
        for info in self._index.jobs():
            live = self._manifest(info.job).live(info.run.run_id)
            views.append(self._job_view(info, live, now))
        views.sort(key=lambda v: -max(v.latest.started, v.latest.finished, v.latest.heartbeat))
        return [asdict(v) for v in views]

    @staticmethod
    def _job_view(info: JobInfo, live: LiveRecord | None, now: float) -> JobView:
        report = _report(info.run)
        source = info.source or str(report.get("source", ""))
        destination = info.destination or str(report.get("destination", ""))
        return JobView(info.job, clean(source), clean(destination),
                       run_view(info.run, live, now, info.settled, info.shards), [redact(a) for a in info.args])

    def job(self, job: str, run_id: int = 0, after: str = "") -> dict | None:
        """One job's page: runs history, the chosen run (default: the latest) with its shards, throughput and
        a page of failures after key `after`, and the job's commands. None for a job the manifest lacks."""
        now = self.clock()
        info = next((i for i in self._index.jobs() if i.job == job), None)
        if info is None:
            return None
        m = self._manifest(job)
        runs = m.runs(RUNS_SHOWN)
        chosen = next((r for r in runs if r.run_id == run_id), None) if run_id else None
        chosen = chosen or info.run
        live = m.live(chosen.run_id)
        checkpoints = m.checkpoints(chosen.run_id)
        settled = Tally()
        for cp in checkpoints:
            settled.merge(cp.tally)
        view = run_view(chosen, live, now, settled,
                        (sum(cp.status == DONE for cp in checkpoints), len(checkpoints)))
        running = set(live.running) if live is not None and view.state in (RUNNING, PLANNING) else set()
        shards = [{"shard": cp.shard.shard_id, "prefix": cp.shard.prefix,
                   "state": ("done" if not cp.tally.failed else "failures") if cp.status == DONE
                   else "running" if cp.shard.shard_id in running else "pending",
                   "listed": cp.tally.listed, "failed": cp.tally.failed} for cp in checkpoints]
        rows = m.failures_page(chosen.run_id, after, FAILURES_PAGE + 1)
        job_view = self._job_view(info, m.live(info.run.run_id) if chosen is not info.run else live, now)
        history = [asdict(run_view(r, live if r.run_id == chosen.run_id else None, now)) for r in runs]
        return {
            **asdict(job_view), "run": asdict(view), "runs": history, "shards": shards,
            "throughput": throughput(live), "heartbeat_age_s": round(now - live.heartbeat, 1) if live else None,
            "failures": [asdict(row) for row in rows[:FAILURES_PAGE]], "failures_after": after,
            "failures_next": rows[FAILURES_PAGE - 1].key if len(rows) > FAILURES_PAGE else "",
            "commands": commands(job, job_view.args, self.spec), "now": now,
        }

    def close(self) -> None:
        with self._lock:
            opened, self._open = list(self._open.values()), OrderedDict()
        for manifest in [self._index, *opened]:
            manifest.close()
