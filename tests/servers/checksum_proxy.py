"""An S3 test endpoint that checks full-object CRC64NVME checksums as Amazon S3 does, in front of a real local S3
server (rclone serve s3 checks SigV4; moto gives real multipart ETags). Neither checks these checksums itself:
both store an x-amz-checksum-crc64nvme they are sent, right or wrong, and neither echoes it.

What it does, after the AWS S3 API reference (docs.aws.amazon.com/AmazonS3/latest/API/): PutObject, UploadPart
("x-amz-checksum-crc64nvme: the Base64 encoded, 64-bit CRC64NVME checksum of the object/part"; a body that
does not match is refused with 400 BadDigest, and the answer echoes the checked value); CreateMultipartUpload
with `x-amz-checksum-algorithm: CRC64NVME` and `x-amz-checksum-type: FULL_OBJECT` (COMPOSITE is refused for
CRC64NVME: "The CRC64NVME checksum is always a full object checksum"); CompleteMultipartUpload (API_CompletedPart:
each Part's `ChecksumCRC64NVME` must be the part's; the `x-amz-checksum-crc64nvme` header is the whole object's,
checked against the parts' CRCs combined, 400 BadDigest otherwise, the upload staying open; the answer carries
`ChecksumCRC64NVME` and `ChecksumType`); HeadObject/GetObject with `x-amz-checksum-mode: ENABLED` return
`x-amz-checksum-crc64nvme` and `x-amz-checksum-type: FULL_OBJECT` for a whole object (a ranged GET never carries
them); ListParts lists each part's. Like S3 since its default integrity protections (API_Checksum: "or if the
object was uploaded without a checksum (and Amazon S3 added the default checksum, CRC64NVME...)"), every object
written through it gets a CRC64NVME, computed here from the bytes received.

Requests and answers go through otherwise unchanged (Host and Authorization included), so the upstream checks
the client's signature. With `cos_crc64`, objects PUT whole also answer HEAD and GET with the CRC-64/ECMA
that Tencent COS publishes (`x-cos-hash-crc64ecma`, decimal). Bodies are held whole (test objects only); aws-chunked bodies are refused (501). Counts:
`object_gets` (GETs of object bytes), `heads`, `refused` (each refusal: op, key, code, whether Content-MD5 came).
"""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import threading
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from urllib.parse import unquote

import aiohttp
from aiohttp import web

from dth_ray.checksums import crc64ecma, crc64nvme, crc64nvme_combine

_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-authorization",
        "expect", "content-length"}
_CRC = "x-amz-checksum-crc64nvme"


def b64(value: int) -> str:
    return base64.b64encode(value.to_bytes(8, "big")).decode()


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _header(headers: dict[str, str], name: str) -> str:
    return next((v for k, v in headers.items() if k.lower() == name), "")


def _etag(value: str) -> str:
    return value.strip().strip('"').lower()


@dataclass
class _Upload:
    key: tuple[str, str]
    crc: bool  # created as a FULL_OBJECT CRC64NVME upload
    parts: dict[int, tuple[int, int]] = field(default_factory=dict)  # part number -> (CRC, length)


