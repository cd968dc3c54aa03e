"""Inventory planning's pure parts: manifest.json of S3 and OSS, the three file formats read into normalized rows,
the external partition by key range, staged shard files, and the inventory configuration's checks."""

from __future__ import annotations

import json
import random

import pyarrow as pa
import pytest

from dth_ray.compose import load_settings
from dth_ray.errors import ConfigError
from dth_ray.inventory.formats import ROWS, read_batches
from dth_ray.inventory.manifest import parse_manifest, schema_columns
from dth_ray.inventory.partition import Partitioner, unique_keys
from dth_ray.inventory.staged import DESTINATION, SOURCE, StagedRows, staged_bytes
from dth_ray.runtime.inventory import shard_count
from tests.servers.inventories import Row, oss_inventory, s3_inventory

ODD_KEYS = ["plain/key", "with space/and+plus", "percent%41/x", "unicodé/ключ/🙂", "q?a=1&b=2", "tilde~star*"]


def rows_of(manifest_key: str, files: dict[str, bytes], provider: str, tmp_path) -> list[dict]:
    manifest = parse_manifest(files[manifest_key], "test", provider)
    out = []
    for index, entry in enumerate(manifest.files):
        path = tmp_path / f"f{index}"
        path.write_bytes(files[entry.key])
        for table in read_batches(str(path), manifest, batch_rows=3):
            assert table.schema == ROWS
            out.extend(table.to_pylist())
    return sorted(out, key=lambda r: r["key"])


@pytest.mark.parametrize("fmt", ["CSV", "ORC", "Parquet"])
def test_s3_inventories_read_back_as_the_objects_they_list(fmt, tmp_path):
    rows = [Row(k, i * 10, f"{i:032x}", mtime_s=1_700_000_000.5 + i) for i, k in enumerate(ODD_KEYS)]
    rows += [Row(ODD_KEYS[0], 999, "old", version="v0", latest=False),  # an older version
             Row("deleted", 0, "", version="dm", delete_marker=True),
             Row("multi", 5, "abcdef0123456789abcdef0123456789-3", storage_class="GLACIER")]
    key, files = s3_inventory(rows, fmt, "src", "inv", files=4)
    got = rows_of(key, files, "s3", tmp_path)
    want = sorted([*ODD_KEYS, "multi"])
    assert [r["key"] for r in got] == want
    by_key = {r["key"]: r for r in got}
    assert by_key[ODD_KEYS[0]]["size"] == 0 and by_key[ODD_KEYS[1]]["etag"] == f"{1:032x}"
    assert by_key[ODD_KEYS[2]]["mtime"] == pytest.approx(1_700_000_002.5)
    assert by_key["multi"]["storage_class"] == "GLACIER" and by_key["multi"]["etag"].endswith("-3")


def test_an_oss_inventory_reads_percent_encoded_keys_upper_case_etags_and_crc64(tmp_path):
    rows = [Row(k, 7, f"{i:032X}", storage_class="Archive" if i == 2 else "Standard", crc64=str(1000 + i))
            for i, k in enumerate(ODD_KEYS)]
    key, files = oss_inventory(rows, "src", "inv", files=3)
    manifest = parse_manifest(files[key], "test", "oss")
    assert manifest.created_s == 1_767_225_600 and manifest.file_format == "CSV"
    got = rows_of(key, files, "oss", tmp_path)
    assert [r["key"] for r in got] == sorted(ODD_KEYS)
    first = next(r for r in got if r["key"] == ODD_KEYS[0])
    assert first["etag"] == f"{0:032x}" and first["checksum"] == "crc64ecma:1000"


def test_manifests_give_their_date_schema_and_refuse_what_planning_cannot_use():
    key, files = s3_inventory([Row("a", 1, "e" * 32)], "Parquet", "src", "inv", created_ms=1_514_944_800_000)
    manifest = parse_manifest(files[key], "test", "s3")
    assert manifest.created_iso == "2018-01-03T02:00:00Z" and manifest.source_bucket == "src"
    assert manifest.columns[:2] == ("bucket", "key") and "etag" in manifest.columns
    assert schema_columns("ORC", "struct<key:string,size:bigint,tags:map<string,string>,e_tag:string>") == (
        "key", "size", "tags", "etag")
    doc = json.loads(files[key])
    with pytest.raises(ConfigError, match="lacks the fields etag"):
        parse_manifest(json.dumps({**doc, "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size"}).encode(), "u", "s3")
    with pytest.raises(ConfigError, match="not CSV, ORC or Parquet"):
        parse_manifest(json.dumps({**doc, "fileFormat": "JSON"}).encode(), "u", "s3")
    with pytest.raises(ConfigError, match="not an inventory manifest"):
        parse_manifest(b"{}", "u", "s3")


def table_of(keys: list[str]) -> pa.Table:
    n = len(keys)
    return pa.table({"key": keys, "size": [1] * n, "etag": ["e"] * n, "mtime": [0.0] * n,
                     "storage_class": [""] * n, "checksum": [""] * n}, schema=ROWS)


