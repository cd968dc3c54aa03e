"""Aliyun OSS backend on the oss2 SDK (synchronous, so calls run in a private thread pool), with V4 signatures.

OSS ETags are uppercase hex; this store hands them out lowercase (so they compare with S3's MD5 ETags) and
uppercases them again when it sends one back to OSS (If-Match, CompleteMultipartUpload). Full GETs are
checked against the object's CRC-64/ECMA (`x-oss-hash-crc64ecma`); ranged GETs are checked only when they
cover the whole object.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import http.client
import logging
import re
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import oss2
import oss2.exceptions
import requests
import urllib3.exceptions

from dth_ray.checksums import crc64ecma
from dth_ray.config import StoreConfig
from dth_ray.credentials import RefreshingCredentials, is_auth_error
from dth_ray.errors import (
    ConfigError,
    DthError,
    Fatal,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    Transient,
    Unreadable,
)
from dth_ray.model import (
    ByteRange,
    GetResult,
    ListPage,
    ObjectHeaders,
    ObjectInfo,
    ObjectMeta,
    PartInfo,
    PutResult,
    UploadInfo,
)
from dth_ray.stores.base import GiB, StoreFeatures

log = logging.getLogger(__name__)
T = TypeVar("T")

POOL_THREADS = 32
_MAX_LIST_KEYS = 1000
_MAX_PAGES = 100_000  # bound on pagination loops (10,000 parts fit in 10 pages)
_ENDPOINT_REGION_RE = re.compile(r"^oss-([a-z0-9-]+?)(?:-internal)?\.aliyuncs\.com$")


# -- config -------------------------------------------------------------------------------------------

def oss_region(cfg: StoreConfig) -> str:
    """Region id like 'cn-hangzhou' from cfg.region ('oss-cn-hangzhou' accepted) or an aliyuncs endpoint.

    Raises ConfigError when neither names one (V4 signatures need it).
    """
    region = cfg.region.strip()
    if region.startswith("oss-"):
        region = region[len("oss-"):]
    if region:
        return region
    host = urlsplit(cfg.endpoint if "://" in cfg.endpoint else "https://" + cfg.endpoint).hostname or ""
    match = _ENDPOINT_REGION_RE.match(host)
    if match:
        return match.group(1)
    raise ConfigError("oss store needs region (e.g. cn-hangzhou) for V4 signatures")


def oss_endpoint(cfg: StoreConfig, region: str) -> str:
    """cfg.endpoint (https:// added when no scheme) or the public/internal aliyuncs endpoint of `region`."""
    if cfg.endpoint:
        return cfg.endpoint if "://" in cfg.endpoint else "https://" + cfg.endpoint
    suffix = "-internal" if cfg.internal else ""
    return f"https://oss-{region}{suffix}.aliyuncs.com"


class _KeysProvider(oss2.credentials.CredentialsProvider):
    """oss2 asks this for keys as it signs each request: the keys in hand, re-read when a re-read is due."""

    def __init__(self, creds: RefreshingCredentials):
        self._creds = creds

    def get_credentials(self) -> oss2.credentials.Credentials:
        self._creds.refresh_if_due()
        keys, _ = self._creds.current()
        if keys is None:
            return oss2.credentials.Credentials()
        return oss2.credentials.Credentials(keys.access_key_id, keys.secret_access_key, keys.session_token)


def _auth(creds: RefreshingCredentials) -> Any:
    """V4 signing with the current keys of `creds` (a session token, if any, is sent), or anonymous access."""
    keys, _ = creds.current()
    if keys is None:
        return oss2.AnonymousAuth()
    return oss2.ProviderAuthV4(_KeysProvider(creds))


# -- errors -------------------------------------------------------------------------------------------

_NOT_FOUND = ("NoSuchKey", "NoSuchBucket", "NoSuchUpload")
_DENIED = ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidSecurityToken",
           "SecurityTokenExpired", "RequestTimeTooSkewed")
_THROTTLED = ("ServerBusy", "SlowDown", "QpsLimitExceeded", "TooManyRequests")


