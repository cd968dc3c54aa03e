"""The benchmark suite (issue 6): dth-ray against rclone, s5cmd, the AWS CLI and a naive boto3 pool, with the
servers' ceilings, an incremental run, dth-ray's scaling curve, the emulated WAN and (full suite) the scale-out
curve over N Ray nodes behind their own links (bench_scale.py), in one run.

    make bench               # full suite (see benchmarks/README.md for what it runs and how long it takes)
    make bench QUICK=1       # reduced suite, under five minutes: every target's scenario, fewer and smaller runs
    .venv/bin/python benchmarks/suite.py [--quick] [--small N] [--large N] [--runs K] [--scenarios ...] ...
    .venv/bin/python benchmarks/suite.py --render results/suite-<date>.json   # re-render the table and plots

Everything runs in this one process, tool after tool in alternating rounds (A B C ... A B C ...), with the
measurement, checking and code freezing of bench_core.py. Writes results/suite-<date>[-quick].json (machine,
versions, every run), results/suite-latest.md and results/suite-*.png. Exit status 1 if any run was invalid.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_core  # noqa: E402
import suite_report  # noqa: E402
from bench_core import (  # noqa: E402
    ALL_TOOLS,
    BIN,
    COMPARES,
    INCREMENTAL_FLAGS,
    Bench,
    KiB,
    MiB,
    Scenario,
    Tool,
    flag_text,
    freeze_code,
    listing,
    machine_info,
    mixed_scenario,
    mutate,
    overhead_runs,
    per_run_note,
    print_run,
    rclone_config,
    seed,
    with_retry,
)

from dth_ray.locals3 import RcloneS3  # noqa: E402

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
TIME_SEPARATION_S = 2.0  # incremental: idle time before and after changing the source (see incremental())

# The two profiles. QUICK keeps every target's scenario (small and large with the s5cmd ceilings, CPU per
# object and per GB, the WAN at 150 ms / 1% loss under BBR and CUBIC) and fits in five minutes on 2 cores.
PROFILES = {
    "full": {
        "small": 20000, "large": 8, "runs": 3, "overhead_runs": 3,
        "scenarios": "small,large,mixed,incremental",
        "tools": "dth-ray,rclone-tuned,rclone-default,s5cmd,awscli,boto3-pool",
        "incremental_tools": "dth-ray,rclone-tuned,rclone-default,s5cmd,awscli,boto3-pool",
        "mixed": "4000,100,3",
        "scaling": "1x16,1x64,2x16,4x16,4x64", "scaling_scenarios": "small,large", "scaling_runs": 2,
        "background_s": 1.0,
        "wan_rtt": "50,150", "wan_loss": "0,0.01", "wan_cc": "bbr,cubic", "wan_runs": 3,
        # dth-ray against the peers as a user would tune them for a long fat link (bench_wan.wan_tools); the
        # timeout is long enough for each to finish (a killed run only bounds its rate: payload ÷ timeout).
        "wan_payload": "2x128,2000", "wan_timeout": 1200.0, "wan_ceilings": 3,
        "wan_tools": "dth-ray,rclone-mt,s5cmd-tuned",
        # Scale-out curve (bench_scale.py): N Ray worker nodes, each behind its own capped link; full suite only.
        "scale_nodes": "1,2,4", "scale_runs": 2, "scale_small": 4000, "scale_large": 16,
    },
    "quick": {
        "small": 4000, "large": 4, "runs": 2, "overhead_runs": 1,
        "scenarios": "small,large",
        "tools": "dth-ray,rclone-tuned,rclone-default,s5cmd",
        "incremental_tools": "dth-ray,rclone-tuned,rclone-default,s5cmd",
        "mixed": "400,10,1",
        "scaling": "2x64", "scaling_scenarios": "small", "scaling_runs": 1, "background_s": 0.3,
        "wan_rtt": "150", "wan_loss": "0.01", "wan_cc": "bbr,cubic", "wan_runs": 1,
        # The best peer under BBR in the full WAN run (2026-12-05); s5cmd-tuned only in the full profile, to keep
        # the quick suite near five minutes (a peer cut at 40 s is rated at payload ÷ 40 s at most: a floor).
        "wan_payload": "1x64,300", "wan_timeout": 40.0, "wan_ceilings": 3,
        "wan_tools": "dth-ray,rclone-mt",
        # Not in the quick suite: a cluster per N and a 50 ms, 8 MB/s link per node take ~15 min for N = 1, 2, 4;
        # even N = 1, 2 with one round (~5 min with cluster start-up) would double the quick suite.
        "scale_nodes": "", "scale_runs": 1, "scale_small": 1000, "scale_large": 4,
    },
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the reduced suite (make bench QUICK=1)")
    parser.add_argument("--small", type=int, help="64 KiB objects in the small scenario (full 20,000; quick 4,000)")
    parser.add_argument("--large", type=int, help="128 MiB objects in the large scenario (full 8; quick 4)")
    parser.add_argument("--mixed", help="mixed scenario as SMALL,MEDIUM,LARGE object counts (full 4000,100,3)")
    parser.add_argument("--runs", type=int, help="rounds per scenario, i.e. runs per tool (full 3; quick 2)")
    parser.add_argument("--scenarios", help="subset of small,large,mixed,incremental")
    parser.add_argument("--tools", help="tools for small/large/mixed, subset of "
                                        + ",".join(t.name for t in ALL_TOOLS))
    parser.add_argument("--incremental-tools", help="tools for the incremental scenario")
    parser.add_argument("--overhead-runs", type=int, help="dth-ray runs over an empty bucket (full 3; quick 1)")
    parser.add_argument("--scaling", help="dth-ray scaling points ACTORSxCONCURRENCY, comma-separated "
                                          "(full 1x16,1x64,2x16,4x16,4x64; 'none' to skip); the shipped default "
                                          "(actors=0, concurrency=64) is the main dth-ray runs")
    parser.add_argument("--scaling-scenarios", help="scenarios for the scaling curve (full small,large)")
    parser.add_argument("--scaling-runs", type=int, help="rounds per scaling point (full 2; quick 1)")
    parser.add_argument("--background-s", type=float, help="idle window measured before each run (full 1; quick 0.3)")
    parser.add_argument("--wan", dest="wan", action="store_true", default=True, help="run the WAN part (default)")
    parser.add_argument("--no-wan", dest="wan", action="store_false", help="skip the WAN part")
    parser.add_argument("--wan-rtt", help="RTTs in ms (full 50,150; quick 150)")
    parser.add_argument("--wan-loss", help="loss probabilities (full 0,0.01; quick 0.01)")
    parser.add_argument("--wan-cc", help="congestion controls (bbr,cubic)")
    parser.add_argument("--wan-runs", type=int, help="rounds per WAN condition (full 3; quick 1)")
    parser.add_argument("--wan-payload", help="LARGExMIB,SMALL[xKIB]: large objects of MIB MiB plus SMALL objects "
                                              "of KIB KiB, 64 by default (full 2x128,2000; quick 1x64,300)")
    parser.add_argument("--wan-timeout", type=float, help="per-run WAN timeout in s (full 1200; quick 40)")
    parser.add_argument("--wan-ceilings", type=int, help="link-ceiling measurements per WAN link, median used (3)")
    parser.add_argument("--wan-tools", help="tools across the WAN, subset of dth-ray,rclone-default,rclone-tuned,"
                                            "rclone-mt,s5cmd,s5cmd-tuned (full: dth-ray,rclone-mt,s5cmd-tuned; "
                                            "quick: dth-ray,rclone-mt)")
    parser.add_argument("--scale-nodes", help="scale-out curve: worker node counts (full 1,2,4; quick: not run; "
                                              "'' to skip)")
    parser.add_argument("--scale-runs", type=int, help="rounds per node count (full 2)")
    parser.add_argument("--scale-small", type=int, help="64 KiB objects in the scale-out small set (full 4,000)")
    parser.add_argument("--scale-large", type=int, help="32 MiB objects in the scale-out large set (full 16)")
    parser.add_argument("--ref", default="HEAD", help="dth-ray code: a git ref (default HEAD) or 'worktree'")
    parser.add_argument("--workdir", help="parent of the temporary work directory")
    parser.add_argument("--results", default=str(RESULTS), help="where the JSON, Markdown and PNGs go")
    parser.add_argument("--render", metavar="JSON", help="only re-render suite-latest.md and the plots from a file")
    args = parser.parse_args(argv)
    profile = PROFILES["quick" if args.quick else "full"]
    for key, value in profile.items():
        if getattr(args, key, None) is None:
            setattr(args, key, value)
    return args


def pick(names: str) -> list[Tool]:
    wanted = [n for n in names.split(",") if n]
    unknown = set(wanted) - {t.name for t in ALL_TOOLS}
    if unknown:
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}")
    return [t for t in ALL_TOOLS if t.name in wanted]


def scaling_tools(points: str) -> list[Tool]:
    if points in ("", "none"):
        return []
    tools = []
    for point in points.split(","):
        actors, concurrency = (int(x) for x in point.lower().split("x"))
        tools.append(Tool(f"dth-ray-a{actors}-c{concurrency}",
                          [f"transfer.actors={actors}", f"transfer.concurrency={concurrency}"],
                          "scaling curve", kind="dth-ray"))
    return tools


def tool_versions() -> dict:
    def first_line(cmd: list[str]) -> str | None:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True, timeout=60, check=False)
        except OSError:
            return None
        return ((out.stdout or out.stderr).strip().splitlines() or [None])[0]

    from importlib import metadata

    versions = {"s5cmd": first_line([str(BIN / "s5cmd"), "version"]),
                "awscli": first_line([str(BIN / "aws"), "--version"])}
    for package in ("boto3", "botocore", "matplotlib", "NetfilterQueue"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return versions


def tool_entry(tool: Tool) -> dict:
    extra = INCREMENTAL_FLAGS.get(tool.name, [])
    return {"name": tool.name, "family": tool.family, "flags": tool.flags, "flags_text": flag_text(tool),
            "per_run_locations": per_run_note(tool), "compares": COMPARES.get(tool.family),
            "incremental_flags": extra,
            "incremental_flags_text": (" ".join(tool.flags + extra) + " (incremental run, download hop)"
                                       if extra else flag_text(tool))}


def rounds(bench: Bench, scenario: Scenario, tools: list[Tool], runs: int, expected: dict,
           label: str | None = None) -> list[dict]:
    """Every tool once per round, in order, `runs` rounds (A B C A B C ...)."""
    out = []
    for round_no in range(1, runs + 1):
        for tool in tools:
            r = bench.run(tool, scenario, round_no, expected)
            if label:
                r["scenario"] = label
            show(r)
            out.append(r)
    return out


def show(r: dict) -> None:
    print_run(r)
    if r.get("hops_s") and len(r["hops_s"]) >= 2:
        print(f"      hops: GET to disk {r['hops_s'][0]:.1f}s, PUT from disk {r['hops_s'][1]:.1f}s", flush=True)


def prepare(bench: Bench, scenario: Scenario) -> tuple[dict, float]:
    seconds = seed(bench.src, scenario)
    with_retry(lambda: bench.dst.client().create_bucket(Bucket=scenario.bucket))
    expected = listing(bench.src, scenario.bucket)
    if len(expected) != scenario.objects:
        raise RuntimeError(f"seeding {scenario.name}: {len(expected)} of {scenario.objects} objects listed")
    print(f"{scenario.name}: seeded {scenario.describe()} in {seconds:.0f}s", flush=True)
    return expected, seconds


def scenario_entry(scenario: Scenario, seconds: float, runs: list[dict]) -> dict:
    return {"describe": scenario.describe(), "objects": scenario.objects, "object_size": scenario.object_size,
            "total_bytes": scenario.total_bytes, "prefixes": scenario.prefixes, "seed_s": seconds, "runs": runs}


def incremental(bench: Bench, scenario: Scenario, tools: list[Tool], runs: int) -> dict:
    """Per round: each tool copies the current source into its own prefix (the base run), then 1% of the
    source changes (mutate), then each tool runs again into the same prefix, keeping what it keeps between
    runs (dth-ray its manifest, s5cmd and aws their staging directory). The second run is the measurement;
    each is checked against the changed source."""
    out, changes = [], []
    for round_no in range(1, runs + 1):
        before = listing(bench.src, scenario.bucket)
        states = {}
        for tool in tools:
            states[tool.name] = Path(tempfile.mkdtemp(prefix=f"state-{tool.name}-", dir=bench.work))
            r = bench.run(tool, current(scenario, before), round_no, before, prefix=f"inc-{tool.name}-r{round_no}",
                          state=states[tool.name], keep=True)
            r.update(scenario="incremental", phase="base")
            show(r)
            out.append(r)
        # Timestamps in S3 listings have 1 s resolution; a real incremental run comes hours after the last
        # one. Keep the change strictly later than every base copy, and the second runs strictly later than
        # the change, so that size+time comparisons (rclone, s5cmd, aws) can order them.
        time.sleep(TIME_SEPARATION_S)
        change = mutate(bench.src, scenario, 0.01, seed=round_no)
        time.sleep(TIME_SEPARATION_S)
        change["round"] = round_no
        changes.append(change)
        after = listing(bench.src, scenario.bucket)
        print(f"  incremental r{round_no}: changed {change['changed_objects']} objects "
              f"({change['same_size_overwritten']} same size, {change['resized']} resized, {change['added']} new; "
              f"{change['changed_bytes'] / 1e6:.1f} MB) of {len(before):,}", flush=True)
        for tool in tools:
            r = bench.run(tool, current(scenario, after), round_no, after, prefix=f"inc-{tool.name}-r{round_no}",
                          state=states[tool.name], again=True)
            r.update(scenario="incremental", phase="incremental", changed_objects=change["changed_objects"],
                     changed_bytes=change["changed_bytes"])
            show(r)
            out.append(r)
        for state in states.values():
            shutil.rmtree(state, ignore_errors=True)
    return {"base_scenario": scenario.name, "describe": f"{scenario.describe()} then 1% changed",
            "changes": changes, "runs": out}


def current(scenario: Scenario, found: dict) -> Scenario:
    """The scenario as the source now holds it (counts and bytes for the rates)."""
    return dataclasses.replace(scenario, objects=len(found), sizes={k: size for k, (size, _) in found.items()})


def run_core(args: argparse.Namespace, result: dict, work: Path) -> None:
    tools = pick(args.tools)
    chosen = args.scenarios.split(",")
    mixed_counts = [int(x) for x in args.mixed.split(",")]
    scenarios = {"small": Scenario("small", args.small, 64 * KiB, prefixes=250),
                 "large": Scenario("large", args.large, 128 * MiB),
                 "mixed": mixed_scenario(*mixed_counts)}
    scale = scaling_tools(args.scaling)
    scale_in = set(args.scaling_scenarios.split(",")) if scale else set()
    keys = {role: ("BENCH" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)) for role in ("src", "dst")}
    src = RcloneS3(*keys["src"], root=str(work / "src")).start()
    dst = RcloneS3(*keys["dst"], root=str(work / "dst")).start()
    bench = None
    try:
        conf = work / "rclone.conf"
        rclone_config(conf, src, dst)
        bench = Bench(work, src, dst, conf, work / "code")
        result["servers"] = bench_core.SERVERS_NOTE
        if args.overhead_runs:
            t0 = time.monotonic()
            result["overhead"] = overhead_runs(bench, args.overhead_runs)
            result["phase_s"]["overhead"] = time.monotonic() - t0
        for name in ("small", "large", "mixed"):
            wanted = name in chosen or (name == "mixed" and "incremental" in chosen)
            if not wanted:
                continue
            t0 = time.monotonic()
            scenario = scenarios[name]
            expected, seconds = prepare(bench, scenario)
            if name in chosen:
                runs = rounds(bench, scenario, tools, args.runs, expected)
                result["scenarios"][name] = scenario_entry(scenario, seconds, runs)
                if name == "mixed":
                    result["scenarios"][name]["distribution"] = {
                        "small": mixed_counts[0], "medium": mixed_counts[1], "large": mixed_counts[2],
                        "seed": bench_core.MIXED_SEED, "text": suite_report.MIXED_TEXT}
                result["suite_progress"] = f"{name} done"
            if name in scale_in:
                runs = rounds(bench, scenario, scale, args.scaling_runs, expected, label=f"scaling-{name}")
                result["scaling"][name] = scenario_entry(scenario, seconds, runs)
            if name == "mixed" and "incremental" in chosen:
                result["scenarios"]["incremental"] = incremental(bench, scenario, pick(args.incremental_tools),
                                                                 args.runs)
            shutil.rmtree(Path(src.root) / scenario.bucket, ignore_errors=True)
            result["phase_s"][name] = time.monotonic() - t0
    finally:
        if bench is not None:
            bench.close()
        src.stop(remove_root=False)
        dst.stop(remove_root=False)
        if bench is not None:
            background = [r["background_cores_before"] for r in bench.runs]
            result["background_cores"] = statistics.median(background) if background else None


def run_wan(args: argparse.Namespace, result: dict, work: Path) -> None:
    import bench_wan
    import wan

    problems = wan.preflight()
    if problems:
        result["wan"] = {"skipped": problems}
        print("\n*** WAN emulation SKIPPED: " + "; ".join(problems) + " ***\n"
              "    (needs root, apt-get install iptables ethtool libnetfilter-queue-dev build-essential, and "
              ".venv/bin/pip install NetfilterQueue; see benchmarks/README.md). Continuing without it.\n",
              flush=True)
        return
    large, small = args.wan_payload.split(",")
    count, mib = large.lower().split("x")
    small, kib = (small.lower().split("x") + ["64"])[:2]
    wan_args = bench_wan.build_parser().parse_args([
        "--rtt", args.wan_rtt, "--loss", args.wan_loss, "--cc", args.wan_cc, "--runs", str(args.wan_runs),
        "--large", count, "--large-mib", mib, "--small", small, "--small-kib", kib, "--tools", args.wan_tools,
        "--timeout", str(args.wan_timeout), "--ceilings", str(args.wan_ceilings), "--ref", args.ref])
    try:
        result["wan"] = bench_wan.run(wan_args, work_parent=str(work), write=False,
                                      frozen=(work / "code", result["dth_ray_code"]))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        result["wan"] = {"skipped": [f"WAN emulation failed: {exc!r}"]}
        print(f"\n*** WAN part FAILED: {exc!r}; continuing ***\n", flush=True)


def run_scale(args: argparse.Namespace, result: dict, work: Path) -> None:
    """The scale-out curve (bench_scale.py) on the suite's frozen code; skipped, saying why, where it cannot run."""
    import bench_scale
    import wan

    problems = wan.preflight()  # the same needs: root, iptables, NetfilterQueue (its delay daemon)
    if problems:
        result["scale"] = {"skipped": problems}
        print("\n*** scale-out curve SKIPPED: " + "; ".join(problems) + " ***\n", flush=True)
        return
    scale_args = bench_scale.build_parser().parse_args([
        "--nodes", args.scale_nodes, "--runs", str(args.scale_runs), "--small", str(args.scale_small),
        "--large", str(args.scale_large)])
    try:
        result["scale"] = bench_scale.run(scale_args, work_parent=str(work), write=True,
                                          frozen=(work / "code", result["dth_ray_code"]), results=Path(args.results))
    except (RuntimeError, OSError, subprocess.CalledProcessError) as exc:
        result["scale"] = {"skipped": [f"scale-out curve failed: {exc!r}"]}
        print(f"\n*** scale-out part FAILED: {exc!r}; continuing ***\n", flush=True)


