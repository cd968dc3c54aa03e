"""The MaxCompute test endpoint driven by unmodified, public pyodps calls, and dth_ray's client facade on top:
metadata, paged partition listings, Arrow downloads over several CRC-checked chunks, SQL instances, and
signatures (V4 and V2) that are actually checked."""

from __future__ import annotations

import pyarrow as pa
import pytest
from odps import ODPS
from odps import errors as odps_errors
from odps.accounts import StsAccount
from odps.config import option_context
from odps.tunnel import TableTunnel

from dth_ray.compose import load_settings
from dth_ray.config import MaxComputeConfig, StoreConfig, StoreType
from dth_ray.errors import ConfigError, Fatal, NotFound, PermissionDenied
from dth_ray.maxcompute.client import MaxComputeClient
from dth_ray.maxcompute.common import select_partitions
from tests.integration.mc_helpers import COLUMNS, MC_KEY, PARTITION_KEYS, PROJECT, make_rows
from tests.servers.odps_server import OdpsTestServer, frame_arrow

SPECS = ["ds=2024-01-01,region=cn", "ds=2024-01-01,region=us", "ds=2024-01-02,region=cn"]
STS = ("STS.NTestTemporaryKey", "sts-temporary-secret-42", "CAIS+sts/token==")


@pytest.fixture(scope="module")
def odps():
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MCC_ACCESS_KEY_ID", MC_KEY[0])
        mp.setenv("MCC_SECRET_ACCESS_KEY", MC_KEY[1])
        mp.setenv("MCBAD_ACCESS_KEY_ID", MC_KEY[0])
        mp.setenv("MCBAD_SECRET_ACCESS_KEY", "not-the-secret-000")
        for name, token in (("MCSTS", STS[2]), ("MCSTSBAD", "expired")):
            mp.setenv(f"{name}_ACCESS_KEY_ID", STS[0])
            mp.setenv(f"{name}_SECRET_ACCESS_KEY", STS[1])
            mp.setenv(f"{name}_SESSION_TOKEN", token)
        # Small batches, chunks and pages, so framing across chunks and listing markers are exercised.
        with OdpsTestServer(*MC_KEY, project=PROJECT, batch_rows=50, chunk_bytes=1000, partition_page=2) as srv:
            srv.add_key(*STS)
            srv.create_table("orders", COLUMNS, PARTITION_KEYS)
            for index, spec in enumerate(SPECS):
                srv.add_partition("orders", spec, make_rows(index * 10_000, 240 + index * 50, seed=index))
            srv.create_table("flat", [("id", "bigint"), ("v", "string")])
            srv.add_partition("flat", "", [(i, f"v{i}") for i in range(7)])
            yield srv


def _odps(srv: OdpsTestServer, secret: str = MC_KEY[1], region: str | None = "cn-hangzhou") -> ODPS:
    return ODPS(MC_KEY[0], secret, project=PROJECT, endpoint=srv.endpoint, tunnel_endpoint=srv.tunnel_endpoint,
                region_name=region, overwrite_global=False)


def _client(srv: OdpsTestServer, credentials: str = "env:MCC", table: str = "orders") -> MaxComputeClient:
    store = StoreConfig(type=StoreType.maxcompute, endpoint=srv.endpoint, region="cn-hangzhou",
                        credentials=credentials)
    return MaxComputeClient(store, MaxComputeConfig(project=PROJECT, table=table,
                                                    tunnel_endpoint=srv.tunnel_endpoint))


def test_pyodps_reads_schema_and_paged_partitions(odps):
    table = _odps(odps).get_table("orders")
    assert [(c.name, str(c.type).lower()) for c in table.table_schema.simple_columns] == \
        [(n, t.replace("struct<city:string,zip:bigint>", "struct<`city`:string,`zip`:bigint>")) for n, t in COLUMNS]
    assert [p.name for p in table.table_schema.partitions] == ["ds", "region"]
    before = odps.requests["ListPartitions"]
    specs = [str(p.partition_spec) for p in table.partitions]
    assert specs == ["ds='2024-01-01',region='cn'", "ds='2024-01-01',region='us'", "ds='2024-01-02',region='cn'"]
    assert odps.requests["ListPartitions"] - before == 2  # three partitions, two per page: a marker was followed


def test_pyodps_arrow_download_equals_what_the_endpoint_holds(odps):
    conn = _odps(odps)
    tunnel = TableTunnel(conn, endpoint=odps.tunnel_endpoint)
    session = tunnel.create_download_session("orders", partition_spec=SPECS[1])
    assert session.count == 290
    shared = tunnel.create_download_session("orders", partition_spec=SPECS[1], download_id=session.id)
    expected = odps.rows("orders", SPECS[1])
    with option_context({"local_timezone": False}):  # naive UTC, as the endpoint holds them
        with shared.open_arrow_reader(30, 200) as reader:
            batches = list(reader)
        with conn.get_table("orders").open_reader(partition=SPECS[1], arrow=True) as reader:
            whole = reader.read_all()
    assert len(batches) > 3  # several IPC batches, spread over many 1000-byte chunks
    assert sum(b.num_rows for b in batches) == 200
    assert pa.Table.from_batches(batches).to_pylist() == expected.slice(30, 200).to_pylist()
    assert whole.to_pylist() == expected.to_pylist()
    assert len(frame_arrow(expected, 50, 1000)) > 5 * 1000


