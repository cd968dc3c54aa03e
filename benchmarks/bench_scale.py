"""Scale-out curve (issue 19, item 7): dth-ray's aggregate rate on N = 1, 2, 4 Ray worker nodes of one machine,
each node's traffic through its own emulated link, against shared source and destination servers.

Topology (every namespace and address is this module's own: `dthscale-*`, 10.93.0.0/16):

    dthscale-n0 (head: GCS, driver, manifest actor; --num-cpus=0, so no transfer actor)   10.93.0.2 ─┐
    dthscale-n1 … dthscale-nK (worker nodes: one transfer actor each; --num-cpus=1)       10.93.i.2 ─┤ veth each
                                                                                                     │ (own link)
    dthscale-hub: routes between the nodes; source and destination `rclone serve s3` on 10.93.255.1 ┘

Each node's link is a veth pair to the hub with a token-bucket cap (tc `tbf`, both directions: the hub side
shapes what the node downloads, the node side what it uploads) and, for S3 traffic only, a delay of RTT/2 each
way (iptables NFQUEUE in the hub, released by wan.py's daemon). This kernel has no netem; the daemon is
Python, so the veths run a 64,000-byte MTU to keep its packet rate low (the kernel hands NFQUEUE one
packet per MTU-sized segment). Ray's own traffic between nodes crosses the same capped links, undelayed.

The head runs the driver (`runtime.address=10.93.0.2:6379`: joining a cluster, the driver has no lane) and
the manifest actor; `transfer.actors=N` with the head at --num-cpus=0 puts exactly one transfer actor on each
worker node (scheduler.actor_nodes). Everything else is dth-ray's shipped defaults, except
`runtime.autoscale=off` (a fixed cluster: no autoscaler to ask). Ray is started per N with `ray start` inside
the namespaces and stopped by ending the processes in those namespaces (never `ray stop`, which would end
every Ray on the machine). Teardown (also on error and SIGTERM/SIGINT) removes every namespace, the daemon and
the servers.

    .venv/bin/python benchmarks/bench_scale.py [--nodes 1,2,4] [--sets small,large] [--runs 2]
        [--small 4000] [--small-kib 64] [--large 16] [--large-mib 32] [--rate-mb 8] [--rtt-ms 50]
    .venv/bin/python benchmarks/bench_scale.py down            # remove leftovers of an interrupted run
    .venv/bin/python benchmarks/bench_scale.py --render results/scale-<commit>-<date>.json   # rewrites scale-latest.*

Writes benchmarks/results/scale-<commit>-<date>.json and scale-latest.md (the table).
"""

from __future__ import annotations

import argparse
import contextlib
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
from scalenet import (  # noqa: E402
    RAY_TMP,
    HubServer,
    Links,
    OwnCpu,
    down,
    kill_ns,
    link_ceiling,
    machine_busy_s,
    node_ip,
    node_ns,
    ns_pids,
)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
RESULTS = HERE / "results"
BIN = Path(sys.executable).parent
KiB, MiB = 1024, 1024 * 1024
HEAD_PORT = 6379
RUN_TIMEOUT_S = 900.0

# ---------------------------------------------------------------- pure helpers (tests/unit/test_bench_scale.py)

def efficiency(rates: dict[int, float]) -> dict[int, float | None]:
    """Scale-out efficiency per node count: rate(N) / (N × rate(1)); None where there is no rate(1) (or it is
    zero). 1.0 is linear scaling."""
    base = rates.get(1)
    return {n: (rate / (n * base) if base else None) for n, rate in sorted(rates.items())}


