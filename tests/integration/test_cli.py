"""The `dth-ray` command as a user runs it: exit codes, one-line errors, nothing written, no secrets shown."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from tests.integration.helpers import listing, s3_overrides
from tests.servers.s3_servers import seed_objects

CLI = [sys.executable, "-m", "dth_ray"]


def run_cli(args: list[str], cwd, env_extra: dict | None = None, timeout_s: float = 240):
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E")}
    env.update(env_extra or {})
    return subprocess.run(CLI + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout_s)


@pytest.fixture(scope="module")
def creds(rclone_pair) -> dict:
    src, dst = rclone_pair.source, rclone_pair.destination
    return {"E2ESRC_ACCESS_KEY_ID": src.access_key, "E2ESRC_SECRET_ACCESS_KEY": src.secret_key,
            "E2EDST_ACCESS_KEY_ID": dst.access_key, "E2EDST_SECRET_ACCESS_KEY": dst.secret_key}


@pytest.fixture
def silent_endpoint():
    """A loopback port that accepts connections and never answers (an endpoint that hangs)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
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


BAD = [
    (["source=ftp"], "source=ftp"),
    (["source.bucket=bkt1", "destination.bucket=dst1", "transfer.concurrenc=3"], "transfer.concurrenc"),
    (["source.bucket=bkt1", "destination.bucket=dst1", "transfer.part_size=3XB"], "transfer.part_size='3XB'"),
    (["source.bucket=bkt1", "destination.bucket=dst1", "transfer.part_size=1MiB"], "transfer.part_size='1MiB'"),
    (["source.bucket=bkt1", "destination.bucket=dst1", "transfer.copy_cutoff=6GiB"], "transfer.copy_cutoff='6GiB'"),
    (["source.bucket=bkt1", "destination.bucket=dst1", "transfer.get_range_size=64KiB"],
     "transfer.get_range_size='64KiB'"),
    (["source.bucket=bkt1", "destination.bucket=dst1", "compare=bogus"], "compare='bogus'"),
    (["destination.bucket=dst1"], "source.bucket"),
    (["source.bucket=bkt1", "destination.bucket=dst1", "source.credentials=vault:x"], "source.credentials='vault:x'"),
    (["source.bucket=bkt1", "destination.bucket=dst1", "source.endpoint=http://example.com"],
     "source.endpoint='http://example.com'"),
    (["source=local", "source.path=/nonexistent/dir", "destination=local", "destination.path=/tmp/x"],
     "source.path='/nonexistent/dir'"),
]


@pytest.mark.parametrize(("args", "named"), BAD)
def test_bad_config_is_one_line_naming_the_value(args, named, tmp_path):
    report = tmp_path / "r.json"
    result = run_cli(["sync", *args, f"report={report}"], cwd=tmp_path)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert named in lines[0]
    assert not report.exists()
    assert os.listdir(tmp_path) == [], "no Hydra outputs/ or other files in the working directory"


def test_missing_bucket_and_wrong_secret_write_nothing(rclone_pair, creds, tmp_path, unique_prefix):
    pair = rclone_pair
    seed_objects(pair.source.client(), pair.source.bucket, {unique_prefix + "a": b"1"})
    base = s3_overrides(pair, unique_prefix, unique_prefix, str(tmp_path / "m.sqlite"))
    wrong = dict(creds, E2EDST_SECRET_ACCESS_KEY="not-the-secret")
    result = run_cli(["sync", *base, f"report={tmp_path / 'r.json'}"], cwd=tmp_path, env_extra=wrong)
    assert result.returncode == 2
    assert "destination.credentials='env:E2EDST' were refused" in result.stderr
    assert "not-the-secret" not in result.stderr + result.stdout
    missing = [a if not a.startswith("destination.bucket=") else "destination.bucket=no-such-bucket" for a in base]
    result = run_cli(["sync", *missing], cwd=tmp_path, env_extra=creds)
    assert result.returncode == 2
    assert "destination.bucket='no-such-bucket' does not exist" in result.stderr
    assert listing(pair.destination.client(), pair.destination.bucket, unique_prefix) == {}
    assert not (tmp_path / "r.json").exists()


