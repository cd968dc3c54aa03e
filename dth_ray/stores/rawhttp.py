"""A lean HTTP/1.1 client for the S3 data plane: bodies go from and into the caller's buffers.

aiohttp hands a response body over as a stream of new bytes objects (one per socket read, at most 256 KiB),
each then copied into the buffer, and builds every request through several layers of objects. Measured against
a local server when this replaced it (S3Store, signed; two runs each, the test suite loading the machine):
0.24 ms of CPU per 64 KiB GET with aiohttp, 0.16 here; per 8 MiB ranged GET 2.6 ms against 1.65. Here each
socket read lands in the caller's buffer at the next offset (asyncio.BufferedProtocol: one recv_into per
readiness event, as large as the socket has), and a request body
is written in slices of the caller's buffer, waiting for the transport to drain between them: what the socket
takes at once goes from the caller's buffer to the kernel, and only the rest of one slice is copied into the
transport (never a whole body; see SLICE_BYTES). Signing, retries and error mapping stay with the store (S3Store._request).

While a body is read, the socket's SO_RCVLOWAT asks the kernel to wake the event loop only once 1 MiB of it
(or all that is left) has arrived, instead of for every ~64 KiB: per 8 MiB ranged GET from a local server,
1.25 ms of CPU against 1.75 without it (benchmarks/bench_http.py, both alternating, median of 3 rounds).

Keep-alive connections are pooled per host. A request that fails on a pooled connection before any byte of
the answer arrived (the server may have closed it while idle) is sent once more on a new connection; every
other failure is a RawHttpError (an OSError) or asyncio.TimeoutError for the caller's retry loop, and a header
that would break the request (a line break in a value) is a Fatal. A request given up (cancelled, timed out,
the client closed) has its connection aborted: nothing more of it is sent, nothing more lands in its buffer.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import sys
from dataclasses import dataclass
from urllib.parse import urlsplit

from dth_ray.errors import Fatal
from dth_ray.stores.base import StreamedBody

HEAD_BYTES = 16 << 10  # where status line and headers are read (S3 answers use ~1 KiB); grows to MAX_HEAD_BYTES
MAX_HEAD_BYTES = 256 << 10
IDLE_PER_HOST = 64
LOWAT_BYTES = 1 << 20  # a body being read wakes the event loop once this much has arrived (SO_RCVLOWAT)
_TLS_RECORD_BYTES = (16 << 10) + 512  # a TLS record's plaintext, with room for its header and tag
_TLS_LOWAT_BYTES = 192 << 10
# A body is written this much at a time, each slice once the transport has room. What a full socket does not
# take of a slice, Python 3.11's transport copies into its own buffer: measured between two local servers, 1 MiB
# slices had 28% of the large set's bytes (8 × 128 MiB) copied so and 15% of the mixed set's, 256 KiB slices
# 6-7% and 4% (64 KiB: 2%); the driver's CPU differed by less than its run-to-run spread (two runs each).
SLICE_BYTES = 256 << 10
_BODYLESS = ("GET", "HEAD", "DELETE")


class RawHttpError(OSError):
    """The connection failed or the answer was not HTTP/1.1 as expected."""


@dataclass
class Answer:
    """One response. `filled`: body bytes written into the caller's buffer (2xx with `into`), else -1 and the
    body is in `body`. A 2xx body whose length is not the buffer's is not read (filled = its length)."""

    status: int
    headers: dict[str, str]  # lower-case names
    body: bytearray  # read in place (a new one per answer: the caller may keep it)
    filled: int


