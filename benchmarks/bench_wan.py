"""WAN benchmark: dth-ray vs rclone pulling a fixed payload across an emulated long-distance link.

The source ("Hangzhou") is an `rclone serve s3` inside a network namespace behind an emulated link (RTT added
by an NFQUEUE delay daemon, random loss by iptables `statistic`, congestion control per route: see wan.py);
the destination is a local `rclone serve s3` on loopback. For every (RTT, loss) the link is brought up once,
then for every congestion control the tools run in alternating rounds (A B A B ...). Every run copies the
whole source bucket to a fresh destination prefix and is checked by listing (count, size, per-key MD5 ETag).
The link, the daemon and every server are torn down on exit, on error and on SIGTERM/SIGINT.

    .venv/bin/python benchmarks/bench_wan.py [--rtt 50,150] [--loss 0,0.01] [--cc bbr,cubic] [--runs 3]
        [--large 2] [--large-mib 128] [--small 2000] [--tools dth-ray,rclone-tuned] [--timeout 900]
    smoke: --rtt 50 --runs 1 --large 1 --large-mib 64 --small 200 --timeout 60

Writes benchmarks/results/wan-<date>.json and prints a Markdown table (also written to wan-latest.md).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
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
import wan  # noqa: E402
from bench_core import TOOLS, Bench, Tool, freeze_code, machine_info, rclone_config, with_retry  # noqa: E402

from dth_ray.locals3 import RcloneS3, free_port, rclone_binary  # noqa: E402

KiB, MiB = 1024, 1024 * 1024
RESULTS = Path(__file__).resolve().parent / "results"


class FarRcloneS3(RcloneS3):
    """`rclone serve s3` inside the far network namespace, listening on its address across the link."""

    @property
    def endpoint(self) -> str:
        return f"http://{wan.FAR_IP}:{self.port}"

    def start(self, timeout_s: float = 20.0) -> FarRcloneS3:
        self.port = free_port()  # the far namespace has nothing else listening
        # `ip netns exec` execs the command, so this pid is rclone's (its CPU is counted as server CPU).
        self._proc = subprocess.Popen(
            ["ip", "netns", "exec", wan.FAR, rclone_binary(), "serve", "s3", self.root,
             "--addr", f"{wan.FAR_IP}:{self.port}", "--auth-key", f"{self.access_key_id},{self.secret_access_key}",
             "--log-level", "ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not self._wait_ready(timeout_s):
            self.stop(remove_root=False)
            raise RuntimeError("rclone serve s3 did not start in the far namespace")
        return self


class Payload:
    """The fixed WAN payload: `large` objects of `large_mib` MiB plus `small` objects of 64 KiB (over 20
    prefixes), written straight into the source server's directory (seeding across the slow link would take
    longer than the benchmark). rclone serve s3 lists a file's ETag as its MD5."""

    name = "wan"
    bucket = "bench-wan"

    def __init__(self, large: int, large_mib: int, small: int, small_kib: int = 64, prefixes: int = 20):
        self.sizes = {f"blobs/part-{i:02d}.bin": large_mib * MiB for i in range(large)}
        self.sizes.update({f"d{i % prefixes:03d}/obj-{i:06d}.bin": small_kib * KiB for i in range(small)})
        self.large, self.large_mib, self.small, self.small_kib = large, large_mib, small, small_kib
        self.objects = len(self.sizes)
        self.total_bytes = sum(self.sizes.values())

    def describe(self) -> str:
        parts = ([f"{self.large} × {self.large_mib} MiB"] if self.large else []) + (
            [f"{self.small:,} × {self.small_kib} KiB"] if self.small else [])
        return f"{' + '.join(parts)} ({self.total_bytes / 1e6:,.0f} MB)"

    def write(self, root: Path) -> dict[str, tuple[int, str]]:
        expected = {}
        for key, size in self.sizes.items():
            path = root / self.bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            data = os.urandom(size)
            path.write_bytes(data)
            expected[key] = (size, hashlib.md5(data).hexdigest())  # noqa: S324 - S3 ETag
        return expected