def _qos_delay_s(headers: Any) -> float | None:
    """OSS's `x-oss-qos-delay-time` (milliseconds) as seconds, if the response carried it."""
    try:
        value = headers.get("x-oss-qos-delay-time") if headers else None
        return float(value) / 1000.0 if value is not None else None
    except (TypeError, ValueError, AttributeError):
        return None


def _map_error(exc: BaseException, what: str) -> DthError:
    """One mapping from oss2/requests exceptions to dth_ray errors; messages carry code and status only."""
    if isinstance(exc, DthError):
        return exc
    if isinstance(exc, oss2.exceptions.RequestError):
        inner = getattr(exc, "exception", None)
        return Transient(f"{what}: OSS request failed ({type(inner).__name__ if inner else 'RequestError'})")
    if isinstance(exc, oss2.exceptions.InconsistentError):
        return IntegrityError(f"{what}: OSS CRC-64 check failed (request {exc.request_id})")
    if isinstance(exc, oss2.exceptions.ClientError):
        return Fatal(f"{what}: OSS client error ({str(exc.body)[:200]})")
    if isinstance(exc, oss2.exceptions.OssError):
        status, code = exc.status, exc.code or ""
        msg = f"{what}: OSS {code or 'error'} (HTTP {status}, request {exc.request_id or '-'})"
        delay = _qos_delay_s(exc.headers)
        if code == "InvalidObjectState":
            return Unreadable(msg)
        if code in _NOT_FOUND or status == 404:
            return NotFound(msg)
        if code == "PreconditionFailed" or status == 412:
            return PreconditionFailed(msg)
        if delay is not None or code in _THROTTLED or status in (429, 503):
            return Throttled(msg, delay_s=delay)
        if code in _DENIED or status == 403:
            return PermissionDenied(msg, code)
        if code == "InvalidDigest":
            return IntegrityError(msg)
        if status >= 500 or status == 408:
            return Transient(msg)
        return Fatal(msg)
    if isinstance(exc, (requests.RequestException, urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)):
        return Transient(f"{what}: OSS connection error ({type(exc).__name__})")
    return Fatal(f"{what}: unexpected {type(exc).__name__}")


# -- helpers ------------------------------------------------------------------------------------------

def _unquote_etag(etag: str | None) -> str:
    return (etag or "").strip().strip('"').lower()


def _oss_etag(etag: str) -> str:
    """Back to OSS's spelling: uppercase hex (ETags from this store were lowercased)."""
    return etag.strip('"').upper()


def _from_wire(value: str) -> str:
    """Header text as sent (http.client decodes bytes as latin-1; OSS sends UTF-8)."""
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _mtime(headers: Any) -> float:
    try:
        return parsedate_to_datetime(headers.get("last-modified", "")).timestamp()
    except (TypeError, ValueError, IndexError):
        return 0.0


def _total_size(headers: Any, body_len: int) -> int:
    content_range = headers.get("content-range", "")
    if "/" in content_range:
        total = content_range.rsplit("/", 1)[1].strip()
        if total.isdigit():
            return int(total)
    length = headers.get("content-length")
    return int(length) if length is not None and str(length).isdigit() else body_len


def _info(key: str, headers: Any, size: int) -> ObjectInfo:
    crc = headers.get("x-oss-hash-crc64ecma")
    meta = ObjectMeta(
        key=key, size=size, etag=_unquote_etag(headers.get("etag")), mtime=_mtime(headers),
        storage_class=headers.get("x-oss-storage-class", "Standard"),
        checksum=f"crc64ecma:{crc}" if crc else "",
    )
    user = sorted((name.lower()[len("x-oss-meta-"):], _from_wire(value)) for name, value in headers.items()
                  if name.lower().startswith("x-oss-meta-"))
    return ObjectInfo(meta, ObjectHeaders(
        content_type=headers.get("content-type", ""), content_encoding=headers.get("content-encoding", ""),
        content_language=headers.get("content-language", ""),
        content_disposition=_from_wire(headers.get("content-disposition", "")),
        cache_control=headers.get("cache-control", ""), expires=headers.get("expires", ""),
        user_metadata=tuple(user),
    ))