class _Exchange(asyncio.BufferedProtocol):
    """One connection, carrying one request at a time."""

    def __init__(self, loop: asyncio.AbstractEventLoop, read_timeout_s: float):
        self._loop = loop
        self._read_timeout_s = read_timeout_s
        self.transport: asyncio.Transport | None = None
        self.tcp: socket.socket | None = None  # until its round trip was read (RawHttp._release)
        self.closed = False
        self._head = bytearray(HEAD_BYTES)
        self._sock = None
        self._lowat = 1
        self._unseen_bytes = 0
        self._max_lowat = LOWAT_BYTES
        self._can_write: asyncio.Future | None = None  # set while the transport asked us to pause writing
        self._reset()

    def _reset(self) -> None:
        self._head_len = 0
        self._phase = "idle"  # idle, head, body (into self._target: the caller's buffer or self._body), collect
        self._into: memoryview | None = None
        self._target: memoryview | None = None
        self._filled = 0
        self._length = -1  # body length when known
        self._chunked = False
        self._body = bytearray()
        self._status = 0
        self._headers: dict[str, str] = {}
        self._waiter: asyncio.Future | None = None
        self._got_bytes = False
        self._keep = False
        self._head_only = False
        self._last = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # -- protocol callbacks ---------------------------------------------------------------------------

    def connection_made(self, transport) -> None:
        self.transport = transport
        sock = transport.get_extra_info("socket")
        self.tcp = sock
        self._sock = sock if sock is not None and hasattr(socket, "SO_RCVLOWAT") else None
        self._lowat = 1
        # Over TLS up to one record's worth of the body may already sit in the TLS layer, read but not yet
        # decrypted: the socket then never holds the whole rest, so ask for that much less. And asyncio's TLS
        # layer takes at most 256 KiB from the socket per wake-up: ask for less, so one read drains it.
        tls = transport.get_extra_info("ssl_object") is not None
        self._unseen_bytes = _TLS_RECORD_BYTES if tls else 0
        self._max_lowat = _TLS_LOWAT_BYTES if tls else LOWAT_BYTES

    def _wake_at(self, remaining_bytes: int) -> None:
        """Be woken only once `remaining_bytes` of a body (at most LOWAT_BYTES; over TLS less) are waiting.

        Each wake-up is one pass of the event loop (~10-20 µs of Python): woken for every ~64 KiB that
        arrived, a GiB costs ~16,000 of them. Never more than what is left of the body (else the last bytes
        would not wake us), and back to 1 for the next answer's headers. Measured: see the module's notes."""
        want = max(1, min(self._max_lowat, remaining_bytes - self._unseen_bytes))
        if want != self._lowat and self._sock is not None:
            try:
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                self._lowat = want
            except OSError:
                self._sock = None  # not supported here: one wake-up per read, as before

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._phase == "collect" and self._length < 0 and not self._chunked:
            self._finish()  # a body delimited by the end of the connection
        else:
            self._fail(RawHttpError(f"connection closed{' mid-answer' if self._got_bytes else ''}"
                                    f"{': ' + type(exc).__name__ if exc else ''}"))

    def get_buffer(self, sizehint: int) -> memoryview:
        if self._phase == "body":
            return self._target[self._filled:]
        if self._phase == "head":
            return memoryview(self._head)[self._head_len:]
        return memoryview(self._head)  # collect / drain / idle: a scratch area, copied out in buffer_updated

    def buffer_updated(self, nbytes: int) -> None:
        self._got_bytes = True
        self._last = self._loop.time()
        phase = self._phase
        if phase == "body":
            self._filled += nbytes
            left = len(self._target) - self._filled
            if not left:
                self._finish()
            elif left - self._unseen_bytes < self._lowat:  # the threshold must stay within reach
                self._wake_at(left)
        elif phase == "head":
            self._head_len += nbytes
            self._parse_head()
        elif phase == "collect":
            self._collect(memoryview(self._head)[:nbytes])
        else:  # bytes nobody asked for: the connection is not reusable
            self._fail(RawHttpError("unexpected bytes from the server"))

    def eof_received(self) -> bool:
        return False  # close the transport; connection_lost decides

    def pause_writing(self) -> None:
        if self._can_write is None:
            self._can_write = self._loop.create_future()

    def resume_writing(self) -> None:
        waiter, self._can_write = self._can_write, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- one exchange -----------------------------------------------------------------------------------

    async def exchange(self, head: bytes, body, into: memoryview | None, head_only: bool = False) -> Answer:
        """Send `head` and `body` (bytes-like, may be empty, or a StreamedBody) and wait for the answer (see
        Answer)."""
        self._reset()
        self._into = into
        self._head_only = head_only
        self._phase = "head"
        waiter = self._waiter = self._loop.create_future()
        self._last = self._loop.time()
        self._arm()
        try:
            self.transport.write(head)
            if isinstance(body, StreamedBody):
                await self._send_stream(body, waiter)
            elif body:
                await self._send(memoryview(body).cast("B"), waiter)
            return await waiter
        finally:
            if not waiter.done():  # given up before the answer: nothing is to wait for it any more
                waiter.cancel()
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None

    async def _send(self, view: memoryview, waiter: asyncio.Future) -> bool:
        """Write `view` a slice at a time, each once the transport has room; False when the answer came (or
        the connection failed) before all was sent: the connection is then closed, not reusable."""
        transport = self.transport
        for start in range(0, len(view), SLICE_BYTES):
            if self._can_write is not None:  # the transport's buffer is full: wait, do not copy into it
                await asyncio.wait([self._can_write, waiter], return_when=asyncio.FIRST_COMPLETED)
            if waiter.done():
                return self._answered_early()
            transport.write(view[start:start + SLICE_BYTES])
            self._last = self._loop.time()
        return True

    async def _send_stream(self, body: StreamedBody, waiter: asyncio.Future) -> None:
        """Send a body chunk by chunk as its producer hands them over. A chunk is given back (the next one
        asked for) only once the transport holds no byte of it (see _drained)."""
        transport = self.transport
        # Paused while anything waits in the transport (a TLS transport pauses at >= high, a plain one at
        # > high), resumed once nothing does: the wait for a chunk to leave is woken, not polled.
        transport.set_write_buffer_limits(high=1, low=0)
        sent = 0
        try:
            async for chunk in body.chunks:
                view = memoryview(chunk).cast("B")
                if not await self._send(view, waiter) or not await self._drained(waiter):
                    return
                sent += len(view)
            if sent != body.nbytes:  # the producer's fault (not retried): the request is abandoned
                raise Fatal(f"streamed body gave {sent} bytes of {body.nbytes}")
        finally:
            if not self.closed:
                transport.set_write_buffer_limits()

    async def _drained(self, waiter: asyncio.Future) -> bool:
        """Wait until the transport holds no byte written to it (a plain socket's leftover may be kept as a
        view of the caller's buffer, TLS keeps its backlog so); False when the answer came (or the connection
        failed) first: the connection is then closed."""
        transport = self.transport
        while transport.get_write_buffer_size():
            if waiter.done():
                return self._answered_early()
            if self._can_write is not None:
                await asyncio.wait([self._can_write, waiter], return_when=asyncio.FIRST_COMPLETED)
            else:
                await asyncio.sleep(0.001)  # one byte left, under a plain transport's mark: no event comes
        return True

    def _answered_early(self) -> bool:
        """The answer came (or the connection failed) before the body was all sent: not reusable."""
        self.closed = True
        self.transport.close()
        return False

    def _arm(self) -> None:
        self._timer = self._loop.call_at(self._last + self._read_timeout_s, self._check_idle)

    def _check_idle(self) -> None:
        if self._loop.time() - self._last >= self._read_timeout_s:
            self._fail(asyncio.TimeoutError())
        else:
            self._arm()

    def _parse_head(self) -> None:
        end = self._head.find(b"\r\n\r\n", 0, self._head_len)
        if end < 0:
            if self._head_len == len(self._head):
                if len(self._head) >= MAX_HEAD_BYTES:
                    self._fail(RawHttpError("response headers too large"))
                else:  # a new, larger one: the transport still holds a view of this one
                    self._head = self._head + bytes(len(self._head))
            return
        lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
        parts = lines[0].split(" ", 2)
        if len(parts) < 2 or not parts[0].startswith("HTTP/1.") or not parts[1].isdigit():
            self._fail(RawHttpError("not an HTTP/1.x answer"))
            return
        status = int(parts[1])
        rest = memoryview(self._head)[end + 4:self._head_len]
        if 100 <= status < 200:  # an interim answer (we never ask for one): skip it
            rest = bytes(rest)
            self._head[:len(rest)] = rest
            self._head_len = len(rest)
            self._parse_head()
            return
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                name = name.strip().lower()
                value = value.strip()
                headers[name] = f"{headers[name]}, {value}" if name in headers else value
        self._status, self._headers = status, headers
        self._keep = parts[0] == "HTTP/1.1" and "close" not in headers.get("connection", "").lower()
        self._chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        length = headers.get("content-length", "")
        self._length = int(length) if length.isdigit() and not self._chunked else -1
        if self._head_only or status in (204, 304):
            self._length = 0
        into = self._into
        if into is not None and (status >= 300 or self._chunked or self._length < 0):
            into = self._into = None  # an error answer or an unframed body: never into the caller's buffer
        if into is not None and self._length != len(into):
            self._keep = False  # not read: the caller treats a wrong length as a dropped connection
            self._filled = self._length
            self._finish()
            return
        if self._length >= 0:  # a known length: read in place, into the caller's buffer or one of that size
            if into is None:
                self._body = bytearray(self._length)
            self._target = into if into is not None else memoryview(self._body)
            take = min(len(rest), self._length)
            self._target[:take] = rest[:take]
            self._filled = take
            if take < len(rest):
                self._keep = False
            self._phase = "body"
            if take == self._length:
                self._finish()
            else:
                self._wake_at(self._length - take)
            return
        self._phase = "collect"
        data = bytes(rest)  # the scratch area is reused by the next read
        self._collect(memoryview(data))

    def _collect(self, data: memoryview) -> None:
        self._body += data
        if self._chunked:
            body = _dechunk(self._body)
            if body is not None:
                self._body = bytearray(body)
                self._finish()

    def _finish(self) -> None:
        waiter, self._waiter = self._waiter, None
        if self._lowat != 1:
            self._wake_at(1)
        filled = self._filled if self._into is not None else -1
        self._phase = "idle"
        if not self._keep and self.transport is not None:
            self.transport.close()
            self.closed = True
        answer = Answer(self._status, self._headers, self._body, filled)
        self._release_buffers()
        if waiter is not None and not waiter.done():
            waiter.set_result(answer)

    def _release_buffers(self) -> None:
        """Keep no reference to the caller's buffer or the answer's body: a pooled connection must not hold
        memory the byte budget counts as given back."""
        self._into = self._target = None
        self._body = bytearray()

    def abandon(self) -> None:
        """Drop the connection mid-exchange (the caller gave up): nothing more lands in its buffer, and what
        the transport still holds of the request is not sent (abort, not close: a close would flush it, and
        a request body completed that way would still be stored)."""
        self._into = None
        transport = self.transport
        self._fail(RawHttpError("abandoned"))
        if transport is not None:
            transport.abort()

    def _fail(self, exc: BaseException) -> None:
        waiter, self._waiter = self._waiter, None
        self._phase = "idle"
        self._release_buffers()
        self.closed = True
        if self.transport is not None:
            self.transport.close()
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)