def link_rx_bytes() -> int:
    """Bytes this host has received over the emulated link (its veth's counter)."""
    return int(Path(f"/sys/class/net/{wan.HOST_IF}/statistics/rx_bytes").read_text())


CEILING_FLAGS = ["--numworkers", "64", "cp", "--concurrency", "16", "--part-size", "4"]


def link_ceiling(bench: Bench, payload: Payload, link: wan.Wan) -> dict:
    """What the emulated link itself carries: the whole payload pulled across it under BBR (the congestion
    control that loss does not throttle) by s5cmd with many parallel ranged GETs, into a local directory.
    The target for dth-ray is 3× rclone-default "or the emulator's ceiling, whichever is lower"."""
    cc = link.cc
    link.set_cc("bbr")
    stage = Path(tempfile.mkdtemp(prefix="wan-ceiling-", dir=bench.work))
    env = dict(os.environ, AWS_ACCESS_KEY_ID=bench.src.access_key_id,
               AWS_SECRET_ACCESS_KEY=bench.src.secret_access_key, AWS_REGION="us-east-1")
    cmd = [str(bench_core.BIN / "s5cmd"), "--endpoint-url", bench.src.endpoint, *CEILING_FLAGS,
           f"s3://{payload.bucket}/*", f"{stage}/"]
    t0 = time.monotonic()
    try:
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=bench_core.RUN_TIMEOUT_S)
        wall = time.monotonic() - t0
        got = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
        ok = done.returncode == 0 and got == payload.total_bytes
    except subprocess.TimeoutExpired:
        wall, ok = time.monotonic() - t0, False
        got = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        link.set_cc(cc)
    row = {"rtt_ms": link.rtt_ms, "loss": link.loss, "cc": "bbr", "tool": "s5cmd",
           "flags": " ".join(CEILING_FLAGS), "wall_s": round(wall, 2), "bytes": got, "complete": ok,
           "mb_per_s": round(got / wall / 1e6, 2) if wall > 0 else 0.0}
    print(f"   link ceiling (s5cmd {' '.join(CEILING_FLAGS)}, bbr): {row['mb_per_s']:.2f} MB/s "
          f"({got / 1e6:,.0f} MB in {wall:.1f}s{'' if ok else ', INCOMPLETE'})", flush=True)
    return row


def run_condition(bench: Bench, payload: Payload, expected: dict, link: wan.Wan, ccs: list[str], runs: int,
                  tools: list, out: list[dict]) -> None:
    """Runs every tool `runs` times per congestion control, alternating; appends each run to `out` as it ends
    (so an interrupted benchmark still reports what it measured)."""
    for cc in ccs:
        link.set_cc(cc)
        rtt = link.verify()
        print(f"-- RTT {link.rtt_ms:g} ms (measured {rtt} ms), loss {link.loss:.1%}, cc {cc}", flush=True)
        for round_no in range(1, runs + 1):
            # A destination prefix is never reused: the server keeps listings in RAM, so a prefix deleted on
            # disk could still look present to the next run. Rounds are numbered across all conditions.
            serial = len({x["round"] for x in out}) + 1
            for tool in tools:
                rx_before = link_rx_bytes()
                r = bench.run(tool, payload, serial, expected)
                r["link_rx_bytes"] = link_rx_bytes() - rx_before
                if r["timed_out"]:
                    # Killed at the deadline: objects finished undercount what crossed the link (uploads in
                    # flight), so its rate is what the link carried to this host during the run.
                    r["mb_per_s_finished"] = r["mb_per_s"]
                    r["mb_per_s"] = r["link_rx_bytes"] / max(r["wall_s"], 1e-9) / 1e6
                bench.runs.remove(r)  # kept in `out` with the link's settings instead
                r.update(rtt_ms=link.rtt_ms, loss=link.loss, cc=cc, measured_rtt_ms=rtt, round_in_condition=round_no)
                status = "ok" if r["valid"] else ("TIMEOUT" if r["timed_out"] else f"INVALID exit {r['exit_code']}")
                print(f"   r{round_no} {tool.name:13} wall {r['wall_s']:7.1f}s {r['mb_per_s']:7.2f} MB/s "
                      f"{r['objects_per_s']:7.1f} obj/s  {status}", flush=True)
                if not r["valid"]:
                    print("    " + "\n    ".join(r["stderr_tail"].splitlines()[-5:]), flush=True)
                out.append(r)


