"""A protocol-level Aliyun OSS test endpoint: real HTTP on 127.0.0.1, in-memory buckets, signature checks.

Built from Alibaba Cloud's published OSS API reference (path-style requests, which is what clients use for
an IP endpoint):

- ListObjectsV2: https://www.alibabacloud.com/help/en/oss/developer-reference/listobjectsv2
- ListObjects (v1): https://www.alibabacloud.com/help/en/oss/developer-reference/listobjects
- GetObject: https://www.alibabacloud.com/help/en/oss/developer-reference/getobject
- PutObject: https://www.alibabacloud.com/help/en/oss/developer-reference/putobject
- HeadObject: https://www.alibabacloud.com/help/en/oss/developer-reference/headobject
- DeleteObject: https://www.alibabacloud.com/help/en/oss/developer-reference/deleteobject
- InitiateMultipartUpload: https://www.alibabacloud.com/help/en/oss/developer-reference/initiatemultipartupload
- UploadPart: https://www.alibabacloud.com/help/en/oss/developer-reference/uploadpart
- CompleteMultipartUpload: https://www.alibabacloud.com/help/en/oss/developer-reference/completemultipartupload
- AbortMultipartUpload: https://www.alibabacloud.com/help/en/oss/developer-reference/abortmultipartupload
- ListParts: https://www.alibabacloud.com/help/en/oss/developer-reference/listparts
- ListMultipartUploads: https://www.alibabacloud.com/help/en/oss/developer-reference/listmultipartuploads
- Signature V4: https://www.alibabacloud.com/help/en/oss/developer-reference/recommend-to-use-signature-version-4
- Signature V1: https://www.alibabacloud.com/help/en/oss/developer-reference/include-signatures-in-the-authorization-header
- Error responses: https://www.alibabacloud.com/help/en/oss/developer-reference/error-responses

The V4 and V1 checks were cross-read against the signing code of the oss2 SDK (oss2/auth.py), so requests
that unmodified oss2 signs are accepted and a wrong secret is rejected with 403 SignatureDoesNotMatch.
Not implemented: virtual-host addressing, presigned URLs (a query-string signature counts as anonymous),
CopyObject/UploadPartCopy, versioning, restore of archived objects, bucket-level PUT/DELETE, ACL operations.
The multipart ETag is an opaque "UPPERHEX-N" (md5 of the part ETag strings), deliberately not S3's scheme.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import hmac
import itertools
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qsl, quote, unquote
from xml.sax.saxutils import escape

import crcmod

_crc64 = crcmod.mkCrcFun(0x142F0E1EBA9EA3693, initCrc=0, rev=True, xorOut=0xFFFFFFFFFFFFFFFF)
_ARCHIVE_CLASSES = ("Archive", "ColdArchive", "DeepColdArchive")
_STORED_HEADERS = ("content-type", "content-encoding", "content-language", "content-disposition",
                   "cache-control", "expires")
_MIN_PART_BYTES = 100 * 1024
# Sub-resources that take part in a V1 signature (the subset this endpoint can receive).
_V1_SUBRESOURCES = frozenset([
    "acl", "uploadId", "uploads", "partNumber", "continuation-token", "security-token", "versionId",
    "response-content-type", "response-content-language", "response-cache-control",
    "response-content-encoding", "response-expires", "response-content-disposition", "location",
    "restore", "tagging", "symlink", "objectMeta", "versions", "delete", "stat", "bucketInfo",
])


class OssServiceError(Exception):
    """An error answered in OSS's XML form."""

    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None):
        super().__init__(code)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


@dataclass
class _Object:
    data: bytes
    etag: str
    headers: dict[str, str]
    storage_class: str = "Standard"
    object_type: str = "Normal"
    mtime: float = field(default_factory=time.time)
    crc64: int = 0


@dataclass
class _Part:
    data: bytes
    etag: str
    mtime: float = field(default_factory=time.time)


@dataclass
class _Upload:
    key: str
    upload_id: str
    headers: dict[str, str]
    storage_class: str
    initiated: float = field(default_factory=time.time)
    parts: dict[int, _Part] = field(default_factory=dict)