# -- store --------------------------------------------------------------------------------------------

class OssStore:
    """Lister, Reader and Writer over one OSS bucket. Pickles as its config; the client is built lazily."""

    def __init__(self, cfg: StoreConfig):
        self._cfg = cfg
        self.features = FEATURES
        self._bucket: oss2.Bucket | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._creds: RefreshingCredentials | None = None  # keys, re-read when they rotate (never pickled)

    def __reduce__(self) -> tuple[type, tuple[StoreConfig]]:
        return (OssStore, (self._cfg,))

    def __repr__(self) -> str:
        return f"OssStore(bucket={self._cfg.bucket!r}, region={self._cfg.region!r})"

    def _client(self) -> oss2.Bucket:
        if self._bucket is None:
            cfg = self._cfg
            region = oss_region(cfg)
            self._creds = RefreshingCredentials(cfg.credentials, "source", region, provider="aliyun")
            try:
                self._bucket = oss2.Bucket(
                    _auth(self._creds), oss_endpoint(cfg, region), cfg.bucket,
                    session=oss2.Session(pool_size=POOL_THREADS),
                    connect_timeout=(cfg.connect_timeout_s, cfg.read_timeout_s),
                    enable_crc=False, region=region, is_path_style=cfg.addressing_style == "path",
                    app_name="dth-ray",
                )
            except oss2.exceptions.ClientError as exc:
                raise ConfigError(f"oss store {cfg.bucket!r}: {str(exc.body)[:200]}") from None
            self._pool = ThreadPoolExecutor(POOL_THREADS, thread_name_prefix="oss")
        return self._bucket

    async def _call(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(bucket, *args)` in the pool; errors mapped once. Keys refused (rotated, expired token) are
        re-read and the call tried once more."""
        bucket = self._client()
        loop = asyncio.get_running_loop()
        for last_try in (False, True):
            generation = self._creds.generation if self._creds is not None else 0
            try:
                return await loop.run_in_executor(self._pool, functools.partial(fn, bucket, *args))
            except DthError:
                raise
            except Exception as exc:
                error = _map_error(exc, what)
            if last_try or self._creds is None or not is_auth_error(error):
                raise error from None
            await loop.run_in_executor(self._pool, self._creds.refresh, generation)
        raise AssertionError("unreachable")

    async def aclose(self) -> None:
        bucket, pool = self._bucket, self._pool
        self._bucket = self._pool = None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if bucket is not None:
            bucket.session.session.close()

    # -- Lister --
    async def list_page(self, prefix: str, *, start_after: str = "", token: str = "", delimiter: str = "",
                        max_keys: int = 1000) -> ListPage:
        """One ListObjectsV2 page. Raises NotFound (no bucket), PermissionDenied, Transient, Throttled."""
        def run(bucket: oss2.Bucket) -> ListPage:
            result = bucket.list_objects_v2(prefix=prefix, delimiter=delimiter, continuation_token=token,
                                            start_after=start_after,
                                            max_keys=max(1, min(max_keys, _MAX_LIST_KEYS)))
            objects = [ObjectMeta(o.key, int(o.size), _unquote_etag(o.etag), float(o.last_modified or 0),
                                  o.storage_class or "") for o in result.object_list]
            next_token = result.next_continuation_token if result.is_truncated else ""
            return ListPage(objects, list(result.prefix_list), next_token or "")

        return await self._call(f"LIST {prefix!r}", run)

    # -- Reader --
    async def head(self, key: str) -> ObjectInfo:
        """Metadata of one object. Raises NotFound, PermissionDenied, Transient."""
        def run(bucket: oss2.Bucket) -> ObjectInfo:
            result = bucket.head_object(key)
            return _info(key, result.headers, _total_size(result.headers, 0))

        return await self._call(f"HEAD {key!r}", run)

    async def get(self, key: str, byte_range: ByteRange | None = None, if_match: str = "") -> GetResult:
        """Bytes of the object or of a range. Raises NotFound, PreconditionFailed (If-Match), Unreadable
        (archived), IntegrityError (CRC-64 mismatch or short body), Transient, Throttled."""
        headers = {"If-Match": f'"{_oss_etag(if_match)}"'} if if_match else {}
        if byte_range is not None and byte_range.length <= 0:
            info = await self._call(f"HEAD {key!r}", lambda b: b.head_object(key, headers=headers))
            return GetResult(b"", _info(key, info.headers, _total_size(info.headers, 0)))

        def run(bucket: oss2.Bucket) -> GetResult:
            span = (byte_range.start, byte_range.end - 1) if byte_range is not None else None
            request_headers = dict(headers)
            if span is not None:
                request_headers["x-oss-range-behavior"] = "standard"
            result = bucket.get_object(key, byte_range=span, headers=request_headers)
            try:
                # The stored bytes as they are: requests would gunzip a Content-Encoding: gzip object.
                data = result.resp.response.raw.read(decode_content=False)
            finally:
                result.close()
            info = _info(key, result.headers, _total_size(result.headers, len(data)))
            _check_body(key, data, byte_range, info.meta, result.headers)
            return GetResult(data, info)

        return await self._call(f"GET {key!r}", run)

    # -- Writer --
    def _write_headers(self, headers: ObjectHeaders) -> dict[str, str]:
        cfg = self._cfg
        out = {"Content-Type": headers.content_type or "application/octet-stream"}
        for name, value in (("Content-Encoding", headers.content_encoding),
                            ("Content-Language", headers.content_language),
                            ("Content-Disposition", headers.content_disposition),
                            ("Cache-Control", headers.cache_control), ("Expires", headers.expires),
                            ("x-oss-storage-class", cfg.storage_class), ("x-oss-object-acl", cfg.acl)):
            if value:
                out[name] = value
        if cfg.sse:
            out["x-oss-server-side-encryption"] = "KMS" if cfg.sse == "aws:kms" else cfg.sse
            if cfg.sse_kms_key_id:
                out["x-oss-server-side-encryption-key-id"] = cfg.sse_kms_key_id
        out.update({f"x-oss-meta-{name}": value for name, value in headers.user_metadata})
        return out

    async def put(self, key: str, data: bytes, headers: ObjectHeaders, md5: bytes) -> PutResult:
        """PutObject with Content-MD5; the answered CRC-64 is checked. Raises IntegrityError, PermissionDenied."""
        request_headers = self._write_headers(headers)
        request_headers["Content-MD5"] = base64.b64encode(md5).decode()

        def run(bucket: oss2.Bucket) -> PutResult:
            result = bucket.put_object(key, data, headers=request_headers)
            if result.crc is not None and result.crc != crc64ecma(data):
                raise IntegrityError(f"PUT {key!r}: OSS stored a body whose CRC-64 differs from ours")
            return PutResult(_unquote_etag(result.etag), f"crc64ecma:{result.crc}" if result.crc is not None else "")

        return await self._call(f"PUT {key!r}", run)

    async def create_multipart(self, key: str, headers: ObjectHeaders) -> str:
        """InitiateMultipartUpload; returns the upload id."""
        request_headers = self._write_headers(headers)
        return await self._call(f"CREATE-MULTIPART {key!r}",
                                lambda b: b.init_multipart_upload(key, headers=request_headers).upload_id)

    async def upload_part(self, key: str, upload_id: str, part_number: int, data: bytes, md5: bytes) -> str:
        """UploadPart with Content-MD5; returns the part's ETag (lowercase). Raises NotFound, IntegrityError."""
        request_headers = {"Content-MD5": base64.b64encode(md5).decode()}

        def run(bucket: oss2.Bucket) -> str:
            result = bucket.upload_part(key, upload_id, part_number, data, headers=request_headers)
            if result.crc is not None and result.crc != crc64ecma(data):
                raise IntegrityError(f"UPLOAD-PART {key!r} #{part_number}: CRC-64 differs from ours")
            return _unquote_etag(result.etag)

        return await self._call(f"UPLOAD-PART {key!r} #{part_number}", run)

    async def complete_multipart(self, key: str, upload_id: str, parts: Sequence[PartInfo]) -> PutResult:
        """CompleteMultipartUpload (parts sorted by number). Raises NotFound, Fatal (bad part list)."""
        oss_parts = [oss2.models.PartInfo(p.part_number, _oss_etag(p.etag))
                     for p in sorted(parts, key=lambda p: p.part_number)]

        def run(bucket: oss2.Bucket) -> PutResult:
            result = bucket.complete_multipart_upload(key, upload_id, oss_parts)
            return PutResult(_unquote_etag(result.etag), f"crc64ecma:{result.crc}" if result.crc is not None else "")

        return await self._call(f"COMPLETE-MULTIPART {key!r}", run)

    async def abort_multipart(self, key: str, upload_id: str) -> None:
        """AbortMultipartUpload; an upload that is already gone is not an error."""
        with contextlib.suppress(NotFound):
            await self._call(f"ABORT-MULTIPART {key!r}", lambda b: b.abort_multipart_upload(key, upload_id))

    async def list_parts(self, key: str, upload_id: str) -> list[PartInfo]:
        """All parts uploaded so far. Raises NotFound if the upload is gone."""
        def run(bucket: oss2.Bucket) -> list[PartInfo]:
            out: list[PartInfo] = []
            marker = ""
            for _ in range(_MAX_PAGES):
                result = bucket.list_parts(key, upload_id, marker=marker)
                out.extend(PartInfo(p.part_number, _unquote_etag(p.etag), int(p.size or 0)) for p in result.parts)
                if not result.is_truncated or not result.next_marker:
                    break
                marker = result.next_marker
            return out

        return await self._call(f"LIST-PARTS {key!r}", run)

    async def list_uploads(self, prefix: str) -> list[UploadInfo]:
        """Open multipart uploads whose key starts with `prefix`."""
        def run(bucket: oss2.Bucket) -> list[UploadInfo]:
            out: list[UploadInfo] = []
            key_marker = id_marker = ""
            for _ in range(_MAX_PAGES):
                result = bucket.list_multipart_uploads(prefix=prefix, key_marker=key_marker,
                                                       upload_id_marker=id_marker)
                out.extend(UploadInfo(u.key, u.upload_id) for u in result.upload_list)
                markers = (result.next_key_marker, result.next_upload_id_marker)
                if not result.is_truncated or markers == (key_marker, id_marker):
                    break
                key_marker, id_marker = markers
            return out

        return await self._call(f"LIST-UPLOADS {prefix!r}", run)

    async def delete(self, key: str) -> None:
        """DeleteObject; a missing object is not an error."""
        with contextlib.suppress(NotFound):
            await self._call(f"DELETE {key!r}", lambda b: b.delete_object(key))


def _check_body(key: str, data: bytes, byte_range: ByteRange | None, meta: ObjectMeta, headers: Any) -> None:
    """Raise IntegrityError when a body is short or (covering the whole object) fails its CRC-64."""
    expected = meta.size if byte_range is None else min(byte_range.end, meta.size) - byte_range.start
    if len(data) != expected:
        raise IntegrityError(f"GET {key!r}: got {len(data)} bytes, expected {expected}")
    whole = byte_range is None or (byte_range.start == 0 and len(data) == meta.size)
    crc = headers.get("x-oss-hash-crc64ecma")
    if whole and crc and str(crc).isdigit() and crc64ecma(data) != int(crc):
        raise IntegrityError(f"GET {key!r}: CRC-64 of the body does not match x-oss-hash-crc64ecma")


FEATURES = StoreFeatures(
    name="oss",
    min_part_size_bytes=100 * 1024,
    max_part_size_bytes=5 * GiB,
    max_parts=10_000,
    max_single_put_bytes=5 * GiB,
    max_object_size_bytes=10_000 * 5 * GiB,
    single_put_etag_is_md5=True,
    multipart_etag_is_md5_of_md5s=False,
    server_side_copy=False,
    checksum_kinds=("crc64ecma",),
    unreadable_storage_classes=("Archive", "ColdArchive", "DeepColdArchive"),
)
