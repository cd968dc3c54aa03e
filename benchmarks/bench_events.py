"""Event latency (issue 19): p50/p95/p99 from an object's PUT at the source to it landing at the destination,
through `dth-ray watch` with events=sqs, at rising event rates (100, 200, 400, ... events/s) until something
saturates, and what: moto's SQS, the watcher, the servers, the load generator or the machine.

Per rate level, everything is fresh: a source `rclone serve s3` (no auth, so the load generator's PUTs are
cheap; dth-ray still signs), a destination `rclone serve s3` behind a passthrough proxy that timestamps each
destination PUT's answer (tests/servers/fault_proxy.py, no faults), moto for SQS, and a `dth-ray watch`
process of the frozen code with shipped defaults (the settings name only where things are, plus
`schedule.interval=none`). The load generator PUTs objects of 1–64 KiB (log-uniform) on a fixed schedule,
and announces each once its PUT returned, as S3 event notifications with several records per message
(`--records`, 10 by default; a partly filled message goes after `--flush-ms`). Latency = the destination's
answer to the watcher's PUT minus the source's answer to ours (one clock, this process). A level saturates
when the load generator falls behind its schedule, fewer than 90% of its events land within 5 s of the last
send, or the median latency exceeds 1 s (events queue somewhere); CPU per component over the send window (and
the machine's, so other work on this shared machine shows) says what was busy, and the first level's CPU per
event projects what would saturate first on an idle machine. Writes
results/events-<date>.json and results/events-latest.md.

usage: python benchmarks/bench_events.py [--rates 100,150,200,300,400,...] [--seconds 20] [--records 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import math
import os
import queue
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote, quote_plus, unquote, urlsplit

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]
from bench_core import (  # noqa: E402
    BIN,
    RESULTS,
    TAG_VAR,
    freeze_code,
    machine_busy_s,
    machine_info,
    own_cpu_s,
    proc_stat,
)
from bench_manifest import start_moto  # noqa: E402 - the same moto server the manifest benchmark uses
from procstats import ProcessSampler  # noqa: E402

from dth_ray.locals3 import RcloneS3, free_port, rclone_binary  # noqa: E402
from tests.servers.fault_proxy import FaultProxy  # noqa: E402

KiB = 1024
BUCKET_SRC, BUCKET_DST = "events-src", "events-dst"
SQS_KEYS = ("bench-events", "bench-events-secret")
DELIVERED_SHARE = 0.9  # a level whose landed share within the window + grace is below this is saturated
GRACE_S = 5.0
QUEUEING_P50_S = 1.0  # a level whose median latency exceeds this is saturated: events wait in a queue somewhere
BEHIND_S = 1.0  # the load generator's p95 lateness beyond which it did not offer the level's rate


class OpenRcloneS3(RcloneS3):
    """`rclone serve s3` without auth keys: any signature (or none) is accepted, so unsigned PUTs are cheap."""

    def start(self, timeout_s: float = 20.0, port: int = 0) -> OpenRcloneS3:
        self.port = port or free_port()
        self._proc = subprocess.Popen(
            [rclone_binary(), "serve", "s3", self.root, "--addr", f"127.0.0.1:{self.port}", "--log-level", "ERROR"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        if not self._wait_ready(timeout_s):
            self.stop(remove_root=False)
            raise RuntimeError("rclone serve s3 did not start")
        return self


def iso(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t * 1000) % 1000:03d}Z"


def s3_message(records: list[tuple[str, int, float]]) -> str:
    """An S3 event notification holding several ObjectCreated:Put records (key, size, event time)."""
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventTime": iso(t),
        "eventName": "ObjectCreated:Put", "userIdentity": {"principalId": "AWS:BENCH"},
        "s3": {"s3SchemaVersion": "1.0", "configurationId": "bench",
               "bucket": {"name": BUCKET_SRC, "arn": f"arn:aws:s3:::{BUCKET_SRC}"},
               "object": {"key": quote_plus(key, safe="/"), "size": size, "sequencer": f"{time.time_ns():X}"}}}
        for key, size, t in records]})


class Landings:
    """When each destination key's PUT was answered 2xx (monotonic s), fed by the proxy's `on_answer`."""

    def __init__(self) -> None:
        self.at: dict[str, float] = {}

    def on_answer(self, method: str, target: str, status: int) -> None:
        if method == "PUT" and 200 <= status < 300:
            path = unquote(urlsplit(target).path)
            self.at.setdefault(path.split("/", 2)[2] if path.count("/") >= 2 else path, time.monotonic())


class Generator:
    """PUTs objects to the source on a schedule and announces them on SQS, `records` per message."""

    def __init__(self, src_endpoint: str, sqs, queue_url: str, records: int, flush_s: float, threads: int = 64):
        self.host, self.port = urlsplit(src_endpoint).hostname, urlsplit(src_endpoint).port
        self.sqs, self.queue_url, self.records, self.flush_s = sqs, queue_url, records, flush_s
        self.put_at: dict[str, float] = {}
        self.late_s: list[float] = []  # how far behind schedule each PUT started
        self.put_errors = 0
        self.messages = 0
        self._local = threading.local()
        self._done: queue.Queue = queue.Queue()
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="put")

    def _put(self, key: str, size: int, due: float) -> None:
        self.late_s.append(time.monotonic() - due)
        body = os.urandom(size)
        for attempt in range(5):  # rclone answers 500 to some concurrent first writes into a new directory
            conn = getattr(self._local, "conn", None) or http.client.HTTPConnection(self.host, self.port, timeout=30)
            self._local.conn = conn
            try:
                conn.request("PUT", f"/{BUCKET_SRC}/{quote(key)}", body=body,
                             headers={"Content-Length": str(size), "Content-Type": "application/octet-stream"})
                response = conn.getresponse()
                response.read()
                if response.status == 200:
                    now = time.monotonic()
                    self.put_at[key] = now
                    self._done.put((key, size, time.time()))
                    return
            except (OSError, http.client.HTTPException):
                self._local.conn = None
                conn.close()
            time.sleep(0.05 * 2 ** attempt)
        self.put_errors += 1

    def run(self, events: list[tuple[str, int]], rate_per_s: float) -> float:
        """Start one PUT per event at `rate_per_s`, announcing each as it lands; returns the start time."""
        sender = threading.Thread(target=self._send_loop, daemon=True)
        sender.start()
        t0 = time.monotonic() + 0.2
        for i, (key, size) in enumerate(events):
            due = t0 + i / rate_per_s
            if (wait := due - time.monotonic()) > 0:
                time.sleep(wait)
            self._pool.submit(self._put, key, size, due)
        self._pool.shutdown(wait=True)
        self._done.put(None)
        sender.join()
        return t0

    def _send_loop(self) -> None:
        """Group announced PUTs into messages of `records` (a partly filled one waits at most `flush_s`) and
        send what is ready, up to 10 messages a call."""
        pending: list[tuple[str, int, float]] = []
        finished = False
        while not finished:
            timeout = pending[0][2] + self.flush_s - time.time() if pending else 1.0
            try:
                items = [self._done.get(timeout=max(0.0, timeout))]
                while not self._done.empty():  # whatever else is ready, without waiting
                    items.append(self._done.get_nowait())
            except queue.Empty:
                items = []
            finished = None in items
            pending += [item for item in items if item is not None]
            messages = []
            while len(pending) >= self.records:
                messages.append(pending[:self.records])
                del pending[:self.records]
            if pending and (finished or time.time() - pending[0][2] >= self.flush_s):
                messages.append(pending)
                pending = []
            for i in range(0, len(messages), 10):
                chunk = messages[i:i + 10]
                self.sqs.send_message_batch(QueueUrl=self.queue_url, Entries=[
                    {"Id": str(n), "MessageBody": s3_message(m)} for n, m in enumerate(chunk)])
                self.messages += len(chunk)


def process_name(pid: int) -> str:
    """A process's command line, shortened (Ray names its workers `ray::Class.method`)."""
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            args = handle.read().split(b"\0")
    except OSError:
        return f"pid {pid} (gone)"
    words = [a.decode(errors="replace") for a in args if a][:4]
    return " ".join(os.path.basename(w) if i == 0 else w for i, w in enumerate(words))[:80]


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def event_plan(count: int, seed: int, prefix: str) -> list[tuple[str, int]]:
    """`count` (key, size) pairs: sizes log-uniform 1–64 KiB, keys over 64 folders."""
    rng = random.Random(seed)
    return [(f"{prefix}/p{i % 64:02d}/k{i:07d}.bin", int(math.exp(rng.uniform(math.log(KiB), math.log(64 * KiB)))))
            for i in range(count)]