def summarize(runs: list[dict]) -> list[dict]:
    """One row per (set, N): medians over the valid runs of the report's MB/s and objects/s, and of the rate
    after the actors were up; efficiency from the medians; load average and machine CPU beside them."""
    rows = []
    for name in sorted({r["set"] for r in runs}, key=lambda s: (s != "small", s)):
        mine = [r for r in runs if r["set"] == name]
        med: dict[int, dict] = {}
        for n in sorted({r["nodes"] for r in mine}):
            at = [r for r in mine if r["nodes"] == n]
            ok = [r for r in at if r["valid"]]
            med[n] = {"set": name, "nodes": n, "valid": f"{len(ok)}/{len(at)}"}
            for key in ("mb_per_s", "objects_per_s", "mb_per_s_after_actors", "wall_s", "machine_cores",
                        "own_cores", "link_mb_per_s_per_node"):
                vals = [r[key] for r in ok if r.get(key) is not None]
                med[n][key] = statistics.median(vals) if vals else None
            med[n]["load_avg_1m"] = [r["load_avg"][0] for r in at]
            # How the work spread: objects per node in each run, largest first (the report's `nodes`).
            med[n]["objects_per_node"] = [sorted((x["objects"] for x in r.get("report_nodes") or []), reverse=True)
                                          for r in at]
        for key, out in (("mb_per_s", "efficiency"), ("mb_per_s_after_actors", "efficiency_after_actors")):
            eff = efficiency({n: m[key] for n, m in med.items() if m[key] is not None})
            for n, m in med.items():
                m[out] = eff.get(n)
        rows.extend(med.values())
    return rows


def markdown(result: dict) -> str:
    cfg = result["config"]
    lines = [f"Scale-out at `{result['code']['commit'][:10]}` ({result['started']}): per-node link "
             f"{cfg['rate_mb']:g} MB/s each way, {cfg['rtt_ms']:g} ms RTT to the servers; one transfer actor per "
             f"worker node; driver on the head (no lane, no actor). {result['machine']['cpus']} cores shared by "
             "everything (nodes, servers, delay daemon).", "",
             "| set | N | valid | MB/s | objects/s | efficiency | MB/s after actors up | efficiency (after) | "
             "link MB/s per node | cores busy: machine (this benchmark) | load avg 1 min | objects per node, each run |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---|---|"]

    def f(value, spec=",.1f"):
        return "–" if value is None else format(value, spec)

    for row in result["summary"]:
        lines.append(
            f"| {result['sets'][row['set']]['describe']} | {row['nodes']} | {row['valid']} | {f(row['mb_per_s'])} "
            f"| {f(row['objects_per_s'])} | {f(row['efficiency'], '.2f')} | {f(row['mb_per_s_after_actors'])} | "
            f"{f(row['efficiency_after_actors'], '.2f')} | {f(row['link_mb_per_s_per_node'])} | "
            f"{f(row['machine_cores'], '.2f')} ({f(row['own_cores'], '.2f')}) | "
            f"{', '.join(f'{x:.2f}' for x in row['load_avg_1m'])} | "
            f"{'; '.join('/'.join(str(c) for c in counts) for counts in row.get('objects_per_node', []))} |")
    ceilings = result.get("ceilings") or []
    if ceilings:
        lines += ["", "Link ceiling, no dth-ray: every worker node GETs one object of the large set at once with curl "
                  "from a plain HTTP server at the servers' address: " + ", ".join(
                      f"N={c['nodes']}: {c['mb_per_s']:.1f} MB/s (load {c['load_avg'][0]:.2f})" for c in ceilings)
                  + "."]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- data

class DataSet:
    def __init__(self, name: str, count: int, size: int, prefixes: int):
        self.name, self.count, self.size, self.prefixes = name, count, size, prefixes
        self.bucket = f"scale-{name}"

    def keys(self) -> list[str]:
        return [f"d{i % self.prefixes:03d}/obj-{i:06d}.bin" for i in range(self.count)]

    @property
    def total_bytes(self) -> int:
        return self.count * self.size

    def describe(self) -> str:
        size = f"{self.size // MiB} MiB" if self.size >= MiB else f"{self.size // KiB} KiB"
        return f"{self.count:,} × {size}"

    def write(self, root: Path) -> dict[str, str]:
        """Straight into the source server's directory; key → MD5."""
        expected = {}
        for key in self.keys():
            path = root / self.bucket / key
            path.parent.mkdir(parents=True, exist_ok=True)
            data = os.urandom(self.size)
            path.write_bytes(data)
            expected[key] = hashlib.md5(data).hexdigest()  # noqa: S324 - content check, as S3's ETag
        return expected


