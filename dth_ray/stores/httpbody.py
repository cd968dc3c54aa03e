"""A request body that aiohttp sends in bounded slices of the caller's buffer, so large PUTs cost no copy.

Given a whole buffer, aiohttp joins it with the request headers (`b"".join`, one copy) and asyncio's selector
transport copies whatever the first send() does not take into its own buffer (a second copy, of almost all
of it): two copies and their page faults per object. Written in slices, each write is small enough to go
out nearly at once, and `StreamWriter.write` drains between slices, so the transport's buffer stays small
and the bytes go from the caller's (reused) buffer to the socket.
"""

from __future__ import annotations

from typing import Any

from aiohttp.payload import Payload

SLICE_BYTES = 1 << 20


class SlicedBody(Payload):
    """The bytes of `value` (bytes, bytearray or memoryview), written `SLICE_BYTES` at a time."""

    def __init__(self, value: bytes | bytearray | memoryview, **kwargs: Any):
        view = memoryview(value).cast("B")
        super().__init__(view, content_type="application/octet-stream", **kwargs)
        self._size = view.nbytes

    def decode(self, encoding: str = "utf-8", errors: str = "strict") -> str:
        return bytes(self._value).decode(encoding, errors)

    async def as_bytes(self, encoding: str = "utf-8", errors: str = "strict") -> bytes:
        return bytes(self._value)

    async def write(self, writer) -> None:
        await self.write_with_length(writer, None)

    async def write_with_length(self, writer, content_length: int | None) -> None:
        view = self._value if content_length is None else self._value[:content_length]
        for start in range(0, len(view), SLICE_BYTES):
            await writer.write(view[start:start + SLICE_BYTES])
