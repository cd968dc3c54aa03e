"""CPU and memory of a benchmarked run, per process and per process group, read from /proc (no psutil).

A run's processes are those whose environment carries the run's tag (`DTH_BENCH_TAG=<tag>`: Ray's raylet, GCS,
agents and workers inherit it, also once they leave the client's process tree) or whose command line holds a
`marker` (e.g. the run's own Ray temp folder, which the daemons' command lines name). Every sample reads each
one's PSS (/proc/PID/smaps_rollup: shared pages split among their users, so the sum over processes counts
Ray's object store and shared libraries once) and its CPU (utime + stime of /proc/PID/stat, kept per pid as
the largest value seen: the last sample before it exits, a lower bound by at most one interval).

Groups: driver (the client's root process), transfer_actors (ray::TransferWorker), manifest_actor,
ray_workers (other Ray worker processes: idle or starting workers), raylet, gcs_server, ray_daemons (dashboard
and runtime-env agents, log monitor, autoscaler monitor: any other process running Ray's code) and other.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
TAG_VAR = "DTH_BENCH_TAG"
GROUPS = ("driver", "transfer_actors", "manifest_actor", "ray_workers", "raylet", "gcs_server", "ray_daemons",
          "other")


def proc_stat(pid: int) -> tuple[str, int, float, int] | None:
    """(state, ppid, utime+stime seconds, start time in clock ticks since boot), or None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            rest = handle.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return rest[0], int(rest[1]), (int(rest[11]) + int(rest[12])) / CLK_TCK, int(rest[19])


def proc_cpu_s(pid: int) -> float:
    """utime + stime of `pid` in seconds; 0.0 once it is gone."""
    stat = proc_stat(pid)
    return stat[2] if stat else 0.0