_TCPI_MIN_RTT_OFFSET = 148  # struct tcp_info (linux/tcp.h, since 4.10): tcpi_min_rtt, a u32 in microseconds


def tcp_rtt_s(sock) -> float | None:
    """The least round-trip time the kernel saw on a TCP connection (Linux TCP_INFO `tcpi_min_rtt`: the
    path's own delay), or None where it is not known. Not the smoothed RTT: on a loaded machine delayed ACKs
    and busy peers lift that to 10-14 ms even on loopback (seen on the mixed set with Ray); nor the time a
    request takes, which a busy event loop stretches too."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCPI_MIN_RTT_OFFSET + 4)
    except (AttributeError, OSError):  # not Linux, not a TCP socket, or closed
        return None
    if len(info) < _TCPI_MIN_RTT_OFFSET + 4:  # an older kernel
        return None
    rtt_us = int.from_bytes(info[_TCPI_MIN_RTT_OFFSET:_TCPI_MIN_RTT_OFFSET + 4], sys.byteorder)
    return rtt_us / 1e6 if rtt_us and rtt_us != 0xFFFFFFFF else None  # ~0U: no sample yet


def _dechunk(raw: bytearray) -> bytes | None:
    """The body of a complete chunked message, None while incomplete (error answers only: small)."""
    out, pos = bytearray(), 0
    while True:
        eol = raw.find(b"\r\n", pos)
        if eol < 0:
            return None
        size_text = bytes(raw[pos:eol]).split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError as exc:
            raise RawHttpError("malformed chunked body") from exc
        if size == 0:
            return bytes(out) if raw.find(b"\r\n\r\n", eol) >= 0 else None  # the last chunk, then the end
        start = eol + 2
        if len(raw) < start + size + 2:
            return None
        out += raw[start:start + size]
        pos = start + size + 2


class RawHttp:
    """Keep-alive connections per host and the requests sent on them; one per store and event loop."""

    def __init__(self, scheme: str, connect_timeout_s: float, read_timeout_s: float,
                 ssl_context: ssl.SSLContext | None = None):
        self._scheme = scheme
        self._connect_timeout_s = connect_timeout_s
        self._read_timeout_s = read_timeout_s
        self._ssl = ssl_context if scheme == "https" else None
        if scheme == "https" and self._ssl is None:
            self._ssl = ssl.create_default_context()
        self._idle: dict[str, list[_Exchange]] = {}
        self._active: set[_Exchange] = set()  # connections with a request on them
        self._closed = False
        self.rtt_s: float | None = None  # the least round trip of the newest connection that answered (tcp_rtt_s)

    async def request(self, method: str, host: str, target: str, headers: dict[str, str], body=b"",
                      into: memoryview | None = None) -> Answer:
        """Send `method target` (path and query, already encoded) to `host` with `headers` (signed; Host and
        Content-Length are added) and `body` (bytes-like, or a StreamedBody: sent once, never again on a new
        connection). `into`: where a 2xx answer's body goes (see Answer). Raises RawHttpError or
        asyncio.TimeoutError."""
        lines = [f"{method} {target} HTTP/1.1"]
        if not any(k.lower() == "host" for k in headers):
            lines.append(f"Host: {host}")
        lines.extend(f"{k}: {v}" for k, v in headers.items())
        if any("\r" in line or "\n" in line for line in lines):  # would end the header early: never sent
            raise Fatal("a request header holds a line break")
        streamed = isinstance(body, StreamedBody)
        size = body.nbytes if streamed else memoryview(body).nbytes if body else 0
        if size or method not in _BODYLESS:
            lines.append(f"Content-Length: {size}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode()
        for _ in range(2):
            conn, reused = await self._acquire(host)
            self._active.add(conn)
            try:
                answer = await conn.exchange(head, body, into, head_only=method == "HEAD")
            except RawHttpError:
                if reused and not conn._got_bytes and not streamed:  # noqa: SLF001 - a stale pooled connection
                    continue  # once more (a streamed body cannot be sent twice: its chunks are given back)
                raise
            except BaseException:  # cancelled or timed out: the buffer goes back to its owner, never written again
                conn.abandon()
                raise
            finally:
                self._active.discard(conn)
            if not conn.closed:
                self._release(host, conn)
            return answer
        raise RawHttpError("connection closed")

    async def _acquire(self, host: str) -> tuple[_Exchange, bool]:
        idle = self._idle.get(host)
        while idle:
            conn = idle.pop()
            if not conn.closed and not conn.transport.is_closing():
                return conn, True
        loop = asyncio.get_running_loop()
        where = urlsplit(f"//{host}")
        name = where.hostname or host
        port = where.port or (443 if self._scheme == "https" else 80)
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: _Exchange(loop, self._read_timeout_s), name, port,
                                       ssl=self._ssl, server_hostname=name if self._ssl else None),
                self._connect_timeout_s)
        except OSError as exc:  # refused, unreachable, a certificate that does not verify, ...
            raise RawHttpError(f"connect failed: {type(exc).__name__}") from None
        return conn, False

    def _release(self, host: str, conn: _Exchange) -> None:
        if conn.tcp is not None:  # once per connection: its least round trip is known after one exchange
            self.rtt_s = tcp_rtt_s(conn.tcp) or self.rtt_s
            conn.tcp = None
        idle = self._idle.setdefault(host, [])
        if len(idle) < IDLE_PER_HOST and not self._closed:
            idle.append(conn)
        else:
            conn.transport.close()

    def close(self) -> None:
        """Close every connection: the idle ones, and those still in use (their requests fail, as with an
        HTTP session closed under them)."""
        self._closed = True
        for idle in self._idle.values():
            for conn in idle:
                if conn.transport is not None:
                    conn.transport.close()
        self._idle.clear()
        for conn in list(self._active):
            conn.abandon()
