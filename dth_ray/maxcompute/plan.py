"""What a MaxCompute export does, as values: partition specs, Hive-style paths, row-range shards, file names,
the UNLOAD statement and the `_SUCCESS` manifest. Pure: no pyodps, no Ray, no I/O."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

Spec = tuple[tuple[str, str], ...]  # ((key, value), ...) in the table's partition-key order

SUCCESS_NAME = "_SUCCESS"
_DATA_FILE = re.compile(r"part-(\d{5})-(\d{4})\.parquet")
# Characters Hive escapes in partition path values (FileUtils.escapePathName), plus control characters.
_HIVE_ESCAPE = set('"#%\'*/:=?\\\x7f{[]^')


def parse_spec(text: str) -> Spec:
    """'ds=2024-01-01/region=cn' or "ds='2024-01-01',region='cn'" -> (('ds', '2024-01-01'), ('region', 'cn')).

    Raises ValueError for an item without '='."""
    out = []
    for item in re.split(r"[,/]", text.strip()):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"partition spec item {item!r} is not key=value")
        out.append((key.strip(), value.strip().strip("'\"")))
    return tuple(out)


def spec_text(spec: Spec) -> str:
    """The spec as pyodps and the Tunnel take it: 'ds=2024-01-01,region=cn' ('' for a whole table)."""
    return ",".join(f"{k}={v}" for k, v in spec)


def matches(spec: Spec, filters: list[Spec]) -> bool:
    """Whether a partition is selected: no filters selects all; else every key=value of one filter holds."""
    if not filters:
        return True
    values = dict(spec)
    return any(all(values.get(k) == v for k, v in f) for f in filters)


def unknown_filter_keys(filters: list[Spec], partition_keys: list[str]) -> list[str]:
    """Filter keys that are not partition keys of the table (a typo would otherwise select nothing)."""
    return sorted({k for f in filters for k, _ in f} - set(partition_keys))


def hive_escape(value: str) -> str:
    return "".join(f"%{ord(c):02X}" if c in _HIVE_ESCAPE or ord(c) < 0x20 else c for c in value)


def hive_path(spec: Spec) -> str:
    """'ds=2024-01-01/region=cn/' ('' for a non-partitioned table), values escaped as Hive does."""
    return "".join(f"{hive_escape(k)}={hive_escape(v)}/" for k, v in spec)


def row_ranges(count: int, shard_rows: int) -> list[tuple[int, int]]:
    """[(start, rows), ...] covering [0, count) in shards of at most `shard_rows` rows (none when empty)."""
    if shard_rows < 1:
        raise ValueError("shard_rows must be at least 1")
    return [(start, min(shard_rows, count - start)) for start in range(0, count, shard_rows)]


def data_file_name(shard: int, index: int) -> str:
    """Deterministic, so a shard that is redone overwrites its own files instead of adding rows."""
    return f"part-{shard:05d}-{index:04d}.parquet"


def is_data_file(name: str) -> bool:
    return _DATA_FILE.fullmatch(name) is not None


@dataclass(frozen=True)
class ShardTask:
    """One row range of one partition's download session, for an export actor (picklable, no secrets)."""

    spec: Spec
    shard: int
    start: int
    rows: int
    download_id: str
    dst_prefix: str  # destination.prefix + hive_path(spec)
    attempt: int = 1


@dataclass(frozen=True)
class FileInfo:
    key: str
    rows: int
    size: int
    etag: str


@dataclass(frozen=True)
class ShardOutcome:
    spec: Spec
    shard: int
    files: tuple[FileInfo, ...] = ()
    rows: int = 0
    error: str = ""
    retryable: bool = True
    node_id: str = ""
    duration_s: float = 0.0


@dataclass
class PartitionPlan:
    """A partition to export: its session, its shards, and which of them a previous run already finished."""

    spec: Spec
    download_id: str
    record_count: int
    shards: list[tuple[int, int]]
    done: dict[int, tuple[FileInfo, ...]] = field(default_factory=dict)

    @property
    def pending(self) -> list[int]:
        return [i for i in range(len(self.shards)) if i not in self.done]


def success_manifest(table: str, spec: Spec, files: list[FileInfo], record_count: int, mode: str,
                     extra: dict | None = None) -> dict:
    """The JSON written as `_SUCCESS`: the partition's files with their rows and bytes, and the totals."""
    doc = {
        "table": table,
        "partition": spec_text(spec),
        "mode": mode,
        "files": [{"key": f.key, "rows": f.rows, "bytes": f.size, "etag": f.etag}
                  for f in sorted(files, key=lambda f: f.key)],
        "rows": sum(f.rows for f in files),
        "bytes": sum(f.size for f in files),
        "source_record_count": record_count,
    }
    doc.update(extra or {})
    return doc


def _sql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(name: str) -> str:
    return name if re.fullmatch(r"[A-Za-z_]\w*", name) else "`" + name.replace("`", "``") + "`"


def unload_sql(project: str, table: str, spec: Spec, location: str, role_arn: str, compression: str) -> str:
    """The seed's UNLOAD statement for one partition (or the whole table when `spec` is empty):
    Parquet through ParquetHiveSerDe, written by MaxCompute under `role_arn`, compressed with `compression`
    ('NONE' omits the property)."""
    partition = ""
    if spec:
        partition = " PARTITION (" + ", ".join(f"{_ident(k)}={_sql_string(v)}" for k, v in spec) + ")"
    lines = [
        f"UNLOAD FROM {_ident(project)}.{_ident(table)}{partition}",
        "INTO",
        f"LOCATION {_sql_string(location)}",
        "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'",
        f"WITH SERDEPROPERTIES ('odps.properties.rolearn'={_sql_string(role_arn)})",
        "STORED AS PARQUET",
    ]
    if compression.upper() != "NONE":
        lines.append(f"PROPERTIES ('mcfed.parquet.compression'={_sql_string(compression.upper())})")
    return "\n".join(lines) + ";"


def oss_location(endpoint_host: str, bucket: str, key_prefix: str) -> str:
    """oss://<endpoint>/<bucket>/<prefix>/ as UNLOAD's LOCATION takes it (always a folder)."""
    path = key_prefix if key_prefix.endswith("/") or not key_prefix else key_prefix + "/"
    return f"oss://{endpoint_host}/{bucket}/{path}"