def machine_busy_s() -> float:
    """CPU seconds the whole machine spent busy (all cores; idle and iowait excluded) since boot."""
    with open("/proc/stat") as handle:
        fields = [int(x) for x in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def proc_memory(pid: int) -> tuple[int, int]:
    """(RSS, PSS) in bytes, (0, 0) once it is gone."""
    rss_bytes = pss_bytes = 0
    try:
        with open(f"/proc/{pid}/statm") as handle:
            rss_bytes = int(handle.read().split()[1]) * PAGE_BYTES
        with open(f"/proc/{pid}/smaps_rollup") as handle:
            for line in handle:
                if line.startswith("Pss:"):
                    pss_bytes = int(line.split()[1]) * 1024
                    break
    except (OSError, IndexError, ValueError):
        pass
    return rss_bytes, pss_bytes


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return [a.decode(errors="replace") for a in handle.read().split(b"\0") if a]
    except OSError:
        return []


def classify(pid: int, root_pid: int, argv: list[str]) -> str:
    """The group of a process of the run, from its command line (Ray retitles its workers `ray::Class`)."""
    if pid == root_pid:
        return "driver"
    first = argv[0] if argv else ""
    if first.startswith("ray::"):
        if first.startswith("ray::TransferWorker"):
            return "transfer_actors"
        if first.endswith("Agent"):  # ray::DashboardAgent, ray::RuntimeEnvAgent: per-node daemons, retitled
            return "ray_daemons"
        return "manifest_actor" if "Manifest" in first else "ray_workers"
    base = os.path.basename(first)
    if base in ("raylet", "gcs_server"):
        return base
    text = " ".join(argv)
    if "default_worker.py" in text:
        return "ray_workers"
    if "/ray/" in text or " -m ray." in text:
        return "ray_daemons"
    return "other"


class ProcessSampler(threading.Thread):
    """Every `interval_s`: find the run's processes and record their CPU and memory, per pid and per group.
    `root_pid` is the client; `marker` (optional) also admits processes whose command line contains it."""

    def __init__(self, tag: str, root_pid: int, interval_s: float = 0.2, marker: str = ""):
        super().__init__(daemon=True)
        self.needle = f"{TAG_VAR}={tag}".encode()
        self.root_pid = root_pid
        self.interval_s = interval_s
        self.marker = marker
        self.seen: dict[int, bool] = {root_pid: True}  # between fork and exec a child lacks the tag yet
        self.found_by: dict[int, str] = {}  # pid -> "tag" or "marker" (the marker only)
        self.cpu_s: dict[int, float] = {}
        self.group: dict[int, str] = {}
        self.argv: dict[int, str] = {}
        self.peak_pss_by_pid: dict[int, int] = {}
        self.alive: set[int] = set()
        self.peak_rss = self.peak_pss = 0
        self.peak_at_s = 0.0
        self.groups_at_peak: dict[str, int] = {}
        self.peak_by_group: dict[str, int] = {}
        self.timeline: list[tuple[float, int, dict[str, int]]] = []  # (s since start, total PSS, per group)
        self.samples = 0
        self.started = time.monotonic()
        self._halt = threading.Event()

    def _admitted(self, pid: int) -> bool:
        if pid not in self.seen:
            ok = False
            try:
                with open(f"/proc/{pid}/environ", "rb") as handle:
                    ok = self.needle in handle.read().split(b"\0")
                if ok:
                    self.found_by[pid] = "tag"
            except OSError:
                pass
            self.seen[pid] = ok
        if not self.seen[pid] and self.marker and any(self.marker in a for a in cmdline(pid)):
            self.seen[pid] = True
            self.found_by[pid] = "marker"
        return self.seen[pid]

    def sample(self) -> None:
        alive, rss_sum, by_group = set(), 0, dict.fromkeys(GROUPS, 0)
        for name in os.listdir("/proc"):
            if not name.isdigit() or not self._admitted(pid := int(name)):
                continue
            stat = proc_stat(pid)
            if stat is None or stat[0] in ("Z", "X"):
                continue
            alive.add(pid)
            argv = cmdline(pid)
            if argv:
                self.group[pid] = classify(pid, self.root_pid, argv)
                self.argv[pid] = " ".join(argv)[:160]
            group = self.group.setdefault(pid, "other")
            self.cpu_s[pid] = max(self.cpu_s.get(pid, 0.0), stat[2])
            rss, pss = proc_memory(pid)
            rss_sum += rss
            by_group[group] += pss
            self.peak_pss_by_pid[pid] = max(self.peak_pss_by_pid.get(pid, 0), pss)
        total = sum(by_group.values())
        self.alive = alive
        self.peak_rss = max(self.peak_rss, rss_sum)
        elapsed = time.monotonic() - self.started
        if total > self.peak_pss:
            self.peak_pss, self.peak_at_s, self.groups_at_peak = total, elapsed, dict(by_group)
        for group, pss in by_group.items():
            self.peak_by_group[group] = max(self.peak_by_group.get(group, 0), pss)
        self.timeline.append((round(elapsed, 2), total, {g: v for g, v in by_group.items() if v}))
        self.samples += 1

    def run(self) -> None:
        while not self._halt.is_set():
            self.sample()
            self._halt.wait(self.interval_s)

    def stop(self) -> None:
        self._halt.set()
        self.join()

    def breakdown(self) -> dict[str, dict]:
        """Per group: processes, CPU s (summed per-pid maxima), peak PSS MB (the group's own peak) and its PSS
        MB at the moment the run's total peaked."""
        out = {}
        for group in GROUPS:
            pids = [p for p, g in self.group.items() if g == group]
            if not pids:
                continue
            out[group] = {"processes": len(pids), "cpu_s": round(sum(self.cpu_s.get(p, 0.0) for p in pids), 2),
                          "peak_pss_mb": round(self.peak_by_group.get(group, 0) / 1e6, 1),
                          "pss_at_peak_mb": round(self.groups_at_peak.get(group, 0) / 1e6, 1)}
        return out

    def processes(self) -> list[dict]:
        """Every process seen: pid, group, how it was found, CPU s, peak PSS MB and its command line (cut)."""
        return [{"pid": p, "group": self.group.get(p, "other"), "found_by": self.found_by.get(p, "root"),
                 "cpu_s": round(self.cpu_s.get(p, 0.0), 2), "peak_pss_mb": round(self.peak_pss_by_pid.get(p, 0) / 1e6, 1),
                 "cmd": self.argv.get(p, "")} for p in sorted(self.cpu_s)]


@dataclass
class SampledRun:
    """One client run under the sampler: exit code, whether it was killed at the timeout, wall time to the
    client's exit, the sampler (stopped) and the tagged processes still alive after the linger, killed."""

    exit_code: int
    timed_out: bool
    wall_s: float
    sampler: ProcessSampler
    lingering: list[int]


def run_sampled(cmd: list[str], env: dict[str, str], run_dir: Path, tag: str, *, timeout_s: float,
                interval_s: float, linger_s: float, marker: str = "", poll_s: float = 0.02) -> SampledRun:
    """Run `cmd` (its own session, cwd `run_dir`, output in run_dir/stdout.txt and stderr.txt) with a
    ProcessSampler on its tagged processes; after the client exits keep sampling until Ray's daemonized
    processes are gone (at most `linger_s`), then kill what is left of the run's own processes."""
    t0 = time.monotonic()
    with open(run_dir / "stdout.txt", "wb") as out, open(run_dir / "stderr.txt", "wb") as err:
        # cwd: Ray puts the driver's working directory first on its workers' sys.path; run from the
        # repository, the actors would import the live dth_ray/ instead of a frozen copy.
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, start_new_session=True, cwd=run_dir)
        sampler = ProcessSampler(tag, proc.pid, interval_s, marker)
        sampler.start()
        timed_out = False
        # WNOWAIT: the exited client stays an un-reaped zombie, whose /proc stat still shows its CPU time.
        while os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is None:
            if time.monotonic() - t0 > timeout_s:
                timed_out = True
                os.killpg(proc.pid, 9)
                break
            time.sleep(poll_s)
        wall_s = time.monotonic() - t0
        final = proc_stat(proc.pid)
        if final is not None:
            sampler.cpu_s[proc.pid] = max(sampler.cpu_s.get(proc.pid, 0.0), final[2])
        code = proc.wait()
    sampler.stop()
    deadline = time.monotonic() + linger_s
    sampler.sample()
    while sampler.alive and time.monotonic() < deadline:
        time.sleep(interval_s)
        sampler.sample()
    lingering = sorted(sampler.alive)
    for pid in lingering:  # still alive after the linger: ours (checked again by the tag); not left behind
        with contextlib.suppress(OSError), open(f"/proc/{pid}/environ", "rb") as handle:
            if sampler.needle in handle.read().split(b"\0"):
                os.kill(pid, 9)
    return SampledRun(code, timed_out, wall_s, sampler, lingering)


