"""MaxCompute export planning (pure): specs, Hive paths, row ranges, the UNLOAD statement, the manifest, and
the `source=maxcompute` config checks."""

from __future__ import annotations

import pickle

import pytest

from dth_ray.cli import load_config
from dth_ray.errors import ConfigError
from dth_ray.maxcompute.plan import (
    FileInfo,
    PartitionPlan,
    ShardTask,
    data_file_name,
    hive_path,
    is_data_file,
    matches,
    oss_location,
    parse_spec,
    row_ranges,
    spec_text,
    success_manifest,
    unknown_filter_keys,
    unload_sql,
)

BASE = ["source=maxcompute", "source.region=cn-hangzhou", "maxcompute.project=lake_prj", "maxcompute.table=orders",
        "destination.bucket=lake", "destination.prefix=orders/"]


def test_specs_parse_in_every_written_form():
    assert parse_spec("ds=2024-01-01/region=cn") == (("ds", "2024-01-01"), ("region", "cn"))
    assert parse_spec("ds='2024-01-01',region='cn'") == (("ds", "2024-01-01"), ("region", "cn"))
    assert parse_spec(" ds = 1 ") == (("ds", "1"),)
    assert parse_spec("") == ()
    assert spec_text((("ds", "1"), ("region", "cn"))) == "ds=1,region=cn"
    with pytest.raises(ValueError):
        parse_spec("ds")


def test_filters_select_by_every_given_key():
    spec = (("ds", "2024-01-01"), ("region", "cn"))
    assert matches(spec, [])
    assert matches(spec, [parse_spec("ds=2024-01-01")])
    assert matches(spec, [parse_spec("region=cn")])
    assert not matches(spec, [parse_spec("ds=2024-01-01/region=us")])
    assert matches(spec, [parse_spec("ds=x"), parse_spec("region=cn")])
    assert unknown_filter_keys([parse_spec("ds=1/regoin=cn")], ["ds", "region"]) == ["regoin"]


def test_hive_paths_escape_like_hive():
    assert hive_path((("ds", "2024-01-01"), ("region", "cn"))) == "ds=2024-01-01/region=cn/"
    assert hive_path(()) == ""
    assert hive_path((("p", "a/b=c:d%e"),)) == "p=a%2Fb%3Dc%3Ad%25e/"
    assert hive_path((("p", "space and 中文"),)) == "p=space and 中文/"
    assert hive_path((("p", "tab\tx"),)) == "p=tab%09x/"


@pytest.mark.parametrize("count,shard,expected", [
    (0, 10, []), (1, 10, [(0, 1)]), (10, 10, [(0, 10)]), (11, 10, [(0, 10), (10, 1)]),
    (25, 10, [(0, 10), (10, 10), (20, 5)]),
])
def test_row_ranges_cover_every_row_once(count, shard, expected):
    ranges = row_ranges(count, shard)
    assert ranges == expected
    assert sum(rows for _, rows in ranges) == count
    with pytest.raises(ValueError):
        row_ranges(5, 0)


def test_data_file_names_are_deterministic_and_recognised():
    assert data_file_name(3, 12) == "part-00003-0012.parquet"
    assert is_data_file("part-00003-0012.parquet")
    assert not is_data_file("_SUCCESS")
    assert not is_data_file("part-3-12.parquet")


def test_plan_pending_shards_and_pickling():
    plan = PartitionPlan((("ds", "1"),), "DL", 25, row_ranges(25, 10), done={1: ()})
    assert plan.pending == [0, 2]
    task = ShardTask((("ds", "1"),), 2, 20, 5, "DL", "lake/ds=1/")
    assert pickle.loads(pickle.dumps(task)) == task


def test_unload_sql_matches_the_seed_statement():
    sql = unload_sql("lake_prj", "orders", (("ds", "2024-01-01"), ("region", "cn")),
                     oss_location("oss-cn-hangzhou-internal.aliyuncs.com", "stage", "unload/ds=2024-01-01/region=cn"),
                     "acs:ram::1234567890:role/upload2oss", "lzo")
    assert sql == (
        "UNLOAD FROM lake_prj.orders PARTITION (ds='2024-01-01', region='cn')\n"
        "INTO\n"
        "LOCATION 'oss://oss-cn-hangzhou-internal.aliyuncs.com/stage/unload/ds=2024-01-01/region=cn/'\n"
        "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'\n"
        "WITH SERDEPROPERTIES ('odps.properties.rolearn'='acs:ram::1234567890:role/upload2oss')\n"
        "STORED AS PARQUET\n"
        "PROPERTIES ('mcfed.parquet.compression'='LZO');")


