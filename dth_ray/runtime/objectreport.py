"""`report_objects`: a per-object completion report (like S3 Batch Operations'), one row per source object.

Rows are made by the transfer worker as each object's result is known and kept in the shard's settled order
(runtime/shardstate.py). A shard's rows go out in parts of about PART_ROWS, each part holding exactly the rows
of one stretch of its keys (previous watermark, watermark]; a part is written before the checkpoint that
covers it, and a checkpoint is sent only when every row up to it is in a part. A part is named by its shard
and the watermark it starts after, so a shard redone from a checkpoint (a lost worker, a retry, a resumed run)
writes its next part under the same name and replaces whatever a lost attempt wrote there: each object has
one row per run. The checkpointed tally lists the parts; the driver writes `manifest.json` listing them all
and references it from the JSON report.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json

from dth_ray.engine.digests import is_md5_etag
from dth_ray.model import ObjectHeaders, ObjectMeta, Tally
from dth_ray.runtime.manifest import Checkpoint
from dth_ray.runtime.shardstate import SettledKeys
from dth_ray.settings import ReportSpec
from dth_ray.stores import open_store
from dth_ray.stores.base import StoreFeatures

PART_ROWS = 20_000  # rows a shard holds before writing a part (its checkpoint waits for the part)
COLUMNS = ("key", "size", "source_checksum_kind", "source_checksum", "destination_key", "destination_etag",
           "destination_checksum", "result", "reason", "attempts", "run_id")
COPIED, SKIPPED, FAILED = "copied", "skipped", "failed"
MANIFEST = "manifest.json"


def source_checksum(meta: ObjectMeta, features: StoreFeatures) -> tuple[str, str]:
    """(kind, value) of what identifies the source's content: its checksum ('crc64ecma', ...), else its ETag
    (kind 'md5' when it is the MD5 of the bytes, 'etag' otherwise)."""
    if meta.checksum and ":" in meta.checksum:
        kind, _, value = meta.checksum.partition(":")
        return kind, value
    if meta.etag:
        return ("md5" if is_md5_etag(meta.etag, features) else "etag"), meta.etag
    return "", ""


def make_row(src: ObjectMeta, features: StoreFeatures, dst_key: str, dst: ObjectMeta | None, result: str,
             reason: str, attempts: int, run_id: int, dst_etag: str = "", dst_checksum: str = "") -> tuple:
    """One row (COLUMNS); the destination's ETag and checksum from `dst` unless given."""
    kind, value = source_checksum(src, features)
    if dst is not None:
        dst_etag, dst_checksum = dst_etag or dst.etag, dst_checksum or dst.checksum
    return (src.key, src.size, kind, value, dst_key, dst_etag, dst_checksum, result, reason, attempts, run_id)


def part_key(spec: ReportSpec, run_id: int, shard_id: str, start: str) -> str:
    """The part of a shard's rows after watermark `start` (the same name for a redo from there)."""
    digest = hashlib.sha256(start.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    return f"{spec.prefix}run-{run_id}/{shard_id}-{digest}.{spec.format}"


def encode(rows: list[tuple], fmt: str) -> bytes:
    """A part's bytes: CSV with a header line, or Parquet."""
    if fmt == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        columns = list(zip(*rows, strict=True)) if rows else [()] * len(COLUMNS)
        types = [pa.int64() if name in ("size", "attempts", "run_id") else pa.string() for name in COLUMNS]
        table = pa.table({n: pa.array(list(c), t) for n, c, t in zip(COLUMNS, columns, types, strict=True)})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink, compression="zstd")
        return sink.getvalue().to_pybytes()
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows(rows)
    return out.getvalue().encode("utf-8", "surrogateescape")


class PartWriter:
    """Writes and removes a worker's report parts in the report store (opened lazily)."""

    def __init__(self, spec: ReportSpec):
        self.spec = spec
        self._store = None

    def _open(self):
        if self._store is None:
            self._store = open_store(self.spec.store)
        return self._store

    async def write(self, key: str, rows: list[tuple]) -> None:
        """Raises DthError when the store refuses the part."""
        data = encode(rows, self.spec.format)
        await self._open().put(key, data, ObjectHeaders(content_type=_TYPES[self.spec.format]),
                               hashlib.md5(data).digest())

    async def drop(self, key: str) -> None:
        """Remove a part a lost attempt may have left; raises DthError."""
        await self._open().delete(key)

    async def checkpoint(self, settled: SettledKeys, status: str, final: bool) -> Checkpoint | None:
        """The shard's checkpoint once every row up to it is in a part: a part is cut from PART_ROWS rows, or
        at the end of the shard's attempt (`final`); None while rows wait for one. The caller holds the
        worker's flush lock. Raises DthError when the part cannot be written (the rows stay for the next)."""
        if not final and len(settled.rows) < PART_ROWS:
            return settled.checkpoint(status) if not settled.rows else None
        key = part_key(self.spec, settled.run_id, settled.shard.shard_id, settled.part_start)
        start, rows = settled.cut(key)
        checkpoint = settled.checkpoint(status)
        try:
            if rows:
                await self.write(key, rows)
            elif start == settled.first:
                await self.drop(key)  # what a lost attempt may have written after the same checkpoint
        except BaseException:
            settled.uncut(start, rows)
            raise
        return checkpoint

    async def aclose(self) -> None:
        if self._store is not None:
            await self._store.aclose()


_TYPES = {"csv": "text/csv", "parquet": "application/vnd.apache.parquet"}


async def finish_report(spec: ReportSpec, run_id: int, total: Tally) -> dict:
    """Write the run's `manifest.json` listing every part (in shard order) and return the JSON report's
    `report_objects` section. Raises DthError when the store refuses it."""
    folder = f"{spec.prefix}run-{run_id}/"
    parts = [{"key": key, "rows": rows} for key, rows in total.report_parts]
    doc = {"format": spec.format, "columns": list(COLUMNS), "rows": total.report_rows, "run_id": run_id,
           "parts": parts}
    data = json.dumps(doc, indent=1).encode()
    store = open_store(spec.store)
    try:
        await store.put(folder + MANIFEST, data, ObjectHeaders(content_type="application/json"),
                        hashlib.md5(data).digest())
    finally:
        await store.aclose()
    return {"location": spec.url, "manifest": f"{spec.url.rstrip('/')}/run-{run_id}/{MANIFEST}",
            "format": spec.format, "rows": total.report_rows, "parts": len(parts)}


async def remove_parts(spec: ReportSpec, keys: list[str]) -> None:
    """Delete parts no run references any more (a shard redone from scratch on resume). Raises DthError."""
    if not keys:
        return
    store = open_store(spec.store)
    try:
        for key in keys:
            await store.delete(key)
    finally:
        await store.aclose()
