"""A protocol-level MaxCompute (ODPS) test endpoint: real HTTP on 127.0.0.1, in-memory tables, signatures checked.

It speaks the subset of the MaxCompute RESTful API and of the Tunnel service that pyodps uses to read table
metadata, list partitions, run SQL (UNLOAD) instances and download table data in Arrow, built from Alibaba
Cloud's published references:

- MaxCompute RESTful API overview (resources /projects/{p}/tables/{t}, /instances, XML bodies, error XML):
  https://www.alibabacloud.com/help/en/maxcompute/user-guide/api-reference
- Request signature (the `Authorization: ODPS <AccessKeyId>:<Signature>` header, HMAC-SHA1 over
  VERB, Content-MD5, Content-Type, Date, x-odps-* headers and the canonical resource; the V4 variant derives a
  per-day, per-region key): https://www.alibabacloud.com/help/en/maxcompute/user-guide/signature
- Tunnel SDK / TableTunnel download sessions (create a session per partition, RecordCount, read by row
  range; sessions are shared between processes by id): https://www.alibabacloud.com/help/en/maxcompute/user-guide/tabletunnel
  and https://www.alibabacloud.com/help/en/maxcompute/user-guide/downloadsession
- Data types (BIGINT, DOUBLE, DECIMAL(p,s), STRING, BINARY, DATETIME, TIMESTAMP, DATE, BOOLEAN, ARRAY, MAP,
  STRUCT): https://www.alibabacloud.com/help/en/maxcompute/user-guide/maxcompute-v2-0-data-type-edition
- UNLOAD (`UNLOAD FROM <table> [PARTITION (...)] INTO LOCATION 'oss://<endpoint>/<bucket>/<path>' ...`,
  append-only, system-generated file names): https://www.alibabacloud.com/help/en/maxcompute/user-guide/product-unload-dml

The wire details were cross-read against the pyodps client (odps/accounts.py for both signature versions,
odps/tunnel/tabletunnel.py and odps/tunnel/io/reader.py for the Arrow download framing: a big-endian uint32
chunk size, then chunks each followed by the CRC32C of the chunk, the last (short) chunk followed by the
CRC32C of the whole body; the body is an Arrow IPC stream of record batches without its schema message, which
the client derives from the session schema). Requests that unmodified pyodps signs are accepted; a wrong
secret gets 403 SignatureNotMatch. The Tunnel's protobuf record format, uploads, compression, column
selection and schemas (three-tier model) are not implemented.
"""

from __future__ import annotations

import base64
import collections
import datetime as dt
import email.utils
import hashlib
import hmac
import itertools
import json
import re
import struct
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, unquote, urlparse
from xml.sax.saxutils import escape

import crcmod.predefined
import pyarrow as pa

_crc32c = crcmod.predefined.mkCrcFun("crc-32c")
_V4_PREFIX = "aliyun_v4"
_MAX_SKEW_S = 15 * 60


