"""`dth-ray` refuses what cannot work before it reads a byte (exit 2, one line), every AWS service it asks first
gives up within 30 s, and S3 stores follow the AWS SDKs' conventions: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL,
and a bucket in another region followed. The CLI runs in a subprocess against rclone serve s3 (and moto)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.servers.region_proxy import RegionProxy
from tests.servers.s3_servers import seed_objects

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "dth_ray"]
KEYS = "VALKEYS"  # source.credentials=env:VALKEYS


def run_cli(args: list[str], tmp_path: Path, env_extra: dict | None = None, timeout_s: float = 120,
            prefix: tuple[str, ...] = ()) -> tuple[subprocess.CompletedProcess, float]:
    """The CLI as a new user runs it: no AWS_* variable, an empty HOME (no ~/.aws), this checkout's code."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "E2E", KEYS))}
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env.update(HOME=str(home), PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p))
    env.update(env_extra or {})
    started = time.monotonic()
    done = subprocess.run([*prefix, *CLI, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=timeout_s)
    return done, time.monotonic() - started


def one_line(done: subprocess.CompletedProcess) -> str:
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr[-2000:]
    return lines[0]


@pytest.fixture
def keys(rclone_server) -> dict:
    return {f"{KEYS}_ACCESS_KEY_ID": rclone_server.access_key, f"{KEYS}_SECRET_ACCESS_KEY": rclone_server.secret_key}


@pytest.fixture
def seeded(rclone_server) -> str:
    """A fresh prefix holding 12 small objects in the rclone server's bucket."""
    prefix = f"val-{uuid.uuid4().hex[:10]}/"
    seed_objects(rclone_server.client(), rclone_server.bucket, {f"{prefix}o{i}": os.urandom(100 + i) for i in range(12)})
    return prefix


@pytest.fixture
def watched(rclone_server):
    """A proxy in front of the rclone server that lets everything through and records every request."""
    proxy = RegionProxy(rclone_server.endpoint, "us-east-1").start()
    yield proxy
    proxy.stop()


@pytest.fixture
def silent_endpoint():
    """An endpoint that accepts connections and never answers."""
    server = socket.create_server(("127.0.0.1", 0), backlog=64)
    server.settimeout(0.2)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def source_args(endpoint: str, bucket: str, prefix: str) -> list[str]:
    return [f"source.bucket={bucket}", f"source.endpoint={endpoint}", f"source.prefix={prefix}",
            f"source.credentials=env:{KEYS}", "progress=off"]


def test_a_storage_class_typo_exits_2_before_any_request(rclone_server, watched, keys, seeded, tmp_path):
    done, _ = run_cli(["sync", *source_args(watched.endpoint, rclone_server.bucket, seeded),
                       "destination.bucket=elsewhere", f"destination.endpoint={watched.endpoint}",
                       "destination.storage_class=GLACIERR", f"manifest.path={tmp_path / 'm.sqlite'}"],
                      tmp_path, keys)
    assert done.returncode == 2
    line = one_line(done)
    assert line.startswith("dth-ray: error: destination.storage_class='GLACIERR' is not accepted by destination=s3 "
                           "(did you mean GLACIER?); allowed: STANDARD, REDUCED_REDUNDANCY, STANDARD_IA")
    assert watched.seen == [], "nothing was listed or read"
    assert not (tmp_path / "m.sqlite").exists()


def test_a_default_chain_that_finds_nothing_says_so(rclone_server, seeded, tmp_path):
    args = source_args(rclone_server.endpoint, rclone_server.bucket, seeded)
    args[args.index(f"source.credentials=env:{KEYS}")] = "source.credentials=default"
    done, elapsed = run_cli(["sync", *args, "destination=local", f"destination.path={tmp_path / 'out'}",
                             f"manifest.path={tmp_path / 'm.sqlite'}"], tmp_path)
    assert done.returncode == 2
    assert one_line(done).startswith("dth-ray: error: no credentials found for source: tried environment, profile, "
                                     "instance role")
    assert "UnsupportedAlgorithm" not in done.stderr and "unreachable" not in done.stderr
    assert elapsed < 30
    assert not (tmp_path / "out").exists()


def _unwritable(tmp_path: Path) -> tuple[Path, tuple[str, ...]]:
    """A folder this process cannot create files in, and the command prefix that makes it so for root
    (root ignores permission bits unless it gives up CAP_DAC_OVERRIDE)."""
    folder = tmp_path / "read-only"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() != 0:
        return folder, ()
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv: cannot make a folder unwritable")
    return folder, (setpriv, "--bounding-set=-dac_override", "--inh-caps=-dac_override")


@pytest.mark.parametrize("case", ["directory", "missing folder", "unwritable"])
def test_a_report_path_that_cannot_be_written_exits_2_before_anything_runs(rclone_server, watched, keys, seeded,
                                                                           tmp_path, case):
    prefix: tuple[str, ...] = ()
    if case == "directory":
        report = tmp_path / "reports"
        report.mkdir()
        expected = f"report='{report}' is a directory"
    elif case == "missing folder":
        report = tmp_path / "nope" / "r.json"
        expected = f"report='{report}': folder '{report.parent}' does not exist"
    else:
        folder, prefix = _unwritable(tmp_path)
        report = folder / "r.json"
        expected = f"report='{report}' cannot be written in '{folder}' (Permission denied)"
    done, _ = run_cli(["sync", *source_args(watched.endpoint, rclone_server.bucket, seeded), "destination=local",
                       f"destination.path={tmp_path / 'out'}", f"manifest.path={tmp_path / 'm.sqlite'}",
                       f"report={report}"], tmp_path, keys, prefix=prefix)
    assert done.returncode == 2, done.stderr[-2000:]
    assert one_line(done).startswith(f"dth-ray: error: {expected}")
    assert watched.seen == [], "checked before the source was listed"
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.rglob("*.tmp")), "no temporary report file left behind"


