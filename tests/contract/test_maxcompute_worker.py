"""The export actor's class used directly (no Ray): one shard of a table with the remaining MaxCompute types
read from the test endpoint and written to moto's S3; types and values checked after a pyarrow read-back."""

from __future__ import annotations

import datetime as dt
import decimal
import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dth_ray.compose import load_settings
from dth_ray.maxcompute.client import MaxComputeClient
from dth_ray.maxcompute.plan import ShardTask
from dth_ray.maxcompute.worker import ExportWorker
from tests.integration.mc_helpers import MC_KEY, PROJECT, same_type
from tests.servers.odps_server import OdpsTestServer

BUCKET = "mc-worker"
COLUMNS = [("t", "tinyint"), ("s", "smallint"), ("i", "int"), ("f", "float"), ("vc", "varchar(10)"),
           ("c", "char(3)"), ("ntz", "timestamp_ntz"), ("wide", "decimal(38,10)"),
           ("nested", "array<struct<k:string,v:array<double>>>"), ("m", "map<bigint,array<date>>")]
TYPES = {"t": pa.int8(), "s": pa.int16(), "i": pa.int32(), "f": pa.float32(), "vc": pa.string(), "c": pa.string(),
         "ntz": pa.timestamp("ns"), "wide": pa.decimal128(38, 10),
         "nested": pa.list_(pa.struct([("k", pa.string()), ("v", pa.list_(pa.float64()))])),
         "m": pa.map_(pa.int64(), pa.list_(pa.date32()))}


def _rows(count: int) -> list[tuple]:
    return [(i % 127, -i, i * 1000, i / 8, f"v{i}", "abc", dt.datetime(2020, 5, 17, 1, 2, 3, i),
             decimal.Decimal(f"{i}123456789012345678.0123456789"), [{"k": "a", "v": [1.5, None]}] if i % 3 else [],
             {i: [dt.date(2024, 2, 29)]} if i % 2 else None) for i in range(count)]


@pytest.fixture(scope="module")
def setup(moto_server):
    moto_server.create_bucket(BUCKET)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MCW_ACCESS_KEY_ID", MC_KEY[0])
        mp.setenv("MCW_SECRET_ACCESS_KEY", MC_KEY[1])
        mp.setenv("MOTOW_ACCESS_KEY_ID", "testing-key")
        mp.setenv("MOTOW_SECRET_ACCESS_KEY", "testing-secret")
        with OdpsTestServer(*MC_KEY, project=PROJECT, batch_rows=64) as odps:
            odps.create_table("more", COLUMNS, [("ds", "string")])
            odps.add_partition("more", "ds=x", _rows(300))
            yield odps, moto_server


def test_a_shard_with_every_other_type_round_trips(setup, tmp_path):
    odps, moto = setup
    cfg = load_settings([
        "source=maxcompute", f"source.endpoint={odps.endpoint}", "source.region=cn-hangzhou",
        "source.credentials=env:MCW", f"maxcompute.project={PROJECT}", "maxcompute.table=more",
        f"maxcompute.tunnel_endpoint={odps.tunnel_endpoint}", "maxcompute.compression=snappy",
        "destination=s3", f"destination.bucket={BUCKET}", f"destination.endpoint={moto.endpoint}",
        "destination.prefix=more/", "destination.credentials=env:MOTOW", "destination.addressing_style=path",
        f"manifest.path={tmp_path / 'm.sqlite'}"])
    worker = ExportWorker(cfg)
    download_id, count = MaxComputeClient(cfg.config.source, cfg.config.maxcompute).session((("ds", "x"),))
    try:
        outcome = worker.export(ShardTask((("ds", "x"),), 0, 20, 250, download_id, "more/ds=x/"))
        refused = worker.export(ShardTask((("ds", "x"),), 1, 290, 50, download_id, "more/ds=x/"))
    finally:
        worker.close()
    assert count == 300 and outcome.error == "" and outcome.rows == 250
    assert refused.error and not refused.retryable  # a range past the session's rows is the caller's bug
    [info] = outcome.files
    body = moto.client().get_object(Bucket=BUCKET, Key=info.key)["Body"].read()
    table = pq.read_table(io.BytesIO(body))
    for name, expected in TYPES.items():
        assert same_type(table.schema.field(name).type, expected), (name, table.schema.field(name).type)
    assert table.to_pylist() == odps.rows("more", "ds=x").slice(20, 250).to_pylist()
    assert pq.ParquetFile(io.BytesIO(body)).metadata.row_group(0).column(0).compression == "SNAPPY"
