"""One shard's staged inventory rows: a Parquet file of the source's rows (and the destination's, when it has an
inventory too), sorted by key, that the worker pages through instead of listing.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dth_ray.errors import ConfigError, DthError, NotFound, error_class
from dth_ray.inventory.formats import ROWS
from dth_ray.model import ObjectMeta

SOURCE, DESTINATION = 0, 1
_SCHEMA = ROWS.append(pa.field("side", pa.int8()))
_HAS_DESTINATION = b"dth_ray.destination"


def staged_bytes(source: pa.Table, destination: pa.Table | None) -> bytes:
    """The staged file of one shard: its source rows and, if given, its destination rows (both key-sorted)."""
    tables = [source.append_column("side", pa.array([SOURCE] * source.num_rows, pa.int8()))]
    if destination is not None:
        tables.append(destination.append_column("side", pa.array([DESTINATION] * destination.num_rows,
                                                                  pa.int8())))
    schema = _SCHEMA.with_metadata({_HAS_DESTINATION: b"1" if destination is not None else b"0"})
    table = pa.concat_tables([t.cast(schema) for t in tables])
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


class StagedRows:
    """A staged shard file, read: pages of ObjectMeta for either side."""

    def __init__(self, data: bytes):
        table = pq.read_table(pa.BufferReader(data))
        self.has_destination = (table.schema.metadata or {}).get(_HAS_DESTINATION) == b"1"
        self._table = table

    def rows(self, side: int) -> int:
        return pc.sum(pc.equal(self._table.column("side"), side)).as_py() or 0

    def pages(self, side: int, start_after: str, end_at: str, page_keys: int) -> Iterator[list[ObjectMeta]]:
        """The side's objects with start_after < key <= end_at ('' = open), in key order, `page_keys` a page."""
        table = self._table
        keys = table.column("key")
        keep = pc.and_(pc.equal(table.column("side"), side), pc.greater(keys, start_after))
        if end_at:
            keep = pc.and_(keep, pc.less_equal(keys, end_at))
        table = table.filter(keep)
        for offset in range(0, table.num_rows, page_keys):
            piece = table.slice(offset, page_keys)
            columns = [piece.column(n).to_pylist() for n in ("key", "size", "etag", "mtime", "storage_class",
                                                              "checksum")]
            yield [ObjectMeta(key=k, size=s, etag=e, mtime=m, storage_class=c, checksum=x)
                   for k, s, e, m, c, x in zip(*columns, strict=True)]


async def check_source_key(source, staged: StagedRows, credentials: str) -> None:
    """HEAD the first source key of a staged shard (no LIST): the source's keys work here; a key gone since
    the inventory proves it as well. Raises ConfigError when the source refuses."""
    first = next(iter(staged.pages(SOURCE, "", "", 1)), [])
    if not first:
        return
    try:
        await source.head(first[0].key)
    except NotFound:
        pass
    except DthError as exc:
        raise ConfigError(f"source.credentials={credentials!r}: HEAD {first[0].key!r} failed "
                          f"({error_class(exc)}: {exc})") from None


async def async_pages(pages: Iterator[list[ObjectMeta]]) -> AsyncIterator[list[ObjectMeta]]:
    """Pages of a staged shard as the async iterator the worker's merge-join reads."""
    for page in pages:
        yield page
