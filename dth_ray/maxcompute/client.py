"""pyodps behind one small facade: table metadata, partitions, Tunnel download sessions read as Arrow batches,
and SQL instances; every pyodps/requests error is mapped once, here, into dth_ray's taxonomy.

The facade pickles as its configs (keys are resolved where it is used, never shipped); pyodps objects are
built lazily in the process that uses them.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass

from dth_ray.config import MaxComputeConfig, StoreConfig
from dth_ray.credentials import resolve
from dth_ray.errors import (
    ConfigError,
    DthError,
    Fatal,
    NotFound,
    PermissionDenied,
    Throttled,
    Transient,
)
from dth_ray.maxcompute.plan import Spec, spec_text

log = logging.getLogger(__name__)
_PERMISSION_CODES = ("SignatureNotMatch", "InvalidAccessKeyId", "InvalidSTSToken", "NoPermission",
                     "Unauthorized", "AccessDenied")


@dataclass(frozen=True)
class TableInfo:
    name: str
    columns: tuple[tuple[str, str], ...]  # (name, ODPS type) of the data columns
    partition_keys: tuple[str, ...]
    last_modified: str


@dataclass(frozen=True)
class PartitionInfo:
    spec: Spec
    last_modified: str  # the partition's last data modification (epoch seconds as text), to spot rewrites
    record_num: int  # the metadata's count (-1 when unknown); the Tunnel session's count is the exact one


def default_endpoint(store: StoreConfig) -> str:
    """The MaxCompute service for `source.region`: public, or the VPC endpoint with `source.internal`."""
    if store.internal:
        return f"https://service.{store.region}-vpc.maxcompute.aliyun-inc.com/api"
    return f"https://service.{store.region}.maxcompute.aliyun.com/api"


def map_error(exc: BaseException, what: str) -> DthError:
    """One place that turns pyodps/requests failures into the taxonomy (by class and code, never message)."""
    import requests
    from odps import errors as odps_errors

    if isinstance(exc, DthError):
        return exc
    code = str(getattr(exc, "code", "") or "")
    short = code.split(":", 1)[0] if code else type(exc).__name__
    msg = f"MaxCompute {what} failed: {short}"
    if isinstance(exc, (odps_errors.SignatureNotMatch, odps_errors.AuthorizationRequired,
                        odps_errors.NoPermission)) or code in _PERMISSION_CODES:
        return PermissionDenied(msg, code)
    if isinstance(exc, odps_errors.NoSuchObject) or code.startswith("NoSuch"):
        return NotFound(msg, code)
    if isinstance(exc, odps_errors.RequestQuotaExceeded):
        return Throttled(msg, code=code)
    status = getattr(exc, "status_code", None)
    if isinstance(exc, (odps_errors.InternalServerError, odps_errors.ConnectTimeout, odps_errors.ChecksumError,
                        requests.exceptions.RequestException, TimeoutError, ConnectionError)) or \
            (isinstance(status, int) and status >= 500):
        return Transient(msg, code)
    detail = str(exc).strip().splitlines()[-1][:300] if str(exc).strip() else ""
    return Fatal(f"{msg}{': ' + detail if detail else ''}", code)


class MaxComputeClient:
    """A MaxCompute project and table reached through pyodps (V4 signatures when the region is known)."""

    def __init__(self, store: StoreConfig, mc: MaxComputeConfig):
        self._store = store
        self._mc = mc
        self._odps = None
        self._tunnel = None
        self._options = {"connect_timeout": max(1, int(store.connect_timeout_s)),
                         "read_timeout": max(1, int(store.read_timeout_s)),
                         "local_timezone": "UTC"}  # instants stay UTC-aware, never shifted to this host's zone

    def __reduce__(self):
        return (MaxComputeClient, (self._store, self._mc))

    def __repr__(self) -> str:
        return f"MaxComputeClient(project={self._mc.project!r}, table={self._mc.table!r})"

    @property
    def table_name(self) -> str:
        return f"{self._mc.project}.{self._mc.table}"

    @contextlib.contextmanager
    def _call(self, what: str):
        from odps.config import option_context

        try:
            with option_context(self._options):
                yield
        except DthError:
            raise
        except Exception as exc:  # pyodps, requests and pyarrow raise many types; each is mapped once
            raise map_error(exc, what) from exc

    def _client(self):
        if self._odps is None:
            from odps import ODPS
            from odps.accounts import StsAccount

            creds = resolve(self._store.credentials, "source", self._store.region, provider="aliyun")
            if creds is None:
                raise ConfigError("source.credentials: MaxCompute needs keys (env:NAME, secret:ID, or "
                                  "ALIBABA_CLOUD_ACCESS_KEY_ID/ALIBABA_CLOUD_ACCESS_KEY_SECRET for default)")
            endpoint = self._store.endpoint or default_endpoint(self._store)
            kwargs = dict(project=self._mc.project, endpoint=endpoint, region_name=self._store.region or None,
                          tunnel_endpoint=self._mc.tunnel_endpoint or None, overwrite_global=False)
            if creds.session_token:
                account = StsAccount(creds.access_key_id, creds.secret_access_key, creds.session_token)
                self._odps = ODPS(account, **kwargs)
            else:
                self._odps = ODPS(creds.access_key_id, creds.secret_access_key, **kwargs)
        return self._odps

    def _table_tunnel(self):
        if self._tunnel is None:
            from odps.tunnel import TableTunnel

            self._tunnel = TableTunnel(self._client(), endpoint=self._mc.tunnel_endpoint or None)
        return self._tunnel

    def table(self) -> TableInfo:
        """The table's data columns and partition keys. Raises NotFound, PermissionDenied, Transient."""
        with self._call("describe table"):
            table = self._client().get_table(self._mc.table)
            schema = table.table_schema
            modified = table.last_data_modified_time
            return TableInfo(
                name=self.table_name,
                columns=tuple((c.name, str(c.type)) for c in schema.simple_columns),
                partition_keys=tuple(p.name for p in schema.partitions),
                last_modified=str(int(modified.timestamp())) if modified else "",
            )

    def partitions(self) -> list[PartitionInfo]:
        """Every partition, in the service's order; one empty spec for a non-partitioned table."""
        info = self.table()
        if not info.partition_keys:
            return [PartitionInfo((), info.last_modified, -1)]
        with self._call("list partitions"):
            out = []
            for part in self._client().get_table(self._mc.table).iterate_partitions():
                spec = tuple((k, str(v)) for k, v in part.partition_spec.kv.items())
                modified = part.last_data_modified_time
                record_num = part.record_num
                out.append(PartitionInfo(spec, str(int(modified.timestamp())) if modified else "",
                                         int(record_num) if record_num is not None else -1))
            return out

    def session(self, spec: Spec, download_id: str = "") -> tuple[str, int]:
        """(download id, exact record count) of a Tunnel download session for one partition: the one named by
        `download_id` if it is still valid, else a new one. Raises NotFound, PermissionDenied, Transient."""
        tunnel = self._table_tunnel()
        if download_id:
            try:
                with self._call("reload download session"):
                    s = tunnel.create_download_session(self._mc.table, partition_spec=spec_text(spec) or None,
                                                       download_id=download_id)
                    return s.id, int(s.count)
            except (NotFound, Fatal):
                log.info("download session %s of %s is gone; opening a new one", download_id, spec_text(spec))
        with self._call("open download session"):
            s = tunnel.create_download_session(self._mc.table, partition_spec=spec_text(spec) or None)
            return s.id, int(s.count)

    def read(self, spec: Spec, download_id: str, start: int, rows: int) -> Iterator:
        """Arrow record batches of rows [start, start+rows) of a download session (partition columns are not
        included: Hive-style layouts keep them in the path). Raises a DthError (retryable when a retry may help)."""
        tunnel = self._table_tunnel()
        with self._call("read"):
            s = tunnel.create_download_session(self._mc.table, partition_spec=spec_text(spec) or None,
                                               download_id=download_id)
            with s.open_arrow_reader(start, rows) as reader:
                while True:
                    batch = reader.read_next_batch()
                    if batch is None:
                        return
                    yield batch

    def run_sql(self, sql: str, timeout_s: float) -> str:
        """Submit `sql`, wait until it succeeds, and return the instance id. Raises Fatal when it fails or
        times out, PermissionDenied, Transient."""
        with self._call("SQL instance"):
            instance = self._client().run_sql(sql)
            log.info("MaxCompute instance %s submitted", instance.id)
            instance.wait_for_success(interval=1, max_interval=30, timeout=timeout_s)
            return instance.id
