"""An inventory's manifest.json (S3 Inventory or OSS bucket inventory) as a typed value.

S3 Inventory (https://docs.aws.amazon.com/AmazonS3/latest/userguide/storage-inventory-location.html, "Inventory
manifest"): `sourceBucket`, `destinationBucket` (an ARN), `version`, `creationTimestamp` (epoch milliseconds,
as a string), `fileFormat` (CSV, ORC or Parquet), `fileSchema` (CSV: "Bucket, Key, Size, ..."; ORC: a
`struct<bucket:string,key:string,...>`; Parquet: a `message s3.inventory { required binary key (UTF8); ... }`)
and `files` ([{key, size, MD5checksum}], keys in the bucket holding the manifest).

OSS bucket inventory (https://help.aliyun.com/en/oss/user-guide/bucket-inventory): the same fields, with
`creationTimestamp` in epoch seconds, `fileFormat` CSV (gzip) only and a schema such as "Bucket, Key, Size,
LastModifiedDate, ETag, StorageClass, IsMultipartUploaded, EncryptionStatus, ..., Crc64".
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from dth_ray.errors import ConfigError

FORMATS = ("CSV", "ORC", "PARQUET")
# The columns planning needs, by normalized name (lower case, no '_' or spaces): size and ETag guard every copy
# (the ETag becomes the GET's If-Match), so an inventory without them cannot replace a listing.
REQUIRED = ("key", "size", "etag")


@dataclass(frozen=True, slots=True)
class InventoryFile:
    """One data file of an inventory: its key in the manifest's bucket, size and MD5 (hex, '' if not given)."""

    key: str
    size: int
    md5: str = ""


@dataclass(frozen=True, slots=True)
class InventoryManifest:
    """What manifest.json says. `columns`: the schema's column names normalized (see `normalize`), in order;
    `provider`: s3 or oss (which decides how CSV keys are URL-decoded)."""

    source_bucket: str
    file_format: str
    columns: tuple[str, ...]
    files: tuple[InventoryFile, ...]
    created_s: float
    provider: str

    @property
    def created_iso(self) -> str:
        import datetime

        return datetime.datetime.fromtimestamp(self.created_s, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def normalize(name: str) -> str:
    """A column name as planning refers to it: 'LastModifiedDate', 'last_modified_date' → 'lastmodifieddate'."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def schema_columns(file_format: str, schema: str) -> tuple[str, ...]:
    """The normalized column names of a `fileSchema`. Raises ConfigError when it cannot be read."""
    if file_format == "CSV":
        names = [part.strip() for part in schema.split(",")]
    elif file_format == "ORC":
        inner = re.fullmatch(r"\s*struct<(.*)>\s*", schema, re.S)
        names = [field.split(":", 1)[0] for field in _top_level(inner.group(1))] if inner else []
    else:
        names = re.findall(r"(?:required|optional)\s+\w+\s+(\w+)", schema)
    columns = tuple(normalize(n) for n in names if n.strip())
    if not columns:
        raise ConfigError(f"inventory manifest: cannot read its fileSchema {schema[:80]!r}")
    return columns


def _top_level(fields: str) -> list[str]:
    """Split an ORC struct's fields at commas outside nested <...>."""
    out, depth, start = [], 0, 0
    for index, char in enumerate(fields):
        depth += char == "<"
        depth -= char == ">"
        if char == "," and depth == 0:
            out.append(fields[start:index])
            start = index + 1
    out.append(fields[start:])
    return [f.strip() for f in out if f.strip()]


def parse_manifest(data: bytes, url: str, provider: str) -> InventoryManifest:
    """The manifest.json at `url` (for messages) of a `provider` (s3 or oss) inventory. Raises ConfigError
    naming what is wrong with it."""
    try:
        doc = json.loads(data)
        file_format = str(doc["fileFormat"]).upper()
        schema = str(doc["fileSchema"])
        files = tuple(InventoryFile(str(f["key"]), int(f.get("size", 0)), str(f.get("MD5checksum", "")).lower())
                      for f in doc["files"])
        created = float(doc.get("creationTimestamp", 0))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"inventory {url!r} is not an inventory manifest.json ({type(exc).__name__}: {exc})"
                          ) from None
    if file_format not in FORMATS:
        raise ConfigError(f"inventory {url!r}: fileFormat {doc['fileFormat']!r} is not CSV, ORC or Parquet")
    columns = schema_columns(file_format, schema)
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise ConfigError(f"inventory {url!r} lacks the fields {', '.join(missing)} (add Size and ETag to the "
                          f"inventory's optional fields: they guard every copy)")
    # S3 writes epoch milliseconds, OSS epoch seconds.
    created_s = created / 1000.0 if created > 1e11 else created
    return InventoryManifest(str(doc.get("sourceBucket", "")), file_format, columns, files, created_s, provider)