def invalid_runs(result: dict) -> list[str]:
    """Runs that finished but were wrong (exit status, listing check, or the live code imported), plus core
    runs that timed out. A WAN run that hit its timeout is a bound, not an invalid run."""
    bad = []
    for group in ("scenarios", "scaling"):
        for name, sc in result.get(group, {}).items():
            bad += [f"{name} r{r['round']} {r['tool']}{' ' + r['phase'] if r.get('phase') else ''}"
                    for r in sc["runs"] if not r["valid"]]
    for r in (result.get("wan") or {}).get("runs", []):
        if not r["valid"] and not r["timed_out"]:
            bad.append(f"wan {r['rtt_ms']:g}ms/{r['loss']:.0%}/{r['cc']} r{r['round']} {r['tool']}")
    for r in (result.get("scale") or {}).get("runs", []):
        if not r["valid"]:
            bad.append(f"scale {r['set']} N={r['nodes']} r{r['round']}")
    return bad


def write(result: dict, results: Path, stamp: str | None, source: str | None = None) -> Path | None:
    results.mkdir(parents=True, exist_ok=True)
    json_path = Path(source) if source else None
    if stamp:
        json_path = results / f"suite-{stamp}.json"
        json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
    table = suite_report.markdown(result, json_path.name if json_path else None)
    # The quick suite's table and plots are the ones the targets are read from; a full run keeps its own.
    base = "suite" if result["suite"] == "quick" else f"suite-{result['suite']}"
    (results / f"{base}-latest.md").write_text(table)
    try:
        pngs = suite_report.plots(result, results, base)
    except ImportError as exc:  # matplotlib comes with the bench extra (make bench installs it)
        pngs = []
        print(f"figures not drawn: {exc}; the JSON and the table are written", flush=True)
    print("\n" + table)
    print(f"wrote {json_path or ''} {results / f'{base}-latest.md'} and {', '.join(p.name for p in pngs)}")
    return json_path


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    results = Path(args.results)
    if args.render:
        result = json.loads(Path(args.render).read_text())
        write(result, results, None, source=args.render)  # the table names the file it was rendered from
        return 0

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)  # unwinds through the finally blocks: servers stop, work dir goes

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, on_signal)
    bench_core.BACKGROUND_S = args.background_s
    started = dt.datetime.now()
    t0 = time.monotonic()
    work = Path(tempfile.mkdtemp(prefix="dth-suite-", dir=args.workdir))
    profile = "quick" if args.quick else "full"
    settings = {k: getattr(args, k) for k in PROFILES["full"]}
    all_tools = pick(args.tools) + [t for t in pick(args.incremental_tools) if t.name not in args.tools.split(",")]
    result: dict = {"suite": profile, "date": started.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:],
                    "settings": settings, "runs_per_tool": args.runs, "machine": machine_info(),
                    "tool_versions": tool_versions(),
                    "tools": [tool_entry(t) for t in all_tools + scaling_tools(args.scaling)],
                    "scenarios": {}, "scaling": {}, "phase_s": {}}
    print(f"suite ({profile}): work dir {work}; settings {json.dumps(settings)}", flush=True)
    print(f"  load average at start: {result['machine']['loadavg_start']}", flush=True)
    try:
        result["dth_ray_code"] = freeze_code(work / "code", args.ref)
        print(f"  dth-ray code: {bench_core.describe_code(result['dth_ray_code'])}", flush=True)
        for tool in all_tools:
            print(f"  {tool.name}: flags {flag_text(tool)}", flush=True)
        run_core(args, result, work)
        if args.wan:
            t1 = time.monotonic()
            run_wan(args, result, work)
            result["phase_s"]["wan"] = time.monotonic() - t1
        else:
            result["wan"] = {"skipped": ["--no-wan"]}
        if args.scale_nodes:
            t1 = time.monotonic()
            run_scale(args, result, work)
            result["phase_s"]["scale"] = time.monotonic() - t1
    finally:
        shutil.rmtree(work, ignore_errors=True)
        result["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        result["elapsed_s"] = time.monotonic() - t0
        result["invalid"] = invalid_runs(result)
        stamp = started.strftime("%Y-%m-%d-%H%M") + ("-quick" if args.quick else "")
        if result["scenarios"] or result.get("wan"):
            write(result, results, stamp)
    print(f"suite ({profile}) took {result['elapsed_s'] / 60:.1f} min; load average at end {result['loadavg_end']}")
    if result["invalid"]:
        print("INVALID runs: " + "; ".join(result["invalid"]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