def test_unload_sql_quotes_values_and_handles_unpartitioned_tables():
    sql = unload_sql("p", "t", (("k", "it's"),), "oss://h/b/x/", "acs:ram::1:role/r", "NONE")
    assert "PARTITION (k='it\\'s')" in sql
    assert "mcfed.parquet.compression" not in sql
    whole = unload_sql("p", "t", (), "oss://h/b/x/", "acs:ram::1:role/r", "SNAPPY")
    assert whole.startswith("UNLOAD FROM p.t\nINTO\n")


def test_success_manifest_totals():
    files = [FileInfo("lake/ds=1/part-00001-0000.parquet", 5, 500, "e2"),
             FileInfo("lake/ds=1/part-00000-0000.parquet", 10, 900, "e1")]
    doc = success_manifest("p.t", (("ds", "1"),), files, 15, "direct")
    assert doc["rows"] == 15 and doc["bytes"] == 1400 and doc["source_record_count"] == 15
    assert [f["key"] for f in doc["files"]] == sorted(f.key for f in files)
    assert doc["partition"] == "ds=1"


def test_config_accepts_a_maxcompute_source():
    cfg = load_config([*BASE, 'maxcompute.partitions=["ds=2024-01-01/region=cn","ds=2024-01-02"]'])
    assert cfg.source.type.value == "maxcompute"
    assert cfg.maxcompute.partitions == ["ds=2024-01-01/region=cn", "ds=2024-01-02"]
    assert cfg.maxcompute.mode.value == "direct"


@pytest.mark.parametrize("override,message", [
    ("maxcompute.table=", "maxcompute.table"),
    ("maxcompute.project=bad-name", "maxcompute.project"),
    ("maxcompute.shard_rows=0", "maxcompute.shard_rows"),
    ("maxcompute.compression=lzo", "maxcompute.compression"),
    ("maxcompute.coerce_timestamps=s", "maxcompute.coerce_timestamps"),
    ("maxcompute.file_size=huge", "maxcompute.file_size"),
    ('maxcompute.partitions=["region"]', "maxcompute.partitions"),
    ("maxcompute.mode=unload", "maxcompute.role_arn"),
    ("destination=local", "destination=s3"),
    ("destination.prefix=orders", "destination.prefix"),
    ("destination.prefix=", "destination.prefix"),
])
def test_config_rejects_bad_maxcompute_settings(override, message):
    extra = ["destination.path=/tmp/x"] if override == "destination=local" else []
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        load_config([*BASE, override, *extra])


def test_unload_config_needs_its_oss_staging_store():
    unload = [*BASE, "maxcompute.mode=unload", "maxcompute.role_arn=acs:ram::123:role/r"]
    with pytest.raises(ConfigError, match=r"maxcompute\.oss\.bucket"):
        load_config(unload)
    with pytest.raises(ConfigError, match=r"maxcompute\.unload_compression"):
        load_config([*unload, "maxcompute.oss.bucket=stage", "maxcompute.oss.prefix=u/",
                     "maxcompute.unload_compression=BZIP"])
    with pytest.raises(ConfigError, match=r"maxcompute\.oss\.prefix"):
        load_config([*unload, "maxcompute.oss.bucket=stage"])
    cfg = load_config([*unload, "maxcompute.oss.bucket=stage", "maxcompute.oss.prefix=unload/"])
    assert cfg.maxcompute.oss.type.value == "oss" and cfg.maxcompute.oss.bucket == "stage"


def test_source_needs_an_endpoint_or_region():
    with pytest.raises(ConfigError, match="source.endpoint or source.region"):
        load_config(["source=maxcompute", "maxcompute.project=p1", "maxcompute.table=t", "destination.bucket=lake",
                     "destination.prefix=t/"])