def check_on_disk(root: Path, bucket: str, prefix: str, expected: dict[str, str], size: int) -> dict:
    """Every expected object at the destination (files of the server's directory) with its size and MD5."""
    missing = wrong = 0
    base = root / bucket / prefix
    for key, md5 in expected.items():
        path = base / key
        if not path.is_file():
            missing += 1
            continue
        data = path.read_bytes()
        if len(data) != size or hashlib.md5(data).hexdigest() != md5:  # noqa: S324
            wrong += 1
    extra = sum(1 for p in base.rglob("*") if p.is_file()) - (len(expected) - missing) if base.exists() else 0
    return {"missing": missing, "wrong": wrong, "extra": extra, "ok": missing == wrong == extra == 0}


# ---------------------------------------------------------------- Ray per N

class Cluster:
    """A head in namespace n0 (--num-cpus=0) and `workers` worker nodes in n1..nK (--num-cpus=1 each)."""

    def __init__(self, workers: int, env: dict[str, str]):
        self.workers, self.env = workers, env

    def start(self) -> float:
        t0 = time.monotonic()
        RAY_TMP.mkdir(parents=True, exist_ok=True)
        common = ["--num-cpus", "0", "--object-store-memory", str(80 * MiB), "--disable-usage-stats"]
        self._ray(0, ["--head", "--port", str(HEAD_PORT), "--include-dashboard=false", *common])
        for i in range(1, self.workers + 1):
            args = ["--address", f"{node_ip(0)}:{HEAD_PORT}", *common]
            args[args.index("--num-cpus") + 1] = "1"
            self._ray(i, args)
        self._wait_nodes(self.workers + 1)
        return time.monotonic() - t0

    def _ray(self, i: int, args: list[str]) -> None:
        temp = RAY_TMP / f"n{i}"
        cmd = [str(BIN / "ray"), "start", "--node-ip-address", node_ip(i), "--temp-dir", str(temp), *args]
        done = subprocess.run(["ip", "netns", "exec", node_ns(i), *cmd], env=self.env, capture_output=True,
                              text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"ray start on n{i} failed: {done.stderr[-2000:]}")

    def _wait_nodes(self, count: int, timeout_s: float = 90.0) -> None:
        code = ("import ray,sys\nray.init(address=sys.argv[1],logging_level='ERROR')\n"
                "print(sum(1 for n in ray.nodes() if n['Alive']))")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            out = subprocess.run(["ip", "netns", "exec", node_ns(0), sys.executable, "-c", code,
                                  f"{node_ip(0)}:{HEAD_PORT}"], env=self.env, capture_output=True, text=True,
                                 timeout=60)
            if out.returncode == 0 and out.stdout.strip().splitlines()[-1:] == [str(count)]:
                return
            time.sleep(1.0)
        raise RuntimeError(f"the cluster did not reach {count} nodes")

    def stop(self) -> None:
        for i in range(self.workers, -1, -1):
            kill_ns(node_ns(i))

    def pids(self) -> list[int]:
        return [p for i in range(self.workers + 1) for p in ns_pids(node_ns(i))]


# ---------------------------------------------------------------- runs

