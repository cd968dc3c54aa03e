"""Read one inventory data file (CSV.gz, ORC or Parquet, on local disk) as batches of normalized rows.

Normalized rows have the columns of ROWS: the source key (CSV keys URL-decoded: S3 writes them form-encoded,
a space as '+', OSS percent-encoded), size, ETag (unquoted, lower case, as the stores list it), modification
time in epoch seconds, storage class and checksum ('crc64ecma:<n>' from an OSS inventory's Crc64 column).
Rows that are not a current object (an older version, a delete marker, no size) are left out.
"""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import unquote, unquote_plus

import pyarrow as pa
import pyarrow.compute as pc

from dth_ray.errors import ConfigError
from dth_ray.inventory.manifest import InventoryManifest, normalize

ROWS = pa.schema([("key", pa.string()), ("size", pa.int64()), ("etag", pa.string()), ("mtime", pa.float64()),
                  ("storage_class", pa.string()), ("checksum", pa.string())])
# Normalized names of the columns read (any others are skipped).
_WANTED = ("key", "size", "etag", "lastmodifieddate", "storageclass", "islatest", "isdeletemarker", "crc64")
_DECODE = {"s3": (unquote_plus, "[%+]"), "oss": (unquote, "%")}
CSV_BLOCK_BYTES = 16 * 1024 * 1024


def read_batches(path: str, manifest: InventoryManifest, batch_rows: int = 65536) -> Iterator[pa.Table]:
    """Normalized rows of the data file at `path`, a batch at a time. Raises ConfigError for a file that does
    not match the manifest's format or schema."""
    try:
        if manifest.file_format == "PARQUET":
            yield from _parquet(path, batch_rows)
        elif manifest.file_format == "ORC":
            yield from _orc(path)
        else:
            yield from _csv(path, manifest)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ConfigError(f"inventory file {path!r} is not a {manifest.file_format} inventory file: {exc}") from None


def _renamed(table: pa.Table) -> pa.Table:
    """The wanted columns of `table`, under their normalized names."""
    names = {normalize(n): n for n in table.column_names}
    keep = [n for n in _WANTED if n in names]
    return pa.table({n: table.column(names[n]) for n in keep})


def _parquet(path: str, batch_rows: int) -> Iterator[pa.Table]:
    import pyarrow.parquet as pq

    handle = pq.ParquetFile(path)
    names = {normalize(n): n for n in handle.schema_arrow.names}
    columns = [names[n] for n in _WANTED if n in names]
    for batch in handle.iter_batches(batch_size=batch_rows, columns=columns, use_threads=False):
        yield normalized(_renamed(pa.Table.from_batches([batch])), "")


def _orc(path: str) -> Iterator[pa.Table]:
    import pyarrow.orc as orc

    handle = orc.ORCFile(path)
    names = {normalize(n): n for n in handle.schema.names}
    columns = [names[n] for n in _WANTED if n in names]
    for stripe in range(handle.nstripes):
        yield normalized(_renamed(pa.Table.from_batches([handle.read_stripe(stripe, columns=columns)])), "")


def _csv(path: str, manifest: InventoryManifest) -> Iterator[pa.Table]:
    import pyarrow.csv as csv

    columns = list(manifest.columns)
    read = csv.ReadOptions(column_names=columns, block_size=CSV_BLOCK_BYTES)
    convert = csv.ConvertOptions(column_types={c: pa.string() for c in columns},
                                 include_columns=[c for c in _WANTED if c in columns], strings_can_be_null=False)
    with pa.input_stream(path, compression="gzip") as stream:
        if not stream.read(1):
            return  # a file of no rows (pyarrow's reader refuses an empty CSV)
    with pa.input_stream(path, compression="gzip") as stream:
        reader = csv.open_csv(stream, read_options=read, convert_options=convert)
        for batch in reader:
            yield normalized(pa.Table.from_batches([batch]), manifest.provider)


