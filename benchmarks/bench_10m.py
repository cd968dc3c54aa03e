"""10 million keys through the real CLI: `dth-ray sync dry_run=true` (runtime.ray=always and the default auto)
and `dth-ray plan` against a synthetic S3 endpoint (synth_s3.py) listing 10 M generated keys, with a
destination holding 9 M of them (every 10th key missing, the rest with equal sizes and ETags, so a dry run
would copy exactly 1 M and skip 9 M). Each run is one `dth-ray` process started as a user would, and its
memory is the peak of PSS summed over every process of the run (driver, actors, raylet, GCS, Ray's other
daemons), sampled every 0.5 s from /proc (procstats.py), with CPU and PSS per process group.

    .venv/bin/python benchmarks/bench_10m.py [--keys 10000000] [--skip 10] [--modes always,auto,plan]
    make bench-10m

Writes results/bench10m-<commit>-<YYYY-MM-DD-HHMM>.json (every run: command, wall, report counts, per-group
CPU and PSS, the PSS timeline, the server's CPU, load averages) and results/bench10m-latest.md (the table).
Exit status 1 if a run failed or its counts are wrong.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_core import BIN, describe_code, freeze_code, machine_busy_s, machine_info  # noqa: E402
from procstats import GROUPS, TAG_VAR, proc_stat, run_sampled  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
SAMPLE_S = 0.5
LINGER_S = 30.0  # Ray's daemons outlive the driver briefly: keep sampling until they are gone
TARGET_PSS_MB = 1000.0
MODES = {
    "always": ("sync", ["dry_run=true", "runtime.ray=always"]),
    "auto": ("sync", ["dry_run=true"]),
    "plan": ("plan", []),
}


class Server:
    """synth_s3.py in its own process group: `processes` workers sharing one port."""

    def __init__(self, work: Path, keys: int, skip: int, processes: int, layout: str):
        self.stats_dir = work / "server-stats"
        self.stats_dir.mkdir()
        cmd = [sys.executable, str(HERE / "synth_s3.py"), "--port", "0", "--bucket", f"src={keys}",
               "--bucket", f"dst={keys}:{skip}", "--processes", str(processes), "--layout", layout,
               "--stats-dir", str(self.stats_dir)]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, start_new_session=True)
        words = self.proc.stdout.readline().split()
        if not words or words[0] != "READY":
            raise RuntimeError(f"synth_s3.py did not start: {words}")
        self.port = int(words[1])
        self.pids = [self.proc.pid, *(int(w) for w in words[2:])]
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def cpu_s(self) -> dict[int, float]:
        return {pid: (stat[2] if (stat := proc_stat(pid)) else 0.0) for pid in self.pids}

    def stop(self) -> dict:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
        counts: dict[str, int] = {}
        for path in self.stats_dir.glob("*.json"):
            for name, value in json.loads(path.read_text()).items():
                if name != "pid":
                    counts[name] = counts.get(name, 0) + value
        return counts


def command(mode: str, server: Server, run_dir: Path) -> list[str]:
    verb, extra = MODES[mode]
    stores = ["source.bucket=src", f"source.endpoint={server.endpoint}", "source.credentials=anonymous",
              "destination.bucket=dst", f"destination.endpoint={server.endpoint}",
              "destination.credentials=anonymous"]
    return [str(BIN / "dth-ray"), verb, *stores, *extra, f"manifest.path={run_dir / 'manifest.sqlite'}",
            f"report={run_dir / 'report.json'}"]


def measure(cmd: list[str], env: dict[str, str], tag: str, run_dir: Path, marker: str, timeout_s: float,
            server: Server) -> dict:
    """Run the client to completion with the sampler on; wall, per-group CPU and PSS, the server's CPU."""
    load_before = os.getloadavg()
    server0, busy0, t0 = server.cpu_s(), machine_busy_s(), time.monotonic()
    run = run_sampled(cmd, env, run_dir, tag, timeout_s=timeout_s, interval_s=SAMPLE_S, linger_s=LINGER_S,
                      marker=marker, poll_s=0.05)
    sampler, lingering, code, timed_out, wall_s = run.sampler, run.lingering, run.exit_code, run.timed_out, run.wall_s
    server1 = server.cpu_s()
    server_cpu = {pid: server1[pid] - server0.get(pid, 0.0) for pid in server1}
    return {"exit_code": code, "timed_out": timed_out, "wall_s": round(wall_s, 2),
            "loadavg_before": [round(x, 2) for x in load_before],
            "loadavg_after": [round(x, 2) for x in os.getloadavg()],
            "machine_busy_cores": round((machine_busy_s() - busy0) / (time.monotonic() - t0), 2),
            "peak_pss_mb": round(sampler.peak_pss / 1e6, 1), "peak_rss_mb": round(sampler.peak_rss / 1e6, 1),
            "peak_at_s": round(sampler.peak_at_s, 1), "cpu_s": round(sum(sampler.cpu_s.values()), 2),
            "groups": sampler.breakdown(), "processes": sampler.processes(), "samples": sampler.samples,
            "found_by_marker_only": sum(1 for v in sampler.found_by.values() if v == "marker"),
            "lingering_pids_killed": lingering,
            "timeline": thin(sampler.timeline, 400),
            "server_cpu_s": round(sum(server_cpu.values()), 2),
            "server_cpu_s_per_process": [round(v, 2) for v in server_cpu.values()]}


