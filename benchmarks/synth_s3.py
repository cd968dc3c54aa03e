"""A synthetic S3 endpoint for listing at scale: ListObjectsV2 over millions of generated keys, none stored.

Each bucket is a key space computed from a position: key i is `d{i // 100000:03d}/k{i:08d}` (layout `deep`,
100 keys-folders per 10 M) or `obj-{i:010d}` (`flat`), its size and ETag derived from i, so a page is
formatted from where it starts and nothing is held per key. A bucket given as NAME=TOTAL:SKIP holds every key
of TOTAL but each SKIP-th (i % SKIP == 0 is missing), with the same sizes and ETags: a destination holding
9 M of 10 M keys is `dst=10000000:10`. Requests are anonymous (any signature is ignored, never checked: a
benchmark fixture, not a test of auth); anything but ListObjectsV2 answers 501 NotImplemented and is counted.

    python benchmarks/synth_s3.py --port 0 --bucket src=10000000 --bucket dst=10000000:10 [--processes 2]

Prints `READY <port>` once listening. With --processes N, N processes share the port (SO_REUSEPORT); each
writes its request counts to --stats-dir/<pid>.json when it gets SIGTERM.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import json
import multiprocessing
import os
import signal
import socket
import sys
from pathlib import Path

from aiohttp import web

MAX_CHAR = "\U0010ffff"
LAST_MODIFIED = "2026-01-01T00:00:00.000Z"
NS = "http://s3.amazonaws.com/doc/2006-03-01/"
_MASK64 = (1 << 64) - 1
_ENTRY = ("<Contents><Key>%s</Key><LastModified>" + LAST_MODIFIED + "</LastModified>"
          "<ETag>&quot;%016x%016x&quot;</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>")
_ETAG_MULT = 0x9E3779B97F4A7C15


def size_of(i: int) -> int:
    """Object i's size in bytes (1 KiB to ~200 KB, the same on every bucket)."""
    return 1024 + (i * 7919) % 199_000


def etag_of(i: int) -> str:
    """Object i's ETag (32 hex digits, like a single-part MD5; the same on every bucket)."""
    return f"{(i * _ETAG_MULT) & _MASK64:016x}{i:016x}"