class OdpsServiceError(Exception):
    """An error answered in ODPS's XML form."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(code)
        self.status, self.code, self.message = status, code, message


# -- types -----------------------------------------------------------------------------------------------------

def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside <...> and (...)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(text):
        if char in "<(":
            depth += 1
        elif char in ">)":
            depth -= 1
        elif char == sep and depth == 0:
            parts.append(text[start:index].strip())
            start = index + 1
    parts.append(text[start:].strip())
    return [p for p in parts if p]


_SIMPLE = {
    "bigint": pa.int64(), "int": pa.int32(), "smallint": pa.int16(), "tinyint": pa.int8(),
    "double": pa.float64(), "float": pa.float32(), "boolean": pa.bool_(), "string": pa.string(),
    "binary": pa.binary(), "date": pa.date32(), "datetime": pa.timestamp("ms"),
    "timestamp": pa.timestamp("ns"), "timestamp_ntz": pa.timestamp("ns"),
}


def arrow_type(odps_type: str) -> pa.DataType:
    """The Arrow type the Tunnel sends for an ODPS type name such as 'map<string,array<bigint>>'."""
    text = odps_type.strip()
    lower = text.lower()
    if lower in _SIMPLE:
        return _SIMPLE[lower]
    if lower.startswith(("varchar(", "char(")):
        return pa.string()
    match = re.fullmatch(r"decimal\s*(?:\(\s*(\d+)\s*,\s*(\d+)\s*\))?", lower)
    if match:
        precision, scale = (int(match.group(1)), int(match.group(2))) if match.group(1) else (38, 18)
        return pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    inner = text[text.find("<") + 1:text.rfind(">")]
    if lower.startswith("array<"):
        return pa.list_(arrow_type(inner))
    if lower.startswith("map<"):
        key, value = _split_top(inner)
        return pa.map_(arrow_type(key), arrow_type(value))
    if lower.startswith("struct<"):
        fields = []
        for item in _split_top(inner):
            name, _, type_text = item.partition(":")
            fields.append((name.strip().strip("`"), arrow_type(type_text)))
        return pa.struct(fields)
    raise ValueError(f"unsupported ODPS type {odps_type!r}")


def parse_spec(spec: str | dict) -> tuple[tuple[str, str], ...]:
    """'ds=2024-01-01,region=cn' (values optionally quoted) or a dict -> ((key, value), ...)."""
    if isinstance(spec, dict):
        return tuple((str(k), str(v)) for k, v in spec.items())
    out = []
    for item in _split_top(spec.replace("/", ",")):
        key, _, value = item.partition("=")
        out.append((key.strip(), value.strip().strip("'\"")))
    return tuple(out)


def spec_text(spec: tuple[tuple[str, str], ...]) -> str:
    return ",".join(f"{k}={v}" for k, v in spec)


# -- data model ------------------------------------------------------------------------------------------------

@dataclass
class _Partition:
    spec: tuple[tuple[str, str], ...]
    data: pa.Table
    created_s: int = field(default_factory=lambda: int(time.time()))
    modified_s: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Table:
    name: str
    columns: list[tuple[str, str]]
    partition_keys: list[tuple[str, str]]
    arrow_schema: pa.Schema
    partitions: dict[tuple, _Partition] = field(default_factory=dict)
    created_s: int = field(default_factory=lambda: int(time.time()))


@dataclass
class _Session:
    session_id: str
    table: str
    spec: tuple[tuple[str, str], ...]
    data: pa.Table  # the snapshot the session reads, as the service pins it at creation
    polls_left: int = 0


@dataclass
class _Instance:
    instance_id: str
    xml: bytes
    sql: str
    polls_left: int
    status: str = "Running"
    task_status: str = "RUNNING"
    result: str = ""


# -- the server ------------------------------------------------------------------------------------------------

class OdpsTestServer:
    """In-memory MaxCompute + Tunnel endpoint. `endpoint` (…/api) is the REST service, `tunnel_endpoint`
    (…/tunnel) the Tunnel service; both on one port. Use as a context manager or call start()/stop()."""

    def __init__(self, access_id: str, secret: str, project: str = "dth_test", region: str = "cn-hangzhou",
                 batch_rows: int = 1000, chunk_bytes: int = 65536, partition_page: int = 100):
        self.project = project
        self.region = region
        self.batch_rows = batch_rows
        self.chunk_bytes = chunk_bytes
        self.partition_page = partition_page
        self.session_polls = 1  # reloads that still see INITIATING (asyncmode), as the service may answer
        self.instance_polls = 1  # status polls that still see Running
        self._keys: dict[str, tuple[str, str]] = {access_id: (secret, "")}
        self._tables: dict[str, _Table] = {}
        self._sessions: dict[str, _Session] = {}
        self._instances: dict[str, _Instance] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self.requests: collections.Counter[str] = collections.Counter()
        self.unsupported: list[str] = []  # requests this endpoint does not implement (answered 400)
        self.signatures: collections.Counter[str] = collections.Counter()  # 'v2'/'v4' requests accepted
        self.sql: list[str] = []  # every SQL text received, in order
        self.downloads: list[tuple[str, str, int, int]] = []  # (table, partition, start, count) served
        self.on_sql: Callable[[str], str] | None = None  # returns '' (success) or an error message
        self._data_gate: Callable[[str, int, int], None] | None = None
        self._faults: list[tuple[str, OdpsServiceError]] = []
        self._httpd: ThreadingHTTPServer | None = None
        self.endpoint = self.tunnel_endpoint = ""

    # -- lifecycle -------------------------------------------------------------------------------------------
    def start(self) -> str:
        handler = type("Handler", (_Handler,), {"odps": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        threading.Thread(target=self._httpd.serve_forever, name="odps-test-server", daemon=True).start()
        base = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        self.endpoint, self.tunnel_endpoint = base + "/api", base + "/tunnel"
        return self.endpoint

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OdpsTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test API --------------------------------------------------------------------------------------------
    def add_key(self, access_id: str, secret: str, sts_token: str = "") -> None:
        """Accept another key pair (with a token, requests must carry authorization-sts-token)."""
        self._keys[access_id] = (secret, sts_token)

    def create_table(self, name: str, columns: list[tuple[str, str]],
                     partition_keys: list[tuple[str, str]] | None = None) -> None:
        schema = pa.schema([pa.field(n, arrow_type(t)) for n, t in columns])
        with self._lock:
            self._tables[name] = _Table(name, list(columns), list(partition_keys or []), schema)

    def add_partition(self, table: str, spec: str | dict, rows: list[tuple], modified_s: int | None = None) -> None:
        """Create or replace a partition ('' for a non-partitioned table) holding `rows` (Python values in
        column order); `modified_s` is its LastModifiedTime (default: now)."""
        with self._lock:
            tbl = self._tables[table]
            key = parse_spec(spec) if spec else ()
            columns = list(zip(*rows, strict=True)) if rows else [[] for _ in tbl.columns]
            arrays = [pa.array(list(col), type=f.type) for col, f in zip(columns, tbl.arrow_schema, strict=True)]
            data = pa.Table.from_arrays(arrays, schema=tbl.arrow_schema)
            part = _Partition(key, data)
            if modified_s is not None:
                part.modified_s = modified_s
            tbl.partitions[key] = part

    def rows(self, table: str, spec: str | dict = "") -> pa.Table:
        """The Arrow data of a partition, exactly as the Tunnel serves it."""
        with self._lock:
            return self._tables[table].partitions[parse_spec(spec) if spec else ()].data

    def gate_downloads(self, gate: Callable[[str, int, int], None] | None) -> None:
        """Call gate(partition, start, count) before serving each data request (it may block or raise)."""
        self._data_gate = gate

    def inject_error(self, op: str, status: int, code: str, count: int = 1) -> None:
        """Answer the next `count` requests of `op` (e.g. 'DownloadData', 'CreateInstance') with this error."""
        with self._lock:
            self._faults.extend([(op, OdpsServiceError(status, code, "injected by test"))] * count)

    # -- internals -------------------------------------------------------------------------------------------
    def _take_fault(self, op: str) -> OdpsServiceError | None:
        with self._lock:
            for index, (fault_op, error) in enumerate(self._faults):
                if fault_op == op:
                    del self._faults[index]
                    return error
        return None

    def _table(self, project: str, name: str) -> _Table:
        if project != self.project:
            raise OdpsServiceError(404, "NoSuchProject", f"ODPS-0420111: Project not found - '{project}'.")
        tbl = self._tables.get(name)
        if tbl is None:
            raise OdpsServiceError(404, "NoSuchTable", f"ODPS-0130131:Table not found - '{project}.{name}'")
        return tbl

    def _new_id(self) -> str:
        return time.strftime("%Y%m%d%H%M%S", time.gmtime()) + f"{next(self._ids):05d}g{uuid.uuid4().hex[:8]}"


def _xml(root: str, inner: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>{inner}</{root}>'.encode()


def _x(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _cdata(tag: str, text: str) -> str:
    return f"<{tag}><![CDATA[{text}]]></{tag}>"


def _rfc822(ts: float) -> str:
    return email.utils.formatdate(ts, usegmt=True)


def _schema_json(tbl: _Table, extra: dict | None = None) -> dict:
    doc = {
        "columns": [{"name": n, "type": t, "comment": "", "isNullable": True} for n, t in tbl.columns],
        "partitionKeys": [{"name": n, "type": t, "comment": ""} for n, t in tbl.partition_keys],
        "createTime": tbl.created_s, "lastDDLTime": tbl.created_s,
        "lastModifiedTime": max([tbl.created_s, *(p.modified_s for p in tbl.partitions.values())]),
        "owner": "ALIYUN$dth@test", "tableLabel": "0", "lifecycle": -1,
        "isVirtualView": False, "isMaterializedView": False,
    }
    doc.update(extra or {})
    return doc


def frame_arrow(data: pa.Table, batch_rows: int, chunk_bytes: int) -> bytes:
    """The Tunnel's Arrow body: record batches (no schema message) + end-of-stream, chunked with CRC32C."""
    sink = pa.BufferOutputStream()
    for batch in data.to_batches(max_chunksize=max(1, batch_rows)):
        sink.write(batch.serialize())
    sink.write(b"\xff\xff\xff\xff\x00\x00\x00\x00")
    payload = sink.getvalue().to_pybytes()
    out = [struct.pack("!I", chunk_bytes)]
    full = len(payload) // chunk_bytes
    for index in range(full):
        chunk = payload[index * chunk_bytes:(index + 1) * chunk_bytes]
        out += [chunk, struct.pack("!I", _crc32c(chunk))]
    out += [payload[full * chunk_bytes:], struct.pack("!I", _crc32c(payload))]
    return b"".join(out)


