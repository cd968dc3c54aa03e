"""Start real local S3 servers (moto, rclone serve s3) on free loopback ports, and boto3 helpers to seed them.

Used by pytest fixtures and by the demo and benchmarks, so nothing here imports pytest.

Moto runs as a subprocess (`python -m moto.server`), not as `moto.server.ThreadedMotoServer`: in-process it
would share the GIL with the client under test (moto costs ~7 ms of CPU per request, which would skew every
timing), and its backends are module globals that any `mock_aws` in the same process would reset or
intercept. A subprocess also survives Ray starting and stopping in the test process.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from dth_ray.locals3 import RcloneS3

START_TIMEOUT_S = 30.0
_START_ATTEMPTS = 3  # a free port can be taken between probing and binding; retry with a new one
_POLL_INTERVAL_S = 0.05


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def find_binary(name: str) -> str:
    """`name` next to the running interpreter (a venv's bin/), else on PATH. Raises FileNotFoundError."""
    beside = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found next to {sys.executable} or on PATH")
    return found


def _answers_http(url: str) -> bool:
    """True once anything answers HTTP at `url` (any status, including 403 from an authenticating server)."""
    try:
        with urllib.request.urlopen(url, timeout=1.0):
            return True
    except urllib.error.HTTPError:
        return True
    except (urllib.error.URLError, OSError):
        return False


class _Process:
    """A server subprocess whose output goes to a log file (a pipe nobody reads would block it)."""

    def __init__(self, argv: list[str], name: str, env: Mapping[str, str] | None = None):
        self.name = name
        self.log = tempfile.NamedTemporaryFile(prefix=f"{name}-", suffix=".log", delete=False)  # noqa: SIM115
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
        )
        atexit.register(self.stop)  # no orphaned server if the caller dies before stop()

    def wait_until_up(self, url: str, timeout_s: float) -> bool:
        """Poll `url` until it answers; False if the process exited. Raises TimeoutError at the deadline."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return False
            if _answers_http(url):
                return True
            time.sleep(_POLL_INTERVAL_S)
        self.stop()
        raise TimeoutError(f"{self.name} did not answer at {url} within {timeout_s:.0f} s: {self.tail()}")

    def tail(self, size: int = 2000) -> str:
        with open(self.log.name, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - size))
            return f.read().decode("utf-8", "replace")

    def stop(self) -> None:
        atexit.unregister(self.stop)
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.log.close()
        with contextlib.suppress(OSError):
            os.unlink(self.log.name)


def _start(argv_for_port, name: str, url_path: str = "/", env: Mapping[str, str] | None = None,
           timeout_s: float = START_TIMEOUT_S) -> tuple[_Process, int]:
    """Start a server on a free port, retrying with a new port if the process exits (port taken)."""
    last = ""
    for _ in range(_START_ATTEMPTS):
        port = free_port()
        process = _Process(argv_for_port(port), name, env)
        if process.wait_until_up(f"http://127.0.0.1:{port}{url_path}", timeout_s):
            return process, port
        last = process.tail()
        process.stop()
    raise RuntimeError(f"{name} failed to start {_START_ATTEMPTS} times; last output: {last}")


class MotoServer:
    """moto's server in a subprocess: S3, DynamoDB, SQS, SNS, Secrets Manager, CloudWatch on one endpoint.

    Accepts any credentials. `reset()` drops all state (every service).
    """

    def __init__(self, timeout_s: float = START_TIMEOUT_S):
        self._process, self.port = _start(
            lambda port: [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            "moto", "/moto-api/", timeout_s=timeout_s,
        )
        self.endpoint = f"http://127.0.0.1:{self.port}"

    def reset(self) -> None:
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST", data=b"")
        with urllib.request.urlopen(request, timeout=30):
            pass

    def client(self, service: str = "s3", region: str = "us-east-1"):
        """A boto3 client for `service` on this server (dummy credentials)."""
        if service == "s3":
            return s3_client(self.endpoint, "testing-key", "testing-secret", region)
        import boto3

        return boto3.client(service, endpoint_url=self.endpoint, region_name=region,
                            aws_access_key_id="testing-key", aws_secret_access_key="testing-secret")

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self._process.stop()

    def __enter__(self) -> MotoServer:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class RcloneS3Server(RcloneS3):
    """`rclone serve s3` over a directory (or ':memory:') with real SigV4 checks, started at construction.

    The launcher is the product's own (`dth_ray.locals3.RcloneS3`, also used by the demo and benchmarks);
    this adds the test-facing names and an optional bucket. Buckets are created through the S3 API: a
    directory made on disk after start is not picked up reliably. Keys of 2–3 characters are rejected.
    """

    def __init__(self, root: str, access_key: str, secret_key: str, *, bucket: str = "",
                 timeout_s: float = START_TIMEOUT_S):
        if len(secret_key) < 4:
            raise ValueError("rclone rejects keys shorter than 4 characters")
        if root != ":memory:":
            os.makedirs(root, exist_ok=True)
        super().__init__(access_key, secret_key, root=root)
        self.access_key = access_key
        self.secret_key = secret_key
        self.start(timeout_s)
        atexit.register(self.stop)  # no orphaned server if the caller dies before stop()
        self.bucket = self.create_bucket(bucket) if bucket else ""

    def create_bucket(self, name: str) -> str:
        self.client().create_bucket(Bucket=name)
        return name

    def kill(self) -> None:
        """SIGKILL the server and reap it (a crash: no shutdown path runs). The data directory stays."""
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait(10)

    def restart(self, timeout_s: float = START_TIMEOUT_S) -> None:
        """Start again on the same port, root and keys; returns once it answers. Objects on disk survive;
        rclone keeps user metadata in memory only, so that is lost."""
        self.kill()
        self.start(timeout_s, port=self.port)

    def stop(self) -> None:
        atexit.unregister(self.stop)
        super().stop(remove_root=False)

    def __enter__(self) -> RcloneS3Server:
        return self


class RclonePair:
    """Two rclone S3 servers with different key pairs, a "source" and a "destination", one bucket each."""

    def __init__(self, root_dir: str, source_bucket: str = "src-bucket", destination_bucket: str = "dst-bucket"):
        self.source = RcloneS3Server(os.path.join(root_dir, "source"), "SRCACCESSKEY", "src-secret-key-1",
                                     bucket=source_bucket)
        try:
            self.destination = RcloneS3Server(os.path.join(root_dir, "destination"), "DSTACCESSKEY",
                                              "dst-secret-key-2", bucket=destination_bucket)
        except BaseException:
            self.source.stop()
            raise

    def stop(self) -> None:
        self.source.stop()
        self.destination.stop()

    def __enter__(self) -> RclonePair:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def s3_client(endpoint: str, access_key: str, secret_key: str, region: str = "us-east-1", max_pool: int = 32):
    """A boto3 S3 client for a local server: path style, checksums only when required, 5xx retried."""
    import boto3
    from botocore.config import Config

    config = Config(
        s3={"addressing_style": "path"},
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        retries={"max_attempts": 8, "mode": "standard"},
        max_pool_connections=max_pool,
    )
    return boto3.client("s3", endpoint_url=endpoint, region_name=region, aws_access_key_id=access_key,
                        aws_secret_access_key=secret_key, config=config)


def seed_objects(client, bucket: str, items: Mapping[str, bytes] | Iterable[tuple[str, bytes]],
                 workers: int = 16) -> tuple[int, int]:
    """PUT every (key, body) with a thread pool; returns (objects, bytes).

    Items are consumed lazily with at most 2 × workers in flight, so a generator of many objects does not
    sit in memory. 5xx answers (rclone's first concurrent writes into a new directory) are retried by the
    client's standard retry mode (`s3_client`); anything still failing is raised.
    """
    pairs = items.items() if isinstance(items, Mapping) else items
    count = total = 0
    pending: set[Future] = set()

    def put(key: str, body: bytes) -> int:
        client.put_object(Bucket=bucket, Key=key, Body=body)
        return len(body)

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="seed") as pool:
        for key, body in pairs:
            if len(pending) >= 2 * workers:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    total += future.result()
                    count += 1
            pending.add(pool.submit(put, key, body))
        for future in pending:
            total += future.result()
            count += 1
    return count, total