@dataclass
class _Bucket:
    name: str
    public: bool = False
    objects: dict[str, _Object] = field(default_factory=dict)
    uploads: dict[str, _Upload] = field(default_factory=dict)


def _md5_etag(data: bytes) -> str:
    return hashlib.md5(data).hexdigest().upper()


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


def _http_date(ts: float) -> str:
    return formatdate(ts, usegmt=True)


def _v4_encode(text: str, keep_slash: bool) -> str:
    return quote(text, safe="-_.~/" if keep_slash else "-_.~")


def _x(tag: str, value: object) -> str:
    return f"<{tag}>{escape(str(value))}</{tag}>"


def _xml(root: str, inner: str) -> bytes:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<{root}>{inner}</{root}>'.encode()


def _sort_key(key: str) -> bytes:
    return key.encode("utf-8")


class OssTestServer:
    """In-memory OSS endpoint for tests. Use as a context manager or call start()/stop()."""

    def __init__(self, access_key_id: str, secret: str, region: str = "cn-hangzhou"):
        self.region = region
        self._keys: dict[str, tuple[str, str]] = {access_key_id: (secret, "")}
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._faults: list[tuple[str, OssServiceError]] = []
        self._corrupt_gets = 0
        self._truncate = False
        self.requests: collections.Counter[str] = collections.Counter()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.endpoint = ""

    # -- lifecycle -------------------------------------------------------------------------------------
    def start(self) -> str:
        """Listen on a random 127.0.0.1 port in a background thread; return the endpoint URL."""
        handler = type("Handler", (_Handler,), {"oss": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._httpd.block_on_close = False
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="oss-test-server", daemon=True)
        self._thread.start()
        self.endpoint = f"http://127.0.0.1:{self._httpd.server_address[1]}"
        return self.endpoint

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None

    def __enter__(self) -> OssTestServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- test API --------------------------------------------------------------------------------------
    def add_key(self, access_key_id: str, secret: str, security_token: str = "") -> None:
        """Accept another key pair (with a token, requests must carry x-oss-security-token)."""
        self._keys[access_key_id] = (secret, security_token)

    def create_bucket(self, name: str, public: bool = False) -> None:
        with self._lock:
            self._buckets.setdefault(name, _Bucket(name, public))

    def put_object(self, bucket: str, key: str, data: bytes, headers: dict[str, str] | None = None,
                   storage_class: str = "Standard") -> str:
        """Seed an object directly; returns its (uppercase) ETag."""
        obj = _Object(data, _md5_etag(data), {k.lower(): v for k, v in (headers or {}).items()},
                      storage_class, crc64=_crc64(data))
        with self._lock:
            self._buckets[bucket].objects[key] = obj
        return obj.etag

    def get_object_bytes(self, bucket: str, key: str) -> bytes:
        with self._lock:
            return self._buckets[bucket].objects[key].data

    def object_etag(self, bucket: str, key: str) -> str:
        with self._lock:
            return self._buckets[bucket].objects[key].etag

    def upload_ids(self, bucket: str) -> list[str]:
        with self._lock:
            return sorted(self._buckets[bucket].uploads)

    def corrupt_next_get(self, count: int = 1, truncate: bool = False) -> None:
        """Flip one byte in (or, with `truncate`, send only half of and then drop the connection for) the
        bodies of the next `count` non-empty GetObject responses."""
        with self._lock:
            self._corrupt_gets += count
            self._truncate = truncate

    def inject_error(self, op: str, status: int, code: str, headers: dict[str, str] | None = None,
                     count: int = 1) -> None:
        """Answer the next `count` requests of operation `op` (e.g. 'GetObject') with this error."""
        with self._lock:
            self._faults.extend([(op, OssServiceError(status, code, "injected by test", headers))] * count)

    def reset_counters(self) -> None:
        self.requests.clear()

    # -- dispatch (called by the handler) ------------------------------------------------------------
    def _take_fault(self, op: str) -> OssServiceError | None:
        with self._lock:
            for index, (fault_op, error) in enumerate(self._faults):
                if fault_op == op:
                    del self._faults[index]
                    return error
        return None

    def _take_corruption(self) -> str:
        """'' (none), 'flip' or 'truncate' for the next GetObject body."""
        with self._lock:
            if self._corrupt_gets > 0:
                self._corrupt_gets -= 1
                return "truncate" if self._truncate else "flip"
        return ""

    def _bucket(self, name: str) -> _Bucket:
        bucket = self._buckets.get(name)
        if bucket is None:
            raise OssServiceError(404, "NoSuchBucket", "The specified bucket does not exist.")
        return bucket

    def _new_id(self) -> str:
        return f"{next(self._ids):08X}{uuid.uuid4().hex[:24].upper()}"


def _operation(method: str, key: str, params: dict[str, str]) -> str:
    if not key:
        if method == "GET" and "uploads" in params:
            return "ListMultipartUploads"
        if method == "GET":
            return "ListObjectsV2" if params.get("list-type") == "2" else "ListObjects"
        return f"{method}Bucket"
    if "uploadId" in params:
        return {"GET": "ListParts", "PUT": "UploadPart", "POST": "CompleteMultipartUpload",
                "DELETE": "AbortMultipartUpload"}.get(method, "Unsupported")
    if method == "POST" and "uploads" in params:
        return "InitiateMultipartUpload"
    return {"GET": "GetObject", "HEAD": "HeadObject", "PUT": "PutObject",
            "DELETE": "DeleteObject"}.get(method, "Unsupported")


class _Handler(BaseHTTPRequestHandler):
    oss: OssTestServer
    protocol_version = "HTTP/1.1"
    server_version = "AliyunOSS"
    sys_version = ""
    timeout = 60
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        pass

    def do_GET(self) -> None:
        self._handle("GET")

    def do_HEAD(self) -> None:
        self._handle("HEAD")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    # -- plumbing --------------------------------------------------------------------------------------
    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("x-oss-request-id", uuid.uuid4().hex[:24].upper())
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_error(self, error: OssServiceError, bucket: str = "", key: str = "") -> None:
        inner = _x("Code", error.code) + _x("Message", error.message) + _x("RequestId", uuid.uuid4().hex.upper())
        inner += _x("HostId", "127.0.0.1") + (_x("BucketName", bucket) if bucket else "")
        inner += _x("Key", key) if key else ""
        body = _xml("Error", inner)
        headers = {"Content-Type": "application/xml", **error.headers, "x-oss-ec": "0000-00000000"}
        if self.command == "HEAD":
            headers["x-oss-err"] = base64.b64encode(body).decode()
            body = b""
        self._send(error.status, body, headers)

    def _handle(self, method: str) -> None:
        raw_path, _, raw_query = self.path.partition("?")
        bucket_name, _, raw_key = raw_path.lstrip("/").partition("/")
        bucket_name, key = unquote(bucket_name), unquote(raw_key)
        query = parse_qsl(raw_query, keep_blank_values=True)
        params = dict(query)
        body = self._read_body()
        op = _operation(method, key, params)
        with self.oss._lock:
            self.oss.requests[op] += 1
        try:
            fault = self.oss._take_fault(op)
            if fault is not None:
                raise fault
            if not bucket_name:
                raise OssServiceError(400, "NotImplemented", "Service-level operations are not supported.")
            identity = self._authenticate(method, bucket_name, key, query)
            with self.oss._lock:
                bucket = self.oss._bucket(bucket_name)
                if identity is None and not (bucket.public and method in ("GET", "HEAD")):
                    raise OssServiceError(403, "AccessDenied", "You have no right to access this object.")
            if key and (key.startswith(("/", "\\")) or len(key.encode()) > 1023):
                raise OssServiceError(400, "InvalidObjectName", "The specified object is not valid.")
            getattr(self, "_op_" + op, self._op_Unsupported)(bucket, key, params, body)
        except OssServiceError as error:
            self._send_error(error, bucket_name, key)
        except Exception as exc:  # a bug in this endpoint: answer like a server fault, keep serving
            self._send_error(OssServiceError(500, "InternalError", type(exc).__name__), bucket_name, key)

    # -- signatures ------------------------------------------------------------------------------------
    def _authenticate(self, method: str, bucket: str, key: str, query: list[tuple[str, str]]) -> str | None:
        """Return the access key id of a correctly signed request, None for an anonymous one."""
        auth = self.headers.get("Authorization", "")
        if not auth:
            return None
        if auth.startswith("OSS4-HMAC-SHA256 "):
            access_key_id, expected, given = self._v4(method, bucket, key, query, auth)
        elif auth.startswith("OSS "):
            access_key_id, expected, given = self._v1(method, bucket, key, query, auth)
        else:
            raise OssServiceError(400, "InvalidArgument", "Authorization header is invalid.")
        if not hmac.compare_digest(expected, given):
            raise OssServiceError(403, "SignatureDoesNotMatch",
                                  "The request signature we calculated does not match the signature you provided.")
        token = self.oss._keys[access_key_id][1]
        if token and self.headers.get("x-oss-security-token", "") != token:
            raise OssServiceError(403, "InvalidSecurityToken", "The security token you provided is invalid.")
        return access_key_id

    def _secret(self, access_key_id: str) -> str:
        if access_key_id not in self.oss._keys:
            raise OssServiceError(403, "InvalidAccessKeyId", "The OSS Access Key Id you provided does not exist.")
        return self.oss._keys[access_key_id][0]

    def _v4(self, method: str, bucket: str, key: str, query: list[tuple[str, str]], auth: str
            ) -> tuple[str, str, str]:
        fields = dict(p.strip().split("=", 1) for p in auth[len("OSS4-HMAC-SHA256 "):].split(",") if "=" in p)
        try:
            access_key_id, date, _region, product, _terminator = fields["Credential"].split("/")
            signature = fields["Signature"]
        except (KeyError, ValueError):
            raise OssServiceError(400, "InvalidArgument", "Authorization header is invalid.") from None
        secret = self._secret(access_key_id)
        stamp = self.headers.get("x-oss-date", "")
        try:
            sent = datetime.strptime(stamp, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            raise OssServiceError(403, "AccessDenied", "x-oss-date is missing or malformed.") from None
        if abs(time.time() - sent) > 900:
            raise OssServiceError(403, "RequestTimeTooSkewed", "The difference between the request time "
                                  "and the current time is too large.")
        additional = {h.lower() for h in fields.get("AdditionalHeaders", "").split(";") if h}
        signed = sorted(
            (name.lower(), value) for name, value in self.headers.items()
            if name.lower().startswith("x-oss-") or name.lower() in ("content-type", "content-md5")
            or name.lower() in additional
        )
        encoded = sorted((_v4_encode(k, False), _v4_encode(v, False)) for k, v in query)
        canonical = "\n".join([
            method,
            _v4_encode(f"/{bucket}/{key}", True),
            "&".join(f"{k}={v}" if v else k for k, v in encoded),
            "".join(f"{k}:{v}\n" for k, v in signed),
            ";".join(sorted(additional)),
            self.headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD"),
        ])
        scope = f"{date}/{self.oss.region}/{product}/aliyun_v4_request"
        to_sign = "\n".join(["OSS4-HMAC-SHA256", stamp, scope, hashlib.sha256(canonical.encode()).hexdigest()])
        signing_key = ("aliyun_v4" + secret).encode()
        for part in (date, self.oss.region, product, "aliyun_v4_request"):
            signing_key = hmac.new(signing_key, part.encode(), hashlib.sha256).digest()
        return access_key_id, hmac.new(signing_key, to_sign.encode(), hashlib.sha256).hexdigest(), signature

    def _v1(self, method: str, bucket: str, key: str, query: list[tuple[str, str]], auth: str
            ) -> tuple[str, str, str]:
        access_key_id, _, signature = auth[len("OSS "):].partition(":")
        secret = self._secret(access_key_id)
        oss_headers = sorted((n.lower(), v) for n, v in self.headers.items() if n.lower().startswith("x-oss-"))
        sub = sorted((k, v) for k, v in query if k in _V1_SUBRESOURCES)
        resource = f"/{bucket}/{key}" + ("?" + "&".join(f"{k}={v}" if v else k for k, v in sub) if sub else "")
        to_sign = "\n".join([
            method, self.headers.get("Content-MD5", ""), self.headers.get("Content-Type", ""),
            self.headers.get("x-oss-date", "") or self.headers.get("Date", ""),
            "".join(f"{k}:{v}\n" for k, v in oss_headers) + resource,
        ])
        digest = hmac.new(secret.encode(), to_sign.encode(), hashlib.sha1).digest()
        return access_key_id, base64.b64encode(digest).decode(), signature

    # -- object operations -----------------------------------------------------------------------------
    def _check_md5(self, body: bytes) -> None:
        given = self.headers.get("Content-MD5")
        if given is None:
            return
        try:
            ok = base64.b64decode(given, validate=True) == hashlib.md5(body).digest()
        except ValueError:
            ok = False
        if not ok:
            raise OssServiceError(400, "InvalidDigest", "The Content-MD5 you specified is not valid.")

    def _object_headers(self) -> tuple[dict[str, str], str]:
        stored = {n.lower(): v for n, v in self.headers.items()
                  if n.lower() in _STORED_HEADERS or n.lower().startswith("x-oss-meta-")}
        stored.setdefault("content-type", "application/octet-stream")
        return stored, self.headers.get("x-oss-storage-class", "Standard")

    def _op_PutObject(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        if "x-oss-copy-source" in self.headers:
            raise OssServiceError(400, "NotImplemented", "CopyObject is not supported by this endpoint.")
        self._check_md5(body)
        stored, storage_class = self._object_headers()
        obj = _Object(body, _md5_etag(body), stored, storage_class, crc64=_crc64(body))
        with self.oss._lock:
            bucket.objects[key] = obj
        self._send(200, headers={"ETag": f'"{obj.etag}"', "x-oss-hash-crc64ecma": str(obj.crc64),
                                 "Content-MD5": base64.b64encode(hashlib.md5(body).digest()).decode()})

    def _lookup(self, bucket: _Bucket, key: str) -> _Object:
        with self.oss._lock:
            obj = bucket.objects.get(key)
        if obj is None:
            raise OssServiceError(404, "NoSuchKey", "The specified key does not exist.")
        return obj

    def _preconditions(self, obj: _Object) -> None:
        if_match = self.headers.get("If-Match")
        if if_match is not None and if_match.strip().strip('"') != obj.etag:
            raise OssServiceError(412, "PreconditionFailed", "At least one of the pre-conditions you "
                                  "specified did not hold.")

    def _meta_headers(self, obj: _Object) -> dict[str, str]:
        headers = {name.title() if not name.startswith("x-oss-") else name: value
                   for name, value in obj.headers.items()}
        headers.update({
            "ETag": f'"{obj.etag}"', "Last-Modified": _http_date(obj.mtime), "Accept-Ranges": "bytes",
            "x-oss-object-type": obj.object_type, "x-oss-storage-class": obj.storage_class,
            "x-oss-hash-crc64ecma": str(obj.crc64),
        })
        return headers

    def _op_HeadObject(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        obj = self._lookup(bucket, key)
        self._preconditions(obj)
        self._send(200, headers=self._meta_headers(obj), length=len(obj.data))

    def _op_GetObject(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        obj = self._lookup(bucket, key)
        self._preconditions(obj)
        if obj.storage_class in _ARCHIVE_CLASSES:
            raise OssServiceError(403, "InvalidObjectState", "The operation is not valid for the object's state.")
        headers = self._meta_headers(obj)
        size, status, data = len(obj.data), 200, obj.data
        spec = self.headers.get("Range")
        if spec:
            span = _parse_range(spec, size)
            if span is None and self.headers.get("x-oss-range-behavior", "").lower() == "standard":
                raise OssServiceError(416, "InvalidRange", "The requested range cannot be satisfied.",
                                      {"Content-Range": f"bytes */{size}"})
            if span is not None:
                start, end = span
                status, data = 206, obj.data[start:end + 1]
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        corruption = self.oss._take_corruption() if data else ""
        if corruption == "truncate":
            self.close_connection = True
            self._send(status, data[:len(data) // 2], headers, length=len(data))
            return
        if corruption == "flip":
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        self._send(status, data, headers)

    def _op_DeleteObject(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        with self.oss._lock:
            bucket.objects.pop(key, None)
        self._send(204)

    # -- multipart -------------------------------------------------------------------------------------
    def _upload(self, bucket: _Bucket, key: str, params: dict[str, str]) -> _Upload:
        with self.oss._lock:
            upload = bucket.uploads.get(params.get("uploadId", ""))
        if upload is None or upload.key != key:
            raise OssServiceError(404, "NoSuchUpload", "The specified upload does not exist.")
        return upload

    def _op_InitiateMultipartUpload(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        stored, storage_class = self._object_headers()
        upload = _Upload(key, self.oss._new_id(), stored, storage_class)
        with self.oss._lock:
            bucket.uploads[upload.upload_id] = upload
        encoded = params.get("encoding-type") == "url"
        inner = _x("Bucket", bucket.name) + _x("Key", quote(key) if encoded else key) + _x("UploadId", upload.upload_id)
        inner += _x("EncodingType", "url") if encoded else ""
        self._send(200, _xml("InitiateMultipartUploadResult", inner), {"Content-Type": "application/xml"})

    def _op_UploadPart(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        upload = self._upload(bucket, key, params)
        try:
            number = int(params.get("partNumber", ""))
        except ValueError:
            number = 0
        if not 1 <= number <= 10_000:
            raise OssServiceError(400, "InvalidArgument", "Part number must be an integer between 1 and 10000.")
        if "x-oss-copy-source" in self.headers:
            raise OssServiceError(400, "NotImplemented", "UploadPartCopy is not supported by this endpoint.")
        self._check_md5(body)
        part = _Part(body, _md5_etag(body))
        with self.oss._lock:
            upload.parts[number] = part
        self._send(200, headers={"ETag": f'"{part.etag}"', "x-oss-hash-crc64ecma": str(_crc64(body))})

    def _op_CompleteMultipartUpload(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        upload = self._upload(bucket, key, params)
        try:
            root = ElementTree.fromstring(body)
            wanted = [(int(p.findtext("PartNumber", "")), p.findtext("ETag", "").strip().strip('"'))
                      for p in root.findall("Part")]
        except (ElementTree.ParseError, ValueError):
            raise OssServiceError(400, "MalformedXML", "The XML you provided was not well-formed.") from None
        if not wanted:
            raise OssServiceError(400, "MalformedXML", "The XML you provided was not well-formed.")
        numbers = [n for n, _ in wanted]
        if numbers != sorted(set(numbers)):
            raise OssServiceError(400, "InvalidPartOrder", "The list of parts was not in ascending order.")
        parts = []
        for number, etag in wanted:
            part = upload.parts.get(number)
            if part is None or part.etag != etag:
                raise OssServiceError(400, "InvalidPart", "One or more of the specified parts could not be found "
                                      "or the specified entity tag might not have matched the part's entity tag.")
            parts.append(part)
        if any(len(p.data) < _MIN_PART_BYTES for p in parts[:-1]):
            raise OssServiceError(400, "EntityTooSmall", "Your proposed upload is smaller than the minimum "
                                  "allowed size.")
        data = b"".join(p.data for p in parts)
        etag = hashlib.md5("".join(p.etag for p in parts).encode()).hexdigest().upper() + f"-{len(parts)}"
        obj = _Object(data, etag, upload.headers, upload.storage_class, "Multipart", crc64=_crc64(data))
        with self.oss._lock:
            bucket.objects[key] = obj
            bucket.uploads.pop(upload.upload_id, None)
        encoded = params.get("encoding-type") == "url"
        inner = (_x("EncodingType", "url") if encoded else "") + _x("Location", f"{self.oss.endpoint}/{bucket.name}/{key}")
        inner += _x("Bucket", bucket.name) + _x("Key", quote(key) if encoded else key) + _x("ETag", f'"{etag}"')
        self._send(200, _xml("CompleteMultipartUploadResult", inner),
                   {"Content-Type": "application/xml", "ETag": f'"{etag}"', "x-oss-hash-crc64ecma": str(obj.crc64)})

    def _op_AbortMultipartUpload(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        upload = self._upload(bucket, key, params)
        with self.oss._lock:
            bucket.uploads.pop(upload.upload_id, None)
        self._send(204)

    def _op_ListParts(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        upload = self._upload(bucket, key, params)
        marker = int(params.get("part-number-marker") or 0)
        limit = min(int(params.get("max-parts") or 1000), 1000)
        with self.oss._lock:
            numbers = sorted(n for n in upload.parts if n > marker)
        page, truncated = numbers[:limit], len(numbers) > limit
        inner = _x("Bucket", bucket.name) + _x("Key", key) + _x("UploadId", upload.upload_id)
        inner += _x("PartNumberMarker", marker) + _x("NextPartNumberMarker", page[-1] if page else "")
        inner += _x("MaxParts", limit) + _x("IsTruncated", str(truncated).lower())
        for n in page:
            part = upload.parts[n]
            inner += "<Part>" + _x("PartNumber", n) + _x("LastModified", _iso(part.mtime))
            inner += _x("ETag", f'"{part.etag}"') + _x("HashCrc64ecma", _crc64(part.data))
            inner += _x("Size", len(part.data)) + "</Part>"
        self._send(200, _xml("ListPartsResult", inner), {"Content-Type": "application/xml"})

    # -- listings --------------------------------------------------------------------------------------
    def _op_ListMultipartUploads(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        prefix, key_marker = params.get("prefix", ""), params.get("key-marker", "")
        id_marker, limit = params.get("upload-id-marker", ""), min(int(params.get("max-uploads") or 1000), 1000)
        encoded = params.get("encoding-type") == "url"
        enc = (lambda s: quote(s)) if encoded else (lambda s: s)
        with self.oss._lock:
            uploads = sorted(((u.key, u.upload_id, u.initiated) for u in bucket.uploads.values()
                              if u.key.startswith(prefix)), key=lambda u: (_sort_key(u[0]), u[1]))
        marker = (_sort_key(key_marker), id_marker)
        uploads = [u for u in uploads
                   if ((_sort_key(u[0]), u[1]) > marker if id_marker else _sort_key(u[0]) > marker[0])]
        page, truncated = uploads[:limit], len(uploads) > limit
        inner = _x("Bucket", bucket.name) + _x("KeyMarker", enc(key_marker)) + _x("UploadIdMarker", id_marker)
        inner += _x("NextKeyMarker", enc(page[-1][0]) if truncated else "")
        inner += _x("NextUploadIdMarker", page[-1][1] if truncated else "")
        inner += _x("Delimiter", "") + _x("Prefix", enc(prefix)) + _x("MaxUploads", limit)
        inner += _x("IsTruncated", str(truncated).lower()) + (_x("EncodingType", "url") if encoded else "")
        for upload_key, upload_id, initiated in page:
            inner += "<Upload>" + _x("Key", enc(upload_key)) + _x("UploadId", upload_id)
            inner += _x("StorageClass", "Standard") + _x("Initiated", _iso(initiated)) + "</Upload>"
        self._send(200, _xml("ListMultipartUploadsResult", inner), {"Content-Type": "application/xml"})

    def _list(self, bucket: _Bucket, params: dict[str, str], after: str, resume: str = ""
              ) -> tuple[list[tuple[str, _Object | None]], bool]:
        """Entries (key, object) or (common prefix, None) for keys after `after`, up to max-keys.

        `resume` (a continuation) also skips entries up to and including that key or common prefix.
        """
        prefix, delimiter = params.get("prefix", ""), params.get("delimiter", "")
        try:
            limit = int(params.get("max-keys") or 100)
        except ValueError:
            limit = -1
        if not 0 <= limit <= 1000:
            raise OssServiceError(400, "InvalidArgument", "max-keys must be between 0 and 1000.")
        if limit == 0:
            return [], False
        with self.oss._lock:
            keys = sorted((k for k in bucket.objects if k.startswith(prefix)), key=_sort_key)
            entries: list[tuple[str, _Object | None]] = []
            truncated = False
            for k in keys:
                if _sort_key(k) <= _sort_key(after):
                    continue
                cut = k.find(delimiter, len(prefix)) if delimiter else -1
                name, obj = (k[:cut + len(delimiter)], None) if cut >= 0 else (k, bucket.objects[k])
                if entries and entries[-1][0] == name and obj is None:
                    continue
                if resume and _sort_key(name) <= _sort_key(resume):
                    continue
                if len(entries) >= limit:
                    truncated = True
                    break
                entries.append((name, obj))
        return entries, truncated

    def _contents(self, entries: list[tuple[str, _Object | None]], enc, owner: bool) -> str:
        inner = ""
        for name, obj in entries:
            if obj is None:
                continue
            inner += "<Contents>" + _x("Key", enc(name)) + _x("LastModified", _iso(obj.mtime))
            inner += _x("ETag", f'"{obj.etag}"') + _x("Type", obj.object_type) + _x("Size", len(obj.data))
            inner += _x("StorageClass", obj.storage_class)
            inner += "<Owner><ID>1</ID><DisplayName>1</DisplayName></Owner>" if owner else ""
            inner += "</Contents>"
        for name, obj in entries:
            if obj is None:
                inner += "<CommonPrefixes>" + _x("Prefix", enc(name)) + "</CommonPrefixes>"
        return inner

    def _op_ListObjectsV2(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        token, start_after = params.get("continuation-token", ""), params.get("start-after", "")
        resume = ""
        if token:
            try:
                resume = base64.urlsafe_b64decode(token.encode()).decode()
            except ValueError:
                raise OssServiceError(400, "InvalidArgument", "The continuation token is not valid.") from None
        entries, truncated = self._list(bucket, params, resume or start_after, resume)
        encoded = params.get("encoding-type") == "url"
        enc = (lambda s: quote(s)) if encoded else (lambda s: s)
        inner = _x("Name", bucket.name) + _x("Prefix", enc(params.get("prefix", "")))
        inner += _x("StartAfter", enc(start_after)) if start_after else ""
        inner += _x("ContinuationToken", token) if token else ""
        inner += _x("MaxKeys", params.get("max-keys") or 100) + _x("Delimiter", enc(params.get("delimiter", "")))
        inner += _x("EncodingType", "url") if encoded else ""
        inner += _x("IsTruncated", str(truncated).lower())
        if truncated:
            inner += _x("NextContinuationToken", enc(base64.urlsafe_b64encode(entries[-1][0].encode()).decode()))
        inner += _x("KeyCount", len(entries))
        inner += self._contents(entries, enc, params.get("fetch-owner") == "true")
        self._send(200, _xml("ListBucketResult", inner), {"Content-Type": "application/xml"})

    def _op_ListObjects(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        marker = params.get("marker", "")
        entries, truncated = self._list(bucket, params, marker, marker)
        encoded = params.get("encoding-type") == "url"
        enc = (lambda s: quote(s)) if encoded else (lambda s: s)
        inner = _x("Name", bucket.name) + _x("Prefix", enc(params.get("prefix", ""))) + _x("Marker", enc(marker))
        inner += _x("MaxKeys", params.get("max-keys") or 100) + _x("Delimiter", enc(params.get("delimiter", "")))
        inner += _x("EncodingType", "url") if encoded else ""
        inner += _x("IsTruncated", str(truncated).lower())
        inner += _x("NextMarker", enc(entries[-1][0])) if truncated else ""
        inner += self._contents(entries, enc, True)
        self._send(200, _xml("ListBucketResult", inner), {"Content-Type": "application/xml"})

    def _op_Unsupported(self, bucket: _Bucket, key: str, params: dict[str, str], body: bytes) -> None:
        raise OssServiceError(400, "NotImplemented", "This operation is not supported by this endpoint.")


def _parse_range(spec: str, size: int) -> tuple[int, int] | None:
    """Inclusive (start, end) for one 'bytes=a-b' range, or None when OSS would ignore it."""
    match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", spec)
    if not match or not (match[1] or match[2]):
        return None
    if match[1]:
        start = int(match[1])
        end = int(match[2]) if match[2] else size - 1
        if start >= size or end < start:
            return None
        return start, min(end, size - 1)
    suffix = int(match[2])
    if suffix == 0 or size == 0:
        return None
    return max(0, size - suffix), size - 1