_UNLOAD_RE = re.compile(
    r"UNLOAD\s+FROM\s+(?P<table>[\w.`]+)\s*(?:PARTITION\s*\((?P<spec>[^)]*)\))?\s*INTO\s+LOCATION\s+"
    r"'oss://(?P<endpoint>[^/']+)/(?P<bucket>[^/']+)/(?P<path>[^']*)'", re.I | re.S)


def parse_unload(sql: str) -> dict | None:
    """The parts of an UNLOAD statement: table, spec, endpoint, bucket, path (None if it is not one)."""
    match = _UNLOAD_RE.search(sql)
    if match is None:
        return None
    out = match.groupdict()
    out["table"] = out["table"].replace("`", "").split(".")[-1]
    out["spec"] = parse_spec(out["spec"]) if out["spec"] else ()
    return out


class _Handler(BaseHTTPRequestHandler):
    odps: OdpsTestServer
    protocol_version = "HTTP/1.1"
    server_version = "ODPS"
    sys_version = ""
    timeout = 60

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- plumbing --------------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("x-odps-request-id", uuid.uuid4().hex.upper())
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD" and body:
                self.wfile.write(body)
        except (BrokenPipeError, ConnectionResetError):  # the client is gone (e.g. a killed export)
            self.close_connection = True

    def _send_error(self, error: OdpsServiceError) -> None:
        inner = _x("Code", error.code) + _x("Message", error.message) + _x("RequestId", uuid.uuid4().hex.upper())
        self._send(error.status, _xml("Error", inner + _x("HostId", "127.0.0.1")),
                   {"Content-Type": "application/xml"})

    def _handle(self, method: str) -> None:
        body = self._read_body()
        target = self.path
        service = ""
        for prefix in ("/api", "/tunnel"):
            if target == prefix or target.startswith((prefix + "/", prefix + "?")):
                service, target = prefix[1:], target[len(prefix):] or "/"
                break
        raw_path, _, raw_query = target.partition("?")
        segments = [unquote(s) for s in raw_path.strip("/").split("/") if s]
        params = dict(parse_qsl(raw_query, keep_blank_values=True))
        op = self._operation(service, method, segments, params)
        with self.odps._lock:
            self.odps.requests[op] += 1
        try:
            if not service:
                raise OdpsServiceError(404, "NoSuchObject", "Unknown service path.")
            self._authenticate(method, target)
            fault = self.odps._take_fault(op)
            if fault is not None:
                raise fault
            getattr(self, "_op_" + op, self._op_Unsupported)(segments, params, body)
        except OdpsServiceError as error:
            self._send_error(error)
        except Exception as exc:  # a bug in this endpoint: answer like a server fault, keep serving
            self._send_error(OdpsServiceError(500, "InternalServerError", f"ODPS-0010000: {type(exc).__name__}: {exc}"))

    @staticmethod
    def _operation(service: str, method: str, segs: list[str], params: dict[str, str]) -> str:
        if service == "tunnel":
            if len(segs) == 4 and segs[0] == "projects" and segs[2] == "tables":
                if method == "POST" and "downloads" in params:
                    return "CreateDownloadSession"
                if method == "GET" and "downloadid" in params and "data" in params:
                    return "DownloadData"
                if method == "GET" and "downloadid" in params:
                    return "GetDownloadSession"
            return "Unsupported"
        if segs == ["tenants"] and method == "GET":
            return "GetTenant"
        if segs == ["logview", "host"]:
            return "LogviewHost"
        if len(segs) == 2 and segs[0] == "projects" and method == "GET":
            return "GetProject"
        if len(segs) == 3 and segs[0] == "projects" and segs[2] == "tunnel" and "service" in params:
            return "TunnelService"
        if len(segs) == 4 and segs[0] == "projects" and segs[2] == "tables" and method == "GET":
            if "partitions" in params:
                return "ListPartitions"
            if "partition" in params:
                return "GetPartition"
            return "GetTable"
        if len(segs) == 3 and segs[0] == "projects" and segs[2] == "instances" and method == "POST":
            return "CreateInstance"
        if len(segs) == 4 and segs[0] == "projects" and segs[2] == "instances":
            if method == "GET" and "taskstatus" in params:
                return "GetTaskStatus"
            if method == "GET" and "result" in params:
                return "GetTaskResult"
            if method == "GET" and "source" in params:
                return "GetInstanceSource"
            if method == "GET":
                return "GetInstance"
            if method == "PUT":
                return "StopInstance"
        return "Unsupported"

    # -- signatures ------------------------------------------------------------------------------------------
    def _authenticate(self, method: str, target: str) -> None:
        """Check `Authorization: ODPS <id>:<sig>` (V2) or `ODPS <id>/<yyyymmdd>/<region>/odps/aliyun_v4_request:
        <sig>` (V4) against the canonical string of this request (target: path and query under the service)."""
        auth = self.headers.get("Authorization", "")
        if not auth.startswith("ODPS "):
            raise OdpsServiceError(401, "Unauthorized", "The request authorization header is invalid or missing.")
        credential, _, signature = auth[len("ODPS "):].rpartition(":")
        scope = credential.split("/")
        access_id = scope[0]
        if access_id not in self.odps._keys:
            raise OdpsServiceError(403, "InvalidAccessKeyId", "The access key id does not exist.")
        secret, token = self.odps._keys[access_id]
        if token and self.headers.get("authorization-sts-token", "") != token:
            raise OdpsServiceError(403, "InvalidSTSToken", "The STS token is invalid or expired.")
        date = self.headers.get("Date", "")
        parsed = email.utils.parsedate_to_datetime(date) if date else None
        if parsed is None or abs(time.time() - parsed.timestamp()) > _MAX_SKEW_S:
            raise OdpsServiceError(403, "RequestTimeTooSkewed", "The request time is too skewed.")
        canonical = self._canonical(method, target).encode()
        if len(scope) == 1:
            key = secret.encode()
        elif len(scope) == 5 and scope[3] == "odps" and scope[4] == f"{_V4_PREFIX}_request":
            day, region = scope[1], scope[2]
            if region != self.odps.region or day != dt.datetime.now(dt.timezone.utc).strftime("%Y%m%d"):
                raise OdpsServiceError(403, "SignatureNotMatch", "The credential scope does not match.")
            key = (_V4_PREFIX + secret).encode()
            for part in (day, region, "odps", f"{_V4_PREFIX}_request"):
                key = hmac.new(key, part.encode(), hashlib.sha256).digest()
        else:
            raise OdpsServiceError(401, "Unauthorized", "The request authorization header is invalid or missing.")
        expected = base64.b64encode(hmac.new(key, canonical, hashlib.sha1).digest()).decode()
        if not hmac.compare_digest(expected, signature):
            raise OdpsServiceError(403, "SignatureNotMatch", "The request signature we calculated does not match.")
        with self.odps._lock:
            self.odps.signatures["v2" if len(scope) == 1 else "v4"] += 1

    def _canonical(self, method: str, target: str) -> str:
        signed: dict[str, str] = {"content-type": "", "content-md5": ""}
        for name, value in self.headers.items():
            lower = name.lower()
            if lower in ("content-type", "content-md5") or lower.startswith("x-odps-"):
                signed[lower] = value
        signed["date"] = self.headers.get("Date", "")
        url = urlparse(unquote(target), allow_fragments=False)
        resource = url.path
        if url.query:
            params = dict(parse_qsl(url.query, True))
            for key, value in params.items():
                if key.startswith("x-odps-"):
                    signed[key] = value
            resource += "?" + "&".join(f"{k}={v}" if v != "" else k for k, v in sorted(params.items()))
        lines = [method]
        for key in sorted(signed):
            lines.append(f"{key}:{signed[key]}" if key.startswith("x-odps-") else signed[key])
        lines.append(resource)
        return "\n".join(lines)

    # -- REST operations -------------------------------------------------------------------------------------
    def _op_GetTenant(self, segs, params, body) -> None:
        doc = {"Tenant": {"Name": "dth-test", "TenantId": "1", "TenantState": "NORMAL", "Parameters": {}}}
        self._send(200, json.dumps(doc).encode(), {"Content-Type": "application/json"})

    def _op_Unsupported(self, segs, params, body) -> None:
        with self.odps._lock:
            self.odps.unsupported.append(f"{self.command} {self.path}")
        raise OdpsServiceError(400, "InvalidArgument", f"ODPS-0420411: Invalid argument - unsupported {self.path}")

    def _op_LogviewHost(self, segs, params, body) -> None:
        self._send(200, b"http://logview.invalid", {"Content-Type": "text/plain"})

    def _op_GetProject(self, segs, params, body) -> None:
        if segs[1] != self.odps.project:
            raise OdpsServiceError(404, "NoSuchProject", f"ODPS-0420111: Project not found - '{segs[1]}'.")
        inner = _x("Name", segs[1]) + _x("Type", "managed") + _x("Owner", "ALIYUN$dth@test")
        inner += _x("State", "AVAILABLE") + _x("CreationTime", _rfc822(time.time()))
        self._send(200, _xml("Project", inner), {"Content-Type": "application/xml"})

    def _op_TunnelService(self, segs, params, body) -> None:
        host = self.headers.get("Host", "127.0.0.1")
        self._send(200, f"{host}/tunnel".encode(), {"Content-Type": "text/plain"})

    def _op_GetTable(self, segs, params, body) -> None:
        with self.odps._lock:
            tbl = self.odps._table(segs[1], segs[3])
            schema = json.dumps(_schema_json(tbl))
        inner = _x("Name", tbl.name) + _x("TableId", hashlib.md5(tbl.name.encode()).hexdigest())
        inner += _x("Owner", "ALIYUN$dth@test") + _x("Type", "MANAGED_TABLE") + _cdata("Schema", schema)
        inner += _x("CreationTime", _rfc822(tbl.created_s)) + _x("LastModifiedTime", _rfc822(tbl.created_s))
        self._send(200, _xml("Table", inner), {"Content-Type": "application/xml"})

    @staticmethod
    def _partition_xml(part: _Partition) -> str:
        columns = "".join(f'<Column Name="{escape(k)}" Value="{escape(v)}"/>' for k, v in part.spec)
        meta = {"createTime": part.created_s, "lastDDLTime": part.created_s, "lastModifiedTime": part.modified_s,
                "partitionSize": part.data.nbytes, "partitionRecordNum": part.data.num_rows}
        return f"<Partition>{columns}{_cdata('Schema', json.dumps(meta))}</Partition>"

    def _op_ListPartitions(self, segs, params, body) -> None:
        with self.odps._lock:
            tbl = self.odps._table(segs[1], segs[3])
            parts = sorted(tbl.partitions.values(), key=lambda p: p.spec)
        prefix = parse_spec(params["partition"]) if params.get("partition") else ()
        parts = [p for p in parts if p.spec[:len(prefix)] == prefix]
        start = int(params.get("marker") or 0)
        page = parts[start:start + self.odps.partition_page]
        marker = str(start + len(page)) if start + len(page) < len(parts) else ""
        inner = _x("Marker", marker) + _x("MaxItems", self.odps.partition_page)
        inner += "".join(self._partition_xml(p) for p in page)
        self._send(200, _xml("Partitions", inner), {"Content-Type": "application/xml"})

    def _op_GetPartition(self, segs, params, body) -> None:
        with self.odps._lock:
            tbl = self.odps._table(segs[1], segs[3])
            part = tbl.partitions.get(parse_spec(params["partition"]))
        if part is None:
            raise OdpsServiceError(404, "NoSuchPartition", "ODPS-0130161: Partition not found.")
        self._send(200, self._partition_xml(part).encode(), {"Content-Type": "application/xml"})

    def _op_CreateInstance(self, segs, params, body) -> None:
        if segs[1] != self.odps.project:
            raise OdpsServiceError(404, "NoSuchProject", f"ODPS-0420111: Project not found - '{segs[1]}'.")
        root = ElementTree.fromstring(body)
        query = root.find(".//SQL/Query")
        if query is None:
            raise OdpsServiceError(400, "InvalidArgument", "ODPS-0420411: only SQL tasks are supported here")
        sql = query.text or ""
        instance = _Instance(self.odps._new_id(), body, sql, self.odps.instance_polls)
        with self.odps._lock:
            self.odps.sql.append(sql)
            self.odps._instances[instance.instance_id] = instance
        location = f"{self.odps.endpoint}/projects/{segs[1]}/instances/{instance.instance_id}"
        self._send(201, b"", {"Location": location})

    def _instance(self, segs) -> _Instance:
        with self.odps._lock:
            instance = self.odps._instances.get(segs[3])
        if instance is None:
            raise OdpsServiceError(404, "NoSuchObject", f"ODPS-0130071: Instance not found - {segs[3]}")
        return instance

    def _advance(self, instance: _Instance) -> None:
        """Run the instance's SQL once its Running polls are used up (on_sql emulates what the SQL does)."""
        if instance.status == "Terminated":
            return
        if instance.polls_left > 0:
            instance.polls_left -= 1
            return
        error = ""
        if self.odps.on_sql is not None:
            try:
                error = self.odps.on_sql(instance.sql) or ""
            except Exception as exc:  # the emulated job failed
                error = f"{type(exc).__name__}: {exc}"
        instance.status = "Terminated"
        instance.task_status = "FAILED" if error else "SUCCESS"
        instance.result = f"ODPS-0123131:User defined function exception - {error}" if error else "OK"

    def _op_GetInstance(self, segs, params, body) -> None:
        instance = self._instance(segs)
        self._advance(instance)
        headers = {"Content-Type": "application/xml", "x-odps-owner": "ALIYUN$dth@test",
                   "x-odps-start-time": _rfc822(time.time())}
        if instance.status == "Terminated":
            headers["x-odps-end-time"] = _rfc822(time.time())
        self._send(200, _xml("Instance", _x("Status", instance.status)), headers)

    def _tasks_xml(self, instance: _Instance, with_result: bool) -> str:
        task = _x("Name", "AnonymousSQLTask") + _x("StartTime", _rfc822(time.time()))
        task += _x("EndTime", _rfc822(time.time())) if instance.status == "Terminated" else ""
        task += _x("Status", instance.task_status)
        if with_result:
            task += f'<Result Format="text">{escape(instance.result)}</Result>'
        return f'<Tasks><Task Type="SQL">{task}</Task></Tasks>'

    def _op_GetTaskStatus(self, segs, params, body) -> None:
        instance = self._instance(segs)
        inner = _x("Status", instance.status) + self._tasks_xml(instance, False)
        self._send(200, _xml("Instance", inner), {"Content-Type": "application/xml"})

    def _op_GetTaskResult(self, segs, params, body) -> None:
        instance = self._instance(segs)
        self._send(200, _xml("Instance", self._tasks_xml(instance, True)), {"Content-Type": "application/xml"})

    def _op_GetInstanceSource(self, segs, params, body) -> None:
        self._send(200, self._instance(segs).xml, {"Content-Type": "application/xml"})

    def _op_StopInstance(self, segs, params, body) -> None:
        instance = self._instance(segs)
        instance.status, instance.task_status = "Terminated", "CANCELLED"
        self._send(200)

    # -- Tunnel operations -----------------------------------------------------------------------------------
    def _session_json(self, session: _Session, tbl: _Table) -> bytes:
        status = "initiating" if session.polls_left > 0 else "normal"
        doc = {"DownloadID": session.session_id, "Status": status, "RecordCount": session.data.num_rows,
               "Schema": _schema_json(tbl), "QuotaName": "", "SupportReadByRawSize": False}
        return json.dumps(doc).encode()

    def _op_CreateDownloadSession(self, segs, params, body) -> None:
        with self.odps._lock:
            tbl = self.odps._table(segs[1], segs[3])
            spec = parse_spec(params["partition"]) if params.get("partition") else ()
            if tuple(k for k, _ in spec) != tuple(k for k, _ in tbl.partition_keys):
                raise OdpsServiceError(400, "InvalidPartitionSpec", "The specified partition spec is not valid.")
            part = tbl.partitions.get(spec)
            if part is None:
                raise OdpsServiceError(404, "NoSuchPartition", "The specified partition does not exist.")
            polls = self.odps.session_polls if params.get("asyncmode") == "true" else 0
            session = _Session(uuid.uuid4().hex.upper(), tbl.name, spec, part.data, polls)
            self.odps._sessions[session.session_id] = session
        self._send(201, self._session_json(session, tbl), {"Content-Type": "application/json"})

    def _session(self, segs, params) -> tuple[_Session, _Table]:
        with self.odps._lock:
            tbl = self.odps._table(segs[1], segs[3])
            session = self.odps._sessions.get(params["downloadid"])
        if session is None or session.table != tbl.name:
            raise OdpsServiceError(404, "NoSuchDownload", "The download session does not exist or expired.")
        return session, tbl

    def _op_GetDownloadSession(self, segs, params, body) -> None:
        session, tbl = self._session(segs, params)
        body_out = self._session_json(session, tbl)
        session.polls_left = max(0, session.polls_left - 1)
        self._send(200, body_out, {"Content-Type": "application/json"})

    def _op_DownloadData(self, segs, params, body) -> None:
        session, _ = self._session(segs, params)
        if "arrow" not in params:
            raise OdpsServiceError(400, "InvalidArgument", "Only the Arrow format is served by this endpoint.")
        if params.get("columns"):
            raise OdpsServiceError(400, "InvalidArgument", "Column selection is not served by this endpoint.")
        match = re.fullmatch(r"\((\d+),(\d+)\)", params.get("rowrange", ""))
        if match is None:
            raise OdpsServiceError(400, "InvalidArgument", "rowrange must be (start,count).")
        start, count = int(match.group(1)), int(match.group(2))
        if start + count > session.data.num_rows:
            raise OdpsServiceError(400, "InvalidArgument", "The row range exceeds the session's records.")
        if self.odps._data_gate is not None:
            self.odps._data_gate(spec_text(session.spec), start, count)
        with self.odps._lock:
            self.odps.downloads.append((session.table, spec_text(session.spec), start, count))
        payload = frame_arrow(session.data.slice(start, count), self.odps.batch_rows, self.odps.chunk_bytes)
        self._send(200, payload, {"Content-Type": "application/octet-stream",
                                  "odps-tunnel-record-count": str(count)})