def test_the_same_bucket_and_prefix_or_a_nested_destination_is_refused(rclone_server, keys, seeded, tmp_path):
    for dst_prefix, says in ((seeded, "are the same location"), (seeded + "copy/", "is inside")):
        done, _ = run_cli(["sync", *source_args(rclone_server.endpoint, rclone_server.bucket, seeded),
                           f"destination.bucket={rclone_server.bucket}", f"destination.endpoint={rclone_server.endpoint}",
                           f"destination.prefix={dst_prefix}", f"destination.credentials=env:{KEYS}"], tmp_path, keys)
        assert done.returncode == 2
        line = one_line(done)
        assert f"destination.prefix='{dst_prefix}'" in line and says in line and f"source.prefix='{seeded}'" in line


SILENT_SERVICES = {
    "secrets manager": (["source.credentials=secret:dth-missing"], {"AWS_ENDPOINT_URL_SECRETS_MANAGER": "{silent}"},
                        "source.credentials=secret:dth-missing: Secrets Manager in us-east-1 did not answer"),
    "sts": (["source.credentials=role:arn:aws:iam::123456789012:role/dth"], {"AWS_ENDPOINT_URL_STS": "{silent}"},
            "source.credentials=role:arn:aws:iam::123456789012:role/dth: STS in us-east-1 did not answer"),
    "dynamodb": (["manifest=dynamodb", "manifest.endpoint={silent}", f"manifest.credentials=env:{KEYS}"], {},
                 "manifest=dynamodb: DynamoDB at {silent} did not answer"),
    "sqs": (["events=sqs", "events.endpoint={silent}", "events.queue_url={silent}/123456789012/dth-events",
             f"events.credentials=env:{KEYS}", "schedule.interval=none"], {},
            "events.queue_url='{silent}/123456789012/dth-events' is not usable"),
}


@pytest.mark.parametrize("service", list(SILENT_SERVICES))
def test_an_aws_service_that_never_answers_fails_within_30s(rclone_server, keys, seeded, silent_endpoint, tmp_path,
                                                            service):
    extra_args, extra_env, expected = SILENT_SERVICES[service]
    fill = {"silent": silent_endpoint}
    args = [*source_args(rclone_server.endpoint, rclone_server.bucket, seeded), "destination=local",
            f"destination.path={tmp_path / 'out'}", f"manifest.path={tmp_path / 'm.sqlite'}",
            *(a.format(**fill) for a in extra_args)]
    env = {**keys, "AWS_ACCESS_KEY_ID": "base-key-for-the-sdk", "AWS_SECRET_ACCESS_KEY": "base-secret-for-the-sdk",
           **{k: v.format(**fill) for k, v in extra_env.items()}}
    done, elapsed = run_cli(["watch" if service == "sqs" else "sync", *args], tmp_path, env, timeout_s=90)
    assert done.returncode == 2, done.stderr[-2000:]
    assert one_line(done).startswith(f"dth-ray: error: {expected.format(**fill)}")
    assert elapsed < 30, f"{service}: {elapsed:.1f} s"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("variable", ["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"])
def test_an_s3_store_without_an_endpoint_uses_the_sdk_variables(rclone_server, keys, seeded, silent_endpoint,
                                                                tmp_path, variable):
    env = {**keys, variable: rclone_server.endpoint}
    if variable == "AWS_ENDPOINT_URL_S3":
        env["AWS_ENDPOINT_URL"] = silent_endpoint  # the S3-specific one wins, as in the SDKs
    report = tmp_path / "r.json"
    done, _ = run_cli(["sync", f"source.bucket={rclone_server.bucket}", f"source.prefix={seeded}",
                       f"source.credentials=env:{KEYS}", "progress=off", "destination=local",
                       f"destination.path={tmp_path / 'out'}", f"manifest.path={tmp_path / 'm.sqlite'}",
                       f"report={report}"], tmp_path, env)
    assert done.returncode == 0, done.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["objects"] == {"listed": 12, "copied": 12, "skipped": 0, "failed": 0}
    assert data["source"].endswith(f"@{rclone_server.endpoint}")
    assert sorted(os.listdir(tmp_path / "out")) == sorted(f"o{i}" for i in range(12))


def test_a_bucket_in_another_region_is_followed_and_said_once(rclone_server, keys, seeded, tmp_path):
    proxy = RegionProxy(rclone_server.endpoint, "eu-west-1").start()
    try:
        report = tmp_path / "r.json"
        done, _ = run_cli(["sync", *source_args(proxy.endpoint, rclone_server.bucket, seeded), "destination=local",
                           f"destination.path={tmp_path / 'out'}", f"manifest.path={tmp_path / 'm.sqlite'}",
                           f"report={report}"], tmp_path, keys)
    finally:
        proxy.stop()
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads(report.read_text())["objects"]["copied"] == 12
    assert done.stderr.count("is in region eu-west-1, not us-east-1: following it") == 1, done.stderr[-2000:]
    # Preflight learned the region; planning and the copies signed for it from their first request.
    assert proxy.wrong_region_requests() == 1
    assert len(proxy.seen) > 2