def _decoded_keys(keys: pa.ChunkedArray, provider: str) -> pa.Array:
    """CSV keys URL-decoded the provider's way; only the keys that hold an escape are decoded in Python."""
    decode, pattern = _DECODE[provider]
    keys = keys.combine_chunks()
    escaped = pc.match_substring_regex(keys, pattern)
    if not pc.any(escaped).as_py():
        return keys
    values = keys.to_pylist()
    for index in pc.indices_nonzero(escaped).to_pylist():
        values[index] = decode(values[index])
    return pa.array(values, pa.string())


def _as_int(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_integer(column.type):
        return column.cast(pa.int64())
    text = pc.utf8_trim_whitespace(column.cast(pa.string()))
    return pc.if_else(pc.equal(text, ""), pa.scalar(None, pa.string()), text).cast(pa.int64())


def _is_true(column: pa.ChunkedArray) -> pa.ChunkedArray:
    if pa.types.is_boolean(column.type):
        return pc.fill_null(column, False)
    return pc.equal(pc.utf8_lower(pc.utf8_trim_whitespace(column.cast(pa.string()))), "true")


def _seconds(column: pa.ChunkedArray | None, rows: int) -> pa.Array:
    """Epoch seconds of a timestamp column (or of ISO-8601 text); 0 where it is missing or unreadable."""
    if column is None:
        return pa.array([0.0] * rows, pa.float64())
    try:
        stamps = column if pa.types.is_timestamp(column.type) else column.cast(pa.timestamp("ms", tz="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pa.array([0.0] * rows, pa.float64())
    millis = stamps.cast(pa.timestamp("ms", tz="UTC")).cast(pa.int64())
    return pc.fill_null(pc.divide(millis.cast(pa.float64()), 1000.0), 0.0)


def _text(column: pa.ChunkedArray | None, rows: int) -> pa.ChunkedArray | pa.Array:
    if column is None:
        return pa.array([""] * rows, pa.string())
    return pc.fill_null(column.cast(pa.string()), "")


def normalized(table: pa.Table, provider: str) -> pa.Table:
    """Rows of ROWS from a table with normalized column names (`provider`: s3 or oss for CSV keys to be
    URL-decoded, '' for keys as they are). Raises ConfigError without a key, size or ETag column."""
    for needed in ("key", "size", "etag"):
        if needed not in table.column_names:
            raise ConfigError(f"inventory file has no {needed} column")
    keep = pc.invert(pc.is_null(_as_int(table.column("size"))))
    if "islatest" in table.column_names:
        keep = pc.and_(keep, pc.invert(pc.and_(pc.invert(_is_true(table.column("islatest"))),
                                               pc.invert(pc.is_null(table.column("islatest"))))))
    if "isdeletemarker" in table.column_names:
        keep = pc.and_(keep, pc.invert(_is_true(table.column("isdeletemarker"))))
    table = table.filter(keep)
    rows = table.num_rows
    keys = table.column("key").cast(pa.string())
    keys = _decoded_keys(keys, provider) if provider else keys.combine_chunks()
    etag = pc.utf8_lower(pc.utf8_trim(_text(table.column("etag"), rows), '"'))
    crc = table.column("crc64") if "crc64" in table.column_names else None
    checksum = pa.array([""] * rows, pa.string()) if crc is None else pc.if_else(
        pc.equal(_text(crc, rows), ""), "", pc.binary_join_element_wise("crc64ecma:", _text(crc, rows), ""))
    columns = [keys, _as_int(table.column("size")), etag,
               _seconds(table.column("lastmodifieddate") if "lastmodifieddate" in table.column_names else None, rows),
               _text(table.column("storageclass") if "storageclass" in table.column_names else None, rows),
               checksum]
    return pa.Table.from_arrays([pa.chunked_array([c]) if isinstance(c, pa.Array) else c for c in columns],
                                schema=ROWS)