def unload_to(odps: OdpsTestServer, oss, files_per_partition: int = 2) -> Callable[[str], str]:
    """An `on_sql` handler that does what UNLOAD does, against an OSS test endpoint (`oss.put_object`): the
    partition's rows as Parquet files with system-generated names (appended, never overwriting) under the
    LOCATION's bucket and path, compressed as PROPERTIES('mcfed.parquet.compression'=...) says. Anything
    that is not an UNLOAD fails the instance."""
    import io

    import pyarrow.parquet as pq

    codecs = {"SNAPPY": "snappy", "GZIP": "gzip", "ZSTD": "zstd", "LZO": "lz4", "": None}

    def handle(sql: str) -> str:
        unload = parse_unload(sql)
        if unload is None:
            return "only UNLOAD statements are emulated"
        if "ParquetHiveSerDe" not in sql or not re.search(r"STORED\s+AS\s+PARQUET", sql, re.I):
            return "only Parquet output is emulated"
        match = re.search(r"'mcfed\.parquet\.compression'\s*=\s*'(\w+)'", sql)
        codec = codecs[(match.group(1) if match else "").upper()]
        data = odps.rows(unload["table"], spec_text(unload["spec"]))
        per_file = -(-data.num_rows // files_per_partition) if data.num_rows else 0
        run_id = uuid.uuid4().hex[:16]
        for index in range(files_per_partition if data.num_rows else 0):
            buffer = io.BytesIO()
            pq.write_table(data.slice(index * per_file, per_file), buffer, compression=codec)
            key = f"{unload['path']}M1_{run_id}_{index:06d}"  # names are the service's, without a suffix
            oss.put_object(unload["bucket"], key, buffer.getvalue())
        return ""

    return handle