def watch_command(code: Path, src: RcloneS3, dst_endpoint: str, moto: str, queue_url: str, run_dir: Path):
    cmd = [str(BIN / "dth-ray"), "watch", "source=s3", f"source.bucket={BUCKET_SRC}",
           f"source.endpoint={src.endpoint}", "source.credentials=env:BSRC", "destination=s3",
           f"destination.bucket={BUCKET_DST}", f"destination.endpoint={dst_endpoint}",
           "destination.credentials=env:BDST", f"manifest.path={run_dir / 'manifest.sqlite'}", "events=sqs",
           f"events.queue_url={queue_url}", f"events.endpoint={moto}", "events.region=us-east-1",
           "events.credentials=env:BSQS", "schedule.interval=none", f"report={run_dir / 'watch.json'}"]
    return cmd, {"PYTHONPATH": str(code), "DTH_RAY_CONF": str(code / "conf")}


class Level:
    """One rate level on fresh servers: start everything, warm up, measure, stop."""

    def __init__(self, code: Path, work: Path, rate: float, args: argparse.Namespace):
        self.code, self.rate, self.args = code, rate, args
        self.dir = Path(tempfile.mkdtemp(prefix=f"events-{int(rate)}-", dir=work))
        self.landings = Landings()

    def run(self) -> dict:
        src = OpenRcloneS3("open", "open", root=str(self.dir / "src"))
        dst = RcloneS3("BENCHDST" + secrets.token_hex(4).upper(), secrets.token_urlsafe(18), root=str(self.dir / "dst"))
        for server, bucket in ((src, BUCKET_SRC), (dst, BUCKET_DST)):
            os.makedirs(Path(server.root) / bucket)
        moto, moto_endpoint = start_moto()
        proxy = watcher = None
        try:
            src.start()
            dst.start()
            proxy = FaultProxy(dst.endpoint, on_answer=self.landings.on_answer)
            import boto3

            sqs = boto3.client("sqs", endpoint_url=moto_endpoint, region_name="us-east-1",
                               aws_access_key_id=SQS_KEYS[0], aws_secret_access_key=SQS_KEYS[1])
            queue_url = sqs.create_queue(QueueName=f"events-{uuid.uuid4().hex[:8]}")["QueueUrl"]
            cmd, env_extra = watch_command(self.code, src, proxy.endpoint, moto_endpoint, queue_url, self.dir)
            tag = uuid.uuid4().hex
            env = {**os.environ, **env_extra, TAG_VAR: tag, "BSRC_ACCESS_KEY_ID": "open",
                   "BSRC_SECRET_ACCESS_KEY": "open", "BDST_ACCESS_KEY_ID": dst.access_key_id,
                   "BDST_SECRET_ACCESS_KEY": dst.secret_access_key, "BSQS_ACCESS_KEY_ID": SQS_KEYS[0],
                   "BSQS_SECRET_ACCESS_KEY": SQS_KEYS[1]}
            with open(self.dir / "watch.out", "wb") as out:
                watcher = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=self.dir,
                                           start_new_session=True)
            sampler = ProcessSampler(tag, watcher.pid)
            warm = self._warm_up(src, sqs, queue_url, watcher)
            result = self._measure(src, sqs, queue_url, {"moto": moto.pid, "source": src._proc.pid,  # noqa: SLF001
                                                         "destination": dst._proc.pid}, sampler)  # noqa: SLF001
            result["warm_up_s"] = warm
            result["watch_report"] = self._stop(watcher)
            watcher = None
            return result
        finally:
            if watcher is not None:
                os.killpg(watcher.pid, signal.SIGKILL)
            if proxy is not None:
                proxy.stop()
            src.stop(remove_root=False)
            dst.stop(remove_root=False)
            moto.kill()

    def _warm_up(self, src, sqs, queue_url: str, watcher: subprocess.Popen) -> float:
        """20 events, waited for until landed (Ray start-up included): the watcher is ready after this."""
        started = time.monotonic()
        gen = Generator(src.endpoint, sqs, queue_url, self.args.records, self.args.flush_ms / 1000)
        plan = event_plan(20, 0, "warm")
        gen.run(plan, 100)
        deadline = time.monotonic() + 240
        while not all(k in self.landings.at for k, _ in plan):
            if watcher.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"watcher not ready: {(self.dir / 'watch.out').read_text()[-3000:]}")
            time.sleep(0.1)
        time.sleep(1.0)
        return time.monotonic() - started

    def _measure(self, src, sqs, queue_url: str, pids: dict[str, int], sampler: ProcessSampler) -> dict:
        seconds, rate = self.args.seconds, self.rate
        plan = event_plan(int(rate * seconds), int(rate), f"r{int(rate)}")
        gen = Generator(src.endpoint, sqs, queue_url, self.args.records, self.args.flush_ms / 1000)
        sampler.sample()
        cpu0 = {name: proc_stat(pid)[2] for name, pid in pids.items()}
        per_pid0 = dict(sampler.cpu_s)
        watcher0, own0, busy0, wall0 = sum(per_pid0.values()), own_cpu_s(), machine_busy_s(), time.monotonic()
        load0 = os.getloadavg()
        t0 = gen.run(plan, rate)
        window_s = time.monotonic() - wall0
        sampler.sample()
        cpu = {name: (proc_stat(pid)[2] - cpu0[name]) / window_s for name, pid in pids.items()}
        cpu["watcher (all its processes)"] = (sum(sampler.cpu_s.values()) - watcher0) / window_s
        busiest = sorted(((v - per_pid0.get(pid, 0.0)) / window_s, pid) for pid, v in sampler.cpu_s.items())[-4:]
        cpu["load generator + proxy (this process)"] = (own_cpu_s() - own0) / window_s
        cpu["machine"] = (machine_busy_s() - busy0) / window_s
        send_end = t0 + len(plan) / rate
        deadline = send_end + max(30.0, seconds)
        while time.monotonic() < deadline and not all(k in self.landings.at for k, _ in plan):
            time.sleep(0.2)
        latencies = [self.landings.at[k] - gen.put_at[k] for k, _ in plan if k in self.landings.at and k in gen.put_at]
        on_time = sum(1 for k, _ in plan if self.landings.at.get(k, math.inf) <= send_end + GRACE_S)
        lateness = percentile(gen.late_s, 0.95) or 0.0
        puts = sorted(gen.put_at[k] for k, _ in plan if k in gen.put_at)
        offered = (len(puts) - 1) / (puts[-1] - puts[0]) if len(puts) > 1 and puts[-1] > puts[0] else None
        return {
            "rate_per_s": rate, "offered_rate_per_s": offered, "seconds": seconds, "events": len(plan),
            "messages": gen.messages,
            "records_per_message": self.args.records, "put_errors": gen.put_errors,
            "generator_p95_behind_schedule_s": round(lateness, 3),
            "landed": len(latencies), "landed_within_window_plus_grace": on_time,
            "landed_share": round(on_time / len(plan), 4),
            "latency_s": {"p50": percentile(latencies, 0.5), "p95": percentile(latencies, 0.95),
                          "p99": percentile(latencies, 0.99), "max": max(latencies, default=None),
                          "mean": statistics.fmean(latencies) if latencies else None},
            "cpu_cores": {k: round(v, 3) for k, v in cpu.items()}, "window_s": round(window_s, 2),
            "cpu_ms_per_event": {k: round(1000 * v / rate, 2) for k, v in cpu.items() if k != "machine"},
            "watcher_busiest_processes": [{"name": process_name(pid), "cores": round(c, 3)}
                                          for c, pid in reversed(busiest)],
            "loadavg_before": " ".join(f"{x:.2f}" for x in load0),
            "loadavg_after": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        }

    def _stop(self, watcher: subprocess.Popen) -> dict | None:
        watcher.send_signal(signal.SIGTERM)
        try:
            watcher.wait(90)
        except subprocess.TimeoutExpired:
            os.killpg(watcher.pid, signal.SIGKILL)
            watcher.wait()
        path = self.dir / "watch.json"
        if not path.exists():
            return None
        doc = json.loads(path.read_text())
        return {k: doc.get(k) for k in ("messages", "events", "outcomes", "latency_s")}