def thin(points: list, most: int) -> list:
    step = max(1, -(-len(points) // most))
    return [[t, round(total / 1e6, 1), {g: round(v / 1e6, 1) for g, v in groups.items()}]
            for t, total, groups in points[::step]]


def one_run(mode: str, server: Server, work: Path, keys: int, expected_copy: int, timeout_s: float) -> dict:
    run_dir = Path(tempfile.mkdtemp(prefix=f"{mode}-", dir=work))
    # This run's own Ray folder (short: Ray's unix socket paths must fit 107 bytes); its daemons' command
    # lines name it, so the sampler finds them by it as well as by the environment tag.
    ray_tmp = Path(tempfile.mkdtemp(prefix="r10m-", dir="/tmp"))
    tag = uuid.uuid4().hex
    env = dict(os.environ)
    env.update({TAG_VAR: tag, "RAY_TMPDIR": str(ray_tmp), "DTH_RAY_CONF": str(work / "code" / "conf"),
                "PYTHONPATH": str(work / "code")})
    cmd = command(mode, server, run_dir)
    print(f"  {mode}: {' '.join(cmd[1:])}", flush=True)
    r = {"mode": mode, "command": cmd, **measure(cmd, env, tag, run_dir, str(ray_tmp), timeout_s, server)}
    report_path = run_dir / "report.json"
    report = json.loads(report_path.read_text()) if report_path.exists() else {}
    if mode == "plan":
        counts = {"listed": report.get("listed"), "would_copy": (report.get("estimate") or {}).get("objects"),
                  "skipped": report.get("would_skip"), "duration_s": report.get("listing_duration_s"),
                  "status": report.get("status")}
    else:
        objects = report.get("objects") or {}
        counts = {"listed": objects.get("listed"), "would_copy": objects.get("would_copy"),
                  "skipped": objects.get("skipped"), "duration_s": report.get("duration_s"),
                  "status": report.get("status"), "runtime": report.get("runtime")}
    r["report"] = counts
    r["stdout_tail"] = (run_dir / "stdout.txt").read_text(errors="replace")[-1500:]
    r["stderr_tail"] = (run_dir / "stderr.txt").read_text(errors="replace")[-3000:]
    r["valid"] = (r["exit_code"] == 0 and not r["timed_out"] and counts["listed"] == keys
                  and counts["would_copy"] == expected_copy and counts["skipped"] == keys - expected_copy)
    r["keys_per_s"] = round(keys / r["wall_s"]) if r["valid"] else None
    r["keys_per_s_listing"] = round(keys / counts["duration_s"]) if r["valid"] and counts["duration_s"] else None
    cores = r["server_cpu_s"] / r["wall_s"]
    r["server_cores"] = round(cores, 2)
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.rmtree(ray_tmp, ignore_errors=True)
    groups = " ".join(f"{g} {v['pss_at_peak_mb']:.0f}" for g, v in r["groups"].items())
    print(f"    exit {r['exit_code']} wall {r['wall_s']:.0f} s, {r['keys_per_s'] or 0:,} keys/s, peak PSS "
          f"{r['peak_pss_mb']:,.0f} MB ({groups}), run CPU {r['cpu_s']:.0f} s, server CPU {r['server_cpu_s']:.0f} s "
          f"({cores:.2f} cores), load {r['loadavg_before'][0]:.1f}→{r['loadavg_after'][0]:.1f}, counts {counts}"
          + ("" if r["valid"] else "  INVALID"), flush=True)
    return r


def markdown(result: dict) -> str:
    code = result["dth_ray_code"]
    lines = [f"# 10 M keys through dth-ray ({result['date']})", "",
             f"dth-ray code: {describe_code(code)}. Source {result['keys']:,} keys, destination {result['dst_keys']:,} "
             f"(every {result['skip']}th missing), layout `{result['layout']}`; synthetic endpoint with "
             f"{result['server_processes']} processes (anonymous, listing only). Machine: "
             f"{result['machine']['nproc']} cores, shared: rates depend on the load average beside them, PSS does not.",
             "", "| run | valid | wall s | keys/s | load avg (1 min, before→after) | peak PSS MB (all processes) "
             "| run CPU s | server CPU s (cores) |", "|---|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        lines.append(f"| {r['mode']} | {'yes' if r['valid'] else 'NO'} | {r['wall_s']:,.0f} | {r['keys_per_s'] or 0:,} "
                     f"| {r['loadavg_before'][0]:.1f}→{r['loadavg_after'][0]:.1f} | {r['peak_pss_mb']:,.0f} "
                     f"| {r['cpu_s']:,.0f} | {r['server_cpu_s']:,.0f} ({r['server_cores']:.2f}) |")
    lines += ["", "Per process group: CPU s / PSS MB at the run's peak (the group's own peak PSS in brackets).", "",
              "| run | " + " | ".join(GROUPS) + " |", "|---|" + "---|" * len(GROUPS)]
    for r in result["runs"]:
        cells = []
        for g in GROUPS:
            v = r["groups"].get(g)
            cells.append("—" if v is None else f"{v['cpu_s']:,.1f} s / {v['pss_at_peak_mb']:,.0f} "
                                               f"({v['peak_pss_mb']:,.0f}) MB ×{v['processes']}")
        lines.append(f"| {r['mode']} | " + " | ".join(cells) + " |")
    verdict = all(r["peak_pss_mb"] < TARGET_PSS_MB for r in result["runs"])
    lines += ["", f"Target: peak PSS summed over every process < {TARGET_PSS_MB:,.0f} MB: "
                  f"**{'met' if verdict else 'not met'}** by every run.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keys", type=int, default=10_000_000, help="source keys (default 10,000,000)")
    parser.add_argument("--skip", type=int, default=10, help="the destination lacks every SKIP-th key (default 10)")
    parser.add_argument("--modes", default="always,auto,plan", help="subset of always,auto,plan (in this order)")
    parser.add_argument("--layout", choices=("deep", "flat"), default="deep")
    parser.add_argument("--server-processes", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=3600.0, help="per run, s")
    parser.add_argument("--ref", default="HEAD", help="dth-ray code: a git ref (default HEAD) or 'worktree'")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    started = dt.datetime.now()
    work = Path(tempfile.mkdtemp(prefix="dth-10m-"))
    expected_copy = -(-args.keys // args.skip)
    result: dict = {"date": started.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:], "keys": args.keys,
                    "skip": args.skip, "dst_keys": args.keys - expected_copy, "layout": args.layout,
                    "server_processes": args.server_processes, "sample_s": SAMPLE_S, "machine": machine_info(),
                    "runs": []}
    server = None
    try:
        result["dth_ray_code"] = freeze_code(work / "code", args.ref)
        print(f"bench_10m: {args.keys:,} keys; code {describe_code(result['dth_ray_code'])}", flush=True)
        server = Server(work, args.keys, args.skip, args.server_processes, args.layout)
        for mode in args.modes.split(","):
            result["runs"].append(one_run(mode, server, work, args.keys, expected_copy, args.timeout))
    finally:
        if server is not None:
            result["server_requests"] = server.stop()
        shutil.rmtree(work, ignore_errors=True)
    result["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    commit = result["dth_ray_code"]["commit"][:10]
    path = results / f"bench10m-{commit}-{started.strftime('%Y-%m-%d-%H%M')}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (results / "bench10m-latest.md").write_text(table)
    print("\n" + table + f"\nwrote {path} and {results / 'bench10m-latest.md'}")
    return 0 if result["runs"] and all(r["valid"] for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
