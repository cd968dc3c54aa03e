"""The lean HTTP/1.1 client (stores/rawhttp.py) against real sockets: a scripted server on loopback answers each
request the way a test needs (framing, early answers, stalls, closed keep-alive connections)."""

from __future__ import annotations

import asyncio
import os

import pytest

from dth_ray.errors import Fatal
from dth_ray.stores.rawhttp import RawHttp, RawHttpError


class Script:
    """A loopback HTTP server; `answer(request_head, body)` returns the bytes to send (or None: close)."""

    def __init__(self, answer, read_body: bool = True):
        self.answer = answer
        self.read_body = read_body
        self.requests: list[tuple[bytes, bytes]] = []
        self.connections = 0
        self._writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self):
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.host = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc):
        for writer in self._writers:  # the handlers see the end of their connection and return
            writer.close()
        await asyncio.sleep(0.01)
        self.server.close()
        await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.append(writer)
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length) if self.read_body else b""
                self.requests.append((head, body))
                out = self.answer(head, body)
                if out is None:
                    break
                if callable(out):
                    await out(writer)
                else:
                    writer.write(out)
                    await writer.drain()
                    if b"connection: close" in out.lower():
                        break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def ok(body: bytes, extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


def run(coro):
    return asyncio.run(coro)


def test_a_body_lands_in_the_buffer_and_the_connection_is_kept():
    payload = bytes(range(256)) * 4096  # 1 MiB

    async def main():
        async with Script(lambda head, body: ok(payload, "ETag: \"abc\"\r\n")) as server:
            client = RawHttp("http", 5, 5)
            out = bytearray(len(payload))
            first = await client.request("GET", server.host, "/b/k", {"Range": "bytes=0-1048575"}, into=memoryview(out))
            second = await client.request("GET", server.host, "/b/k", {}, into=memoryview(out))
            (pooled,) = client._idle[server.host]  # noqa: SLF001
            # A pooled connection keeps no reference to the caller's buffer (the budget may drop it).
            assert pooled._into is None and len(pooled._body) == 0  # noqa: SLF001
            client.close()
            return first, second, out, server

    first, second, out, server = run(main())
    assert (first.status, first.filled, first.body) == (200, len(payload), b"")
    assert first.headers["etag"] == '"abc"' and second.filled == len(payload)
    assert out == payload
    assert server.connections == 1  # the second request reused the first connection
    assert server.requests[0][0].startswith(b"GET /b/k HTTP/1.1\r\n") and b"Range: bytes=0-1048575" in server.requests[0][0]


def test_a_put_body_is_sent_whole_from_a_view_with_its_length():
    payload = bytes(range(251)) * 20_000  # ~5 MiB: several slices, the transport pauses between them

    async def main():
        async with Script(lambda head, body: ok(b"", "ETag: \"e\"\r\n")) as server:
            client = RawHttp("http", 5, 5)
            answer = await client.request("PUT", server.host, "/b/k", {"Content-MD5": "x"}, memoryview(payload))
            empty = await client.request("POST", server.host, "/b/k?uploads", {})
            client.close()
            return answer, empty, server

    answer, empty, server = run(main())
    assert answer.status == 200 and answer.filled == -1
    head, body = server.requests[0]
    assert f"Content-Length: {len(payload)}".encode() in head and body == payload
    assert b"Content-Length: 0" in server.requests[1][0]  # S3 wants a length on a POST without a body


def test_an_error_answer_is_read_into_body_whatever_its_framing():
    xml = b"<Error><Code>AccessDenied</Code></Error>"
    chunked = (b"HTTP/1.1 403 Forbidden\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % 10 + xml[:10] + b"\r\n" + b"%x\r\n" % (len(xml) - 10) + xml[10:] + b"\r\n0\r\n\r\n")
    answers = iter([chunked, b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\n" + xml])

    async def main():
        async with Script(lambda head, body: next(answers)) as server:
            client = RawHttp("http", 5, 5)
            out = bytearray(100)
            first = await client.request("GET", server.host, "/b/k", {}, into=memoryview(out))
            second = await client.request("GET", server.host, "/b/k", {}, into=memoryview(out))
            client.close()
            return first, second, out

    first, second, out = run(main())
    assert (first.status, first.body, first.filled) == (403, xml, -1)
    assert (second.status, second.body) == (404, xml)  # delimited by the end of the connection
    assert out == bytearray(100)  # an error body never lands in the caller's buffer


def test_a_2xx_body_of_another_length_is_not_read_and_the_connection_is_dropped():
    async def main():
        async with Script(lambda head, body: ok(b"x" * 50)) as server:
            client = RawHttp("http", 5, 5)
            out = bytearray(100)
            answer = await client.request("GET", server.host, "/b/k", {}, into=memoryview(out))
            again = await client.request("GET", server.host, "/b/k", {}, into=memoryview(bytearray(50)))
            client.close()
            return answer, again, server

    answer, again, server = run(main())
    assert answer.filled == 50  # the store retries this like a dropped connection
    assert again.filled == 50 and server.connections == 2


def test_a_pooled_connection_the_server_closed_is_replaced_once_silently():
    async def close_after(writer):  # answers as if it kept the connection, then closes it
        writer.write(ok(b"hi"))
        await writer.drain()
        raise ConnectionError

    async def main():
        async with Script(lambda head, body: close_after) as server:
            client = RawHttp("http", 5, 5)
            first = await client.request("GET", server.host, "/a", {})
            second = await client.request("GET", server.host, "/b", {})  # on the pooled, closed connection
            await asyncio.sleep(0.05)
            third = await client.request("GET", server.host, "/c", {})
            client.close()
            return first, second, third, server

    first, second, third, server = run(main())
    assert first.body == second.body == third.body == b"hi"
    assert [head.split(b" ")[1] for head, _ in server.requests] == [b"/a", b"/b", b"/c"]
    assert server.connections == 3


async def stall(writer):
    """An answer that sends its headers and 10 of its 100 bytes, then nothing."""
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
    await writer.drain()
    await asyncio.sleep(5)


def test_an_answer_that_stalls_times_out_and_a_refused_connect_is_an_oserror():
    async def main():
        async with Script(lambda head, body: stall) as server:
            client = RawHttp("http", 5, 0.3)
            out = bytearray(100)
            loop = asyncio.get_running_loop()
            started = loop.time()
            with pytest.raises(asyncio.TimeoutError):
                await client.request("GET", server.host, "/b/k", {}, into=memoryview(out))
            took = loop.time() - started
            port = int(server.host.split(":")[1])
        with pytest.raises(RawHttpError):  # the server is gone: connection refused
            await client.request("GET", f"127.0.0.1:{port}", "/b/k", {})
        client.close()
        return took, out

    took, out = run(main())
    assert 0.3 <= took < 2.0
    assert out[:10] == b"0123456789"


def test_an_early_answer_stops_the_body_and_a_cancelled_read_never_writes_the_buffer_again():
    big = bytes(32 << 20)
    denied = b"HTTP/1.1 403 Forbidden\r\nContent-Length: 6\r\n\r\ndenied"

    async def slow(writer):
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n" + b"a" * 10)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.write(b"b" * 990)
        await writer.drain()

    async def main():
        async with Script(lambda head, body: denied, read_body=False) as server:
            client = RawHttp("http", 5, 5)
            answer = await client.request("PUT", server.host, "/b/k", {}, memoryview(big))
            client.close()
        async with Script(lambda head, body: slow) as server:
            client = RawHttp("http", 5, 5)
            out = bytearray(1000)
            task = asyncio.ensure_future(client.request("GET", server.host, "/b/k", {}, into=memoryview(out)))
            await asyncio.sleep(0.1)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await asyncio.sleep(0.5)  # the server sends the rest meanwhile
            client.close()
        return answer, out

    answer, out = run(main())
    assert (answer.status, answer.body) == (403, b"denied")
    assert out[:10] == b"a" * 10 and out[10:] == bytes(990)


def test_large_headers_and_a_body_without_a_buffer_are_read_whole():
    meta = "".join(f"x-amz-meta-k{i}: {'v' * 100}\r\n" for i in range(400))  # ~45 KiB of headers
    payload = os.urandom(3 << 20)

    async def main():
        async with Script(lambda head, body: ok(payload, meta)) as server:
            client = RawHttp("http", 5, 5)
            answer = await client.request("GET", server.host, "/b/k", {})
            client.close()
            return answer

    answer = run(main())
    assert answer.status == 200 and answer.body == payload and answer.filled == -1
    assert len([k for k in answer.headers if k.startswith("x-amz-meta-")]) == 400


def self_signed(tmp_path):
    """A certificate for 127.0.0.1 and its key, as PEM files."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_over_tls_a_body_lands_in_the_buffer_and_an_untrusted_certificate_is_refused(tmp_path):
    import ssl

    cert, key = self_signed(tmp_path)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))
    payload, small = os.urandom(16 << 20), os.urandom((1 << 20) + 3)
    # Sizes about the wake-up threshold (192 KiB over TLS, one record less than what is left): none may stall.
    edges = [os.urandom(n) for n in (200 * 1024 + 7, 190 * 1024, 17 * 1024, 400 * 1024 + 1)]
    answers = iter([ok(payload), ok(small), *(ok(e) for e in edges)])

    async def main():
        handler = Script(lambda head, body: next(answers))
        server = await asyncio.start_server(handler._serve, "127.0.0.1", 0, ssl=server_ctx)
        host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            out = bytearray(len(payload))
            client = RawHttp("https", 5, 5, trusting)
            answer = await client.request("GET", host, "/b/k", {}, into=memoryview(out))
            # the same connection again: its headers are read at once (the wake-up threshold was reset)
            again = await client.request("GET", host, "/b/k2", {})
            assert again.body == small and handler.connections == 1
            for edge in edges:
                buf = bytearray(len(edge))
                got = await client.request("GET", host, "/b/e", {}, into=memoryview(buf))
                assert got.filled == len(edge) and buf == edge
            with pytest.raises(RawHttpError, match="SSLCertVerificationError"):  # TLS verifies by default
                await RawHttp("https", 5, 5).request("GET", host, "/b/k", {})
        finally:
            for writer in handler._writers:  # noqa: SLF001
                writer.close()
            server.close()
        return answer, out

    answer, out = run(main())
    assert answer.status == 200 and answer.filled == len(payload) and out == payload


def test_a_header_with_a_line_break_is_never_sent():
    async def main():
        async with Script(lambda head, body: ok(b"")) as server:
            client = RawHttp("http", 5, 5)
            with pytest.raises(Fatal, match="line break"):
                await client.request("PUT", server.host, "/b/k", {"x-amz-meta-a": "v\r\nx-amz-acl: public-read"})
            client.close()
            return server

    assert run(main()).requests == []


def test_closing_the_client_fails_a_request_still_in_flight():
    async def main():
        async with Script(lambda head, body: stall) as server:
            client = RawHttp("http", 5, 30)
            task = asyncio.ensure_future(client.request("GET", server.host, "/b/k", {}))
            await asyncio.sleep(0.2)
            started = asyncio.get_running_loop().time()
            client.close()
            with pytest.raises(RawHttpError):
                await task
            return asyncio.get_running_loop().time() - started

    assert run(main()) < 1.0


def test_a_chunked_2xx_body_comes_back_whole_and_the_store_puts_it_in_the_buffer():
    payload = os.urandom(5000)
    chunked = (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
               + b"%x\r\n" % 3000 + payload[:3000] + b"\r\n" + b"%x\r\n" % 2000 + payload[3000:] + b"\r\n0\r\n\r\n")

    async def main():
        async with Script(lambda head, body: chunked) as server:
            client = RawHttp("http", 5, 5)
            out = bytearray(len(payload))
            answer = await client.request("GET", server.host, "/b/k", {}, into=memoryview(out))
            client.close()
            return answer, out

    answer, out = run(main())
    # Not framed by a length, so not read into the buffer here: the body comes back whole and S3Store copies
    # it into the buffer when its length is the buffer's (stores/s3.py, _request).
    assert (answer.status, answer.filled, bytes(answer.body)) == (200, -1, payload)
    assert out == bytearray(len(payload))


def test_a_store_request_that_cannot_connect_says_why():
    import socket as socket_mod

    from dth_ray.config import StoreConfig, StoreType
    from dth_ray.errors import Transient
    from dth_ray.stores.s3 import S3Store

    probe = socket_mod.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens there now
    store = S3Store(StoreConfig(type=StoreType.s3, bucket="bkt", endpoint=f"http://127.0.0.1:{port}",
                                credentials="anonymous"), "source")

    async def main():
        try:
            await store.head("k")
        finally:
            await store.aclose()

    with pytest.raises(Transient, match=r"S3 HEAD failed: connect failed: ConnectionRefusedError"):
        run(main())


class SlowReader:
    """A loopback server that waits before reading a request's body (so the client's socket and transport fill
    up), then reads `Content-Length` bytes or until the client drops the connection; answers 200."""

    def __init__(self, delay_s: float):
        self.delay_s = delay_s
        self.bodies: list[bytes] = []
        self.cut = 0  # requests whose body ended before its length

    async def serve(self, reader, writer):
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:"))
            await asyncio.sleep(self.delay_s)
            try:
                body = await reader.readexactly(length)
            except asyncio.IncompleteReadError:
                self.cut += 1
                return
            self.bodies.append(body)
            writer.write(ok(b"", "ETag: \"s\"\r\n"))
            await writer.drain()
        finally:
            writer.close()


def _one_buffer_chunks(count: int, chunk_bytes: int, handed: list[int]):
    """`count` chunks, all in ONE reused buffer: when the next one is asked for, the buffer is written over with
    the next chunk's bytes at once, so a sender still holding the previous chunk would send the wrong bytes."""
    buf = bytearray(chunk_bytes)

    async def chunks():
        for i in range(count):
            buf[:] = bytes([i % 251]) * chunk_bytes
            handed.append(i)
            yield memoryview(buf)

    return chunks()


@pytest.mark.parametrize("tls", [False, True])
def test_a_streamed_body_is_sent_whole_though_its_producer_reuses_each_chunk_at_once(tmp_path, tls):
    """The client asks for the next chunk only when the transport holds nothing of the one before (the server
    does not read for a while, so socket and transport are full): the bytes sent are exactly the chunks.
    (Python 3.11's transports copy what they keep, so there this holds even without the wait; from 3.12 a
    plain transport keeps a view of the caller's bytes, and this test fails without it.)"""
    import ssl

    from dth_ray.stores.base import StreamedBody

    count, chunk = 24, 2 << 20  # 48 MiB: far more than the socket buffers take while the server waits
    handed: list[int] = []
    slow = SlowReader(0.3)

    async def main():
        server_ctx = client_ctx = None
        if tls:
            cert, key = self_signed(tmp_path)
            server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            server_ctx.load_cert_chain(cert, key)
            client_ctx = ssl.create_default_context(cafile=str(cert))
        server = await asyncio.start_server(slow.serve, "127.0.0.1", 0, ssl=server_ctx)
        host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            client = RawHttp("https" if tls else "http", 5, 10, client_ctx)
            body = StreamedBody(count * chunk, _one_buffer_chunks(count, chunk, handed))
            answer = await client.request("PUT", host, "/b/k", {}, body)
            client.close()
            return answer
        finally:
            server.close()

    answer = run(main())
    assert answer.status == 200 and handed == list(range(count))
    (got,) = slow.bodies
    assert got == b"".join(bytes([i % 251]) * chunk for i in range(count))


def test_a_streamed_body_whose_producer_fails_is_abandoned_and_never_sent_again():
    """The producer fails after two chunks (a source read that failed): the request raises that error, the
    server sees the connection end before the body's length, and nothing is sent again."""
    from dth_ray.errors import Transient
    from dth_ray.stores.base import StreamedBody

    slow = SlowReader(0.0)

    async def failing():
        yield memoryview(bytes(1 << 20))
        yield memoryview(bytes(1 << 20))
        raise Transient("source read failed")

    async def main():
        server = await asyncio.start_server(slow.serve, "127.0.0.1", 0)
        host = f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
        try:
            client = RawHttp("http", 5, 5)
            with pytest.raises(Transient, match="source read failed"):
                await client.request("PUT", host, "/b/k", {}, StreamedBody(8 << 20, failing()))
            await asyncio.sleep(0.2)
            idle = sum(len(v) for v in client._idle.values())  # noqa: SLF001
            client.close()
            return idle
        finally:
            server.close()

    assert run(main()) == 0  # the connection was dropped, not pooled
    assert slow.cut == 1 and slow.bodies == []