class ChecksumProxy:
    """Listens on 127.0.0.1 (a free port) and forwards to `upstream` ('http://host:port'), checking CRC64NVME."""

    def __init__(self, upstream: str, cos_crc64: bool = False):
        self.upstream = upstream.rstrip("/")
        self.cos_crc64 = cos_crc64
        self._ecma: dict[tuple[str, str], int] = {}  # (bucket, key) -> CRC-64/ECMA of objects PUT whole
        self.object_gets = 0
        self.heads = 0
        self.refused: list[dict] = []
        self._objects: dict[tuple[str, str], tuple[int, str]] = {}  # (bucket, key) -> (CRC, ETag)
        self._uploads: dict[str, _Upload] = {}
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="checksum-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("checksum proxy did not start")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stored_crc(self, bucket: str, key: str) -> int | None:
        """The CRC64NVME this endpoint keeps for an object (None: none known)."""
        with self._lock:
            entry = self._objects.get((bucket, key))
        return entry[0] if entry else None

    def stop(self) -> None:
        async def close() -> None:
            await self._session.close()
            await self._runner.cleanup()

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def __enter__(self) -> ChecksumProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- serving -------------------------------------------------------------------------------------------------

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        app = web.Application(client_max_size=0)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        self._loop.run_until_complete(self._runner.setup())

        async def open_session() -> aiohttp.ClientSession:
            return aiohttp.ClientSession(auto_decompress=False)

        self._session = self._loop.run_until_complete(open_session())
        self._loop.run_until_complete(web.SockSite(self._runner, self._sock).start())
        self._ready.set()
        self._loop.run_forever()

    async def _forward(self, request: web.Request, body: bytes) -> tuple[int, dict[str, str], bytes]:
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
                request.method, self.upstream + request.path_qs, headers=headers, data=body,
                skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent", "Accept")) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items()
                   if (k.lower() not in _HOP or (k.lower() == "content-length" and request.method == "HEAD"))
                   and not k.lower().startswith("x-amz-checksum-")}
            return upstream.status, out, payload

    def _refuse(self, op: str, key: tuple[str, str], request: web.Request, code: str, message: str,
                status: int = 400) -> web.Response:
        with self._lock:
            self.refused.append({"op": op, "key": key[1], "code": code,
                                 "content_md5": "content-md5" in {k.lower() for k in request.headers}})
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message>'
                f"<Resource>{request.path}</Resource><RequestId>CRCPROXY</RequestId></Error>").encode()
        return web.Response(status=status, body=body, content_type="application/xml")

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        bucket, _, key_part = request.path.lstrip("/").partition("/")
        key = (bucket, key_part)
        query = request.query
        body = await request.read()
        if request.headers.get("x-amz-content-sha256", "").startswith("STREAMING"):
            return self._refuse("any", key, request, "NotImplemented", "aws-chunked bodies are not supported here",
                                501)
        method, copy = request.method, "x-amz-copy-source" in request.headers
        if not key_part:
            return await self._plain(request, body)
        if method == "PUT" and "uploadId" in query and not copy:
            return await self._upload_part(request, key, body)
        if method == "PUT" and not copy and "uploadId" not in query and not set(query) & {"tagging", "acl"}:
            return await self._put_object(request, key, body)
        if method == "PUT" and copy and "uploadId" not in query:
            return await self._copy_object(request, key, body)
        if method == "POST" and "uploads" in query:
            return await self._create(request, key, body)
        if method == "POST" and "uploadId" in query:
            return await self._complete(request, key, body)
        if method == "GET" and "uploadId" in query:
            return await self._list_parts(request, body)
        if method in ("GET", "HEAD") and not set(query) & {"attributes", "tagging", "acl", "uploads"}:
            return await self._read(request, key, body)
        if method == "DELETE" and "uploadId" not in query:
            with self._lock:
                self._objects.pop(key, None)
        return await self._plain(request, body)

    async def _plain(self, request: web.Request, body: bytes) -> web.Response:
        status, headers, payload = await self._forward(request, body)
        return web.Response(status=status, body=payload, headers=headers)

    async def _put_object(self, request: web.Request, key: tuple[str, str], body: bytes) -> web.Response:
        computed = crc64nvme(body)
        sent = request.headers.get(_CRC)
        if sent is not None and sent != b64(computed):
            return self._refuse("PutObject", key, request, "BadDigest",
                                "The CRC64NVME you specified did not match the calculated checksum.")
        status, headers, payload = await self._forward(request, body)
        if status < 300:
            with self._lock:
                self._objects[key] = (computed, _etag(_header(headers, "etag")))
                self._ecma[key] = crc64ecma(body)
            if sent is not None:
                headers[_CRC] = sent
                headers["x-amz-checksum-type"] = "FULL_OBJECT"
        return web.Response(status=status, body=payload, headers=headers)

    async def _copy_object(self, request: web.Request, key: tuple[str, str], body: bytes) -> web.Response:
        source = request.headers["x-amz-copy-source"].split("?", 1)[0].lstrip("/")
        src_bucket, _, src_key = source.partition("/")
        status, headers, payload = await self._forward(request, body)
        if status < 300 and b"<Error>" not in payload:
            match = re.search(rb"<ETag>([^<]*)</ETag>", payload)
            with self._lock:
                entry = self._objects.get((src_bucket, unquote(src_key)))
                if entry is not None and match:
                    self._objects[key] = (entry[0], _etag(match.group(1).decode().replace("&quot;", '"')))
        return web.Response(status=status, body=payload, headers=headers)

    async def _create(self, request: web.Request, key: tuple[str, str], body: bytes) -> web.Response:
        algorithm = request.headers.get("x-amz-checksum-algorithm", "").upper()
        kind = request.headers.get("x-amz-checksum-type", "").upper()
        crc = algorithm == "CRC64NVME"
        if crc and kind not in ("", "FULL_OBJECT"):
            return self._refuse("CreateMultipartUpload", key, request, "InvalidRequest",
                                "The CRC64NVME checksum is always a full object checksum.")
        status, headers, payload = await self._forward(request, body)
        if status < 300:
            upload_id = re.search(rb"<UploadId>([^<]+)</UploadId>", payload).group(1).decode()
            with self._lock:
                self._uploads[upload_id] = _Upload(key, crc)
            if crc:
                headers.update({"x-amz-checksum-algorithm": "CRC64NVME", "x-amz-checksum-type": "FULL_OBJECT"})
        return web.Response(status=status, body=payload, headers=headers)

    def _upload(self, upload_id: str, key: tuple[str, str]) -> _Upload:
        with self._lock:
            return self._uploads.setdefault(upload_id, _Upload(key, False))

    async def _upload_part(self, request: web.Request, key: tuple[str, str], body: bytes) -> web.Response:
        upload = self._upload(request.query["uploadId"], key)
        number = int(request.query.get("partNumber", "0"))
        computed = crc64nvme(body)
        sent = request.headers.get(_CRC)
        if sent is not None and not upload.crc:
            return self._refuse("UploadPart", key, request, "InvalidRequest",
                                "Checksum Type mismatch occurred, expected checksum Type: null, actual checksum "
                                "Type: crc64nvme")
        if sent is not None and sent != b64(computed):
            return self._refuse("UploadPart", key, request, "BadDigest",
                                "The CRC64NVME you specified did not match the calculated checksum.")
        status, headers, payload = await self._forward(request, body)
        if status < 300:
            with self._lock:
                upload.parts[number] = (computed, len(body))
            if upload.crc:
                headers[_CRC] = b64(computed)
        return web.Response(status=status, body=payload, headers=headers)

    async def _complete(self, request: web.Request, key: tuple[str, str], body: bytes) -> web.Response:
        upload = self._upload(request.query["uploadId"], key)
        listed = [(int(_text(p, "PartNumber")), _text(p, "ChecksumCRC64NVME"))
                  for p in ET.fromstring(body) if _local(p.tag) == "Part"]
        whole: int | None = None
        with self._lock:
            recorded = dict(upload.parts)
        for number, part_crc in listed:
            found = recorded.get(number)
            if found is None:
                whole = None
                break
            if part_crc and (not upload.crc or part_crc != b64(found[0])):
                return self._refuse("CompleteMultipartUpload", key, request, "InvalidPart",
                                    f"The checksum of part {number} does not match the part uploaded.")
            whole = found[0] if whole is None else crc64nvme_combine(whole, found[0], found[1])
        sent = request.headers.get(_CRC)
        if sent is not None and not upload.crc:
            return self._refuse("CompleteMultipartUpload", key, request, "InvalidRequest",
                                "The upload was created without a checksum algorithm.")
        if sent is not None and whole is not None and sent != b64(whole):
            return self._refuse("CompleteMultipartUpload", key, request, "BadDigest",
                                "The CRC64NVME you specified did not match the calculated checksum.")
        status, headers, payload = await self._forward(request, body)
        if status < 300 and b"<Error>" not in payload:
            match = re.search(rb"<ETag>([^<]*)</ETag>", payload)
            etag = _etag(match.group(1).decode().replace("&quot;", '"')) if match else ""
            with self._lock:
                if whole is not None:
                    self._objects[key] = (whole, etag)
                self._uploads.pop(request.query["uploadId"], None)
            if upload.crc and whole is not None:
                payload = payload.replace(b"</CompleteMultipartUploadResult>",
                                          f"<ChecksumCRC64NVME>{b64(whole)}</ChecksumCRC64NVME>"
                                          f"<ChecksumType>FULL_OBJECT</ChecksumType>"
                                          f"</CompleteMultipartUploadResult>".encode())
        return web.Response(status=status, body=payload, headers=headers)

    async def _list_parts(self, request: web.Request, body: bytes) -> web.Response:
        status, headers, payload = await self._forward(request, body)
        with self._lock:
            upload = self._uploads.get(request.query["uploadId"])
            parts = dict(upload.parts) if upload is not None and upload.crc else {}
        if status < 300 and parts:
            def with_crc(match: re.Match) -> bytes:
                number = int(match.group(1))
                extra = f"<ChecksumCRC64NVME>{b64(parts[number][0])}</ChecksumCRC64NVME>" if number in parts else ""
                return match.group(0) + extra.encode()

            payload = re.sub(rb"<PartNumber>(\d+)</PartNumber>", with_crc, payload)
        return web.Response(status=status, body=payload, headers=headers)

    async def _read(self, request: web.Request, key: tuple[str, str], body: bytes) -> web.Response:
        with self._lock:
            if request.method == "GET":
                self.object_gets += 1
            else:
                self.heads += 1
        status, headers, payload = await self._forward(request, body)
        with self._lock:
            entry, ecma = self._objects.get(key), self._ecma.get(key)
        if status < 300 and self.cos_crc64 and ecma is not None and entry is not None \
                and entry[1] == _etag(_header(headers, "etag")):
            headers["x-cos-hash-crc64ecma"] = str(ecma)
        wanted = request.headers.get("x-amz-checksum-mode", "").upper() == "ENABLED"
        if status < 300 and wanted and "range" not in {k.lower() for k in request.headers}:
            etag = _etag(_header(headers, "etag"))
            if entry is not None and entry[1] == etag:
                headers.update({_CRC: b64(entry[0]), "x-amz-checksum-type": "FULL_OBJECT"})
        return web.Response(status=status, body=payload if request.method == "GET" else None, headers=headers)


def _text(elem: ET.Element, name: str) -> str:
    for child in elem:
        if _local(child.tag) == name:
            return (child.text or "").strip()
    return ""
