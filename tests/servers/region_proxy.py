"""A reverse proxy that plays an S3 bucket living in one region: requests signed for another get S3's answer for that.

In front of a real server (rclone serve s3 accepts a signature for any region, so it cannot tell by itself),
a request whose SigV4 credential scope names another region is answered the way AWS answers it: `redirect`
mode, 301 PermanentRedirect with `x-amz-bucket-region` (and an XML body naming the regional endpoint, except
for HEAD); `malformed` mode, 400 AuthorizationHeaderMalformed with the right `<Region>` in the body and no
header. Requests signed for the bucket's region go through unchanged (see CountingProxy).
"""

from __future__ import annotations

import re
import threading

from aiohttp import web

from tests.servers.counting_proxy import _HOP, CountingProxy

_SCOPE = re.compile(r"Credential=[^/]+/\d{8}/([^/]+)/s3/aws4_request")


class RegionProxy(CountingProxy):
    """`seen` lists (method, signed region) of every request, in order."""

    def __init__(self, upstream: str, region: str, mode: str = "redirect"):
        super().__init__(upstream)
        if mode not in ("redirect", "malformed"):
            raise ValueError(f"mode {mode!r}")
        self.region = region
        self.mode = mode
        self.seen: list[tuple[str, str]] = []
        self._seen_lock = threading.Lock()

    def wrong_region_requests(self) -> int:
        with self._seen_lock:
            return sum(1 for _, region in self.seen if region != self.region)

    async def _head(self, request: web.Request) -> web.StreamResponse:
        """HEAD forwarded with its Content-Length (CountingProxy would answer 0: its body is empty)."""
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request("HEAD", self.upstream + request.path_qs, headers=headers,
                                         skip_auto_headers=("Accept-Encoding", "User-Agent", "Accept")) as upstream:
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP}
            response = web.StreamResponse(status=upstream.status, headers=out)
            await response.prepare(request)
            return response

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        match = _SCOPE.search(request.headers.get("Authorization", ""))
        signed = match.group(1) if match else ""
        with self._seen_lock:
            self.seen.append((request.method, signed))
        if signed == self.region:
            return await (self._head(request) if request.method == "HEAD" else super()._handle(request))
        await request.read()  # a client sending a body expects it to be taken before the answer
        if self.mode == "malformed":
            body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>AuthorizationHeaderMalformed</Code>"
                    f"<Message>The authorization header is malformed; the region '{signed}' is wrong; expecting "
                    f"'{self.region}'</Message><Region>{self.region}</Region></Error>")
            return web.Response(status=400, body=body.encode(), content_type="application/xml")
        headers = {"x-amz-bucket-region": self.region}
        if request.method == "HEAD":
            return web.Response(status=301, headers=headers)
        body = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>PermanentRedirect</Code><Message>The bucket "
                "you are attempting to access must be addressed using the specified endpoint.</Message>"
                f"<Endpoint>s3.{self.region}.amazonaws.com</Endpoint></Error>")
        return web.Response(status=301, body=body.encode(), headers=headers, content_type="application/xml")