class KeySpace:
    """The keys one bucket holds, in order: position k is the k-th present index i (i % skip != 0 when skip)."""

    def __init__(self, total: int, skip: int = 0, layout: str = "deep"):
        self.total = total
        self.skip = skip
        self.layout = layout
        self.count = total - (-(-total // skip) if skip else 0)

    def index(self, k: int) -> int:
        if not self.skip:
            return k
        per = self.skip - 1
        return (k // per) * self.skip + k % per + 1

    def indices(self, k: int, n: int) -> list[int] | range:
        """The indices at positions k .. k+n-1."""
        if not self.skip:
            return range(k, k + n)
        per, skip = self.skip - 1, self.skip
        return [(p // per) * skip + p % per + 1 for p in range(k, k + n)]

    def keys(self, indices) -> list[str]:
        # %-formatting: measured faster than f-strings here, and keys are the server's main cost
        if self.layout == "deep":
            return ["d%03d/k%08d" % (i // 100_000, i) for i in indices]  # noqa: UP031
        return ["obj-%010d" % i for i in indices]  # noqa: UP031

    def key(self, k: int) -> str:
        return self.keys((self.index(k),))[0]

    def first_above(self, text: str) -> int:
        """The first position whose key is > text."""
        return bisect.bisect_right(range(self.count), text, key=self.key)

    def first_from(self, text: str) -> int:
        """The first position whose key is >= text."""
        return bisect.bisect_left(range(self.count), text, key=self.key)


def list_xml(space: KeySpace, bucket: str, prefix: str, after: str, delimiter: str, max_keys: int,
             encoding: str) -> str:
    """One ListObjectsV2 page after `after` (exclusive), as S3 formats it. Keys are formatted a page at a time
    (about 1 µs each), the only per-key work."""
    k = max(space.first_from(prefix) if prefix else 0, space.first_above(after) if after else 0)
    end = space.first_from(prefix + MAX_CHAR) if prefix else space.count
    parts: list[str] = []
    common: list[str] = []
    last = ""
    n = 0
    cut = len(prefix)
    while n < max_keys and k < end:
        take = min(max_keys - n, end - k)
        indices = space.indices(k, take)
        keys = space.keys(indices)
        j = take
        if delimiter:
            j = next((x for x, key in enumerate(keys) if delimiter in key[cut:]), take)
        parts.extend(_ENTRY % (key, (i * _ETAG_MULT) & _MASK64, i, 1024 + (i * 7919) % 199_000)
                     for key, i in zip(keys[:j], indices[:j], strict=True))
        n += j
        k += j
        if j:
            last = keys[j - 1]
        if j < take:  # keys[j] rolls up into a common prefix: one entry, then past everything under it
            rolled = keys[j][: keys[j].index(delimiter, cut) + len(delimiter)]
            common.append(rolled)
            last = rolled + MAX_CHAR
            k = space.first_above(last)
            n += 1
    truncated = k < end
    token = base64.urlsafe_b64encode(last.encode()).decode() if truncated else ""
    head = (f'<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult xmlns="{NS}"><Name>{bucket}</Name>'
            f"<Prefix>{prefix}</Prefix><KeyCount>{n}</KeyCount><MaxKeys>{max_keys}</MaxKeys>"
            + (f"<Delimiter>{delimiter}</Delimiter>" if delimiter else "")
            + (f"<EncodingType>{encoding}</EncodingType>" if encoding else "")
            + f"<IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
            + (f"<NextContinuationToken>{token}</NextContinuationToken>" if token else ""))
    prefixes = "".join(f"<CommonPrefixes><Prefix>{p}</Prefix></CommonPrefixes>" for p in common)
    return head + "".join(parts) + prefixes + "</ListBucketResult>"


def error_xml(code: str, message: str) -> str:
    return f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code><Message>{message}</Message></Error>'


class Endpoint:
    """The aiohttp application: one KeySpace per bucket, counts per request kind."""

    def __init__(self, buckets: dict[str, KeySpace]):
        self.buckets = buckets
        self.counts: dict[str, int] = {}
        self.keys_served = 0

    def count(self, kind: str) -> None:
        self.counts[kind] = self.counts.get(kind, 0) + 1

    async def handle(self, request: web.Request) -> web.Response:
        bucket, _, key = request.path.lstrip("/").partition("/")
        q = request.query
        space = self.buckets.get(bucket)
        if space is None:
            self.count("no_such_bucket")
            return web.Response(status=404, text=error_xml("NoSuchBucket", bucket), content_type="application/xml")
        if request.method == "HEAD" and not key:
            self.count("head_bucket")
            return web.Response(status=200)
        if request.method != "GET" or key or q.get("list-type") != "2":
            self.count(f"unsupported {request.method}{' key' if key else ''} {' '.join(sorted(q))}".strip())
            return web.Response(status=501, text=error_xml("NotImplemented", "synthetic endpoint: listing only"),
                                content_type="application/xml")
        self.count("list_objects_v2")
        token = q.get("continuation-token", "")
        after = base64.urlsafe_b64decode(token.encode()).decode() if token else q.get("start-after", "")
        max_keys = max(0, min(1000, int(q.get("max-keys", "1000"))))
        body = list_xml(space, bucket, q.get("prefix", ""), after, q.get("delimiter", ""), max_keys,
                        q.get("encoding-type", ""))
        return web.Response(body=body.encode(), content_type="application/xml")

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        return app


def serve(sock: socket.socket, buckets: dict[str, KeySpace], stats_dir: str, children: tuple = ()) -> None:
    """Serve on a bound socket until SIGTERM (passed on to `children`); then write this process's counts to
    stats_dir/<pid>.json."""
    endpoint = Endpoint(buckets)

    def stop(signum, _frame):
        for child in children:
            if child.pid:
                os.kill(child.pid, signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        web.run_app(endpoint.app(), sock=sock, print=None, access_log=None, handle_signals=False)
    except KeyboardInterrupt:
        pass
    finally:
        if stats_dir:
            Path(stats_dir, f"{os.getpid()}.json").write_text(json.dumps({"pid": os.getpid(), **endpoint.counts}))


def parse_bucket(text: str, layout: str) -> tuple[str, KeySpace]:
    name, _, spec = text.partition("=")
    total, _, skip = spec.partition(":")
    return name, KeySpace(int(total), int(skip or 0), layout)


def bound_socket(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(256)
    return sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--bucket", action="append", required=True, help="NAME=TOTAL[:SKIP]")
    parser.add_argument("--layout", choices=("deep", "flat"), default="deep")
    parser.add_argument("--processes", type=int, default=1, help="server processes sharing the port")
    parser.add_argument("--stats-dir", default="", help="where each process writes its counts on SIGTERM")
    args = parser.parse_args(argv)
    buckets = dict(parse_bucket(b, args.layout) for b in args.bucket)
    first = bound_socket(args.port)
    port = first.getsockname()[1]
    children = []
    for _ in range(args.processes - 1):
        child = multiprocessing.get_context("fork").Process(target=serve, args=(bound_socket(port), buckets,
                                                                               args.stats_dir))
        child.start()
        children.append(child)

    print(f"READY {port} {' '.join(str(c.pid) for c in children)}", flush=True)
    try:
        serve(first, buckets, args.stats_dir, tuple(children))
    finally:
        for child in children:
            child.join(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