def verdict(level: dict, nproc: int) -> tuple[bool, str]:
    """Whether the level saturated (the generator fell behind, too few events landed in time, or the median
    latency shows queueing), and what was busy: cores per component over the send window, the machine as a
    whole, and the other work on it (the machine less every component measured)."""
    cpu = level["cpu_cores"]
    parts = {k: v for k, v in cpu.items() if k != "machine"}
    other = max(0.0, cpu["machine"] - sum(parts.values()))
    reasons = []
    if level["generator_p95_behind_schedule_s"] > BEHIND_S:
        reasons.append(f"the load generator fell {level['generator_p95_behind_schedule_s']:.1f} s behind (p95)")
    if level["landed_share"] < DELIVERED_SHARE:
        reasons.append(f"only {level['landed_share']:.0%} landed within {GRACE_S:g} s of the last send")
    p50 = level["latency_s"]["p50"]
    if p50 is not None and p50 > QUEUEING_P50_S:
        reasons.append(f"median latency {p50:.2f} s (queueing)")
    busy = []
    if cpu["machine"] >= 0.95 * nproc:
        busy.append(f"the machine's {nproc} cores were busy ({cpu['machine']:.2f}; other work {other:.2f} of them)")
    if cpu.get("moto", 0) >= 0.85:
        busy.append(f"moto (SQS, one Python core) at {cpu['moto']:.2f} cores")
    busiest = max(parts, key=parts.get)
    busy.append(f"busiest component: {busiest} {parts[busiest]:.2f} cores")
    if level.get("watcher_busiest_processes"):
        top = level["watcher_busiest_processes"][0]
        busy.append(f"the watcher's busiest process: {top['name']} {top['cores']:.2f} cores")
    return bool(reasons), "; ".join(reasons + busy)