def test_the_partition_covers_every_key_once_in_order_whatever_the_input_order(tmp_path):
    rng = random.Random(4)
    keys = [f"k/{rng.randrange(10**9):09d}/{'é' if i % 7 == 0 else ''}{i}" for i in range(20_000)]
    duplicated = keys + keys[:50]
    rng.shuffle(duplicated)
    parts = Partitioner(str(tmp_path), run_rows=3_000, chunk_rows=500, sample_every=37)
    for start in range(0, len(duplicated), 1_111):
        parts.add(table_of(duplicated[start:start + 1_111]))
    parts.finish()
    edges = parts.boundaries(9)
    assert edges == sorted(set(edges)) and 6 <= len(edges) <= 8
    seen: list[str] = []
    for start_after, end_at in zip(["", *edges], [*edges, ""], strict=True):
        rows = parts.rows_in(start_after, end_at).column("key").to_pylist()
        assert rows == sorted(rows) and all(start_after < k and (not end_at or k <= end_at) for k in rows)
        assert len(rows) < 2 * len(keys) / 9, "ranges of about equal counts"
        seen.extend(rows)
    assert seen == sorted(keys), "every key exactly once, in key order"
    assert parts.rows == len(duplicated)


def test_unique_keys_keeps_one_row_per_key():
    table = table_of(["a", "a", "b", "c", "c", "c"])
    assert unique_keys(table).column("key").to_pylist() == ["a", "b", "c"]


def test_a_staged_file_pages_each_side_from_a_watermark():
    source, destination = table_of([f"s/{i:03d}" for i in range(25)]), table_of(["d/001", "d/002"])
    staged = StagedRows(staged_bytes(source, destination))
    assert staged.has_destination and staged.rows(SOURCE) == 25 and staged.rows(DESTINATION) == 2
    pages = list(staged.pages(SOURCE, "s/009", "s/020", 4))
    assert [len(p) for p in pages] == [4, 4, 3] and pages[0][0].key == "s/010" and pages[-1][-1].key == "s/020"
    assert [m.key for p in staged.pages(DESTINATION, "", "", 10) for m in p] == ["d/001", "d/002"]
    assert not StagedRows(staged_bytes(source, None)).has_destination


def test_shard_counts_aim_at_a_hundred_thousand_keys_and_keep_workers_busy():
    assert shard_count(0, 4) == 1 and shard_count(500, 4) == 1
    assert shard_count(40_000, 4) == 16 and shard_count(10_000_000, 4) == 100


def base(*extra: str) -> list[str]:
    return ["source.type=memory", "source.bucket=src", "destination.type=memory", "destination.bucket=dst",
            *extra]


@pytest.mark.parametrize(("extra", "message"), [
    (["source.inventory=s3://inv"], "must name the inventory's manifest.json"),
    (["source.inventory=/local/manifest.json"], "must name the inventory's manifest.json"),
    (["source.inventory=ftp://inv/m.json"], "must be a folder path or"),
    (["destination.inventory=s3://inv/m.json"], "needs source.inventory"),
    (["source.inventory=s3://inv/m.json", "source.prefix_list=/tmp/x"], "exclude each other"),
    (["inventory_staging=s3://inv/stage/"], "needs source.inventory"),
    (["source.inventory=s3://inv/m.json", "source.inventory_credentials=bogus"], "inventory_credentials"),
    (["report_objects=/tmp/r", "dry_run=true"], "needs a real run"),
    (["report_objects_format=json"], "must be one of auto, csv, parquet"),
])
def test_inventory_and_report_settings_are_checked(extra, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(base(*extra))


def test_inventory_settings_resolve_to_the_sides_services_and_a_staging_folder():
    s = load_settings(base("source.prefix=data/", "source.inventory=memory://inv/a/b/2026-01-01T00-00Z/manifest.json",
                           "destination.inventory=memory://dinv/m.json", "destination.inventory_credentials=env:DI",
                           "report_objects=memory://reports/completion.parquet", "job=j"))
    inv = s.inventory
    assert (inv.source.store.bucket, inv.source.manifest_key) == ("inv", "a/b/2026-01-01T00-00Z/manifest.json")
    assert inv.destination.store.credentials == "env:DI" and inv.destination.store.bucket == "dinv"
    assert inv.staging.bucket == "inv" and inv.staging_prefix == "a/b/2026-01-01T00-00Z/dth-ray/j/"
    assert s.worker.staging == inv.staging
    assert s.worker.report.format == "parquet" and s.worker.report.prefix == "completion.parquet/"
    staged = load_settings(base("source.inventory=memory://inv/m.json", "inventory_staging=/shared/stage", "job=j"))
    assert staged.inventory.staging.path == "/shared/stage" and staged.inventory.staging_prefix == "dth-ray/j/"


def test_worker_settings_with_staging_and_report_pickle_for_the_actors():
    import pickle

    s = load_settings(base("source.inventory=memory://inv/m.json", "report_objects=memory://reports/r/"))
    again = pickle.loads(pickle.dumps(s.worker))
    assert (again.staging, again.report) == (s.worker.staging, s.worker.report) and again.staging is not None
    assert pickle.loads(pickle.dumps(s.inventory)) == s.inventory
