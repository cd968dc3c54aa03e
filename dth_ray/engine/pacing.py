"""The source store under this worker's share of the job's `transfer.max_requests_per_s` and
`transfer.max_bandwidth`: every request to the source (list, head, get) takes a request token, every byte
read a bandwidth token. The limits are the source account's (shared with its production traffic), so they
hold for the whole job: the driver splits them among the workers (plan/shares.py) and each worker's share
arrives with the manifest's answer to its progress flush (`Share`). Requests to the destination are not paced.
"""

from __future__ import annotations

from dataclasses import dataclass

from dth_ray.engine.ratelimit import AdaptiveLimit, TokenBucket
from dth_ray.model import ByteRange, GetResult, ListPage, ObjectInfo
from dth_ray.stores.base import RangeReader

BURST_S = 0.2  # a share's burst, in seconds of its rate: the workers' bursts together stay a fifth of a second
START_FRACTION = 0.1  # of the job's total: a worker's rate until its first share arrives


@dataclass(frozen=True, slots=True)
class Share:
    """A worker's part of the job's budgets (0: that budget is off), and the job's throttle epoch: a worker
    that sees a newer epoch backs off as if it had been throttled itself."""

    requests_per_s: float = 0.0
    bytes_per_s: float = 0.0
    throttle_epoch: int = 0


class SourcePace:
    """One worker's request and bandwidth buckets for the source, and what it used of them (reported)."""

    def __init__(self, job_requests_per_s: float, job_bytes_per_s: float):
        self.requests = TokenBucket(job_requests_per_s * START_FRACTION, _burst(job_requests_per_s * START_FRACTION))
        self.bandwidth = TokenBucket(job_bytes_per_s * START_FRACTION, _burst(job_bytes_per_s * START_FRACTION))
        self.throttle_epoch = 0

    @property
    def on(self) -> bool:
        return self.requests.rate_per_s > 0 or self.bandwidth.rate_per_s > 0

    def usage(self) -> tuple[float, float, float, float]:
        """Cumulative (requests taken, bytes taken, seconds waited for requests, for bytes)."""
        return self.requests.taken, self.bandwidth.taken, self.requests.waited_s, self.bandwidth.waited_s

    def apply(self, share: Share, concurrency: AdaptiveLimit) -> None:
        if share.requests_per_s > 0 and share.requests_per_s != self.requests.rate_per_s:
            self.requests.set_rate(share.requests_per_s, _burst(share.requests_per_s))
        if share.bytes_per_s > 0 and share.bytes_per_s != self.bandwidth.rate_per_s:
            self.bandwidth.set_rate(share.bytes_per_s, _burst(share.bytes_per_s))
        if share.throttle_epoch > self.throttle_epoch:
            if self.throttle_epoch:  # not the first share: another worker was throttled since the last one
                concurrency.back_off()
            self.throttle_epoch = share.throttle_epoch

    async def request(self, nbytes: int = 0) -> None:
        await self.requests.take()
        if nbytes:
            await self.bandwidth.take(nbytes)


def _burst(rate: float) -> float:
    return max(rate * BURST_S, 1.0)


class PacedSource:
    """A source store whose requests are paced by a SourcePace; anything else passes through."""

    def __init__(self, store, pace: SourcePace):
        self._store = store
        self._pace = pace

    def __getattr__(self, name: str):
        return getattr(self._store, name)

    async def list_page(self, prefix: str, **kwargs) -> ListPage:
        await self._pace.request()
        return await self._store.list_page(prefix, **kwargs)

    async def head(self, key: str, **options) -> ObjectInfo:
        await self._pace.request()
        return await self._store.head(key, **options)

    async def get(self, key: str, byte_range: ByteRange | None = None, if_match: str = "") -> GetResult:
        await self._pace.request(byte_range.length if byte_range is not None else 0)
        got = await self._store.get(key, byte_range, if_match=if_match)
        if byte_range is None:  # a whole object: its size is known now (the tokens are owed, paid by the next)
            await self._pace.bandwidth.take(len(got.data))
        return got


class PacedRangeSource(PacedSource):
    """The same, for a store that reads ranges into a buffer (RangeReader)."""

    async def get_into(self, key: str, byte_range: ByteRange | None, out: memoryview, if_match: str = "") -> ObjectInfo:
        await self._pace.request(len(out))
        return await self._store.get_into(key, byte_range, out, if_match=if_match)


def paced(store, pace: SourcePace):
    """`store` under `pace` (keeping its RangeReader ability), or `store` itself when nothing is paced."""
    if not pace.on:
        return store
    return PacedRangeSource(store, pace) if isinstance(store, RangeReader) else PacedSource(store, pace)