def projection(level: dict, nproc: int) -> str:
    """What would saturate first on an otherwise idle machine, from one level's CPU per event."""
    per = level["cpu_ms_per_event"]
    total = sum(per.values())
    moto = per.get("moto", 0.0)
    return (f"At {level['rate_per_s']:g} events/s the whole stack spent {total:.1f} ms of CPU per event ("
            + ", ".join(f"{k} {v:.1f}" for k, v in per.items()) + f"): on {nproc} idle cores it would saturate "
            f"near {1000 * nproc / total:,.0f} events/s; moto's SQS alone (one core) near {1000 / moto:,.0f} "
            f"events/s at {level['records_per_message']} records per message." if total and moto else "")


def markdown(result: dict) -> str:
    code = result["dth_ray_code"]
    lines = [f"# Event latency ({result['date']} UTC)", "",
             f"`dth-ray watch` (events=sqs on moto, shipped defaults) at {code['commit'][:10]} ({code['source']}"
             f"{', with uncommitted changes' if code['uncommitted_changes'] else ''}); objects 1–64 KiB; "
             f"{result['records_per_message']} records per message; {result['seconds']} s per level; fresh servers "
             f"and watcher per level. Load average {result['machine']['loadavg_start']} at start, "
             f"{result['loadavg_end']} at end ({result['machine']['nproc']} cores, shared with other work: timings "
             "are noisy).", "",
             "| events/s (offered) | events | landed in window+5 s | p50 s | p95 s | p99 s | max s | moto cores | watcher cores"
             " | source cores | destination cores | generator+proxy cores | machine cores | load avg | saturated |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def f(x) -> str:
        return "–" if x is None else f"{x:.3f}"

    for lv in result["levels"]:
        lat, cpu = lv["latency_s"], lv["cpu_cores"]
        offered = f" ({lv['offered_rate_per_s']:.0f})" if lv.get("offered_rate_per_s") else ""
        lines.append(f"| {lv['rate_per_s']:g}{offered} | {lv['events']:,} | {lv['landed_share']:.1%} | {f(lat['p50'])} | "
                     f"{f(lat['p95'])} | {f(lat['p99'])} | {f(lat['max'])} | {cpu['moto']:.2f} | "
                     f"{cpu['watcher (all its processes)']:.2f} | {cpu['source']:.2f} | {cpu['destination']:.2f} | "
                     f"{cpu['load generator + proxy (this process)']:.2f} | {cpu['machine']:.2f} | "
                     f"{lv['loadavg_before']} | {'**yes**: ' if lv['saturated'] else 'no; '}{lv['why']} |")
    lines += ["", result["conclusion"], "", result.get("projection", "")]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="100,150,200,300,400,600,800,1200,1600", help="events/s per level, rising")
    parser.add_argument("--seconds", type=float, default=20.0, help="send window per level")
    parser.add_argument("--records", type=int, default=10, help="S3 records per SQS message")
    parser.add_argument("--flush-ms", type=float, default=50.0, help="a partly filled message waits at most this")
    parser.add_argument("--ref", default="HEAD", help="dth-ray code to measure: a git ref or 'worktree'")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--all-levels", action="store_true", help="go on past the first saturated level")
    args = parser.parse_args()
    started = dt.datetime.now(dt.timezone.utc)
    work = Path(tempfile.mkdtemp(prefix="dth-bench-events-"))
    result = {"date": started.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:], "machine": machine_info(),
              "dth_ray_code": freeze_code(work / "code", args.ref), "seconds": args.seconds,
              "records_per_message": args.records, "flush_ms": args.flush_ms, "levels": []}
    try:
        for rate in [float(r) for r in args.rates.split(",")]:
            level = Level(work / "code", work, rate, args).run()
            level["saturated"], level["why"] = verdict(level, result["machine"]["nproc"])
            result["levels"].append(level)
            print(json.dumps(level), flush=True)
            if level["saturated"] and not args.all_levels:
                break
    finally:
        shutil.rmtree(work, ignore_errors=True)
    saturated = [lv for lv in result["levels"] if lv["saturated"]]
    result["conclusion"] = (f"Saturated at {saturated[0]['rate_per_s']:g} events/s: {saturated[0]['why']}." if saturated
                            else "No level saturated; raise --rates.")
    if result["levels"]:
        result["projection"] = projection(result["levels"][0], result["machine"]["nproc"])
    result["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"events-{started.strftime('%Y-%m-%d-%H%M')}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (results / "events-latest.md").write_text(table)
    print("\n" + table + f"\nwritten {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
