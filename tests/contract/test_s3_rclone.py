"""The store contract against S3Store talking to `rclone serve s3` (real SigV4 checks), plus auth and timeouts."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid

import pytest

from dth_ray.config import StoreConfig, StoreType
from dth_ray.errors import DthError, PermissionDenied
from dth_ray.stores import open_store
from tests.contract.suite import StoreContract


def rclone_config(endpoint: str, bucket: str, credentials: str = "env:SRC", **overrides) -> StoreConfig:
    settings = {"connect_timeout_s": 5.0, "read_timeout_s": 30.0, **overrides}
    return StoreConfig(type=StoreType.s3, bucket=bucket, endpoint=endpoint, region="us-east-1",
                       credentials=credentials, addressing_style="path", **settings)


class TestS3StoreOnRclone(StoreContract):
    # rclone reports the full-content MD5 for multipart objects in HEAD and listings (TESTING.md).
    multipart_listing_etag_is_md5_of_md5s = False
    # rclone 1.75 answers 200 to a GET with a stale If-Match (it honours If-None-Match only).
    server_checks_if_match = False

    @pytest.fixture
    def store(self, rclone_server, monkeypatch):
        monkeypatch.setenv("SRC_ACCESS_KEY_ID", rclone_server.access_key)
        monkeypatch.setenv("SRC_SECRET_ACCESS_KEY", rclone_server.secret_key)
        return open_store(rclone_config(rclone_server.endpoint, rclone_server.bucket))


def _run_and_close(store, coro_fn):
    async def main():
        try:
            return await coro_fn()
        finally:
            await store.aclose()

    return asyncio.run(main())


@pytest.mark.parametrize("secret", ["wrong-secret-key", ""], ids=["wrong-secret", "unknown-key"])
def test_bad_credentials_are_permission_denied(rclone_pair, monkeypatch, secret):
    server = rclone_pair.source
    monkeypatch.setenv("BAD_ACCESS_KEY_ID", server.access_key if secret else "NOSUCHACCESSKEY")
    monkeypatch.setenv("BAD_SECRET_ACCESS_KEY", secret or server.secret_key)
    store = open_store(rclone_config(server.endpoint, server.bucket, credentials="env:BAD"))

    async def body():
        with pytest.raises(PermissionDenied):
            await store.list_page("")
        with pytest.raises(PermissionDenied):
            await store.head("anything")

    _run_and_close(store, body)


def test_each_server_of_the_pair_accepts_only_its_own_keys(rclone_pair, monkeypatch):
    src, dst = rclone_pair.source, rclone_pair.destination
    assert (src.access_key, src.secret_key) != (dst.access_key, dst.secret_key)
    monkeypatch.setenv("SRC_ACCESS_KEY_ID", src.access_key)
    monkeypatch.setenv("SRC_SECRET_ACCESS_KEY", src.secret_key)
    good = open_store(rclone_config(src.endpoint, src.bucket))
    crossed = open_store(rclone_config(dst.endpoint, dst.bucket))
    empty = f"nothing-here-{uuid.uuid4().hex}/"  # the session's pair may hold other tests' objects
    assert _run_and_close(good, lambda: good.list_page(empty)).objects == []
    with pytest.raises(PermissionDenied):
        _run_and_close(crossed, lambda: crossed.list_page(""))


class SilentServer:
    """A loopback TCP server that accepts connections and never answers (a hung endpoint)."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self._sock.settimeout(0.1)
        self.port = self._sock.getsockname()[1]
        self.connections: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="silent-server", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                continue
            self.connections.append(conn)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.connections:
            conn.close()
        self._sock.close()


def test_hung_endpoint_fails_within_the_read_timeout(monkeypatch):
    server = SilentServer()
    monkeypatch.setenv("SRC_ACCESS_KEY_ID", "SILENTACCESSKEY")
    monkeypatch.setenv("SRC_SECRET_ACCESS_KEY", "silent-secret")
    cfg = rclone_config(f"http://127.0.0.1:{server.port}", "bucket", connect_timeout_s=0.5, read_timeout_s=0.5)
    store = open_store(cfg)
    try:
        started = time.monotonic()
        with pytest.raises(DthError) as caught:
            _run_and_close(store, lambda: store.get("key"))
        elapsed = time.monotonic() - started
    finally:
        server.stop()
    assert caught.value.retryable
    assert server.connections, "the store never reached the server"
    # Each attempt is cut at the read timeout; the store's own retries are few and bounded.
    print(f"hung endpoint: {type(caught.value).__name__} after {elapsed:.2f} s")
    assert elapsed < 4 * cfg.read_timeout_s + 1.0, elapsed
