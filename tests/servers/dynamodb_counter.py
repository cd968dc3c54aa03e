"""A counting HTTP reverse proxy in front of a DynamoDB endpoint (moto): requests and items by operation, as
the server sees them, so a benchmark or test can check the manifest's own write counters against the wire.

Operations come from the `X-Amz-Target` header; items from the JSON bodies: BatchWriteItem counts its Put and
Delete requests less the response's UnprocessedItems, TransactWriteItems its actions, PutItem, UpdateItem and
DeleteItem one each. Only 2xx answers count items; other answers count as errors of their operation.
Headers go through unchanged, so the client's SigV4 signature still verifies upstream.
"""

from __future__ import annotations

import json
from collections import Counter

from aiohttp import web

from tests.servers.counting_proxy import _HOP, CountingProxy

WRITE_OPS = frozenset({"BatchWriteItem", "PutItem", "DeleteItem", "UpdateItem", "TransactWriteItems"})
_SINGLE = {"PutItem": "put", "DeleteItem": "delete", "UpdateItem": "update"}


def _batch_kinds(request_items: dict) -> Counter:
    """Put and Delete requests of a BatchWriteItem's RequestItems (or a response's UnprocessedItems)."""
    return Counter("put" if "PutRequest" in r else "delete" for requests in request_items.values() for r in requests)


def _items_written(op: str, body: dict, answer: dict) -> Counter:
    """Items a 2xx write answer wrote, by kind (put, delete, update, transact)."""
    if op == "BatchWriteItem":
        written = _batch_kinds(body.get("RequestItems", {}))
        written.subtract(_batch_kinds(answer.get("UnprocessedItems", {})))
        return written
    if op == "TransactWriteItems":
        return Counter(transact=len(body.get("TransactItems", [])))
    return Counter({_SINGLE[op]: 1})


class DynamoCounter(CountingProxy):
    """Forward every request to the DynamoDB endpoint `upstream`, counting per operation."""

    def __init__(self, upstream: str):
        super().__init__(upstream)
        self.requests: Counter = Counter()  # operation -> requests answered 2xx
        self.errors: Counter = Counter()  # operation -> requests answered otherwise
        self.items: Counter = Counter()  # operation -> items written (2xx answers only)
        self.kinds: Counter = Counter()  # put / delete / update / transact -> items written

    def counts(self) -> dict:
        """A snapshot: per operation, and the totals for write operations."""
        with self._lock:
            ops = sorted(set(self.requests) | set(self.errors))
            return {
                "by_operation": {op: {"requests": self.requests[op], "errors": self.errors[op],
                                      "items": self.items[op]} for op in ops},
                "write_requests": sum(self.requests[op] for op in WRITE_OPS),
                "items_written": sum(self.items[op] for op in WRITE_OPS),
                "items_by_kind": dict(self.kinds),
            }

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        op = request.headers.get("X-Amz-Target", "").rpartition(".")[2] or request.method
        headers = {k: v for k, v in request.headers.items() if k.lower() not in _HOP}
        async with self._session.request(
            request.method, self.upstream + request.path_qs, headers=headers, data=body,
            skip_auto_headers=("Content-Type", "Accept-Encoding", "User-Agent", "Accept"),
        ) as upstream:
            payload = await upstream.read()
            out = {k: v for k, v in upstream.headers.items() if k.lower() not in _HOP | {"content-length"}}
            ok = 200 <= upstream.status < 300
        self._count(op, ok, body, payload)
        return web.Response(status=upstream.status, body=payload, headers=out)

    def _count(self, op: str, ok: bool, body: bytes, payload: bytes) -> None:
        written = _items_written(op, json.loads(body or b"{}"), json.loads(payload or b"{}")) \
            if ok and op in WRITE_OPS else Counter()
        with self._lock:
            (self.requests if ok else self.errors)[op] += 1
            self.items[op] += sum(written.values())
            self.kinds.update(written)
