"""The wake-up threshold (SO_RCVLOWAT) of stores/rawhttp.py stays within what the socket will still receive:
above it, the last bytes of a body would never wake the event loop and the read would stall until its timeout.
Pure logic on a recording socket (the TLS and plain cases); the real-socket behaviour is in
tests/integration/test_rawhttp.py."""

from __future__ import annotations

import asyncio
import socket

import pytest

from dth_ray.stores import rawhttp


class RecordingSocket:
    def __init__(self) -> None:
        self.lowat = 1

    def setsockopt(self, level, option, value) -> None:
        assert (level, option) == (socket.SOL_SOCKET, socket.SO_RCVLOWAT)
        self.lowat = value


class Transport:
    def __init__(self, tls: bool) -> None:
        self.sock, self.tls, self.written = RecordingSocket(), tls, []

    def get_extra_info(self, name):
        return {"socket": self.sock, "ssl_object": object() if self.tls else None}.get(name)

    def write(self, data) -> None:
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass


def feed(exchange, data: bytes) -> None:
    """What the event loop does with bytes that arrived: get_buffer, copy, buffer_updated."""
    while data:
        buf = exchange.get_buffer(-1)
        n = min(len(buf), len(data))
        buf[:n] = data[:n]
        exchange.buffer_updated(n)
        data = data[n:]


@pytest.mark.parametrize("tls", [True, False], ids=["tls", "plain"])
@pytest.mark.parametrize("chunk", [8 * 1024, 100 * 1024, 333 * 1024])
def test_the_threshold_never_passes_what_is_left_of_the_body(tls, chunk):
    async def main():
        loop = asyncio.get_running_loop()
        exchange = rawhttp._Exchange(loop, 5.0)  # noqa: SLF001
        transport = Transport(tls)
        exchange.connection_made(transport)
        size = 3 * 1024 * 1024 + 12345
        out = bytearray(size)
        task = asyncio.ensure_future(exchange.exchange(b"GET / HTTP/1.1\r\n\r\n", b"", memoryview(out)))
        await asyncio.sleep(0)
        feed(exchange, f"HTTP/1.1 206 Partial Content\r\nContent-Length: {size}\r\n\r\n".encode())
        unseen = rawhttp._TLS_RECORD_BYTES if tls else 0  # noqa: SLF001
        body, sent, seen = bytes(range(256)) * (size // 256 + 1), 0, []
        while sent < size:
            n = min(chunk, size - sent)
            feed(exchange, body[sent:sent + n])
            sent += n
            left = size - sent
            if left:
                seen.append(transport.sock.lowat)
                assert transport.sock.lowat <= max(1, left - unseen), (left, transport.sock.lowat)
        answer = await task
        return answer, out, body, seen, transport.sock.lowat

    answer, out, body, seen, final = asyncio.run(main())
    assert answer.filled == len(out) and out == body[:len(out)]
    assert max(seen) > 64 * 1024, "the threshold was raised while much of the body was left"
    assert final == 1, "back to 1 for the next answer's headers"


def test_the_kernel_round_trip_of_a_loopback_connection_is_read_from_tcp_info():
    """tcp_rtt_s reads the kernel's smoothed RTT (Linux TCP_INFO): tens of microseconds on loopback, well
    under the 10 ms that makes a source near; None for a socket that is not a connected TCP one."""
    import socket

    from dth_ray.stores.rawhttp import tcp_rtt_s

    with socket.create_server(("127.0.0.1", 0)) as server, socket.create_connection(server.getsockname()) as client:
        peer, _ = server.accept()
        with peer:
            for _ in range(3):
                client.sendall(b"x" * 1000)
                peer.recv(1000)
                peer.sendall(b"y")
                client.recv(1)
            rtt_s = tcp_rtt_s(client)
    assert rtt_s is not None and 0 < rtt_s < 0.010
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        assert tcp_rtt_s(udp) is None
