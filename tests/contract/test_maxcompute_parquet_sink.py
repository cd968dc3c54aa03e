"""Parquet streamed into S3 multipart uploads (moto: real multipart ETags checked), with bounded parts in
flight, file rolling, abort on failure, and footers read back through ranged GETs."""

from __future__ import annotations

import io
import threading

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dth_ray.config import StoreConfig, StoreType
from dth_ray.maxcompute.parquet_sink import (
    LoopThread,
    MultipartSink,
    ParquetFiles,
    WriterSettings,
    parquet_rows,
)
from dth_ray.stores import open_store

MiB = 1024 * 1024
BUCKET = "mc-sink"


class _CountingStore:
    """Delegates to a real store and records the most part uploads ever in flight at once."""

    def __init__(self, store):
        self._store = store
        self.features = store.features
        self.in_flight = self.peak = 0
        self._lock = threading.Lock()

    def __getattr__(self, name):
        return getattr(self._store, name)

    async def upload_part(self, *args, **kwargs):
        with self._lock:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
        try:
            return await self._store.upload_part(*args, **kwargs)
        finally:
            with self._lock:
                self.in_flight -= 1


@pytest.fixture(scope="module")
def bucket(moto_server) -> str:
    return moto_server.create_bucket(BUCKET)


@pytest.fixture
def store(moto_server, bucket, monkeypatch):
    monkeypatch.setenv("MOTOMC_ACCESS_KEY_ID", "testing-key")
    monkeypatch.setenv("MOTOMC_SECRET_ACCESS_KEY", "testing-secret")
    return open_store(StoreConfig(type=StoreType.s3, bucket=bucket, endpoint=moto_server.endpoint,
                                  region="us-east-1", credentials="env:MOTOMC", addressing_style="path"))


@pytest.fixture
def loop():
    runner = LoopThread()
    yield runner
    runner.close()


def _batches(count: int, rows: int, blob_bytes: int, seed: int = 0):
    import random

    rng = random.Random(seed)
    for index in range(count):
        ids = pa.array(range(index * rows, (index + 1) * rows), pa.int64())
        blobs = pa.array([rng.randbytes(blob_bytes) for _ in range(rows)], pa.binary())
        yield pa.record_batch([ids, blobs], names=["id", "blob"])


def test_large_file_goes_up_in_parts_with_bounded_in_flight(moto_server, store, loop):
    counting = _CountingStore(store)
    settings = WriterSettings(file_size_bytes=64 * MiB, row_group_bytes=2 * MiB, part_size_bytes=5 * MiB,
                              parts_in_flight=2, compression="none")
    files = ParquetFiles(counting, loop, lambda i: f"big/part-{i}.parquet", settings)
    for batch in _batches(12, 100, 10_000):  # ~12 MB of incompressible bytes: three 5 MiB parts
        files.write(batch)
    [info] = files.finish()
    assert info.rows == 1200 and info.size > 10 * MiB
    assert info.etag.endswith("-3")  # moto's real multipart ETag, checked against our part MD5s by the sink
    assert 1 <= counting.peak <= 2
    body = moto_server.client().get_object(Bucket=BUCKET, Key=info.key)["Body"].read()
    assert len(body) == info.size
    table = pq.read_table(io.BytesIO(body))
    assert table.column("id").to_pylist() == list(range(1200))
    assert parquet_rows(store, info.key, info.size, loop) == 1200  # from the footer alone, by ranged GETs
    loop.run(store.aclose())


def test_files_roll_at_the_target_size_and_small_ones_are_single_puts(moto_server, store, loop):
    settings = WriterSettings(file_size_bytes=300_000, row_group_bytes=100_000, part_size_bytes=5 * MiB,
                              parts_in_flight=4, compression="zstd")
    files = ParquetFiles(store, loop, lambda i: f"roll/part-{i:04d}.parquet", settings)
    for batch in _batches(20, 50, 1000, seed=1):
        files.write(batch)
    written = files.finish()
    assert len(written) >= 3
    assert sum(f.rows for f in written) == 1000
    assert all("-" not in f.etag for f in written)  # one PUT each: the ETag is the body's MD5
    client = moto_server.client()
    ids = []
    for f in written:
        body = client.get_object(Bucket=BUCKET, Key=f.key)["Body"].read()
        assert len(body) == f.size
        ids += pq.read_table(io.BytesIO(body)).column("id").to_pylist()
    assert ids == list(range(1000))
    loop.run(store.aclose())


def test_abort_leaves_no_upload_and_no_object(moto_server, store, loop):
    sink = MultipartSink(store, "aborted/file.parquet", loop, 5 * MiB, 2)
    sink.write(b"x" * (11 * MiB))  # two parts sent, one MiB buffered
    sink.abort()
    client = moto_server.client()
    assert client.list_multipart_uploads(Bucket=BUCKET, Prefix="aborted/").get("Uploads", []) == []
    assert client.list_objects_v2(Bucket=BUCKET, Prefix="aborted/").get("KeyCount", 0) == 0
    loop.run(store.aclose())
