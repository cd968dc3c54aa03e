"""Bucket inventories in the real formats, for tests and benchmarks: S3 Inventory (CSV, ORC, Parquet) and OSS
bucket inventory (CSV), as the objects (key → bytes) to put into an inventory bucket.

What they follow:
- S3 Inventory: manifest.json fields, file locations and the CSV/ORC/Parquet schemas from
  https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html ("Inventory manifest")
  and https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory.html ("Inventory list"): CSV
  files are gzip-compressed, have no header, quote every field and URL-encode the key (form encoding: a space
  is '+'); ORC and Parquet keep keys as they are, in snake_case columns (key, size, last_modified_date,
  e_tag, ...); `creationTimestamp` is epoch milliseconds as a string; `destinationBucket` is an ARN.
- OSS bucket inventory: https://help.aliyun.com/en/oss/user-guide/bucket-inventory (and
  https://help.aliyun.com/document_detail/163489.html): `data/<uuid>.csv.gz` files listed in a
  `<timestamp>/manifest.json` with `creationTimestamp` in epoch seconds, fileFormat CSV, a fileSchema such as
  "Bucket, Key, Size, LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, EncryptionStatus, ObjectAcl,
  TaggingCount, ObjectType, Crc64", keys percent-encoded, ETags in upper case.

Rows are shuffled across and within files: nothing promises an inventory in key order.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import io
import json
import random
import time
import uuid
from dataclasses import dataclass
from urllib.parse import quote, quote_plus

import pyarrow as pa
import pyarrow.orc as orc
import pyarrow.parquet as pq


@dataclass(frozen=True)
class Row:
    """One inventoried object. `latest`/`delete_marker`/`version`: for versioned S3 inventories."""

    key: str
    size: int
    etag: str
    mtime_s: float = 1_767_225_600.0
    storage_class: str = "STANDARD"
    crc64: str = ""
    version: str = ""
    latest: bool = True
    delete_marker: bool = False


_S3_CSV = ("Bucket", "Key", "VersionId", "IsLatest", "IsDeleteMarker", "Size", "LastModifiedDate", "ETag",
           "StorageClass", "IsMultipartUploaded")
_PARQUET_SCHEMA = ("message s3.inventory { required binary bucket (STRING); required binary key (STRING); "
                   "optional binary version_id (STRING); optional boolean is_latest; optional boolean "
                   "is_delete_marker; optional int64 size; optional int64 last_modified_date "
                   "(TIMESTAMP(MILLIS,true)); optional binary e_tag (STRING); optional binary storage_class "
                   "(STRING); optional boolean is_multipart_uploaded; }")
_ORC_SCHEMA = ("struct<bucket:string,key:string,version_id:string,is_latest:boolean,is_delete_marker:boolean,"
               "size:bigint,last_modified_date:timestamp,e_tag:string,storage_class:string,"
               "is_multipart_uploaded:boolean>")
_OSS_CSV = ("Bucket", "Key", "Size", "LastModifiedDate", "ETag", "StorageClass", "IsMultipartUploaded",
            "EncryptionStatus", "ObjectAcl", "TaggingCount", "ObjectType", "Crc64")


def _iso(seconds: float) -> str:
    import datetime

    stamp = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


def _chunks(rows: list[Row], files: int, seed: int) -> list[list[Row]]:
    shuffled = list(rows)
    random.Random(seed).shuffle(shuffled)
    return [shuffled[i::files] for i in range(files)]


def _csv_gz(lines: list[list[str]]) -> bytes:
    text = io.StringIO()
    csv.writer(text, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(lines)
    return gzip.compress(text.getvalue().encode("utf-8"))


def _arrow(rows: list[Row], bucket: str) -> pa.Table:
    return pa.table({
        "bucket": pa.array([bucket] * len(rows), pa.string()),
        "key": pa.array([r.key for r in rows], pa.string()),
        "version_id": pa.array([r.version or None for r in rows], pa.string()),
        "is_latest": pa.array([r.latest for r in rows], pa.bool_()),
        "is_delete_marker": pa.array([r.delete_marker for r in rows], pa.bool_()),
        "size": pa.array([None if r.delete_marker else r.size for r in rows], pa.int64()),
        "last_modified_date": pa.array([int(r.mtime_s * 1000) for r in rows], pa.timestamp("ms", tz="UTC")),
        "e_tag": pa.array([None if r.delete_marker else r.etag for r in rows], pa.string()),
        "storage_class": pa.array([r.storage_class for r in rows], pa.string()),
        "is_multipart_uploaded": pa.array(["-" in r.etag for r in rows], pa.bool_()),
    })


def _s3_file(rows: list[Row], fmt: str, bucket: str) -> bytes:
    if fmt == "CSV":
        return _csv_gz([[bucket, quote_plus(r.key, safe=""), r.version, str(r.latest).lower(),
                         str(r.delete_marker).lower(), "" if r.delete_marker else str(r.size), _iso(r.mtime_s),
                         "" if r.delete_marker else r.etag, r.storage_class, str("-" in r.etag).lower()]
                        for r in rows])
    sink = pa.BufferOutputStream()
    if fmt == "ORC":
        orc.write_table(_arrow(rows, bucket), sink)
    else:
        pq.write_table(_arrow(rows, bucket), sink, compression="snappy")
    return sink.getvalue().to_pybytes()


def s3_inventory(rows: list[Row], fmt: str, source_bucket: str, inventory_bucket: str, prefix: str = "inventory",
                 config_id: str = "all", created_ms: int = 1_767_225_600_000, files: int = 3,
                 seed: int = 7) -> tuple[str, dict[str, bytes]]:
    """(manifest key, objects) of an S3 Inventory of `rows` in `fmt` (CSV, ORC or Parquet)."""
    ext = {"CSV": "csv.gz", "ORC": "orc", "Parquet": "parquet"}[fmt]
    base = f"{prefix}/{source_bucket}/{config_id}"
    objects, entries = {}, []
    for part in _chunks(rows, files, seed):
        key = f"{base}/data/{uuid.UUID(int=random.Random(seed + len(entries)).getrandbits(128))}.{ext}"
        data = _s3_file(part, fmt.upper(), source_bucket)
        objects[key] = data
        entries.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    schema = {"CSV": ", ".join(_S3_CSV), "ORC": _ORC_SCHEMA, "Parquet": _PARQUET_SCHEMA}[fmt]
    stamp = time.strftime("%Y-%m-%dT%H-%MZ", time.gmtime(created_ms / 1000))
    manifest = {"sourceBucket": source_bucket, "destinationBucket": f"arn:aws:s3:::{inventory_bucket}",
                "version": "2016-11-30", "creationTimestamp": str(created_ms), "fileFormat": fmt,
                "fileSchema": schema, "files": entries}
    manifest_key = f"{base}/{stamp}/manifest.json"
    objects[manifest_key] = json.dumps(manifest, indent=2).encode()
    return manifest_key, objects


def oss_inventory(rows: list[Row], source_bucket: str, inventory_bucket: str, prefix: str = "inventory",
                  inventory_id: str = "all", created_s: int = 1_767_225_600, files: int = 2,
                  seed: int = 11) -> tuple[str, dict[str, bytes]]:
    """(manifest key, objects) of an OSS bucket inventory of `rows` (CSV.gz)."""
    base = f"{prefix}/{source_bucket}/{inventory_id}"
    objects, entries = {}, []
    for part in _chunks(rows, files, seed):
        key = f"{base}/data/{uuid.UUID(int=random.Random(seed + len(entries)).getrandbits(128))}.csv.gz"
        data = _csv_gz([[source_bucket, quote(r.key, safe=""), str(r.size), _iso(r.mtime_s), r.etag.upper(),
                         r.storage_class, str("-" in r.etag).lower(), "false", "default", "0",
                         "Multipart" if "-" in r.etag else "Normal", r.crc64] for r in part])
        objects[key] = data
        entries.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest().upper()})
    stamp = time.strftime("%Y-%m-%dT%H-%MZ", time.gmtime(created_s))
    manifest = {"creationTimestamp": str(created_s), "destinationBucket": inventory_bucket, "fileFormat": "CSV",
                "fileSchema": ", ".join(_OSS_CSV), "files": entries, "sourceBucket": source_bucket,
                "version": "2019-09-01"}
    manifest_key = f"{base}/{stamp}/manifest.json"
    objects[manifest_key] = json.dumps(manifest, indent=2).encode()
    return manifest_key, objects