def test_signatures_are_checked_in_both_versions(odps):
    before = dict(odps.signatures)
    _odps(odps).get_table("orders").reload()
    _odps(odps, region=None).get_table("orders").reload()
    assert odps.signatures["v4"] > before.get("v4", 0) and odps.signatures["v2"] > before.get("v2", 0)
    for region in ("cn-hangzhou", None):
        with pytest.raises(odps_errors.SignatureNotMatch):
            _odps(odps, secret="wrong-secret", region=region).get_table("orders").reload()
    stranger = ODPS("LTAI5tNobodyKnowsMe", MC_KEY[1], project=PROJECT, endpoint=odps.endpoint,
                    region_name="cn-hangzhou", overwrite_global=False)
    with pytest.raises(odps_errors.ODPSError):
        stranger.get_table("orders").reload()
    tunnel = TableTunnel(_odps(odps, secret="wrong-secret"), endpoint=odps.tunnel_endpoint)
    with pytest.raises(odps_errors.ODPSError):
        tunnel.create_download_session("orders", partition_spec=SPECS[0])


def test_sts_token_is_required_and_checked(odps):
    good = ODPS(StsAccount(*STS), project=PROJECT, endpoint=odps.endpoint, region_name="cn-hangzhou",
                overwrite_global=False)
    good.get_table("orders").reload()
    assert _client(odps, "env:MCSTS").table().partition_keys == ("ds", "region")
    with pytest.raises(PermissionDenied):
        _client(odps, "env:MCSTSBAD").table()


def test_facade_maps_errors_and_refusals(odps):
    with pytest.raises(PermissionDenied):
        _client(odps, "env:MCBAD").table()
    with pytest.raises(NotFound):
        _client(odps, table="missing").table()
    base = ["source=maxcompute", f"source.endpoint={odps.endpoint}", "source.region=cn-hangzhou",
            f"maxcompute.project={PROJECT}", "maxcompute.table=orders", "destination.bucket=lake",
            "destination.prefix=orders/"]
    with pytest.raises(ConfigError, match="credentials"):
        select_partitions(_client(odps, "env:MCBAD"), load_settings([*base, "source.credentials=env:MCBAD"]))
    with pytest.raises(ConfigError, match="not a partition key"):
        select_partitions(_client(odps), load_settings([*base, 'maxcompute.partitions=["dt=1"]']))
    with pytest.raises(ConfigError, match="selects no partition"):
        select_partitions(_client(odps), load_settings([*base, 'maxcompute.partitions=["ds=1999-01-01"]']))
    table, parts = select_partitions(_client(odps), load_settings([*base, 'maxcompute.partitions=["region=cn"]']))
    assert [p.spec for p in parts] == [(("ds", "2024-01-01"), ("region", "cn")), (("ds", "2024-01-02"), ("region", "cn"))]
    assert all(p.record_num > 0 and p.last_modified for p in parts)


def test_facade_sessions_are_shared_by_id_and_read_by_row_range(odps):
    client = _client(odps)
    spec = (("ds", "2024-01-02"), ("region", "cn"))
    download_id, count = client.session(spec)
    assert count == 340
    again = _client(odps).session(spec, download_id)  # another process continuing the same snapshot
    assert again == (download_id, count)
    fresh_id, fresh_count = client.session(spec, "NOSUCHSESSION")
    assert fresh_id != download_id and fresh_count == count
    batches = list(client.read(spec, download_id, 100, 120))
    got = [row["id"] for b in batches for row in b.to_pylist()]
    assert got == [r["id"] for r in odps.rows("orders", "ds=2024-01-02,region=cn").slice(100, 120).to_pylist()]
    created = batches[0].schema.field("created").type
    assert str(created.tz) == "UTC" and created.unit == "ms"  # instants arrive UTC-aware, never host-local
    flat = _client(odps, table="flat")
    assert flat.partitions()[0].spec == ()
    flat_id, flat_count = flat.session(())
    assert flat_count == 7 and sum(b.num_rows for b in flat.read((), flat_id, 0, 7)) == 7


def test_sql_instances_are_submitted_polled_and_failures_reported(odps):
    seen = []
    odps.on_sql = lambda sql: seen.append(sql) or ("" if "good" in sql else "table not found")
    try:
        instance_id = _client(odps).run_sql("SELECT 'good';", timeout_s=30)
        assert instance_id and seen[-1].startswith("SELECT 'good'")
        assert odps.sql[-1].startswith("SELECT 'good'")
        with pytest.raises(Fatal):
            _client(odps).run_sql("SELECT 'bad';", timeout_s=30)
        inst = _odps(odps).run_sql("SELECT 'good';")
        inst.wait_for_success(interval=0.1)
        assert inst.is_successful()
    finally:
        odps.on_sql = None