def summarize(runs: list[dict], tools: list[str], ceilings: list[dict] = ()) -> list[dict]:
    """Per condition and tool: median wall and MB/s over valid runs, and the share of the link's ceiling
    (`ceilings`, from link_ceiling); dth-ray's ratio to each rclone variant as the median of per-round MB/s
    ratios (timed-out runs count with their lower-bound rate)."""
    rows = []
    conditions = sorted({(r["rtt_ms"], r["loss"], r["cc"]) for r in runs}, key=lambda c: (c[0], c[1], c[2]))
    for cond in conditions:
        these = [r for r in runs if (r["rtt_ms"], r["loss"], r["cc"]) == cond]
        for tool in tools:
            mine = [r for r in these if r["tool"] == tool]
            valid = [r for r in mine if r["valid"]]
            row = {"rtt_ms": cond[0], "loss": cond[1], "cc": cond[2], "tool": tool,
                   "valid": f"{len(valid)}/{len(mine)}", "timed_out": sum(r["timed_out"] for r in mine),
                   "measured_rtt_ms": mine[0]["measured_rtt_ms"] if mine else None,
                   "wall_s": statistics.median(r["wall_s"] for r in valid) if valid else None,
                   "mb_per_s": statistics.median(r["mb_per_s"] for r in valid) if valid else None,
                   "ratio": None}
            ceiling = next((c["mb_per_s"] for c in ceilings
                            if (c["rtt_ms"], c["loss"]) == cond[:2] and c.get("mb_per_s")), None)
            row["ceiling_mb_per_s"] = ceiling
            row["of_ceiling"] = row["mb_per_s"] / ceiling if ceiling and row["mb_per_s"] else None
            if not valid and mine:  # all timed out: a lower bound on wall; MB/s as the link carried it
                row["wall_s_at_least"] = statistics.median(r["wall_s"] for r in mine)
                row["mb_per_s_timed_out"] = statistics.median(r["mb_per_s"] for r in mine)
                row["mb_done"] = statistics.median(r["check"]["bytes"] / 1e6 for r in mine)  # at the deadline
            if tool != "dth-ray":
                pairs = []
                for r in mine:
                    d = next((x for x in these if x["tool"] == "dth-ray" and x["round"] == r["round"]), None)
                    # Both rated alike: a finished run by its payload, a timed-out one by its link bytes.
                    if (d and (d["valid"] or d["timed_out"]) and (r["valid"] or r["timed_out"])
                            and r["mb_per_s"] > 0):
                        pairs.append(d["mb_per_s"] / r["mb_per_s"])
                row["ratio"] = statistics.median(pairs) if pairs else None
                row["ratio_vs_timed_out"] = any(r["timed_out"] for r in mine) or any(
                    x["timed_out"] for x in these if x["tool"] == "dth-ray")
            rows.append(row)
    return rows


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# WAN benchmark, {result['date']} UTC", "",
             f"Payload: {result['payload']}; {result['runs_per_condition']} run(s) per tool per condition, tools "
             f"alternating; per-run timeout {result['timeout_s']:g} s. Machine: {m['nproc']} cores, kernel "
             f"{m['kernel']}, rclone {m['versions'].get('rclone')}, ray {m['versions'].get('ray')}; load average "
             f"{m['loadavg_start']} at start, {result.get('loadavg_end')} at end. dth-ray code: "
             f"{result['dth_ray_code']['commit'][:10]} ({result['dth_ray_code']['source']}).", "",
             "| RTT ms (measured) | loss | cc | tool | flags | valid | wall s | MB/s | of link ceiling | ratio dth-ray / tool (MB/s, paired) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    flags = {t["name"]: t["flags_text"] for t in result["tools"]}
    for row in result["summary"]:
        wall = f"{row['wall_s']:.1f}" if row["wall_s"] is not None else (
            f"> {row['wall_s_at_least']:.0f} (timeout)" if row.get("wall_s_at_least") else "–")
        rate = f"{row['mb_per_s']:.2f}" if row["mb_per_s"] is not None else (
            f"≈ {row['mb_per_s_timed_out']:.2f} (timed out: link bytes / wall; {row.get('mb_done', 0):.0f} MB "
            f"of objects finished)" if row.get("mb_per_s_timed_out") is not None else "–")
        ratio = "–" if row["ratio"] is None else (
            f"{'≈ ' if row.get('ratio_vs_timed_out') else ''}{row['ratio']:.2f}×")
        share = f"{row['of_ceiling']:.0%}" if row.get("of_ceiling") is not None else "–"
        lines.append(f"| {row['rtt_ms']:g} ({row['measured_rtt_ms']}) | {row['loss']:.0%} | {row['cc']} | "
                     f"{row['tool']} | {flags[row['tool']]} | {row['valid']} | {wall} | {rate} | {share} | {ratio} |")
    for c in result.get("ceilings", []):
        lines.append(f"\nLink ceiling at {c['rtt_ms']:g} ms, {c['loss']:.0%} loss: {c['mb_per_s']:.2f} MB/s — the whole "
                     f"payload pulled across the link by s5cmd `{c['flags']}` under bbr ({c['wall_s']:.1f} s"
                     f"{'' if c['complete'] else ', incomplete'}); 'of ceiling' in the table is a tool's MB/s over it.")
    lines += ["", "A run killed at the per-run timeout is rated by the bytes the emulated link delivered to this host "
              "during it (its finished objects undercount uploads still in flight); ratios against it are marked ≈.",
              "", "Emulation: " + result["emulation"], ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", default="50,150", help="comma-separated RTTs in ms (default 50,150)")
    parser.add_argument("--loss", default="0,0.01", help="comma-separated loss probabilities (default 0,0.01)")
    parser.add_argument("--cc", default="bbr,cubic", help="comma-separated congestion controls (default bbr,cubic)")
    parser.add_argument("--runs", type=int, default=3, help="rounds per condition (default 3)")
    parser.add_argument("--large", type=int, default=2, help="large objects (default 2)")
    parser.add_argument("--large-mib", type=int, default=128, help="size of a large object in MiB (default 128)")
    parser.add_argument("--small", type=int, default=2000, help="64 KiB objects (default 2,000)")
    parser.add_argument("--tools", default="dth-ray,rclone-tuned",
                        help="comma-separated subset of " + ",".join(t.name for t in TOOLS))
    parser.add_argument("--timeout", type=float, default=900, help="per-run timeout in s (default 900)")
    parser.add_argument("--ref", default="HEAD", help="dth-ray code: a git ref (default HEAD) or 'worktree'")
    parser.add_argument("--results", default=str(RESULTS), help="where wan-<date>.json goes")
    parser.add_argument("--render", metavar="JSON", help="only re-summarize and re-render a results file")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.render:
        result = json.loads(Path(args.render).read_text())
        result["summary"] = summarize(result["runs"], [t["name"] for t in result["tools"]], result.get("ceilings", []))
        Path(args.render).write_text(json.dumps(result, indent=1, default=str) + "\n")
        table = markdown(result)
        (Path(args.results) / "wan-latest.md").write_text(table)
        print(table)
        return 0

    problems = wan.preflight()
    if problems:
        print("bench_wan cannot run here: " + "; ".join(problems), file=sys.stderr)
        return 2
    result = run(args)
    return 0 if all(r["valid"] for r in result["runs"]) else 1


def run(args: argparse.Namespace, work_parent: str | None = None, write: bool = True,
        frozen: tuple[Path, dict] | None = None) -> dict:
    """Measure every condition in `args` (see build_parser) and return the result (also written to
    results/wan-<date>.json and wan-latest.md unless `write` is false). The caller checks wan.preflight().
    `frozen`: an already frozen copy of the code (its directory and freeze_code's description) to reuse."""
    saved_timeout = bench_core.RUN_TIMEOUT_S
    bench_core.RUN_TIMEOUT_S = args.timeout
    # dth-ray refuses plain http to a non-loopback endpoint unless told: the only non-default setting, and a
    # matter of the testbed's scheme, not tuning. It is printed beside dth-ray's numbers like any flag.
    wan_tools = [Tool("dth-ray", ["source.insecure_http=true"], "plain-http source across the link; not tuning")
                 if t.name == "dth-ray" else t for t in bench_core.ALL_TOOLS]
    tools = [t for t in wan_tools if t.name in args.tools.split(",")]
    payload = Payload(args.large, args.large_mib, args.small)
    rtts = [float(x) for x in args.rtt.split(",")]
    losses = [float(x) for x in args.loss.split(",")]
    ccs = args.cc.split(",")

    def on_signal(signum, _frame):
        raise SystemExit(128 + signum)  # unwinds through the finally blocks below: link and servers go

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGHUP)}

    started = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="dth-benchwan-", dir=work_parent))
    if frozen:
        shutil.copytree(frozen[0], work / "code")
        code = frozen[1]
    else:
        code = freeze_code(work / "code", args.ref)
    result = {"date": started.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:], "payload": payload.describe(),
              "runs_per_condition": args.runs, "timeout_s": args.timeout, "machine": machine_info(),
              "dth_ray_code": code,
              "tools": [{"name": t.name, "flags": t.flags, "flags_text": " ".join(t.flags) + (f" ({t.note})" if t.note else "")
               if t.flags else bench_core.flag_text(t)} for t in tools],
              "emulation": ("source rclone serve s3 in netns dthwan-far behind netns dthwan-mid; delay = NFQUEUE "
                            "daemon holding each packet RTT/2 per direction; loss = iptables statistic random DROP "
                            "per direction in the middle namespace's FORWARD chain; congestion control = "
                            "`ip route ... congctl` on both ends' routes; offloads off on every veth"),
              "runs": [], "ceilings": []}
    print(f"bench_wan: payload {payload.describe()}; RTT {rtts} ms, loss {losses}, cc {ccs}; {args.runs} round(s); "
          f"tools {[t.name for t in tools]}; timeout {args.timeout:g} s; work dir {work}", flush=True)
    keys = {role: ("BENCH" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)) for role in ("src", "dst")}
    (work / "src").mkdir()
    expected = payload.write(work / "src")
    dst = src = None
    try:
        dst = RcloneS3(*keys["dst"], root=str(work / "dst")).start()
        with_retry(lambda: dst.client().create_bucket(Bucket=payload.bucket))
        for rtt in rtts:
            for loss in losses:
                with wan.Wan(rtt, loss, ccs[0]) as link:
                    src = FarRcloneS3(*keys["src"], root=str(work / "src")).start()
                    bench = None
                    try:
                        conf = work / "rclone.conf"
                        rclone_config(conf, src, dst)
                        bench = Bench(work, src, dst, conf, work / "code")
                        result["servers"] = bench_core.SERVERS_NOTE
                        result["ceilings"].append(link_ceiling(bench, payload, link))
                        run_condition(bench, payload, expected, link, ccs, args.runs, tools, result["runs"])
                    finally:
                        if bench is not None:
                            bench.close()
                        src.stop(remove_root=False)
    finally:
        if dst is not None:
            dst.stop(remove_root=False)
        wan.down()
        shutil.rmtree(work, ignore_errors=True)
        bench_core.RUN_TIMEOUT_S = saved_timeout
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        result["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
        result["elapsed_s"] = (dt.datetime.now(dt.timezone.utc) - started).total_seconds()
        result["summary"] = summarize(result["runs"], [t.name for t in tools], result["ceilings"])
        if write:
            results = Path(args.results)
            results.mkdir(parents=True, exist_ok=True)
            json_path = results / f"wan-{started.strftime('%Y-%m-%d-%H%M')}.json"
            json_path.write_text(json.dumps(result, indent=1, default=str) + "\n")
            table = markdown(result)
            (results / "wan-latest.md").write_text(table)
            print("\n" + table)
            print(f"wrote {json_path} ({result['elapsed_s'] / 60:.1f} min)")
    return result


if __name__ == "__main__":
    sys.exit(main())
