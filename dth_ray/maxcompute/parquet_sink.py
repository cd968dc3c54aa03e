"""Parquet files streamed straight into S3 multipart uploads, with memory bounded by construction.

Arrow batches are buffered until they make one row group (`row_group_bytes`), encoded by pyarrow into a
write-only file object whose bytes leave as parts of `part_size_bytes` (each with its Content-MD5, its ETag
checked), at most `parts_in_flight` uploading at once; a file is closed once it reaches `file_size_bytes`.
Peak payload memory ≈ row_group_bytes + (parts_in_flight + 1) × part_size_bytes (+ the encoder's row group).
Nothing touches local disk. A file smaller than one part becomes one PUT.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import hashlib
import io
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from dth_ray.errors import IntegrityError
from dth_ray.maxcompute.plan import FileInfo
from dth_ray.model import ByteRange, ObjectHeaders, PartInfo
from dth_ray.plan.parts import multipart_etag

PARQUET_TYPE = "application/vnd.apache.parquet"


class LoopThread:
    """An asyncio loop on a daemon thread, so blocking code (pyodps, the Parquet encoder) can drive the async
    stores. `run` blocks for a result; `submit` returns a concurrent future."""

    def __init__(self, name: str = "dth-mc-io"):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()

    def submit(self, coro) -> concurrent.futures.Future:
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    def run(self, coro):
        return self.submit(coro).result()

    def close(self) -> None:
        if self._loop.is_running():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        if not self._loop.is_running():
            self._loop.close()


class MultipartSink(io.RawIOBase):
    """A write-only file for pyarrow whose bytes become one S3 object (a PUT, or a multipart upload)."""

    def __init__(self, store, key: str, loop: LoopThread, part_size_bytes: int, parts_in_flight: int):
        super().__init__()
        self.key = key
        self._store = store
        self._loop = loop
        self._part_size = part_size_bytes
        self._max_in_flight = max(1, parts_in_flight)
        self._buffer = bytearray()
        self._position = 0
        self._upload_id = ""
        self._part_md5s: list[bytes] = []
        self._in_flight: deque[concurrent.futures.Future] = deque()
        self._etags: dict[int, str] = {}
        self._check_md5 = store.features.single_put_etag_is_md5
        self._check_multipart = store.features.multipart_etag_is_md5_of_md5s

    # -- file protocol (what pyarrow's PythonFile calls) ---------------------------------------------------
    def writable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def tell(self) -> int:
        return self._position

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        self._buffer += view
        self._position += len(view)
        while len(self._buffer) >= self._part_size:
            part = bytes(self._buffer[:self._part_size])
            del self._buffer[:self._part_size]
            self._send_part(part)
        return len(view)

    def flush(self) -> None:
        return None

    def close(self) -> None:  # pyarrow closes its handle when the Parquet footer is written; finish() commits
        super().close()

    # -- S3 ---------------------------------------------------------------------------------------------------
    def _send_part(self, data: bytes) -> None:
        if not self._upload_id:
            headers = ObjectHeaders(content_type=PARQUET_TYPE)
            self._upload_id = self._loop.run(self._store.create_multipart(self.key, headers))
        while len(self._in_flight) >= self._max_in_flight:
            self._in_flight.popleft().result()  # bounded: wait for the oldest part before holding another
        number = len(self._part_md5s) + 1
        digest = hashlib.md5(data).digest()
        self._part_md5s.append(digest)
        self._in_flight.append(self._loop.submit(self._upload_part(number, data, digest)))

    async def _upload_part(self, number: int, data: bytes, digest: bytes) -> None:
        etag = await self._store.upload_part(self.key, self._upload_id, number, data, digest)
        if self._check_md5 and etag and etag != digest.hex():
            raise IntegrityError(f"part {number} of {self.key} ETag does not match the MD5 of the bytes sent")
        self._etags[number] = etag

    def finish(self) -> tuple[str, int]:
        """Commit the object; returns (ETag, size). Raises a DthError (the caller aborts)."""
        if not self._upload_id:
            data = bytes(self._buffer)
            digest = hashlib.md5(data).digest()
            result = self._loop.run(self._store.put(self.key, data, ObjectHeaders(content_type=PARQUET_TYPE), digest))
            if self._check_md5 and result.etag and result.etag != digest.hex():
                raise IntegrityError(f"{self.key}: ETag does not match the MD5 of the bytes sent")
            self._buffer.clear()
            return result.etag, self._position
        if self._buffer:
            self._send_part(bytes(self._buffer))
            self._buffer.clear()
        while self._in_flight:
            self._in_flight.popleft().result()
        sizes = [self._part_size] * (len(self._part_md5s) - 1) + [self._position - self._part_size *
                                                                 (len(self._part_md5s) - 1)]
        parts = [PartInfo(n, self._etags[n], sizes[n - 1]) for n in range(1, len(self._part_md5s) + 1)]
        result = self._loop.run(self._store.complete_multipart(self.key, self._upload_id, parts))
        if self._check_multipart and result.etag and result.etag != multipart_etag(self._part_md5s):
            raise IntegrityError(f"{self.key}: multipart ETag does not match the parts sent")
        self._upload_id = ""
        return result.etag, self._position

    def abort(self) -> None:
        """Drop what was sent (best effort; the runner also sweeps the partition's open uploads)."""
        for future in self._in_flight:
            future.cancel()
        for future in self._in_flight:
            try:
                future.result()
            except BaseException:  # noqa: BLE001 - the upload is being abandoned either way
                continue
        self._in_flight.clear()
        self._buffer.clear()
        if self._upload_id:
            with contextlib.suppress(Exception):  # the sweep at finalisation catches what this misses
                self._loop.run(self._store.abort_multipart(self.key, self._upload_id))
            self._upload_id = ""


@dataclass(frozen=True)
class WriterSettings:
    file_size_bytes: int
    row_group_bytes: int
    part_size_bytes: int
    parts_in_flight: int
    compression: str = "zstd"
    coerce_timestamps: str = ""
    metadata: tuple[tuple[str, str], ...] = ()


class ParquetFiles:
    """Arrow batches in, Parquet files out: `name(i)` names the i-th file (deterministic, so a redone shard
    overwrites its own files). `finish()` returns the files written, with their rows and bytes."""

    def __init__(self, store, loop: LoopThread, name: Callable[[int], str], settings: WriterSettings):
        self._store = store
        self._loop = loop
        self._name = name
        self._settings = settings
        self._batches: list[pa.RecordBatch] = []
        self._buffered_bytes = 0
        self._sink: MultipartSink | None = None
        self._writer: pq.ParquetWriter | None = None
        self._file_rows = 0
        self.files: list[FileInfo] = []

    def write(self, batch: pa.RecordBatch) -> None:
        if batch.num_rows == 0:
            return
        self._batches.append(batch)
        self._buffered_bytes += batch.nbytes
        if self._buffered_bytes >= self._settings.row_group_bytes:
            self._flush_row_group()

    def _flush_row_group(self) -> None:
        if not self._batches:
            return
        table = pa.Table.from_batches(self._batches)
        self._batches, self._buffered_bytes = [], 0
        if self._writer is None:
            self._open(table.schema)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self._file_rows += table.num_rows
        if self._sink.tell() >= self._settings.file_size_bytes:
            self._close_file()

    def _open(self, schema: pa.Schema) -> None:
        s = self._settings
        self._sink = MultipartSink(self._store, self._name(len(self.files)), self._loop, s.part_size_bytes,
                                   s.parts_in_flight)
        meta = dict(schema.metadata or {})
        meta.update({k.encode(): v.encode() for k, v in s.metadata})
        self._writer = pq.ParquetWriter(
            self._sink, schema.with_metadata(meta), compression=None if s.compression == "none" else s.compression,
            coerce_timestamps=s.coerce_timestamps or None, allow_truncated_timestamps=False, version="2.6",
            write_statistics=True)
        self._file_rows = 0

    def _close_file(self) -> None:
        self._writer.close()
        etag, size = self._sink.finish()
        self.files.append(FileInfo(self._sink.key, self._file_rows, size, etag))
        self._writer, self._sink = None, None

    def finish(self) -> list[FileInfo]:
        self._flush_row_group()
        if self._writer is not None:
            self._close_file()
        return self.files

    def abort(self) -> None:
        self._batches = []
        if self._writer is not None:
            with contextlib.suppress(Exception):  # the file is abandoned
                self._writer.close()
        if self._sink is not None:
            self._sink.abort()
        self._writer, self._sink = None, None


class RangedFile(io.RawIOBase):
    """A read-only, seekable view of a stored object through ranged GETs, so pyarrow can read a Parquet footer
    (`pq.read_metadata`) without fetching the file."""

    def __init__(self, store, key: str, size: int, loop: LoopThread):
        super().__init__()
        self._store, self._key, self._size, self._loop = store, key, size, loop
        self._pos = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read(self, size: int = -1) -> bytes:
        end = self._size if size is None or size < 0 else min(self._size, self._pos + size)
        if end <= self._pos:
            return b""
        got = self._loop.run(self._store.get(self._key, ByteRange(self._pos, end)))
        self._pos = end
        return got.data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)


def parquet_rows(store, key: str, size: int, loop: LoopThread) -> int:
    """Rows in a stored Parquet file, from its footer alone. Raises IntegrityError if it is not Parquet."""
    try:
        return pq.read_metadata(RangedFile(store, key, size, loop)).num_rows
    except (pa.ArrowInvalid, OSError) as exc:
        raise IntegrityError(f"{key} is not a readable Parquet file ({type(exc).__name__})") from exc