def group_medians(runs: list[dict]) -> dict[str, tuple[float, float]]:
    """Per group over runs that carry a breakdown (`groups`): (median CPU s, median PSS MB at the run's peak);
    a group a run lacks counts as 0 there."""
    runs = [r for r in runs if r.get("groups")]
    present = [g for g in GROUPS if any(g in r["groups"] for r in runs)]
    return {g: (statistics.median(r["groups"].get(g, {}).get("cpu_s", 0.0) for r in runs),
                statistics.median(r["groups"].get(g, {}).get("pss_at_peak_mb", 0.0) for r in runs))
            for g in present}


def groups_markdown(rows: list[tuple[str, list[dict]]]) -> list[str]:
    """A Markdown table: one row per (label, runs), one column per process group present, cells
    'CPU s / PSS MB' (medians over the runs; PSS at the moment the run's summed PSS peaked)."""
    rows = [(label, [r for r in runs if r.get("groups")]) for label, runs in rows]
    rows = [(label, runs) for label, runs in rows if runs]
    if not rows:
        return []
    medians = [(label, runs, group_medians(runs)) for label, runs in rows]
    present = [g for g in GROUPS if any(g in m for _, _, m in medians)]
    lines = ["| run | runs | " + " | ".join(g.replace("_", " ") for g in present) + " | all: CPU s / peak PSS MB |",
             "|---|---|" + "---|" * (len(present) + 1)]
    for label, runs, m in medians:
        cells = [f"{m[g][0]:,.1f} / {m[g][1]:,.0f}" if g in m else "—" for g in present]
        total_cpu = statistics.median(sum(v["cpu_s"] for v in r["groups"].values()) for r in runs)
        total_pss = statistics.median(r["peak_pss_mb"] for r in runs)
        lines.append(f"| {label} | {len(runs)} | " + " | ".join(cells) + f" | {total_cpu:,.1f} / {total_pss:,.0f} |")
    return lines
