"""The completion report's pure parts: rows in settled key order whatever order copies finish in, parts cut from
them (and taken back when a part cannot be written), stable part names, and the two encodings."""

from __future__ import annotations

import csv
import functools
import io

import pyarrow as pa
import pyarrow.parquet as pq

from dth_ray.model import ObjectMeta, Shard, Tally
from dth_ray.runtime import shardstate as outcome
from dth_ray.runtime.objectreport import COLUMNS, encode, make_row, part_key, source_checksum
from dth_ray.runtime.shardstate import SettledKeys
from dth_ray.settings import ReportSpec, StoreSpec
from dth_ray.stores.memory import FEATURES
from dth_ray.stores.oss import FEATURES as OSS


def row(key: str, result: str = "copied") -> tuple:
    return make_row(ObjectMeta(key, 3, "0" * 32), FEATURES, "d/" + key, None, result, "new", 1, 7)


def test_rows_follow_the_settled_order_and_parts_hold_exactly_the_settled_rows():
    settled = SettledKeys(Shard("s", ""), Tally(), "", report=True, run_id=7)
    skip = functools.partial(outcome.skipped, 3, "same_etag")
    a, b = settled.open("a"), settled.open("b")
    settled.now("c", skip, row("c", "skipped"))
    settled.close(b, skip, row("b", "skipped"))
    assert settled.rows == [] and settled.watermark == "", "nothing settles before 'a'"
    settled.close(a, skip, row("a", "skipped"))
    assert [r[0] for r in settled.rows] == ["a", "b", "c"] and settled.tally.report_rows == 3
    start, rows = settled.cut("part-1")
    assert start == "" and len(rows) == 3 and settled.part_start == "c"
    assert settled.tally.report_parts == [["part-1", 3]]
    settled.now("d", skip, row("d", "skipped"))
    start2, rows2 = settled.cut("part-2")
    settled.uncut(start2, rows2)  # its part could not be written: the rows wait for the next one
    assert settled.part_start == "c" and [r[0] for r in settled.rows] == ["d"]
    assert settled.tally.report_parts == [["part-1", 3]]
    checkpoint = settled.checkpoint("pending")
    assert checkpoint.tally.report_rows == 4 and checkpoint.tally.report_parts == [["part-1", 3]]
    assert SettledKeys(Shard("s", ""), Tally(), "").rows is None, "no rows without report_objects"


def test_part_names_depend_on_the_shard_and_where_the_part_starts():
    spec = ReportSpec(StoreSpec(), "reports/", "csv", "s3://b/reports/")
    assert part_key(spec, 3, "s-1", "k/5") == part_key(spec, 3, "s-1", "k/5")
    assert part_key(spec, 3, "s-1", "k/5") != part_key(spec, 3, "s-1", "k/6")
    assert part_key(spec, 3, "s-1", "").startswith("reports/run-3/s-1-") and part_key(spec, 3, "s", "").endswith(".csv")


def test_source_checksums_name_their_kind():
    assert source_checksum(ObjectMeta("k", 1, "a" * 32), FEATURES) == ("md5", "a" * 32)
    assert source_checksum(ObjectMeta("k", 1, "a" * 32 + "-2"), FEATURES) == ("etag", "a" * 32 + "-2")
    assert source_checksum(ObjectMeta("k", 1, "a" * 32, checksum="crc64ecma:12"), OSS) == ("crc64ecma", "12")


def test_parts_encode_as_csv_with_a_header_or_as_parquet():
    rows = [row("a,b \"quoted\""), row("é/x", "failed")]
    text = list(csv.reader(io.StringIO(encode(rows, "csv").decode())))
    assert tuple(text[0]) == COLUMNS and text[1][0] == 'a,b "quoted"' and text[2][7] == "failed"
    table = pq.read_table(pa.BufferReader(encode(rows, "parquet")))
    assert table.column_names == list(COLUMNS) and table.num_rows == 2
    assert table.column("attempts").to_pylist() == [1, 1] and table.column("key").to_pylist()[1] == "é/x"
    assert pq.read_table(pa.BufferReader(encode([], "parquet"))).num_rows == 0