def run_once(links: Links, data: DataSet, expected: dict, src: HubServer, work: Path, nodes: int, round_no: int,
             env: dict[str, str]) -> dict:
    """One sync of `data` to a fresh destination server (an empty directory), checked on disk. The destination's
    keys are the cluster's (`env`): worker nodes read env:BDST from the environment they were started with."""
    dst_root = work / f"dst-{data.name}-n{nodes}-r{round_no}"
    (dst_root / data.bucket).mkdir(parents=True)
    dst = HubServer(dst_root, 9002, env["BDST_ACCESS_KEY_ID"], env["BDST_SECRET_ACCESS_KEY"]).start()
    run_dir = work / f"run-{data.name}-n{nodes}-r{round_no}"
    run_dir.mkdir()
    prefix = f"n{nodes}-r{round_no}"
    cmd = [str(BIN / "dth-ray"), "sync", f"source.bucket={data.bucket}", f"source.endpoint={src.endpoint}",
           "source.credentials=env:BSRC", f"destination.bucket={data.bucket}", f"destination.prefix={prefix}/",
           f"destination.endpoint={dst.endpoint}", "destination.credentials=env:BDST",
           f"manifest.path={run_dir / 'manifest.sqlite'}", f"report={run_dir / 'report.json'}",
           f"runtime.address={node_ip(0)}:{HEAD_PORT}", "runtime.autoscale=off", f"transfer.actors={nodes}",
           "source.insecure_http=true", "destination.insecure_http=true"]
    try:
        before = links.counters()
        load0 = os.getloadavg()
        own = OwnCpu()
        own.start()
        busy0, t0 = machine_busy_s(), time.monotonic()
        try:
            done = subprocess.run(["ip", "netns", "exec", node_ns(0), *cmd], env=env, capture_output=True,
                                  text=True, timeout=RUN_TIMEOUT_S, cwd=run_dir)
            code, stderr, timed_out = done.returncode, done.stderr, False
        except subprocess.TimeoutExpired as exc:
            code, stderr, timed_out = -1, (exc.stderr or b"").decode(errors="replace"), True
        wall = time.monotonic() - t0
        busy = machine_busy_s() - busy0
        own_cpu = own.stop()
        load1 = os.getloadavg()
        after = links.counters()
    finally:
        dst.stop()
    report = {}
    with contextlib.suppress(OSError, ValueError):
        report = json.loads((run_dir / "report.json").read_text())
    check = check_on_disk(dst_root, data.bucket, prefix, expected, data.size)
    per_node = {i: ((after[i][0] - before[i][0]), (after[i][1] - before[i][1])) for i in after}
    worker_down = [per_node[i][0] for i in range(1, nodes + 1)]
    duration = report.get("duration_s") or wall
    actors_up = (report.get("runtime") or {}).get("actors_up_s")
    copied = (report.get("bytes") or {}).get("copied", 0)
    row = {
        "set": data.name, "nodes": nodes, "round": round_no, "exit_code": code, "timed_out": timed_out,
        "valid": code == 0 and report.get("status") == "succeeded" and check["ok"], "check": check,
        "wall_s": round(wall, 2), "duration_s": duration, "actors_up_s": actors_up,
        "mb_per_s": (report.get("bytes_per_s") or 0) / 1e6, "objects_per_s": report.get("objects_per_s") or 0,
        "mb_per_s_after_actors": (copied / (duration - actors_up) / 1e6
                                  if actors_up is not None and duration > actors_up else None),
        "report_nodes": report.get("nodes"),
        "link_bytes": {f"n{i}": {"to_node": d, "from_node": u} for i, (d, u) in per_node.items()},
        # What each worker node's link carried towards it (GETs), per second of the run: near the cap = link-bound.
        "link_mb_per_s_per_node": statistics.mean(worker_down) / wall / 1e6 if worker_down else None,
        "machine_busy_s": round(busy, 2), "machine_cores": busy / wall if wall > 0 else None,
        # This benchmark's own processes (every namespace of it): the rest of machine_cores is other work.
        "own_cpu_s": own_cpu, "own_cores": sum(own_cpu.values()) / wall if wall > 0 else None,
        "load_avg": [round(x, 2) for x in load0], "load_avg_end": [round(x, 2) for x in load1],
        "stderr_tail": "\n".join(stderr.splitlines()[-8:]) if code != 0 else "",
    }
    shutil.rmtree(dst_root, ignore_errors=True)
    return row


def commit_info() -> dict:
    def git(*args):
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True).stdout.strip()

    return {"commit": git("rev-parse", "HEAD") or "unknown", "dirty": bool(git("status", "--porcelain", "--", "dth_ray")),
            "branch": git("rev-parse", "--abbrev-ref", "HEAD")}


