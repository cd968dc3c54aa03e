"""An HTTP/1.1 reverse proxy for tests that injects S3-style faults (5xx, SlowDown, resets, truncated or
corrupted bodies, stalls) between a client and a real local S3 server, reproducibly from a seed.

Transparent when no rule fires: request and response bytes go through unchanged, Host included, so the
client's SigV4 signature (made for the proxy's 127.0.0.1:port) still verifies upstream. Bodies stream in
pieces; only a body fault on a response without Content-Length (chunked, or delimited by close) buffers that
one body, to know where its middle is.

    with FaultProxy(server.endpoint, seed=7) as proxy:
        proxy.add(Rule(truncate(), op="GetObject", times=1))
        client = boto3.client("s3", endpoint_url=proxy.endpoint, ...)

Rules are tried in the order added; the first one that fires decides the request's fault. A rule fires on
a request it matches (method, path regex, query keys, Range) once `after` earlier matches were skipped, at
most `times` times, each time with `probability` (drawn from the rule's own RNG, seeded from the proxy's seed
and the rule's position, so results depend only on the seed and the order of requests). Nothing here
imports pytest. `python -m tests.servers.fault_proxy UPSTREAM` runs a passthrough proxy in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import http
import json
import os
import random
import re
import socket
import struct
import sys
import termios
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlsplit
from xml.sax.saxutils import escape

_PIECE = 256 * 1024  # bytes per read when relaying a body
_LIMIT = 1 << 20  # largest header block accepted; also each stream's buffer limit
_EVENTS_KEPT = 1000  # injected-fault events kept for `events` and the counts file
_S3_CODES = {400: "BadRequest", 403: "AccessDenied", 404: "NoSuchKey", 500: "InternalError",
             502: "BadGateway", 503: "ServiceUnavailable", 504: "GatewayTimeout"}


# -- actions -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Action:
    """What a firing rule does; build one with the functions below rather than directly."""

    kind: str
    status: int = 0
    code: str = ""
    retry_after: float | None = None
    fraction: float = 0.5
    seconds: float = 0.0
    close: bool = False


def status(code: int = 500, s3_code: str | None = None) -> Action:
    """Answer `code` with an S3 XML error body (`<Code>InternalError</Code>` for 500) without forwarding."""
    http.HTTPStatus(code)  # an unknown code fails here, not inside the proxy
    return Action("status", status=code, code=s3_code or _S3_CODES.get(code, "InternalError"))


def slowdown(retry_after: float | None = None) -> Action:
    """Answer 503 SlowDown without forwarding; with a Retry-After header if `retry_after` is given."""
    return Action("slowdown", status=503, code="SlowDown", retry_after=retry_after)


def reset() -> Action:
    """Read the request (not forwarded), then reset the connection (RST) without answering."""
    return Action("reset")


def reset_mid_body(fraction: float = 0.5) -> Action:
    """Forward; send the response headers and the first `fraction` of the body, then reset (RST)."""
    return Action("reset_mid_body", fraction=fraction)


def truncate(fraction: float = 0.5) -> Action:
    """Forward; send the headers unchanged (Content-Length still promises the whole body) and the first
    `fraction` of the body, then close cleanly (FIN)."""
    return Action("truncate", fraction=fraction)


def flip() -> Action:
    """Forward; xor 0xFF into one body byte at a seeded position, every header (ETag, length) unchanged."""
    return Action("flip")


def flip_request() -> Action:
    """Forward with one byte of the request body xor-ed with 0xFF at a seeded position, every header (Content-MD5,
    x-amz-checksum-*, the signature) unchanged: a bit flipped on the way to the server. Bodies with a
    Content-Length only (a chunked one goes through unchanged)."""
    return Action("flip_request")


def stall(seconds: float, close: bool = False) -> Action:
    """Forward; hold the response `seconds` before sending it (or before closing, if `close`)."""
    return Action("stall", seconds=seconds, close=close)


# -- rules -------------------------------------------------------------------------------------------------------

_OBJECT, _BUCKET = r"^/[^/]+/.", r"^/[^/]+/?$"
# op -> (method, path regex, query keys required, query keys refused); path-style addressing
OPS: dict[str, tuple[str, str, tuple[str, ...], tuple[str, ...]]] = {
    "GetObject": ("GET", _OBJECT, (), ("uploadId", "tagging", "acl", "attributes")),
    "HeadObject": ("HEAD", _OBJECT, (), ()),
    "PutObject": ("PUT", _OBJECT, (), ("uploadId", "partNumber", "tagging", "acl")),  # CopyObject too
    "DeleteObject": ("DELETE", _OBJECT, (), ("uploadId",)),
    "CreateMultipartUpload": ("POST", _OBJECT, ("uploads",), ()),
    "UploadPart": ("PUT", _OBJECT, ("uploadId", "partNumber"), ()),  # UploadPartCopy too
    "CompleteMultipartUpload": ("POST", _OBJECT, ("uploadId",), ()),
    "AbortMultipartUpload": ("DELETE", _OBJECT, ("uploadId",), ()),
    "ListParts": ("GET", _OBJECT, ("uploadId",), ()),
    "ListObjectsV2": ("GET", _BUCKET, ("list-type",), ()),
    "ListObjects": ("GET", _BUCKET, (), ("list-type", "uploads", "versions", "location")),
    "DeleteObjects": ("POST", _BUCKET, ("delete",), ()),
}


@dataclass
class Rule:
    """Which requests get `action`, and how often. Every given predicate must hold.

    method: 'GET', 'PUT', ... (None: any). path: a regex searched in the percent-decoded URL path
    ('/bucket/key'). query_has / query_lacks: query keys that must all be present / must all be absent
    ('uploadId', 'partNumber', 'list-type', 'uploads', ...). ranged: True only requests with a Range header,
    False only without. op: an S3 operation name from `OPS` ('GetObject', 'UploadPart', 'ListObjectsV2',
    'CompleteMultipartUpload', ...), adding that operation's method, path shape and query keys.
    after: matches skipped before the rule may fire. times: most firings (None: unlimited).
    probability: chance of firing per eligible match (None: always). name: the key in `counts`.
    """

    action: Action
    method: str | None = None
    path: str | None = None
    query_has: tuple[str, ...] = ()
    query_lacks: tuple[str, ...] = ()
    ranged: bool | None = None
    op: str | None = None
    times: int | None = None
    after: int = 0
    probability: float | None = None
    name: str = ""

    def matches(self, method: str, path: str, query: set[str], ranged: bool) -> bool:
        if self.op is not None:
            op_method, op_path, has, lacks = OPS[self.op]
            if method != op_method or not re.search(op_path, path):
                return False
            if not query.issuperset(has) or query.intersection(lacks):
                return False
        if self.method is not None and method != self.method.upper():
            return False
        if self.path is not None and not re.search(self.path, path):
            return False
        if not query.issuperset(self.query_has) or query.intersection(self.query_lacks):
            return False
        return self.ranged is None or self.ranged == ranged


@dataclass
class _Armed:
    """A rule as added: its RNG and counters."""

    rule: Rule
    name: str
    rng: random.Random
    matched: int = 0
    injected: int = 0


@dataclass
class _Fault:
    action: Action
    event: dict
    draw: float  # from the rule's RNG: where a flip lands, as a fraction of the body


# -- HTTP framing --------------------------------------------------------------------------------------------------

class _Head:
    """A parsed request or response header block; `raw` is kept and forwarded byte for byte."""

    def __init__(self, raw: bytes):
        self.raw = raw
        lines = raw[:-4].decode("latin-1").split("\r\n")
        self.start = lines[0].split(" ", 2)
        self.headers: dict[str, str] = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            key, value = name.strip().lower(), value.strip()
            self.headers[key] = f"{self.headers[key]}, {value}" if key in self.headers else value

    def tokens(self, name: str) -> set[str]:
        return {t.strip().lower() for t in self.headers.get(name, "").split(",") if t.strip()}

    def keep_alive(self, version: str) -> bool:
        connection = self.tokens("connection")
        return "keep-alive" in connection if version == "HTTP/1.0" else "close" not in connection

    def framing(self, no_body: bool) -> tuple[str, int]:
        """('none'|'chunked'|'length'|'eof', length)."""
        if no_body:
            return "none", 0
        if "chunked" in self.tokens("transfer-encoding"):
            return "chunked", 0
        if "content-length" in self.headers:
            return "length", int(self.headers["content-length"].split(",")[0])
        return "eof", 0


def _request_framing(request: _Head) -> tuple[str, int]:
    """A request without Content-Length or chunked encoding has no body (never 'until close')."""
    kind, length = request.framing(no_body=False)
    return ("none", 0) if kind == "eof" else (kind, length)


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """The next header block, or None at a clean end of stream between messages."""
    while True:
        try:
            raw = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError as exc:
            if exc.partial.strip():
                raise ConnectionError("stream ended inside a header block") from exc
            return None
        raw = raw.lstrip(b"\r\n")  # stray CRLFs between messages are allowed (RFC 9112 2.2)
        if raw:
            return raw


async def _pieces(reader: asyncio.StreamReader, kind: str, length: int) -> AsyncIterator[tuple[bytes, bool]]:
    """A body as it is on the wire: (bytes, is_payload) pieces; chunk-size lines and trailers are framing."""
    if kind == "length":
        left = length
        while left:
            data = await reader.read(min(left, _PIECE))
            if not data:
                raise ConnectionError("peer closed inside a body")
            left -= len(data)
            yield data, True
    elif kind == "chunked":
        while True:
            line = await reader.readuntil(b"\r\n")
            size = int(line.split(b";", 1)[0].strip(), 16)
            yield line, False
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    yield trailer, False
                yield trailer, False
                return
            async for piece in _pieces(reader, "length", size):
                yield piece
            yield await reader.readexactly(2), False
    elif kind == "eof":
        while data := await reader.read(_PIECE):
            yield data, True


async def _replay(pieces: Iterable[tuple[bytes, bool]]) -> AsyncIterator[tuple[bytes, bool]]:
    for piece in pieces:
        yield piece


async def _send(pieces: AsyncIterator[tuple[bytes, bool]], writer: asyncio.StreamWriter,
                flip_at: int = -1, cut_at: int | None = None) -> None:
    """Write pieces, xor-ing payload byte `flip_at` and stopping once `cut_at` payload bytes are out."""
    offset = 0
    async for data, payload in pieces:
        if payload:
            if cut_at is not None and offset + len(data) >= cut_at:
                writer.write(data[:cut_at - offset])
                await writer.drain()
                return
            if offset <= flip_at < offset + len(data):
                data = bytearray(data)
                data[flip_at - offset] ^= 0xFF
            offset += len(data)
        writer.write(data)
        await writer.drain()


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with SO_LINGER 0: the peer gets a TCP RST instead of a FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


async def _wait_sent(writer: asyncio.StreamWriter, timeout_s: float = 2.0) -> None:
    """Wait until the peer acknowledged all we wrote, so an RST does not discard what it should receive."""
    writer.transport.set_write_buffer_limits(0)
    await writer.drain()
    fd = writer.get_extra_info("socket").fileno()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        unacked = struct.unpack("i", fcntl.ioctl(fd, termios.TIOCOUTQ, b"\0" * 4))[0]
        if unacked == 0:
            return
        await asyncio.sleep(0.005)


# -- the proxy -----------------------------------------------------------------------------------------------------

class FaultProxy:
    """Listens on 127.0.0.1:`port` (0: any free port) and forwards to `upstream` ('http://host:port').

    `counts_path`, if given, gets {seed, upstream, requests, rules: counts, events} as JSON after each
    injected fault and at `stop()`. `on_answer`, if given, is called as on_answer(method, target, status) in
    the proxy's thread when an upstream's final answer head arrives (e.g. to time when a PUT landed).

    A background thread runs the asyncio loop; `add`, `clear`, `counts`, `events` are thread-safe. Each
    client connection gets its own upstream connection, kept alive as long as both sides allow.
    """

    def __init__(self, upstream: str, seed: int = 1234, counts_path: str | None = None, port: int = 0,
                 on_answer: Callable[[str, str, int], None] | None = None):
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream = (parts.hostname, parts.port or 80)
        self.seed = seed
        self.counts_path = counts_path
        self.on_answer = on_answer
        self.requests = 0  # every request header block received
        self.request_times: list[float] = []  # time.monotonic() of each, in order
        self._rules: list[_Armed] = []
        self._events: list[dict] = []
        self._lock = threading.Lock()
        self._tasks: set[asyncio.Task] = set()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(started,), name="fault-proxy", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fault proxy did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- test API ----------------------------------------------------------------------------------------------

    def add(self, rule: Rule) -> Rule:
        """Append `rule`; its RNG is seeded from the proxy's seed and its position (stable across `clear`)."""
        if rule.op is not None and rule.op not in OPS:
            raise ValueError(f"unknown op {rule.op!r}; known: {', '.join(OPS)}")
        with self._lock:
            index = len(self._rules)
            name = rule.name or f"{index}-{rule.op or rule.method or 'any'}-{rule.action.kind}"
            if any(armed.name == name for armed in self._rules):
                raise ValueError(f"a rule named {name!r} is already in place")
            self._rules.append(_Armed(rule, name, random.Random(f"{self.seed}:{index}")))
        return rule

    def clear(self) -> None:
        """Drop every rule, its counts and the recorded events."""
        with self._lock:
            self._rules.clear()
            self._events.clear()

    @property
    def counts(self) -> dict[str, dict[str, int]]:
        """{rule name: {'matched': requests matching its predicates, 'injected': faults it caused}}."""
        with self._lock:
            return {a.name: {"matched": a.matched, "injected": a.injected} for a in self._rules}

    @property
    def events(self) -> list[dict]:
        """The injected faults in order: rule, method, path, query, action, and a flip's byte position."""
        with self._lock:
            return [dict(e) for e in self._events]

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
        with self._lock:
            self._write_counts()  # the final matched counts too

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- decisions ---------------------------------------------------------------------------------------------

    def _decide(self, request: _Head) -> _Fault | None:
        method, target = request.start[0], request.start[1] if len(request.start) > 1 else "/"
        parts = urlsplit(target)
        path = unquote(parts.path)
        query = {k for k, _ in parse_qsl(parts.query, keep_blank_values=True)}
        ranged = "range" in request.headers
        with self._lock:
            self.requests += 1
            self.request_times.append(time.monotonic())
            for armed in self._rules:
                rule = armed.rule
                if not rule.matches(method, path, query, ranged):
                    continue
                armed.matched += 1
                if armed.matched <= rule.after or (rule.times is not None and armed.injected >= rule.times):
                    continue
                if rule.probability is not None and armed.rng.random() >= rule.probability:
                    continue
                armed.injected += 1
                event = {"rule": armed.name, "method": method, "path": path, "query": parts.query,
                         "action": rule.action.kind}
                if rule.action.status:
                    event["status"] = rule.action.status
                self._events.append(event)
                del self._events[:-_EVENTS_KEPT]
                fault = _Fault(rule.action, event, armed.rng.random())
                self._write_counts()
                return fault
        return None

    def _note(self, event: dict, **details: object) -> None:
        with self._lock:
            event.update(details)
            self._write_counts()

    def _write_counts(self) -> None:
        """Rewrite the counts file (called with the lock held), atomically so a reader never sees half."""
        if not self.counts_path:
            return
        state = {"seed": self.seed, "upstream": f"{self.upstream[0]}:{self.upstream[1]}",
                 "requests": self.requests,
                 "rules": {a.name: {"matched": a.matched, "injected": a.injected} for a in self._rules},
                 "events": self._events}
        temporary = f"{self.counts_path}.tmp"
        with open(temporary, "w") as f:
            json.dump(state, f, indent=1)
        os.replace(temporary, self.counts_path)

    # -- serving -----------------------------------------------------------------------------------------------

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._serve, sock=self._sock, limit=_LIMIT, backlog=256))
        started.set()
        self._loop.run_forever()

    async def _shutdown(self) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        self._tasks.add(task)
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            while (raw := await _read_head(reader)) is not None:
                request = _Head(raw)
                fault = self._decide(request)
                if fault is not None and fault.action.kind in ("status", "slowdown", "reset"):
                    if not await self._answer_locally(request, reader, writer, fault.action):
                        return
                    continue
                if upstream is None or upstream[0].at_eof():
                    if upstream is not None:
                        upstream[1].close()
                    upstream = await asyncio.open_connection(*self.upstream, limit=_LIMIT)
                keep_client, keep_upstream = await self._forward(request, reader, writer, upstream, fault)
                if not keep_upstream:
                    upstream[1].close()
                    upstream = None
                if not keep_client:
                    return
        except (OSError, EOFError, ValueError, IndexError, asyncio.LimitOverrunError, asyncio.IncompleteReadError):
            _rst(writer)  # upstream gone or a broken message: the client sees the connection drop
        except asyncio.CancelledError:
            _rst(writer)  # stop(): end quietly (a cancelled connection task is logged as an error on 3.11)
        finally:
            if upstream is not None:
                upstream[1].close()
            writer.close()
            self._tasks.discard(task)

    async def _answer_locally(self, request: _Head, reader: asyncio.StreamReader,
                              writer: asyncio.StreamWriter, action: Action) -> bool:
        """Consume the request body, then answer `action` ourselves; True if the connection stays open."""
        method, version = request.start[0], request.start[2] if len(request.start) > 2 else "HTTP/1.1"
        if "100-continue" in request.tokens("expect"):
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")  # else the client waits ~1 s before sending
        async for _ in _pieces(reader, *_request_framing(request)):
            pass
        if action.kind == "reset":
            await _wait_sent(writer)
            _rst(writer)
            return False
        writer.write(self._error_response(request, action, method == "HEAD"))
        await writer.drain()
        return request.keep_alive(version)

    def _error_response(self, request: _Head, action: Action, head_only: bool) -> bytes:
        request_id = uuid.uuid4().hex[:16].upper()
        resource = escape(urlsplit(request.start[1]).path if len(request.start) > 1 else "/")
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{action.code}</Code>'
                f"<Message>injected by the test fault proxy</Message><Resource>{resource}</Resource>"
                f"<RequestId>{request_id}</RequestId></Error>").encode()
        lines = [f"HTTP/1.1 {action.status} {http.HTTPStatus(action.status).phrase}",
                 "Content-Type: application/xml", f"Content-Length: {len(body)}",
                 f"x-amz-request-id: {request_id}"]
        if action.retry_after is not None:
            lines.append(f"Retry-After: {action.retry_after:g}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (b"" if head_only else body)

    async def _forward(self, request: _Head, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                       fault: _Fault | None) -> tuple[bool, bool]:
        """Relay one exchange; returns (client connection reusable, upstream connection reusable)."""
        up_reader, up_writer = upstream
        method, version = request.start[0], request.start[2] if len(request.start) > 2 else "HTTP/1.1"
        up_writer.write(request.raw)
        kind, length = _request_framing(request)
        body_read = asyncio.Event()
        pump = None
        if kind != "none":
            flip_at = -1
            if fault is not None and fault.action.kind == "flip_request" and kind == "length" and length:
                flip_at = min(int(fault.draw * length), length - 1)
                self._note(fault.event, position=flip_at, body_length=length)
            # concurrently, so interim 100 Continue answers reach a client that waits for one
            pump = asyncio.create_task(self._pump(_pieces(reader, kind, length), up_writer, body_read, flip_at))
        else:
            await up_writer.drain()
        try:
            while True:
                raw = await _read_head(up_reader)
                if raw is None:
                    raise ConnectionError("upstream closed without answering")
                response = _Head(raw)
                code = int(response.start[1])
                if 100 <= code < 200 and code != 101:
                    writer.write(raw)
                    await writer.drain()
                    continue
                break
            if self.on_answer is not None:
                self.on_answer(method, request.start[1] if len(request.start) > 1 else "/", code)
            action = fault.action if fault is not None else None
            if action is not None and action.kind == "stall":
                await asyncio.sleep(action.seconds)
                if action.close:
                    return False, False
            writer.write(raw)
            no_body = method == "HEAD" or code in (204, 304) or 100 <= code < 200
            body_kind, body_length = response.framing(no_body)
            cut = await self._relay_response(up_reader, writer, body_kind, body_length, fault)
            if cut:
                return False, False
            if pump is not None:
                if not body_read.is_set():
                    return False, False  # answered before the body came (e.g. refused after Expect)
                await pump
            reusable = response.keep_alive(response.start[0]) and body_kind != "eof"
            return reusable and request.keep_alive(version), reusable
        finally:
            if pump is not None and not pump.done():
                pump.cancel()

    @staticmethod
    async def _pump(pieces: AsyncIterator[tuple[bytes, bool]], writer: asyncio.StreamWriter,
                    done: asyncio.Event, flip_at: int = -1) -> None:
        try:
            offset = 0
            async for data, payload in pieces:
                if payload and offset <= flip_at < offset + len(data):
                    data = bytearray(data)
                    data[flip_at - offset] ^= 0xFF
                offset += len(data) if payload else 0
                writer.write(data)
                await writer.drain()
            done.set()
        except (OSError, EOFError, ValueError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            writer.transport.abort()  # the client vanished mid-body: unblock the response read

    async def _relay_response(self, up_reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                              kind: str, length: int, fault: _Fault | None) -> bool:
        """Relay the response body, applying a body fault; True if the connection was cut (FIN or RST)."""
        action = fault.action if fault is not None else None
        pieces = _pieces(up_reader, kind, length)
        if action is None or action.kind not in ("flip", "truncate", "reset_mid_body") or kind == "none":
            await _send(pieces, writer)
            if action is None or action.kind not in ("truncate", "reset_mid_body"):
                return False
            if action.kind == "reset_mid_body":  # no body to cut into: still end as the fault says
                await _wait_sent(writer)
                _rst(writer)
            return True
        if kind != "length":  # the total is needed to place the fault: hold this one body
            held = [piece async for piece in pieces]
            length = sum(len(data) for data, payload in held if payload)
            pieces = _replay(held)
        if action.kind == "flip":
            position = min(int(fault.draw * length), length - 1) if length else -1
            self._note(fault.event, position=position, body_length=length)
            await _send(pieces, writer, flip_at=position)
            return False
        cut_at = int(length * action.fraction)
        self._note(fault.event, cut_at=cut_at, body_length=length)
        await _send(pieces, writer, cut_at=cut_at)
        if action.kind == "reset_mid_body":
            await _wait_sent(writer)
            _rst(writer)
        return True


def main(argv: list[str] | None = None) -> None:
    """Run a passthrough proxy until stdin closes; prints its endpoint on the first line of stdout."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("upstream")
    parser.add_argument("--seed", type=int, default=1234)
    parser.add_argument("--counts-path")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    with FaultProxy(args.upstream, seed=args.seed, counts_path=args.counts_path, port=args.port) as proxy:
        print(proxy.endpoint, flush=True)
        sys.stdin.read()


if __name__ == "__main__":
    main()
