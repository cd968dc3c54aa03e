"""MaxCompute test data and helpers: a table with every listed type, rows with nulls and edge values, config
overrides for the ODPS test endpoint, and reading a partition's Parquet back from S3."""

from __future__ import annotations

import datetime as dt
import decimal
import io
import json
import random

import pyarrow as pa
import pyarrow.parquet as pq

from tests.integration.helpers import listing

MC_KEY = ("LTAI5tMaxComputeTest1", "maxcompute-test-secret-7f2e")
PROJECT = "dth_lake"
COLUMNS = [
    ("id", "bigint"), ("price", "double"), ("amount", "decimal(18,4)"), ("name", "string"),
    ("payload", "binary"), ("created", "datetime"), ("updated", "timestamp"), ("day", "date"),
    ("active", "boolean"), ("tags", "array<string>"), ("attrs", "map<string,bigint>"),
    ("addr", "struct<city:string,zip:bigint>"),
]
PARTITION_KEYS = [("ds", "string"), ("region", "string")]
# The Parquet types each column must have after the export (instants are UTC-aware, precision kept).
PARQUET_TYPES = {
    "id": pa.int64(), "price": pa.float64(), "amount": pa.decimal128(18, 4), "name": pa.string(),
    "payload": pa.binary(), "created": pa.timestamp("ms", "UTC"), "updated": pa.timestamp("ns", "UTC"),
    "day": pa.date32(), "active": pa.bool_(), "tags": pa.list_(pa.string()),
    "attrs": pa.map_(pa.string(), pa.int64()), "addr": pa.struct([("city", pa.string()), ("zip", pa.int64())]),
}


def make_rows(first_id: int, count: int, seed: int, payload_bytes: int = 24) -> list[tuple]:
    rng = random.Random(seed)
    base = dt.datetime(2024, 1, 1, 0, 0, 0)
    rows = []
    for i in range(count):
        row_id = first_id + i
        null = (row_id % 17 == 0)  # a null in every nullable column now and then
        rows.append((
            row_id,
            None if null else rng.uniform(-1e6, 1e6),
            None if null else decimal.Decimal(rng.randint(-10**17, 10**17)).scaleb(-4),
            None if null else rng.choice(["", "北京", "naïve", "tab\tin", "x" * rng.randint(1, 40)]),
            None if null else rng.randbytes(rng.randint(0, payload_bytes)),
            None if null else base + dt.timedelta(milliseconds=rng.randint(-10**11, 10**11)),
            None if null else base + dt.timedelta(microseconds=rng.randint(-10**15, 10**15)),
            None if null else dt.date(1970, 1, 1) + dt.timedelta(days=rng.randint(-3000, 30000)),
            None if null else rng.random() < 0.5,
            None if null else [rng.choice(["a", "b", "ü", ""]) for _ in range(rng.randint(0, 4))],
            None if null else {f"k{j}": rng.randint(-5, 5) for j in range(rng.randint(0, 3))},
            None if null else {"city": rng.choice(["Hangzhou", None]), "zip": rng.randint(0, 999999)},
        ))
    return rows


def mc_overrides(server, dst, dst_prefix: str, manifest: str, *extra: str) -> list[str]:
    return [
        "source=maxcompute", f"source.endpoint={server.endpoint}", "source.region=cn-hangzhou",
        "source.credentials=env:MCTEST", f"maxcompute.project={PROJECT}", "maxcompute.table=orders",
        f"maxcompute.tunnel_endpoint={server.tunnel_endpoint}",
        "destination=s3", f"destination.bucket={dst.bucket}", f"destination.endpoint={dst.endpoint}",
        f"destination.prefix={dst_prefix}", "destination.credentials=env:E2EDST",
        f"manifest.path={manifest}", "progress=off", *extra,
    ]


def read_folder(client, bucket: str, folder: str) -> tuple[pa.Table | None, dict, list[str]]:
    """(rows of the folder's Parquet files concatenated, the _SUCCESS manifest or {}, data keys)."""
    keys = sorted(k for k in listing(client, bucket, folder) if "/" not in k[len(folder):])
    tables, manifest = [], {}
    data_keys = [k for k in keys if not k[len(folder):].startswith(("_", "."))]
    for key in data_keys:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        tables.append(pq.read_table(io.BytesIO(body)))
    if folder + "_SUCCESS" in keys:
        manifest = json.loads(client.get_object(Bucket=bucket, Key=folder + "_SUCCESS")["Body"].read())
    return (pa.concat_tables(tables) if tables else None), manifest, data_keys


def expected_rows(server_table: pa.Table) -> list[dict]:
    """What the endpoint served, with instants as the UTC-aware values the export keeps."""
    columns = []
    for name in server_table.column_names:
        col = server_table.column(name)
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.timestamp(col.type.unit, "UTC"))
        columns.append(col)
    return sorted(pa.table(columns, names=server_table.column_names).to_pylist(), key=lambda r: r["id"])


def same_type(actual: pa.DataType, expected: pa.DataType) -> bool:
    """Type equality up to nested field names (Parquet names list items 'element')."""
    if pa.types.is_list(expected):
        return pa.types.is_list(actual) and same_type(actual.value_type, expected.value_type)
    if pa.types.is_map(expected):
        return pa.types.is_map(actual) and same_type(actual.key_type, expected.key_type) and \
            same_type(actual.item_type, expected.item_type)
    if pa.types.is_struct(expected):
        return pa.types.is_struct(actual) and [f.name for f in actual] == [f.name for f in expected] and \
            all(same_type(a.type, e.type) for a, e in zip(actual, expected, strict=True))
    return actual == expected