def run(args: argparse.Namespace, work_parent: str | None = None, write: bool = True,
        frozen: tuple[Path, dict] | None = None, results: Path = RESULTS) -> dict:
    """The whole curve; returns the result (also written to results/ when `write`). `frozen`: (directory, its
    description) of a frozen copy of dth_ray/ and conf/ (the suite's) to run instead of this checkout."""
    nodes_list = [int(n) for n in args.nodes.split(",")]
    sets = {"small": DataSet("small", args.small, args.small_kib * KiB, 40),
            "large": DataSet("large", args.large, args.large_mib * MiB, 4)}
    chosen = [sets[s] for s in args.sets.split(",")]
    work = Path(tempfile.mkdtemp(prefix="dthscale-", dir=work_parent))
    code_dir, code = frozen or (REPO, commit_info())
    result = {"started": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "code": code,
              "machine": {"cpus": os.cpu_count(), "load_avg_at_start": list(os.getloadavg())},
              "config": {"nodes": nodes_list, "runs": args.runs, "rate_mb": args.rate_mb, "rtt_ms": args.rtt_ms,
                         "dth_ray_flags": ["runtime.address=<head>:6379", "runtime.autoscale=off", "*.insecure_http=true",
                                           "transfer.actors=N"],
                         "ray": "head --num-cpus=0 (driver, manifest actor); worker nodes --num-cpus=1; "
                                "--object-store-memory 80 MiB each"},
              "sets": {d.name: {"objects": d.count, "object_bytes": d.size, "describe": d.describe()} for d in chosen},
              "runs": []}
    links = Links(max(nodes_list) + 1, args.rate_mb, args.rtt_ms)
    src_root = work / "src"
    token = work / "ray_token"
    token.write_text(secrets.token_hex(32))
    token.chmod(0o600)
    src = HubServer(src_root, 9001, "scalesrckey", secrets.token_hex(12))
    env = dict(os.environ, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_DEDUP_LOGS="0",
               PYTHONPATH=os.pathsep.join([str(code_dir), *filter(None, [os.environ.get("PYTHONPATH")])]),
               DTH_RAY_CONF=str(code_dir / "conf"), BSRC_ACCESS_KEY_ID=src.access_key_id,
               BSRC_SECRET_ACCESS_KEY=src.secret_access_key, BDST_ACCESS_KEY_ID="scaledstkey")
    env.pop("RAY_ADDRESS", None)
    try:
        links.up()
        result["link"] = links.describe()
        print(f"links up: {links.describe()}", flush=True)
        expected = {}
        for d in chosen:
            expected[d.name] = d.write(src_root)
            print(f"seeded {d.name}: {d.describe()}", flush=True)
        src.start()
        for n in nodes_list:
            # One destination secret per cluster: worker nodes read env:BDST from their own environment.
            env["BDST_SECRET_ACCESS_KEY"] = secrets.token_hex(12)
            cluster = Cluster(n, env)
            try:
                up_s = cluster.start()
                print(f"-- N={n}: cluster up in {up_s:.1f}s", flush=True)
                large = sets.get("large")
                if large in chosen:
                    ceiling = link_ceiling(src_root / large.bucket, large.keys()[0], large.size, n)
                    result.setdefault("ceilings", []).append(ceiling)
                    print(f"   link ceiling (curl, one {large.size // MiB} MiB GET per node at once): "
                          f"{ceiling['mb_per_s']:.2f} MB/s", flush=True)
                for round_no in range(1, args.runs + 1):
                    for d in chosen:
                        r = run_once(links, d, expected[d.name], src, work, n, round_no, env)
                        r["cluster_up_s"] = round(up_s, 1)
                        result["runs"].append(r)
                        print(f"   {d.name:5} N={n} r{round_no}: {r['mb_per_s']:7.2f} MB/s {r['objects_per_s']:7.1f} obj/s"
                              f" (after actors {r['mb_per_s_after_actors'] or 0:6.2f} MB/s) wall {r['wall_s']:6.1f}s "
                              f"link/node {r['link_mb_per_s_per_node'] or 0:5.2f} MB/s cores {r['machine_cores']:.2f} "
                              f"(own {r['own_cores']:.2f}) "
                              f"load {r['load_avg'][0]:.2f} {'ok' if r['valid'] else 'INVALID'}", flush=True)
                        if not r["valid"]:
                            print("    " + r["stderr_tail"].replace("\n", "\n    ") + f"\n    check {r['check']}",
                                  flush=True)
            finally:
                cluster.stop()
    finally:
        src.stop()
        down()
        shutil.rmtree(work, ignore_errors=True)
    result["summary"] = summarize(result["runs"])
    result["finished"] = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    if write:
        write_result(result, results)
    return result


