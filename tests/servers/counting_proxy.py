"""A byte-counting HTTP reverse proxy for kill/resume tests: counts request-body bytes sent to the upstream,
the PUTs in flight, their payload bytes and the PUT bodies that got no 2xx answer, so a test can bound what a
resumed run sent again.

Headers go through unchanged (Host included), so the client's SigV4 signature still verifies upstream.
"""

from __future__ import annotations

import asyncio
import socket
import threading

import aiohttp
from aiohttp import web

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization"}


class CountingProxy:
    """Forward every request to `upstream`; `body_bytes` counts request bodies as they arrive, `put_bytes` the
    PUT bodies (object and part payloads), `failed_bytes` the PUT bodies answered other than 2xx or cut off (a
    client sends those again)."""

    def __init__(self, upstream: str):
        self.upstream = upstream.rstrip("/")
        self.body_bytes = 0
        self.put_bytes = 0
        self.failed_bytes = 0
        self.puts_in_flight = 0
        self.max_put_bytes = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> CountingProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def snapshot(self) -> tuple[int, int]:
        with self._lock:
            return self.body_bytes, self.puts_in_flight

    def payload(self) -> tuple[int, int]:
        """(PUT body bytes, of which answered other than 2xx or cut off)."""
        with self._lock:
            return self.put_bytes, self.failed_bytes

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(runner.setup())

        async def open_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(auto_decompress=False)

        self._session = self._loop.run_until_complete(open_session())
        self._loop.run_until_complete(web.SockSite(runner, self._sock).start())
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        is_put = request.method == "PUT"
        if is_put:
            with self._lock:
                self.puts_in_flight += 1
        received, answered = 0, False
        try:
            chunks = []
            async for chunk in request.content.iter_chunked(1 << 16):
                chunks.append(chunk)
                received += len(chunk)
                with self._lock:
                    self.body_bytes += len(chunk)
                    self.put_bytes += len(chunk) if is_put else 0
            body = b"".join(chunks)
            headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
            async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body,
                skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent", "Accept"),
            ) as upstream:
                payload = await upstream.read()
                out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP | {"content-length"}}
                answered = 200 <= upstream.status < 300
                return web.Response(status=upstream.status, body=payload, headers=out)
        finally:
            if is_put and not answered:
                with self._lock:
                    self.failed_bytes += received
            if is_put:
                with self._lock:
                    self.puts_in_flight -= 1
                    self.max_put_bytes = max(self.max_put_bytes, request.content_length or 0)

    def stop(self) -> None:
        async def close() -> None:
            await self._session.close()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