def test_unreachable_endpoint_fails_within_30s(silent_endpoint, tmp_path, creds):
    started = time.monotonic()
    result = run_cli(["sync", "source.bucket=bkt1", f"source.endpoint={silent_endpoint}", "source.read_timeout_s=5",
                      "source.credentials=env:E2ESRC", "destination=local", f"destination.path={tmp_path / 'out'}"],
                     cwd=tmp_path, env_extra=creds)
    elapsed = time.monotonic() - started
    assert result.returncode == 2
    assert "source.endpoint" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert elapsed < 30
    assert not (tmp_path / "out").exists()


def test_cli_sync_report_and_no_secret_anywhere(rclone_pair, creds, tmp_path, unique_prefix):
    pair = rclone_pair
    seed_objects(pair.source.client(), pair.source.bucket,
                 {unique_prefix + f"f{i}": os.urandom(100 + i) for i in range(25)})
    manifest = tmp_path / "state" / "m.sqlite"
    report = tmp_path / "report.json"
    args = ["sync", *s3_overrides(pair, unique_prefix, "cli/" + unique_prefix, str(manifest)),
            f"report={report}", "log_level=DEBUG"]
    result = run_cli(args, cwd=tmp_path, env_extra=creds)
    assert result.returncode == 0, result.stderr[-2000:]
    data = json.loads(report.read_text())
    assert data["status"] == "succeeded"
    assert data["objects"] == {"listed": 25, "copied": 25, "skipped": 0, "failed": 0}
    assert data["bytes"]["copied"] == sum(100 + i for i in range(25))
    for key in ("duration_s", "bytes_per_s", "part_size_bytes", "failures"):
        assert key in data
    assert "succeeded: 25 listed, 25 copied" in result.stdout
    secrets = [creds["E2ESRC_SECRET_ACCESS_KEY"], creds["E2EDST_SECRET_ACCESS_KEY"]]
    blobs = [result.stdout, result.stderr, report.read_text()]
    blobs += [p.read_bytes().decode("latin-1") for p in manifest.parent.iterdir()]
    for secret in secrets:
        assert all(secret not in blob for blob in blobs)
    assert sorted(os.listdir(tmp_path)) == ["report.json", "state"]


def test_a_plain_s3_sync_imports_only_what_it_uses(rclone_pair, creds, tmp_path, unique_prefix):
    """A copy between S3-compatible stores that Ray need not help imports no Ray, pyarrow (inventories only),
    aiohttp (the S3 client is our own), oss2, pyodps or boto3: each would cost start-up CPU and memory."""
    pair = rclone_pair
    seed_objects(pair.source.client(), pair.source.bucket, {unique_prefix + f"k{i}": os.urandom(1000) for i in range(5)})
    args = ["sync", *s3_overrides(pair, unique_prefix, unique_prefix, str(tmp_path / "m.sqlite")),
            "destination.checksum=md5"]  # no CRC probe: awscrt is for destinations that check CRC64NVME
    probe = ("import json, sys\nfrom dth_ray.cli import main\ncode = main(json.loads(sys.argv[1]))\n"
             "heavy = [m for m in ('ray', 'pyarrow', 'numpy', 'aiohttp', 'oss2', 'odps', 'boto3', 'botocore',\n"
             "                     'awscrt') if m in sys.modules]\n"
             "print(json.dumps({'code': code, 'heavy': heavy}))\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("E2E")}
    result = subprocess.run([sys.executable, "-c", probe, json.dumps(args)], cwd=tmp_path, env={**env, **creds},
                            capture_output=True, text=True, timeout=240)
    found = json.loads(result.stdout.strip().splitlines()[-1])
    assert found == {"code": 0, "heavy": []}, result.stderr[-2000:]
    assert len(listing(pair.destination.client(), pair.destination.bucket, unique_prefix)) == 5
