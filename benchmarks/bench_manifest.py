"""Manifest writes counted at the server: a 100,000-object `dth-ray sync` and a no-change rerun with
`manifest=dynamodb` on moto, behind a counting proxy (tests/servers/dynamodb_counter.py) that counts requests
and items by operation as the server sees them; the report's own counters are recorded beside them.

Source and destination are two `rclone serve s3` endpoints on disk (the source's objects written straight into
its directory); dth-ray runs with shipped defaults, the only non-default settings saying where the manifest
lives. `--manifests dynamodb,sqlite` adds the SQLite manifest (its own counters only: no server to count at).
Writes benchmarks/results/manifest-<date>.json and manifest-latest.md.

usage: python benchmarks/bench_manifest.py [--objects 100000] [--object-bytes 1024] [--prefixes 100]
                                           [--manifests dynamodb] [--ref HEAD|worktree]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from bench_core import BIN, RESULTS, freeze_code, machine_info, proc_stat  # noqa: E402

from dth_ray.locals3 import RcloneS3, free_port  # noqa: E402
from tests.servers.dynamodb_counter import DynamoCounter  # noqa: E402

BUCKET = "bench-manifest"
KEYS = {"BSRC": ("benchsrc", "bench-source-secret"), "BDST": ("benchdst", "bench-destination-secret"),
        "MOTO": ("moto", "moto-secret")}


def seed_on_disk(root: str, objects: int, size_bytes: int, prefixes: int) -> None:
    """Write the objects straight into the directory `rclone serve s3` serves (much faster than PUTs)."""
    rng = random.Random(1)
    for i in range(objects):
        folder = Path(root, BUCKET, f"p{i % prefixes:03d}")
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"obj-{i:07d}").write_bytes(rng.randbytes(size_bytes))


def start_moto() -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    endpoint = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)  # noqa: S310 - loopback only
            return proc, endpoint
        except OSError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("moto server did not start")


def sync(code: Path, src: RcloneS3, dst: RcloneS3, dst_prefix: str, extra: list[str], work: Path) -> dict:
    """One `dth-ray sync` of the frozen code, from a scratch working directory; returns its report."""
    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=work))
    report = run_dir / "report.json"
    cmd = [str(BIN / "dth-ray"), "sync", f"source.bucket={BUCKET}", f"source.endpoint={src.endpoint}",
           "source.credentials=env:BSRC", f"destination.bucket={BUCKET}", f"destination.prefix={dst_prefix}",
           f"destination.endpoint={dst.endpoint}", "destination.credentials=env:BDST", f"report={report}",
           "progress=off", *extra]
    env = {**os.environ, "PYTHONPATH": str(code), "DTH_RAY_CONF": str(code / "conf")}
    for name, (key_id, secret) in KEYS.items():
        env[f"{name}_ACCESS_KEY_ID"], env[f"{name}_SECRET_ACCESS_KEY"] = key_id, secret
    started = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600, env=env, cwd=run_dir)
    if done.returncode != 0:
        raise RuntimeError(f"sync failed: {done.stdout}\n{done.stderr[-3000:]}")
    out = json.loads(report.read_text())
    out["wall_s"] = time.monotonic() - started
    return out


def server_delta(before: dict, after: dict) -> dict:
    """What the counting proxy saw between two snapshots."""
    ops = {}
    for op, now in after["by_operation"].items():
        was = before["by_operation"].get(op, {"requests": 0, "errors": 0, "items": 0})
        delta = {k: now[k] - was[k] for k in ("requests", "errors", "items")}
        if any(delta.values()):
            ops[op] = delta
    kinds = {k: v - before["items_by_kind"].get(k, 0) for k, v in after["items_by_kind"].items()}
    return {"write_requests": after["write_requests"] - before["write_requests"],
            "items_written": after["items_written"] - before["items_written"],
            "items_by_kind": {k: v for k, v in kinds.items() if v}, "by_operation": ops}


def row(manifest: str, run: str, report: dict, server: dict | None, moto_cpu_s: float | None) -> dict:
    m, o = report["manifest"], report["objects"]
    out = {"manifest": manifest, "run": run, "objects_listed": o["listed"], "objects_copied": o["copied"],
           "report_writes": m["writes"], "report_items_written": m["items_written"],
           "wall_s": round(report["wall_s"], 1), "objects_per_s": report["objects_per_s"]}
    if server is not None:
        out.update(server=server, server_cpu_s=moto_cpu_s,
                   counters_match=(server["write_requests"], server["items_written"]) == (m["writes"],
                                                                                          m["items_written"]))
    writes = server["write_requests"] if server else m["writes"]
    items = server["items_written"] if server else m["items_written"]
    out.update(writes_per_object=writes / o["listed"], items_per_object=items / o["listed"])
    return out


def markdown(result: dict) -> str:
    code = result["dth_ray_code"]
    lines = [f"# Manifest writes ({result['date']} UTC)", "",
             f"{result['objects']:,} objects of {result['object_bytes']:,} B over {result['prefixes']} prefixes, "
             f"`rclone serve s3` → `rclone serve s3` (on disk), shipped defaults; dth-ray at {code['commit'][:10]} "
             f"({code['source']}{', with uncommitted changes' if code['uncommitted_changes'] else ''}). "
             f"Load average {result['machine']['loadavg_start']} at start, {result['loadavg_end']} at end "
             f"({result['machine']['nproc']} cores, shared).", "",
             "| manifest | run | objects | write requests (server) | items written (server) | report: writes / items"
             " | equal | writes/object | items/object | wall s |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in result["rows"]:
        server = r.get("server")
        seen = (f"{server['write_requests']:,} | {server['items_written']:,}" if server else "– | –")
        lines.append(f"| {r['manifest']} | {r['run']} | {r['objects_listed']:,} | {seen} | {r['report_writes']:,} / "
                     f"{r['report_items_written']:,} | {('yes' if r['counters_match'] else '**no**') if server else '–'}"
                     f" | {r['writes_per_object']:.4f} | {r['items_per_object']:.4f} | {r['wall_s']} |")
    lines += ["", "DynamoDB requests by operation, as the server answered them (requests answered 2xx; errors; "
              "items written):", "", "| run | operation | requests | errors | items |", "|---|---|---|---|---|"]
    for r in result["rows"]:
        for op, c in sorted((r.get("server") or {}).get("by_operation", {}).items()):
            lines.append(f"| {r['run']} | {op} | {c['requests']:,} | {c['errors']:,} | {c['items']:,} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=100_000)
    parser.add_argument("--object-bytes", type=int, default=1024)
    parser.add_argument("--prefixes", type=int, default=100)
    parser.add_argument("--manifests", default="dynamodb", help="comma-separated: dynamodb, sqlite")
    parser.add_argument("--ref", default="HEAD", help="dth-ray code to measure: a git ref or 'worktree'")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="dth-bench-manifest-"))
    result = {"date": started.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:], "objects": args.objects,
              "object_bytes": args.object_bytes, "prefixes": args.prefixes, "machine": machine_info(),
              "dth_ray_code": freeze_code(work / "code", args.ref),
              "setup": "rclone serve s3 (disk) -> rclone serve s3 (disk); DynamoDB = moto server behind a counting "
                       "proxy; shipped defaults, only the manifest's location set", "rows": []}
    src = RcloneS3(*KEYS["BSRC"], root=str(work / "src"))
    dst = RcloneS3(*KEYS["BDST"], root=str(work / "dst"))
    os.makedirs(work / "dst" / BUCKET)
    t0 = time.monotonic()
    seed_on_disk(src.root, args.objects, args.object_bytes, args.prefixes)
    print(f"seeded {args.objects:,} objects in {time.monotonic() - t0:.0f}s", flush=True)
    moto, moto_endpoint = start_moto()
    counter = DynamoCounter(moto_endpoint).start()
    try:
        src.start()
        dst.start()
        setups = {
            "dynamodb": ["manifest=dynamodb", f"manifest.endpoint={counter.endpoint}", "manifest.region=us-east-1",
                         "manifest.credentials=env:MOTO", "manifest.table=bench-manifest"],
            "sqlite": [f"manifest.path={work / 'manifest.sqlite'}"],
        }
        for name in args.manifests.split(","):
            for run in ("first", "no-change rerun"):
                before, cpu0 = counter.counts(), proc_stat(moto.pid)[2]
                report = sync(work / "code", src, dst, f"{name}/", setups[name], work)
                server = server_delta(before, counter.counts()) if name == "dynamodb" else None
                result["rows"].append(row(name, run, report, server, round(proc_stat(moto.pid)[2] - cpu0, 2)))
                print(json.dumps(result["rows"][-1]), flush=True)
    finally:
        counter.stop()
        src.stop(remove_root=False)
        dst.stop(remove_root=False)
        moto.kill()
        shutil.rmtree(work, ignore_errors=True)
    result["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"manifest-{started.strftime('%Y-%m-%d-%H%M')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (results / "manifest-latest.md").write_text(table)
    print("\n" + table + f"\nwritten {out}")
    return 0 if all(r.get("counters_match", True) for r in result["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
