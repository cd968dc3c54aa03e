"""Helpers for the console's tests: `dth-ray console` as a subprocess (its printed URL read back), plain HTTP
requests with a fresh connection each, and waiting for a condition instead of sleeping."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from urllib.parse import urlsplit

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SCREENSHOTS = os.path.join(REPO, "tests", "output", "console")  # gitignored; kept after the run


class Console:
    """`python -m dth_ray console ARGS` until stop(); `.url` is what it printed (token included, if any)."""

    def __init__(self, *args: str, env: dict | None = None, timeout_s: float = 60.0):
        self.proc = subprocess.Popen([sys.executable, "-m", "dth_ray", "console", "console.port=0", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": REPO, **(env or {})})
        deadline = time.monotonic() + timeout_s
        line = ""
        while time.monotonic() < deadline:
            line = self.proc.stdout.readline()
            if line or self.proc.poll() is not None:
                break
        match = re.search(r"(http://\S+)", line)
        if not match:
            self.stop()
            raise AssertionError(f"the console did not start: {line!r} {self.proc.stderr.read()}")
        self.url = match.group(1)
        parts = urlsplit(self.url)
        self.port = parts.port
        self.base = f"http://127.0.0.1:{self.port}"

    def stop(self) -> str:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.stderr.read() if self.proc.stderr else ""


def get(base: str, path: str, headers: dict | None = None, method: str = "GET") -> tuple[int, dict, str]:
    """(status, headers with lower-case names, body) of one request (redirects not followed)."""
    parts = urlsplit(base)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=30)
    try:
        conn.request(method, path, headers=headers or {})
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", "replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


def wait_for(condition, timeout_s: float = 60.0, what: str = "condition", interval_s: float = 0.1):
    """The first truthy value of `condition()`, polled until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(interval_s)