def plot(result: dict, path: Path) -> Path | None:
    """Aggregate MB/s (report's and after the actors were up) against N per set, with linear scaling from N = 1
    and the links' own ceiling; None when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    names = list(result["sets"])
    fig, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.8), squeeze=False)
    for ax, name in zip(axes[0], names, strict=True):
        rows = [r for r in result["summary"] if r["set"] == name and r["mb_per_s"] is not None]
        ns = [r["nodes"] for r in rows]
        ax.plot(ns, [r["mb_per_s"] for r in rows], "o-", label="dth-ray (report: whole run)")
        ax.plot(ns, [r["mb_per_s_after_actors"] for r in rows], "s--", label="dth-ray (after actors up)")
        base = next((r["mb_per_s"] for r in rows if r["nodes"] == 1), None)
        if base:
            ax.plot(ns, [n * base for n in ns], ":", color="grey", label="linear from N = 1")
        ceil = result.get("ceilings") or []
        if ceil:
            ax.plot([c["nodes"] for c in ceil], [c["mb_per_s"] for c in ceil], "^-", color="tab:green",
                    label="link ceiling (curl GET per node)")
        ax.plot(ns, [n * result["config"]["rate_mb"] for n in ns], "-", color="lightgrey", label="N × link cap")
        for r in rows:
            if r["efficiency"] is not None:
                ax.annotate(f"{r['efficiency']:.2f}", (r["nodes"], r["mb_per_s"]), textcoords="offset points",
                            xytext=(4, -12), fontsize=8)
        ax.set_title(f"{result['sets'][name]['describe']} (efficiency at each point)")
        ax.set_xlabel("Ray worker nodes N (one link each)")
        ax.set_ylabel("aggregate MB/s")
        ax.set_xticks(ns)
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_result(result: dict, results: Path = RESULTS) -> Path:
    results.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d-%H%M")
    path = results / f"scale-{result['code']['commit'][:10]}-{stamp}.json"
    path.write_text(json.dumps(result, indent=1) + "\n")
    png = plot(result, results / "scale-latest.png")
    (results / "scale-latest.md").write_text(markdown(result) + f"\nFrom `{path.name}`"
                                             + (f"; figure `{png.name}`" if png else "") + ".\n")
    print(markdown(result))
    print(f"wrote {path}")
    return path


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("cmd", nargs="?", default="run", choices=["run", "down"])
    parser.add_argument("--nodes", default="1,2,4", help="worker node counts (default 1,2,4)")
    parser.add_argument("--sets", default="small,large")
    parser.add_argument("--runs", type=int, default=2, help="rounds per N (default 2)")
    parser.add_argument("--small", type=int, default=4000, help="objects in the small set (default 4,000)")
    parser.add_argument("--small-kib", type=int, default=64)
    parser.add_argument("--large", type=int, default=16, help="objects in the large set (default 16)")
    parser.add_argument("--large-mib", type=int, default=32)
    parser.add_argument("--rate-mb", type=float, default=8.0, help="per-node link cap, MB/s each way (default 8)")
    parser.add_argument("--rtt-ms", type=float, default=50.0, help="RTT from each node to the servers (default 50)")
    parser.add_argument("--render", help="re-render the table of a results JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.render:
        result = json.loads(Path(args.render).read_text())
        result["summary"] = summarize(result["runs"])  # the current summary's columns
        print(markdown(result))
        png = plot(result, RESULTS / "scale-latest.png")
        (RESULTS / "scale-latest.md").write_text(markdown(result) + f"\nFrom `{Path(args.render).name}`"
                                                 + (f"; figure `{png.name}`" if png else "") + ".\n")
        return 0
    if args.cmd == "down":
        down()
        return 0
    if os.geteuid() != 0:
        print("bench_scale: needs root (network namespaces, tc)", file=sys.stderr)
        return 2

    def on_signal(signum, _frame):
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    result = run(args)
    return 0 if all(r["valid"] for r in result["runs"]) else 1


if __name__ == "__main__":
    sys.exit(main())
