"""WAN benchmark: dth-ray vs rclone pulling a fixed payload across an emulated long-distance link.

The source ("Hangzhou") is an `rclone serve s3` inside a network namespace behind an emulated link (RTT added
by an NFQUEUE delay daemon, random loss by iptables `statistic`, congestion control per route: see wan.py);
the destination is a local `rclone serve s3` on loopback. For every (RTT, loss) the link is brought up once,
then for every congestion control the tools run in alternating rounds (A B A B ...). Every run copies the
whole source bucket to a fresh destination prefix and is checked by listing (count, size, per-key MD5 ETag).
The link, the daemon and every server are torn down on exit, on error and on SIGTERM/SIGINT.

    .venv/bin/python benchmarks/bench_wan.py [--rtt 150] [--loss 0.01] [--cc bbr,cubic] [--runs 1]
        [--large 1] [--large-mib 512] [--small 1000] [--small-kib 1024] [--ceilings 3]
        [--tools dth-ray,rclone-mt,s5cmd-tuned] [--timeout 1800]
    smoke: --rtt 50 --runs 1 --large 1 --large-mib 64 --small 200 --small-kib 64 --timeout 60

Verdicts (see verdicts()): dth-ray is judged against the best peer in each condition. A peer killed at the
timeout moved the payload at no more than payload ÷ timeout, so it is rated at that rate AT MOST and every ratio
against it is a floor ("≥ X×"); the bytes the link carried during its run are shown beside it as an estimate
only. The link's ceiling is measured `--ceilings` times per link (median used); its "≥ 90% of the ceiling"
alternative applies only where 3 × the best peer (a measured rate, not a bound) exceeds the ceiling.

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
from bench_core import Bench, Tool, freeze_code, machine_info, rclone_config, with_retry  # noqa: E402

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


def wan_tools(payload: Payload) -> list[Tool]:
    """The tools across the WAN: bench_core's, with dth-ray's one testbed flag, plus the peers as a user would
    tune them for a long fat link.
    - dth-ray refuses plain http to a non-loopback endpoint unless told: `source.insecure_http=true` is its
      only non-default setting, a matter of the testbed's scheme, not tuning (printed beside its numbers).
    - rclone-mt: rclone-tuned's 16 transfers and 16 checkers plus 16 multi-thread streams per large object,
      with the multi-thread cutoff below the large object size (rclone's defaults: 4 streams above 256 MiB).
    - s5cmd-tuned: s5cmd (default 256 workers) with 16 concurrent parts of 8 MB per file (defaults: 5 parts of
      50 MB), in two hops through local disk like bench_core's s5cmd."""
    cutoff = max(1, min(64, payload.large_mib // 2)) if payload.large else 64
    extra = [
        Tool("rclone-mt", ["--transfers", "16", "--checkers", "16", "--multi-thread-streams", "16",
                           "--multi-thread-cutoff", f"{cutoff}Mi"],
             "rclone tuned for a long fat link: multi-thread streams for large objects"),
        Tool("s5cmd-tuned", ["--concurrency", "16", "--part-size", "8"],
             "two hops through local disk; 16 parts of 8 MB at once per file", kind="s5cmd"),
    ]
    return [Tool("dth-ray", ["source.insecure_http=true"], "plain-http source across the link; not tuning")
            if t.name == "dth-ray" else t for t in bench_core.ALL_TOOLS] + extra


WAN_TOOL_NAMES = ["dth-ray", "rclone-default", "rclone-tuned", "rclone-mt", "s5cmd", "s5cmd-tuned"]


def link_rx_bytes() -> int:
    """Bytes this host has received over the emulated link (its veth's counter)."""
    return int(Path(f"/sys/class/net/{wan.HOST_IF}/statistics/rx_bytes").read_text())


CEILING_FLAGS = ["--numworkers", "64", "cp", "--concurrency", "16", "--part-size", "4"]
CEILING_FLAGS_TEXT = " ".join(CEILING_FLAGS)


def link_ceiling(bench: Bench, payload: Payload, link: wan.Wan, times: int = 3) -> dict:
    """What the emulated link itself carries, measured `times` times (median used): the whole payload pulled
    across it under BBR (the congestion control that loss does not throttle) by s5cmd with many parallel ranged
    GETs, into a local directory (one hop, no upload). The same BBR ceiling serves the link's CUBIC condition
    (a CUBIC ceiling would be lower, so the BBR one is the stricter yardstick)."""
    samples = [one_ceiling(bench, payload, link, i + 1) for i in range(times)]
    rates = [c["mb_per_s"] for c in samples if c["complete"]]
    row = {"rtt_ms": link.rtt_ms, "loss": link.loss, "cc": "bbr", "tool": "s5cmd", "flags": " ".join(CEILING_FLAGS),
           "samples": samples, "complete": len(rates) == len(samples),
           "mb_per_s": round(statistics.median(rates), 2) if rates else None,
           "wall_s": statistics.median(c["wall_s"] for c in samples)}
    print(f"   link ceiling: median {row['mb_per_s']} MB/s of {[c['mb_per_s'] for c in samples]}", flush=True)
    return row


def one_ceiling(bench: Bench, payload: Payload, link: wan.Wan, sample: int) -> dict:
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
        bench.src.stop(remove_root=False)  # the next run meets a restarted source, as every tool run does
        bench.src.start()
    except subprocess.TimeoutExpired:
        wall, ok = time.monotonic() - t0, False
        got = sum(f.stat().st_size for f in stage.rglob("*") if f.is_file())
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        link.set_cc(cc)
    row = {"rtt_ms": link.rtt_ms, "loss": link.loss, "cc": "bbr", "tool": "s5cmd",
           "flags": " ".join(CEILING_FLAGS), "wall_s": round(wall, 2), "bytes": got, "complete": ok,
           "mb_per_s": round(got / wall / 1e6, 2) if wall > 0 else 0.0}
    row["sample"] = sample
    row["loadavg"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"   link ceiling #{sample} (s5cmd {' '.join(CEILING_FLAGS)}, bbr): {row['mb_per_s']:.2f} MB/s "
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
                r["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
                if r["timed_out"]:
                    # Killed at the deadline: it moved the payload at payload ÷ wall AT MOST (bench.run's
                    # mb_per_s for it is exactly that). The link's byte counter gives an estimate of what it
                    # did move, shown beside the bound and never used in a verdict.
                    r["mb_per_s_at_most"] = r["mb_per_s"]
                    r["link_estimate_mb_per_s"] = r["link_rx_bytes"] / max(r["wall_s"], 1e-9) / 1e6
                bench.runs.remove(r)  # kept in `out` with the link's settings instead
                r.update(rtt_ms=link.rtt_ms, loss=link.loss, cc=cc, measured_rtt_ms=rtt, round_in_condition=round_no)
                status = "ok" if r["valid"] else ("TIMEOUT" if r["timed_out"] else f"INVALID exit {r['exit_code']}")
                shown = (f"≤{r['mb_per_s']:6.2f} MB/s (link estimate {r['link_estimate_mb_per_s']:.2f})"
                         if r["timed_out"] else f"{r['mb_per_s']:7.2f} MB/s")
                print(f"   r{round_no} {tool.name:13} wall {r['wall_s']:7.1f}s {shown} "
                      f"{r['objects_per_s']:7.1f} obj/s  {status}  load {r['loadavg_end']}", flush=True)
                if not r["valid"]:
                    print("    " + "\n    ".join(r["stderr_tail"].splitlines()[-5:]), flush=True)
                out.append(r)


def upgrade(result: dict) -> dict:
    """A results file written before timed-out runs were rated at payload ÷ timeout (up to 2026-12-04): its
    killed runs carry the link-byte rate in `mb_per_s`. Move that to `link_estimate_mb_per_s`, rate them at
    payload ÷ wall (the payload from a finished run's check), and summarize and judge again. Idempotent."""
    runs = result.get("runs") or []
    payload = result.get("payload_bytes") or next(
        (r["check"]["bytes"] for r in runs if r["valid"] and r.get("check", {}).get("ok")), None)
    if payload is None:
        return result
    result["payload_bytes"] = payload
    for r in runs:
        if r["timed_out"] and "mb_per_s_at_most" not in r:
            r["link_estimate_mb_per_s"] = r["mb_per_s"]
            r["mb_per_s"] = r["mb_per_s_at_most"] = payload / max(r["wall_s"], 1e-9) / 1e6
    result["summary"] = summarize(runs, [t["name"] for t in result["tools"]], result.get("ceilings", []))
    result["verdicts"] = verdicts(result["summary"])
    return result


def merge(results: list[dict], names: list[str]) -> dict:
    """Several bench_wan results of the same payload as one: every run kept (rounds renumbered so they stay
    distinct), ceiling samples pooled per link (median over all of them), tools in first-seen order. The
    dth-ray code of each file is kept; the frozen trees must match (else the files measured different code)."""
    if len({r["payload"] for r in results}) != 1:
        raise SystemExit("cannot merge results of different payloads")
    trees = {r["dth_ray_code"]["tree_sha256"] for r in results}
    if len(trees) != 1:
        raise SystemExit(f"cannot merge results of different dth-ray code (frozen trees {sorted(trees)})")
    out = dict(results[0])
    out["merged_from"] = [{"file": n, "date": r["date"], "dth_ray_code": r["dth_ray_code"],
                           "loadavg_start": r["machine"]["loadavg_start"], "loadavg_end": r.get("loadavg_end"),
                           "elapsed_s": r.get("elapsed_s")} for n, r in zip(names, results, strict=True)]
    out["date"] = " + ".join(r["date"] for r in results)
    out["loadavg_end"] = results[-1].get("loadavg_end")
    out["runs"], offset = [], 0
    for r in results:
        for run in r["runs"]:
            out["runs"].append(dict(run, round=run["round"] + offset, source_file_date=r["date"]))
        offset += max((run["round"] for run in r["runs"]), default=0)
    out["runs_per_condition"] = "pooled"
    seen = {}
    for r in results:
        for t in r["tools"]:
            seen.setdefault(t["name"], t)
    out["tools"] = list(seen.values())
    links: dict = {}
    for r in results:
        for c in r.get("ceilings", []):
            link = links.setdefault((c["rtt_ms"], c["loss"]), dict(c, samples=[]))
            link["samples"] += c.get("samples") or [c]
    for c in links.values():
        rates = [x["mb_per_s"] for x in c["samples"] if x.get("complete") and x.get("mb_per_s")]
        c["mb_per_s"] = round(statistics.median(rates), 2) if rates else None
        c["complete"] = all(x.get("complete") for x in c["samples"])
    out["ceilings"] = list(links.values())
    counts = sorted({len(c["samples"]) for c in links.values()})
    out["ceiling_samples"] = " to ".join(str(n) for n in (counts[0], counts[-1]) if n) if len(counts) > 1 else counts[0]
    out["summary"] = summarize(out["runs"], [t["name"] for t in out["tools"]], out["ceilings"])
    out["verdicts"] = verdicts(out["summary"])
    return out


TARGET_RATIO = 3.0  # dth-ray ≥ 3× the best peer ...
CEILING_SHARE = 0.9  # ... or ≥ 90% of the link's ceiling where 3× the best peer exceeds that ceiling


def tool_rate(mine: list[dict]) -> tuple[float | None, bool]:
    """A tool's rate in one condition and whether it is only an upper bound: the median over its runs that
    finished (valid) or were killed at the timeout, a killed run counting at payload ÷ wall, the most it can
    have moved. The median is a bound as soon as any killed run is among them (conservative for the peer:
    treated as if it had moved the whole payload by the deadline). Invalid runs (wrong copy, error exit) are
    left out."""
    usable = [r for r in mine if r["valid"] or r["timed_out"]]
    if not usable:
        return None, False
    return statistics.median(r["mb_per_s"] for r in usable), any(r["timed_out"] for r in usable)


def summarize(runs: list[dict], tools: list[str], ceilings: list[dict] = ()) -> list[dict]:
    """Per condition and tool: median wall and MB/s (a killed run counts at payload ÷ wall, an upper bound;
    the row says so), the link-byte estimate for killed runs, and the share of the link's median ceiling."""
    rows = []
    conditions = sorted({(r["rtt_ms"], r["loss"], r["cc"]) for r in runs}, key=lambda c: (c[0], c[1], c[2]))
    for cond in conditions:
        these = [r for r in runs if (r["rtt_ms"], r["loss"], r["cc"]) == cond]
        ceiling = next((c["mb_per_s"] for c in ceilings
                        if (c["rtt_ms"], c["loss"]) == cond[:2] and c.get("mb_per_s")), None)
        for tool in tools:
            mine = [r for r in these if r["tool"] == tool]
            if not mine:
                continue
            valid = [r for r in mine if r["valid"]]
            killed = [r for r in mine if r["timed_out"]]
            rate, bound = tool_rate(mine)
            row = {"rtt_ms": cond[0], "loss": cond[1], "cc": cond[2], "tool": tool,
                   "valid": f"{len(valid)}/{len(mine)}", "timed_out": len(killed),
                   "measured_rtt_ms": mine[0]["measured_rtt_ms"],
                   "wall_s": statistics.median(r["wall_s"] for r in valid) if valid else None,
                   "mb_per_s": rate, "mb_per_s_is_upper_bound": bound,
                   "mb_per_s_valid_only": statistics.median(r["mb_per_s"] for r in valid) if valid else None,
                   "link_estimate_mb_per_s": statistics.median(r["link_estimate_mb_per_s"] for r in killed)
                   if killed else None,
                   "mb_done_at_timeout": statistics.median(r["check"]["bytes"] / 1e6 for r in killed) if killed else None,
                   "wall_s_at_least": statistics.median(r["wall_s"] for r in killed) if killed and not valid else None,
                   "loadavg": [r.get("loadavg_end") for r in mine],
                   "ceiling_mb_per_s": ceiling}
            row["of_ceiling"] = rate / ceiling if ceiling and rate is not None else None
            rows.append(row)
    return rows


def verdicts(summary: list[dict], target: str = "dth-ray") -> list[dict]:
    """Per condition: dth-ray against the best peer. The best peer is the one with the highest rate, where a
    killed peer counts at payload ÷ timeout (the most it can have moved), so a ratio against a killed peer is
    a floor (≥) and never a point. dth-ray itself killed makes its ratio a ceiling (≤). Met at ≥ 3×; or, only
    where 3 × the best peer's measured (not bounded) rate exceeds the link's median ceiling, at ≥ 90% of it."""
    out = []
    for cond in sorted({(r["rtt_ms"], r["loss"], r["cc"]) for r in summary}):
        rows = [r for r in summary if (r["rtt_ms"], r["loss"], r["cc"]) == cond]
        dth = next((r for r in rows if r["tool"] == target), None)
        peers = [r for r in rows if r["tool"] != target and r["mb_per_s"] is not None]
        v = {"rtt_ms": cond[0], "loss": cond[1], "cc": cond[2], "best_peer": None, "ratio": None,
             "ratio_kind": None, "ceiling_mb_per_s": rows[0]["ceiling_mb_per_s"], "of_ceiling": None,
             "ceiling_applies": False, "met": None, "text": "no data"}
        if dth is None or dth["mb_per_s"] is None or not peers:
            out.append(v)
            continue
        best = max(peers, key=lambda r: r["mb_per_s"])
        v["best_peer"], v["best_peer_mb_per_s"] = best["tool"], best["mb_per_s"]
        v["best_peer_is_upper_bound"] = best["mb_per_s_is_upper_bound"]
        v["best_peer_link_estimate_mb_per_s"] = best["link_estimate_mb_per_s"]
        ratio = dth["mb_per_s"] / best["mb_per_s"]
        peer_bound, dth_bound = best["mb_per_s_is_upper_bound"], dth["mb_per_s_is_upper_bound"]
        if peer_bound and dth_bound:
            v["ratio_kind"], v["text"] = "unknown", "both timed out: no ratio"
        else:
            v["ratio"] = ratio
            v["ratio_kind"] = "floor" if peer_bound else ("ceiling" if dth_bound else "point")
            sign = {"floor": "≥ ", "ceiling": "≤ ", "point": ""}[v["ratio_kind"]]
            v["text"] = f"{sign}{ratio:.2f}× {best['tool']}"
        if best["link_estimate_mb_per_s"]:
            est = dth["mb_per_s"] / best["link_estimate_mb_per_s"]
            v["ratio_vs_link_estimate"] = est
            v["text"] += f" (≈ {est:.2f}× its link-byte estimate, an estimate only)"
        ceiling = v["ceiling_mb_per_s"]
        if ceiling:
            v["of_ceiling"] = dth["mb_per_s"] / ceiling
            v["ceiling_applies"] = (not peer_bound) and TARGET_RATIO * best["mb_per_s"] > ceiling
        by_ratio = v["ratio"] is not None and v["ratio_kind"] in ("floor", "point") and v["ratio"] >= TARGET_RATIO
        by_ceiling = v["ceiling_applies"] and not dth_bound and (v["of_ceiling"] or 0) >= CEILING_SHARE
        ratio_short = v["ratio_kind"] in ("point", "ceiling") and v["ratio"] < TARGET_RATIO  # proven under 3×
        ceiling_short = not v["ceiling_applies"] or (v["of_ceiling"] or 0) < CEILING_SHARE
        if by_ratio or by_ceiling:
            v["met"] = True
        elif ratio_short and ceiling_short:
            v["met"] = False
        else:
            v["met"] = None  # a floor under 3×, or an upper bound over it: not proven either way
        v["how"] = "by ratio" if by_ratio else ("by ≥ 90% of the link ceiling" if by_ceiling else "")
        out.append(v)
    return out


def verdict_word(met) -> str:
    return {True: "**met**", False: "not met", None: "not proven"}[met]


def markdown(result: dict) -> str:
    m = result["machine"]
    code = result["dth_ray_code"]
    if result.get("merged_from"):
        files = "; ".join(f"`{f['file']}` ({f['date']} UTC, dth-ray code {f['dth_ray_code']['commit'][:10]}, frozen "
                          f"tree {f['dth_ray_code']['tree_sha256']}, load average {f['loadavg_start']} at start, "
                          f"{f['loadavg_end']} at end)" for f in result["merged_from"])
        head = (f"Payload: {result['payload']}; merged from {len(result['merged_from'])} runs of bench_wan.py, "
                f"their runs pooled per condition (the 'valid' column counts them) and their ceiling samples pooled "
                f"per link: {files}. Per-run timeout {result['timeout_s']:g} s. Machine: {m['nproc']} cores, kernel "
                f"{m['kernel']}, rclone {m['versions'].get('rclone')}, ray {m['versions'].get('ray')}.")
    else:
        head = (f"Payload: {result['payload']}; {result['runs_per_condition']} run(s) per tool per condition, tools "
                f"alternating; per-run timeout {result['timeout_s']:g} s. Machine: {m['nproc']} cores, kernel "
                f"{m['kernel']}, rclone {m['versions'].get('rclone')}, ray {m['versions'].get('ray')}; load average "
                f"{m['loadavg_start']} at start, {result.get('loadavg_end')} at end. dth-ray code: "
                f"{code['commit'][:10]} ({code['source']}"
                f"{', with uncommitted changes' if code.get('uncommitted_changes') else ''}; frozen tree "
                f"{code.get('tree_sha256')}).")
    lines = [f"# WAN benchmark, {result['date']} UTC", "", head, "",
             "| RTT ms (measured) | loss | cc | tool | flags | valid | wall s | MB/s | of link ceiling | load avg after run |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    flags = {t["name"]: t["flags_text"] for t in result["tools"]}
    for row in result["summary"]:
        wall = f"{row['wall_s']:.1f}" if row["wall_s"] is not None else (
            f"> {row['wall_s_at_least']:.0f} (timeout)" if row.get("wall_s_at_least") else "–")
        if row["mb_per_s"] is None:
            rate = "–"
        elif row["mb_per_s_is_upper_bound"]:
            rate = (f"≤ {row['mb_per_s']:.2f} (timed out: payload ÷ timeout, at most; link-byte estimate "
                    f"≈ {row['link_estimate_mb_per_s']:.2f}, {row['mb_done_at_timeout']:.0f} MB of objects "
                    f"finished)")
        else:
            rate = f"{row['mb_per_s']:.2f}"
        share = f"{'≤ ' if row['mb_per_s_is_upper_bound'] else ''}{row['of_ceiling']:.0%}" \
            if row.get("of_ceiling") is not None else "–"
        load = ", ".join(x for x in row.get("loadavg") or [] if x) or "–"
        lines.append(f"| {row['rtt_ms']:g} ({row['measured_rtt_ms']}) | {row['loss']:.1%} | {row['cc']} | "
                     f"{row['tool']} | {flags.get(row['tool'], '')} | {row['valid']} | {wall} | {rate} | {share} | {load} |")
    lines += ["", f"Verdicts: dth-ray ≥ {TARGET_RATIO:g}× the best peer, or ≥ {CEILING_SHARE:.0%} of the link's "
              "median ceiling where 3 × the best peer's measured rate exceeds that ceiling.", "",
              "| RTT ms | loss | cc | best peer (MB/s) | dth-ray / best peer | link ceiling (median of samples) | "
              "dth-ray of ceiling | ceiling alternative applies | verdict |",
              "|---|---|---|---|---|---|---|---|---|"]
    ceilings = {(c["rtt_ms"], c["loss"]): c for c in result.get("ceilings", [])}
    for v in result.get("verdicts") or verdicts(result["summary"]):
        c = ceilings.get((v["rtt_ms"], v["loss"]))
        samples = ", ".join(f"{s['mb_per_s']:.2f}" for s in (c or {}).get("samples", [])) if c else ""
        ceil = (f"{v['ceiling_mb_per_s']:.2f}" + (f" ({samples})" if samples else " (1 sample)")
                if v["ceiling_mb_per_s"] else "–")
        peer = "–" if not v["best_peer"] else (
            f"{v['best_peer']} ({'≤ ' if v['best_peer_is_upper_bound'] else ''}{v['best_peer_mb_per_s']:.2f})")
        share = f"{v['of_ceiling']:.0%}" if v["of_ceiling"] is not None else "–"
        lines.append(f"| {v['rtt_ms']:g} | {v['loss']:.1%} | {v['cc']} | {peer} | {v['text']} | {ceil} | {share} | "
                     f"{'yes' if v['ceiling_applies'] else 'no'} | {verdict_word(v['met'])}"
                     f"{' (' + v['how'] + ')' if v.get('how') else ''} |")
    lines += ["", "Link ceiling: the whole payload pulled across the link by s5cmd `" + CEILING_FLAGS_TEXT + "` under "
              "bbr into a local directory (one hop), measured " + str(result.get("ceiling_samples", 1)) + " time(s) per "
              "link, median used (samples in brackets); the same BBR ceiling serves the link's CUBIC rows. 'of link ceiling' is a "
              "tool's MB/s over it.", "",
              "A run killed at the per-run timeout moved the payload at payload ÷ timeout AT MOST: that bound is "
              "its rate, and a ratio against it is a floor (≥). The bytes the emulated link delivered to this host "
              "during the run are shown beside it as an estimate only and never enter a verdict. s5cmd and "
              "s5cmd-tuned copy in two hops through local disk (source → disk → destination); their wall time and "
              "MB/s cover both hops (the hop times are in the JSON, `hops_s`).", "",
              "Emulation: " + result["emulation"], ""]
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rtt", default="50,150", help="comma-separated RTTs in ms (default 50,150)")
    parser.add_argument("--loss", default="0,0.01", help="comma-separated loss probabilities (default 0,0.01)")
    parser.add_argument("--cc", default="bbr,cubic", help="comma-separated congestion controls (default bbr,cubic)")
    parser.add_argument("--conditions", help="explicit links instead of --rtt × --loss × --cc: comma-separated "
                                             "RTT/LOSS/CC[+CC], e.g. 150/0.01/bbr+cubic,100/0.005/bbr,250/0.02/bbr")
    parser.add_argument("--runs", type=int, default=3, help="rounds per condition (default 3)")
    parser.add_argument("--large", type=int, default=2, help="large objects (default 2)")
    parser.add_argument("--large-mib", type=int, default=128, help="size of a large object in MiB (default 128)")
    parser.add_argument("--small", type=int, default=2000, help="small objects (default 2,000)")
    parser.add_argument("--small-kib", type=int, default=64, help="size of a small object in KiB (default 64)")
    parser.add_argument("--ceilings", type=int, default=3, help="link-ceiling measurements per link, median "
                                                                "used (default 3)")
    parser.add_argument("--tools", default="dth-ray,rclone-mt,s5cmd-tuned",
                        help="comma-separated subset of " + ",".join(WAN_TOOL_NAMES)
                             + " (default dth-ray,rclone-mt,s5cmd-tuned)")
    parser.add_argument("--timeout", type=float, default=1800, help="per-run timeout in s (default 1800)")
    parser.add_argument("--ref", default="HEAD", help="dth-ray code: a git ref (default HEAD) or 'worktree'")
    parser.add_argument("--results", default=str(RESULTS), help="where wan-<date>.json goes")
    parser.add_argument("--render", metavar="JSON", help="only re-summarize and re-render a results file")
    parser.add_argument("--merge", metavar="JSON", nargs="+",
                        help="with --render OUT: merge these results files (same payload; their runs and ceiling "
                             "samples pooled per condition) into OUT, and render it")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.render:
        if args.merge:
            result = merge([upgrade(json.loads(Path(f).read_text())) for f in args.merge],
                           [Path(f).name for f in args.merge])
        else:
            result = upgrade(json.loads(Path(args.render).read_text()))
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


def parse_conditions(args: argparse.Namespace) -> list[tuple[float, float, list[str]]]:
    """The links to measure, each (RTT ms, loss, [congestion controls]): `--conditions` if given (e.g.
    `150/0.01/bbr+cubic,100/0.005/bbr`), else every --rtt × --loss with every --cc."""
    if getattr(args, "conditions", None):
        out = []
        for spec in args.conditions.split(","):
            rtt, loss, ccs = spec.split("/")
            out.append((float(rtt), float(loss), ccs.split("+")))
        return out
    ccs = args.cc.split(",")
    return [(float(rtt), float(loss), ccs) for rtt in args.rtt.split(",") for loss in args.loss.split(",")]


def run(args: argparse.Namespace, work_parent: str | None = None, write: bool = True,
        frozen: tuple[Path, dict] | None = None) -> dict:
    """Measure every condition in `args` (see build_parser) and return the result (also written to
    results/wan-<date>.json and wan-latest.md unless `write` is false). The caller checks wan.preflight().
    `frozen`: an already frozen copy of the code (its directory and freeze_code's description) to reuse."""
    saved_timeout = bench_core.RUN_TIMEOUT_S
    bench_core.RUN_TIMEOUT_S = args.timeout
    payload = Payload(args.large, args.large_mib, args.small, args.small_kib)
    wanted = args.tools.split(",")
    unknown = set(wanted) - set(WAN_TOOL_NAMES)
    if unknown:
        raise SystemExit(f"unknown WAN tools {sorted(unknown)}; choose from {WAN_TOOL_NAMES}")
    tools = [t for t in wan_tools(payload) if t.name in wanted]
    links = parse_conditions(args)

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
              "payload_bytes": payload.total_bytes, "payload_objects": payload.objects,
              "ceiling_samples": args.ceilings,
              "runs_per_condition": args.runs, "timeout_s": args.timeout, "machine": machine_info(),
              "dth_ray_code": code,
              "tools": [{"name": t.name, "flags": t.flags, "flags_text": " ".join(t.flags) + (f" ({t.note})" if t.note else "")
               if t.flags else bench_core.flag_text(t)} for t in tools],
              "emulation": ("source rclone serve s3 in netns dthwan-far behind netns dthwan-mid; delay = NFQUEUE "
                            "daemon holding each packet RTT/2 per direction; loss = iptables statistic random DROP "
                            "per direction in the middle namespace's FORWARD chain; congestion control = "
                            "`ip route ... congctl` on both ends' routes; offloads off on every veth"),
              "runs": [], "ceilings": []}
    print(f"bench_wan: payload {payload.describe()}; links (RTT ms, loss, [cc]) {links}; {args.runs} round(s); "
          f"tools {[t.name for t in tools]}; timeout {args.timeout:g} s; work dir {work}", flush=True)
    keys = {role: ("BENCH" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)) for role in ("src", "dst")}
    (work / "src").mkdir()
    expected = payload.write(work / "src")
    dst = src = None
    try:
        dst = RcloneS3(*keys["dst"], root=str(work / "dst")).start()
        with_retry(lambda: dst.client().create_bucket(Bucket=payload.bucket))
        for rtt, loss, ccs in links:  # one link per (RTT, loss); its congestion controls in turn
            with wan.Wan(rtt, loss, ccs[0]) as link:
                src = FarRcloneS3(*keys["src"], root=str(work / "src")).start()
                bench = None
                try:
                    conf = work / "rclone.conf"
                    rclone_config(conf, src, dst)
                    bench = Bench(work, src, dst, conf, work / "code")
                    result["servers"] = bench_core.SERVERS_NOTE
                    result["ceilings"].append(link_ceiling(bench, payload, link, args.ceilings))
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
        result["verdicts"] = verdicts(result["summary"])
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
