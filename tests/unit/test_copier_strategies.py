"""Copier strategies on the in-memory store: each strategy, fallbacks, the retry helper, the choice by size.

The memory store checks Content-MD5 and makes real MD5 and multipart ETags, and all memory buckets form one
service, so every strategy runs here in milliseconds, with no server and no real waiting. Its minimum part
size is lowered to 64 KiB for these tests (a store with smaller parts), so objects of a few parts are small.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from dataclasses import replace

import pytest

from dth_ray.config import StoreConfig, StoreType
from dth_ray.engine.budget import ByteBudget
from dth_ray.engine.context import CopySettings, auto_part_bytes
from dth_ray.engine.copier import Copier
from dth_ray.engine.limits import Limits
from dth_ray.engine.multipart import Multipart
from dth_ray.engine.ratelimit import AdaptiveLimit
from dth_ray.engine.retry import retry
from dth_ray.engine.serverside import ServerSideCopy, ServerSideParts
from dth_ray.engine.single import SinglePut
from dth_ray.errors import (
    Fatal,
    IntegrityError,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    Transient,
    Unreadable,
)
from dth_ray.model import ByteRange, ObjectHeaders, ObjectMeta, PartInfo, UploadState
from dth_ray.plan.parts import multipart_etag
from dth_ray.stores import memory
from dth_ray.stores.memory import MemoryStore

KiB = 1024
PART = 64 * KiB  # the part size (and the store's minimum part size) in these tests
PIECE = 16 * KiB  # one ranged GET
THREE_PARTS, FOUR_PARTS = 2 * PART + 5000, 3 * PART + 1000  # object sizes
SRC, DST = "strategies-src", "strategies-dst"
KEY, DST_KEY = "data/object.bin", "copy/object.bin"


class FakeClock:
    """The copier's retry clock: records each wait instead of waiting."""

    def __init__(self) -> None:
        self.slept: list[float] = []

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


class MemoryJournal:
    """The UploadJournal protocol in dicts, as the manifest keeps it: an intent (no upload id) is replaced by
    the real id of the same key; parts are kept per upload; `events` logs the calls in order."""

    def __init__(self) -> None:
        self.uploads: dict[tuple[str, str], UploadState] = {}
        self.parts: dict[tuple[str, str], dict[int, PartInfo]] = {}
        self.events: list[tuple[str, str]] = []

    async def upload_opened(self, upload: UploadState) -> None:
        self.events.append(("opened", upload.upload_id))
        if upload.upload_id:
            self.uploads.pop((upload.dst_key, ""), None)
        self.uploads[(upload.dst_key, upload.upload_id)] = replace(upload, parts={})

    async def parts_sent(self, dst_key: str, upload_id: str, parts: list[PartInfo]) -> None:
        self.events.append(("parts", upload_id))
        self.parts.setdefault((dst_key, upload_id), {}).update((p.part_number, p) for p in parts)

    async def upload_closed(self, dst_key: str, upload_id: str) -> None:
        self.events.append(("closed", upload_id))
        self.uploads.pop((dst_key, upload_id), None)
        self.parts.pop((dst_key, upload_id), None)

    async def find_uploads(self, dst_key: str) -> list[UploadState]:
        return [replace(u, parts=dict(self.parts.get((key, uid), {})))
                for (key, uid), u in self.uploads.items() if key == dst_key]


class LocalPeers:
    """Peers in this process, each a Copier of its own, as the runtime's other transfer actors would be."""

    def __init__(self, copiers: list[Copier]) -> None:
        self.copiers = copiers
        self.sent: list[int] = []  # part numbers the peers sent

    def peers(self) -> int:
        return len(self.copiers)

    async def send_parts(self, peer, meta, dst_key, upload_id, parts):
        self.sent.extend(n for n, _ in parts)
        return await self.copiers[peer].send_parts(meta, dst_key, upload_id, parts)


class FlipFirstRead:
    """Wraps a memory store: the first read (whole, or a range into a buffer) has one byte flipped."""

    def __init__(self, store: MemoryStore) -> None:
        self._store, self.features, self.reads = store, store.features, 0

    async def head(self, key):
        return await self._store.head(key)

    async def get(self, key, byte_range=None, if_match=""):
        got = await self._store.get(key, byte_range, if_match)
        self.reads += 1
        if self.reads > 1:
            return got
        data = bytearray(got.data)
        data[len(data) // 2] ^= 0x01
        return type(got)(bytes(data), got.info)

    async def get_into(self, key, byte_range, out, if_match=""):
        info = await self._store.get_into(key, byte_range, out, if_match)
        self.reads += 1
        if self.reads == 1:
            out[len(out) // 2] ^= 0x01
        return info


class RecordReads:
    """Wraps a memory store as a source: notes the key and first byte of each ranged GET, in order."""

    def __init__(self, store: MemoryStore) -> None:
        self._store, self.features = store, store.features
        self.reads: list[tuple[str, int]] = []

    async def head(self, key):
        return await self._store.head(key)

    async def get_into(self, key, byte_range, out, if_match=""):
        self.reads.append((key, byte_range.start))
        return await self._store.get_into(key, byte_range, out, if_match)


class RecordPuts:
    """Wraps a memory store as a destination: notes each PUT's Content-MD5 and the code of each refusal."""

    def __init__(self, store: MemoryStore) -> None:
        self._store, self.features = store, store.features
        self.md5s: list[bytes] = []
        self.refused: list[str] = []

    async def put(self, key, data, headers, md5):
        self.md5s.append(md5)
        try:
            return await self._store.put(key, data, headers, md5)
        except IntegrityError as exc:
            self.refused.append(exc.code)
            raise


def store(bucket: str) -> MemoryStore:
    return MemoryStore(StoreConfig(type=StoreType.memory, bucket=bucket))


def make_copier(src=None, dst=None, *, journal=None, spread=None, clock: FakeClock | None = None,
                budget: ByteBudget | None = None, **settings) -> Copier:
    """A Copier between two memory buckets with PART-sized parts from PART on, reading PIECE-sized ranges
    (a budget of 64 parts unless given); `settings` override CopySettings."""
    src = src or store(SRC)
    dst = dst or store(DST)
    limits = Limits(budget or ByteBudget(64 * PART), AdaptiveLimit(16))
    base = dict(multipart_threshold_bytes=PART, part_size_bytes=PART, parts_in_flight=2, max_attempts=3,
                get_range_bytes=PIECE)
    return Copier(src, dst, src.features, dst.features, CopySettings(**{**base, **settings}), limits, journal,
                  spread, sleep=(clock or FakeClock()).sleep)


def run(coro):
    return asyncio.run(coro)


async def put_source(body: bytes, key: str = KEY) -> ObjectMeta:
    """Write `key` to the source bucket as one PUT; its listing entry (MD5 ETag)."""
    await store(SRC).put(key, body, ObjectHeaders(content_type="application/x-test"), b"")
    return (await store(SRC).head(key)).meta


async def put_source_in_parts(body: bytes, part_bytes: int = PART) -> ObjectMeta:
    """Write KEY to the source bucket as a multipart upload of `part_bytes` parts (a multipart ETag)."""
    src = store(SRC)
    upload_id = await src.create_multipart(KEY, ObjectHeaders())
    parts = [PartInfo(n, await src.upload_part(KEY, upload_id, n, body[start:start + part_bytes], b""))
             for n, start in enumerate(range(0, len(body), part_bytes), 1)]
    await src.complete_multipart(KEY, upload_id, parts)
    return (await src.head(KEY)).meta


async def destination_body(key: str = DST_KEY) -> bytes:
    return (await store(DST).get(key)).data


def calls(bucket: str, op: str) -> int:
    return MemoryStore.faults(bucket).calls[op]


@pytest.fixture(autouse=True)
def fresh_buckets(monkeypatch):
    monkeypatch.setattr(memory, "FEATURES", replace(memory.FEATURES, min_part_size_bytes=PART))
    MemoryStore.reset()
    yield
    MemoryStore.reset()


# -- single PUT ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [PIECE - 1, 3 * PIECE + 5], ids=["one-get", "ranged-gets"])
def test_single_put_sends_the_source_md5_as_content_md5(size):
    body = os.urandom(size)
    meta = run(put_source(body))
    dst = RecordPuts(store(DST))

    outcome = run(make_copier(dst=dst).copy(meta, DST_KEY))

    assert dst.md5s == [bytes.fromhex(meta.etag)], "the source's own MD5, not one computed here"
    assert outcome.dst_etag == hashlib.md5(body).hexdigest() and outcome.verified_source
    assert outcome.part_size_bytes == 0 and not outcome.server_side
    assert run(destination_body()) == body
    assert (run(store(DST).head(DST_KEY))).headers.content_type == "application/x-test"


@pytest.mark.parametrize("size", [PIECE - 1, 3 * PIECE + 5], ids=["one-get", "ranged-gets"])
def test_single_put_of_a_flipped_read_is_refused_by_the_destination(size):
    body = os.urandom(size)
    meta = run(put_source(body))

    src, dst = FlipFirstRead(store(SRC)), RecordPuts(store(DST))
    with pytest.raises(IntegrityError):
        run(make_copier(src, dst, max_attempts=1).copy(meta, DST_KEY))
    assert dst.refused == ["BadDigest"], "the destination itself refused the corrupted body"
    with pytest.raises(NotFound):
        run(store(DST).head(DST_KEY))

    clock = FakeClock()
    src, dst = FlipFirstRead(store(SRC)), RecordPuts(store(DST))
    copier = make_copier(src, dst, clock=clock)
    outcome = run(copier.copy(meta, DST_KEY))
    assert dst.refused == ["BadDigest"] and copier.retries == 1 and len(clock.slept) == 1
    assert outcome.verified_source and run(destination_body()) == body


# -- multipart -----------------------------------------------------------------------------------------------

def test_multipart_copies_in_parts_and_checks_the_whole_object():
    body = os.urandom(THREE_PARTS)
    meta = run(put_source(body))
    journal = MemoryJournal()

    outcome = run(make_copier(journal=journal).copy(meta, DST_KEY))

    md5s = [hashlib.md5(body[s:s + PART]).digest() for s in range(0, len(body), PART)]
    assert outcome.part_size_bytes == PART and outcome.dst_etag == multipart_etag(md5s)
    assert outcome.verified_source, "the bytes read matched the source's MD5 ETag before Complete"
    assert outcome.resumed_parts == 0 and outcome.spread_parts == 0
    assert run(destination_body()) == body
    assert calls(DST, "upload_part") == 3 and run(store(DST).list_uploads("")) == []
    upload_id = next(uid for kind, uid in journal.events if kind == "opened" and uid)
    assert journal.events[:2] == [("opened", ""), ("opened", upload_id)], "the intent goes before Create"
    assert journal.events[-1] == ("closed", upload_id) and journal.uploads == {}


def test_multipart_resumes_a_recorded_upload_reusing_only_vouched_parts():
    body = os.urandom(THREE_PARTS)
    meta = run(put_source(body))
    part = [body[s:s + PART] for s in range(0, len(body), PART)]
    dst, journal = store(DST), MemoryJournal()

    async def interrupted() -> tuple[str, str]:
        """An earlier run: part 1 sent and recorded; part 2 on the server holds other bytes than recorded;
        part 3 never sent. Plus an upload for an older source version, and an intent whose Create ran."""
        upload_id = await dst.create_multipart(DST_KEY, ObjectHeaders())
        state = UploadState(DST_KEY, upload_id, meta.etag, meta.size, PART)
        await journal.upload_opened(state)
        for number, data in ((1, part[0]), (2, os.urandom(PART))):
            await dst.upload_part(DST_KEY, upload_id, number, data, b"")
        await journal.parts_sent(DST_KEY, upload_id, [PartInfo(1, hashlib.md5(part[0]).hexdigest(), PART),
                                                      PartInfo(2, hashlib.md5(part[1]).hexdigest(), PART)])
        stale = await dst.create_multipart(DST_KEY, ObjectHeaders())
        await journal.upload_opened(replace(state, upload_id=stale, src_etag="0" * 32))
        await dst.create_multipart(DST_KEY, ObjectHeaders())  # unrecorded: its intent is all the journal has
        journal.uploads[(DST_KEY, "")] = replace(state, upload_id="")
        return upload_id, stale

    upload_id, _ = run(interrupted())
    sent_before = calls(DST, "upload_part")

    outcome = run(make_copier(dst=dst, journal=journal).copy(meta, DST_KEY))

    assert outcome.resumed_parts == 1, "only part 1 is vouched for by both the journal and ListParts"
    assert calls(DST, "upload_part") - sent_before == 2, "parts 2 and 3 were sent again"
    assert run(destination_body()) == body
    assert run(store(DST).list_uploads("")) == [], "the stale and the unrecorded uploads were aborted"
    assert ("closed", upload_id) in journal.events and journal.uploads == {}


def test_multipart_aborts_its_upload_on_a_non_retryable_failure():
    meta = run(put_source(os.urandom(THREE_PARTS)))
    journal = MemoryJournal()
    MemoryStore.faults(DST).fail("upload_part", Fatal("refused"), after=1)

    with pytest.raises(Fatal):
        run(make_copier(journal=journal).copy(meta, DST_KEY))

    assert run(store(DST).list_uploads("")) == [] and journal.uploads == {}
    assert calls(DST, "abort_multipart") == 1


def test_multipart_keeps_its_upload_on_a_retryable_failure_and_the_retry_continues_it():
    body = os.urandom(FOUR_PARTS)
    meta = run(put_source(body))
    journal = MemoryJournal()
    # One part in flight: parts go in order, parts 1 and 2 land and part 3 fails.
    MemoryStore.faults(DST).fail("upload_part", Transient("reset"), after=2)

    with pytest.raises(Transient):
        run(make_copier(journal=journal, parts_in_flight=1, max_attempts=1).copy(meta, DST_KEY))
    [kept] = run(store(DST).list_uploads(""))
    assert calls(DST, "abort_multipart") == 0 and set(journal.parts[(DST_KEY, kept.upload_id)]) == {1, 2}

    MemoryStore.faults(DST).fail("upload_part", Transient("reset"), after=1)  # part 4 fails once more
    clock = FakeClock()
    copier = make_copier(journal=journal, parts_in_flight=1, clock=clock)
    outcome = run(copier.copy(meta, DST_KEY))
    assert outcome.resumed_parts == 3 and copier.retries == 1 and len(clock.slept) == 1
    assert run(destination_body()) == body and run(store(DST).list_uploads("")) == []


def test_multipart_without_a_journal_aborts_even_a_retryable_failure():
    meta = run(put_source(os.urandom(THREE_PARTS)))
    MemoryStore.faults(DST).fail("upload_part", Transient("reset"), times=None)

    with pytest.raises(Transient):
        run(make_copier(max_attempts=2).copy(meta, DST_KEY))

    assert run(store(DST).list_uploads("")) == [], "nothing could find it again: aborted each time"
    assert calls(DST, "abort_multipart") == 2


def test_multipart_of_a_flipped_read_never_completes_and_is_aborted():
    meta = run(put_source(os.urandom(THREE_PARTS)))
    journal = MemoryJournal()

    with pytest.raises(IntegrityError):
        run(make_copier(FlipFirstRead(store(SRC)), journal=journal, max_attempts=1).copy(meta, DST_KEY))

    assert calls(DST, "complete_multipart") == 0
    assert run(store(DST).list_uploads("")) == [] and journal.uploads == {}, "its parts would be reused"


def test_parts_take_the_byte_budget_in_part_order_so_a_full_budget_cannot_deadlock():
    # Two uploads whose small last parts fit a gap in the budget that their first parts do not. Taken out
    # of order, each last part would hold budget while waiting for part 1's headers; with other copies
    # freeing budget into such gaps, the last parts of a few uploads filled a 32 MiB budget and no part 1
    # ever got in (a mixed set hung at transfer.buffer_size=32MiB). Parts must take it in order.
    size = 3 * PART - 1  # parts of PART, PART and PART - 1 bytes
    bodies = {f"data/{name}.bin": os.urandom(size) for name in ("a", "b")}
    metas = [run(put_source(body, key)) for key, body in bodies.items()]
    budget = ByteBudget(2 * PART)
    src = RecordReads(store(SRC))
    copier = make_copier(src, budget=budget, parts_in_flight=4)

    async def scenario():
        async with budget.hold(PART + 1):  # another copy's bytes: PART - 1 bytes of the budget are free
            copies = asyncio.gather(*(copier.copy(meta, f"copy/{meta.key}") for meta in metas))
            for _ in range(100):  # every part that can take budget now has taken it and read
                await asyncio.sleep(0)
            assert src.reads == [], "no later part took the budget before its part 1"
        return await asyncio.wait_for(copies, timeout=30)

    outcomes = run(scenario())

    for meta, outcome in zip(metas, outcomes, strict=True):
        starts = [start for key, start in src.reads if key == meta.key]
        assert starts[0] == 0, "part 1 was read before any later part"
        assert outcome.verified_source and run(destination_body(f"copy/{meta.key}")) == bodies[meta.key]
    assert budget.in_use_bytes == 0


def test_multipart_spreads_parts_to_peers():
    body = os.urandom(FOUR_PARTS)
    meta = run(put_source_in_parts(body))
    peers = LocalPeers([make_copier(parts_in_flight=1)])

    copier = make_copier(spread=peers, parts_in_flight=1, spread_threshold_bytes=2 * PART)
    outcome = run(copier.copy(meta, DST_KEY))

    assert peers.sent == [2, 4] and outcome.spread_parts == 2
    assert outcome.verified_source, "the multipart ETags match part for part"
    assert outcome.dst_etag == meta.etag and run(destination_body()) == body


def test_a_peers_parts_are_retried_on_the_copiers_clock():
    body = os.urandom(THREE_PARTS)
    meta = run(put_source(body))
    upload_id = run(store(DST).create_multipart(DST_KEY, ObjectHeaders()))
    MemoryStore.faults(DST).fail("upload_part", Throttled("slow down", delay_s=2.5))
    MemoryStore.faults(DST).fail("upload_part", Transient("reset"))
    clock = FakeClock()

    share = [(2, ByteRange(PART, 2 * PART))]

    sent = run(make_copier(clock=clock).send_parts(meta, DST_KEY, upload_id, share))

    md5_hex = hashlib.md5(body[PART:2 * PART]).hexdigest()
    assert sent == [(PartInfo(2, md5_hex, PART), md5_hex)]
    assert len(clock.slept) == 2 and clock.slept[0] == 2.5, "the throttle's own delay, then a backoff"

    MemoryStore.faults(DST).fail("upload_part", Fatal("no"))
    with pytest.raises(Fatal):
        run(make_copier(clock=clock).send_parts(meta, DST_KEY, upload_id, share))
    assert len(clock.slept) == 2, "a non-retryable error is raised at once"


# -- server-side ---------------------------------------------------------------------------------------------

def test_server_side_copy_moves_no_bytes_through_the_client():
    body = os.urandom(PART // 2)
    meta = run(put_source(body))

    outcome = run(make_copier(server_side_bucket=SRC).copy(meta, DST_KEY))

    assert outcome.server_side and outcome.verified_source and outcome.dst_etag == meta.etag
    assert calls(SRC, "get") + calls(SRC, "get_into") == 0 and calls(DST, "copy_object") == 1
    assert run(destination_body()) == body


def test_server_side_parts_above_the_cutoff():
    body = os.urandom(THREE_PARTS)
    meta = run(put_source_in_parts(body))
    journal = MemoryJournal()

    outcome = run(make_copier(journal=journal, server_side_bucket=SRC, copy_cutoff_bytes=PART)
                  .copy(meta, DST_KEY))

    assert outcome.server_side and outcome.part_size_bytes == PART
    assert outcome.verified_source and outcome.dst_etag == meta.etag, "same layout, same multipart ETag"
    assert calls(DST, "upload_part_copy") == 3 and calls(SRC, "get") + calls(SRC, "get_into") == 0
    assert run(destination_body()) == body and journal.uploads == {}


def test_refused_server_side_copy_falls_back_to_moving_the_bytes_from_then_on():
    body = os.urandom(PART // 2)
    meta = run(put_source(body))
    MemoryStore.faults(DST).fail("copy_object", PermissionDenied("AccessDenied"))
    copier = make_copier(server_side_bucket=SRC)

    outcome = run(copier.copy(meta, DST_KEY))
    assert not outcome.server_side and outcome.verified_source and copier.retries == 0
    assert run(destination_body()) == body

    run(copier.copy(meta, "copy/again.bin"))
    assert calls(DST, "copy_object") == 1, "refused once: not asked again"


def test_refused_server_side_parts_fall_back_to_multipart():
    body = os.urandom(THREE_PARTS)
    meta = run(put_source(body))
    MemoryStore.faults(DST).fail("upload_part_copy", PermissionDenied("AccessDenied"))

    outcome = run(make_copier(server_side_bucket=SRC, copy_cutoff_bytes=PART).copy(meta, DST_KEY))

    assert not outcome.server_side and outcome.part_size_bytes == PART and outcome.verified_source
    assert calls(DST, "upload_part") == 3 and calls(DST, "abort_multipart") == 1
    assert run(destination_body()) == body and run(store(DST).list_uploads("")) == []


# -- the retry helper ----------------------------------------------------------------------------------------

def test_copy_retries_are_bounded_on_the_fake_clock():
    meta = run(put_source(os.urandom(1000)))
    MemoryStore.faults(DST).fail("put", Transient("reset"), times=None)
    clock = FakeClock()
    copier = make_copier(clock=clock, max_attempts=3)

    with pytest.raises(Transient):
        run(copier.copy(meta, DST_KEY))

    assert calls(DST, "put") == 3 and copier.retries == 2 and len(clock.slept) == 2


def test_a_source_changed_since_listing_is_re_read_at_its_new_version_without_waiting():
    old = run(put_source(os.urandom(1000)))
    new_body = os.urandom(2000)
    new = run(put_source(new_body))
    clock = FakeClock()
    copier = make_copier(clock=clock)
    heads = calls(SRC, "head")

    outcome = run(copier.copy(old, DST_KEY))

    assert outcome.src.etag == new.etag and outcome.src.size == 2000
    assert copier.retries == 1 and clock.slept == [], "PreconditionFailed: a new read, no sleep"
    assert calls(SRC, "head") - heads == 1 and run(destination_body()) == new_body


def test_a_throttle_delay_is_honoured():
    body = os.urandom(1000)
    meta = run(put_source(body))
    MemoryStore.faults(DST).fail("put", Throttled("SlowDown", delay_s=7.5), times=2)
    clock = FakeClock()

    outcome = run(make_copier(clock=clock).copy(meta, DST_KEY))

    assert clock.slept == [7.5, 7.5] and outcome.dst_etag == meta.etag


@pytest.mark.parametrize("error", [Unreadable("archived"), PermissionDenied("denied"), NotFound("gone")])
def test_unreadable_and_non_retryable_errors_raise_at_once(error):
    meta = run(put_source(os.urandom(1000)))
    MemoryStore.faults(SRC).fail("get", error, times=None)
    clock = FakeClock()
    copier = make_copier(clock=clock)

    with pytest.raises(type(error)):
        run(copier.copy(meta, DST_KEY))

    assert calls(SRC, "get") == 1 and copier.retries == 0 and clock.slept == []


def test_retry_awaits_an_async_hook_and_retries_at_once_errors_without_sleeping():
    clock = FakeClock()
    outcomes = iter([PreconditionFailed("changed"), Transient("reset"), "done"])
    hooked: list[tuple[str, int]] = []

    async def attempt():
        item = next(outcomes)
        if isinstance(item, Exception):
            raise item
        return item

    async def on_retry(exc, attempt_number):
        await asyncio.sleep(0)
        hooked.append((type(exc).__name__, attempt_number))

    result = run(retry(attempt, 3, sleep=clock.sleep, on_retry=on_retry, at_once=(PreconditionFailed,)))

    assert result == "done" and hooked == [("PreconditionFailed", 1), ("Transient", 2)]
    assert len(clock.slept) == 1, "only the Transient error waited"
    tries: list[int] = []

    async def changed():
        tries.append(1)
        raise PreconditionFailed("changed")

    with pytest.raises(PreconditionFailed):  # not retryable unless named
        run(retry(changed, 3, sleep=clock.sleep))
    assert tries == [1]


# -- the choice by size --------------------------------------------------------------------------------------

@pytest.mark.parametrize("size, server_side, chosen", [
    (PART - 1, False, (ServerSideCopy, SinglePut)),
    (PART, False, (ServerSideCopy, Multipart)),
    (PART, True, (ServerSideCopy, Multipart)),
    (PART + 1, True, (ServerSideParts, Multipart)),
])
def test_the_strategy_is_chosen_by_size(size, server_side, chosen):
    settings = dict(server_side_bucket=SRC, copy_cutoff_bytes=PART) if server_side else {}
    copier = make_copier(**settings)
    strategies = copier.strategies(ObjectMeta(KEY, size, "e" * 32))
    assert tuple(type(s) for s in strategies) == chosen
    assert strategies[0].enabled == server_side, "server-side only where the service offers it"


def test_the_outcome_follows_the_choice():
    small, large = os.urandom(PART // 2), os.urandom(PART + 1000)
    small_meta, large_meta = run(put_source(small, "s.bin")), run(put_source(large, "l.bin"))
    copier = make_copier()

    assert run(copier.copy(small_meta, "copy/s.bin")).part_size_bytes == 0
    assert run(copier.copy(large_meta, "copy/l.bin")).part_size_bytes == PART
    assert calls(DST, "put") == 1 and calls(DST, "upload_part") == 2
    assert run(destination_body("copy/s.bin")) == small and run(destination_body("copy/l.bin")) == large


def test_an_object_larger_than_the_budget_now_goes_in_parts_and_one_that_fits_as_one_put():
    """The choice follows the byte budget's capacity at the time of the copy (a worker's budget is cut while
    Ray runs beside it, runtime/worker.py): one PUT never holds more than the budget."""
    body = os.urandom(3 * PART)
    meta = run(put_source(body))
    budget = ByteBudget(64 * PART)
    copier = make_copier(budget=budget, multipart_threshold_bytes=64 * PART)
    assert run(copier.copy(meta, "copy/one.bin")).part_size_bytes == 0
    run(budget.resize(2 * PART))
    assert type(copier.strategies(meta)[1]) is Multipart
    assert run(copier.copy(meta, "copy/parts.bin")).part_size_bytes == PART
    assert calls(DST, "put") == 1 and calls(DST, "upload_part") == 3
    assert run(destination_body("copy/one.bin")) == body and run(destination_body("copy/parts.bin")) == body
    assert budget.in_use_bytes == 0


def test_a_budget_cut_between_the_choice_and_the_copy_still_copies():
    """The parts strategy decides by the capacity when it runs: a resize after the choice (another copy of the
    worker fitting the budget meanwhile) must not leave the object with no strategy."""
    body = os.urandom(2 * PART + 7)
    meta = run(put_source(body))
    budget = ByteBudget(2 * PART)
    copier = make_copier(budget=budget, multipart_threshold_bytes=64 * PART)
    _, local = copier.strategies(meta)
    assert type(local) is Multipart
    run(budget.resize(64 * PART))
    assert run(local.copy(meta, "copy/x.bin")) is None, "fits one PUT now"
    assert run(copier._copy_once(meta, "copy/x.bin")).part_size_bytes == 0
    assert run(destination_body("copy/x.bin")) == body


def test_auto_parts_shrink_with_the_budget_so_three_are_in_flight():
    """transfer.part_size=auto: 16 MiB parts under the default budget; under a small one (a worker beside Ray)
    whole-MiB parts a third of it, never under the destination's least part size."""
    MiB = 1024 * KiB
    assert [auto_part_bytes(n * MiB) for n in (160, 48, 32, 24, 16, 2)] == [16 * MiB, 16 * MiB, 10 * MiB,
                                                                             8 * MiB, 5 * MiB, MiB]
    body = os.urandom(3 * MiB + 5)
    meta = run(put_source(body))
    budget = ByteBudget(48 * MiB)
    copier = make_copier(budget=budget, part_size_bytes=None, multipart_threshold_bytes=PART)
    assert run(copier.copy(meta, "copy/wide.bin")).part_size_bytes == 16 * MiB
    run(budget.resize(3 * MiB))
    assert run(copier.copy(meta, "copy/narrow.bin")).part_size_bytes == MiB
    assert calls(DST, "upload_part") == 1 + 4
    assert run(destination_body("copy/wide.bin")) == body and run(destination_body("copy/narrow.bin")) == body


def test_a_resumed_upload_goes_on_with_the_part_size_it_was_created_with():
    """An upload begun with other parts (a run beside Ray cuts smaller ones) is continued, not restarted."""
    body = os.urandom(FOUR_PARTS)
    meta = run(put_source(body))
    dst, journal = store(DST), MemoryJournal()
    first = 2 * PART

    async def interrupted() -> None:
        upload_id = await dst.create_multipart(DST_KEY, ObjectHeaders())
        await journal.upload_opened(UploadState(DST_KEY, upload_id, meta.etag, meta.size, first))
        await dst.upload_part(DST_KEY, upload_id, 1, body[:first], b"")
        await journal.parts_sent(DST_KEY, upload_id, [PartInfo(1, hashlib.md5(body[:first]).hexdigest(), first)])

    run(interrupted())
    sent_before = calls(DST, "upload_part")

    outcome = run(make_copier(dst=dst, journal=journal).copy(meta, DST_KEY))

    assert outcome.resumed_parts == 1 and outcome.part_size_bytes == first
    assert calls(DST, "upload_part") - sent_before == 1, "only the second of two parts was sent"
    assert calls(DST, "abort_multipart") == 0 and run(destination_body()) == body


def test_a_recorded_upload_whose_part_size_the_destination_refuses_is_aborted():
    body = os.urandom(FOUR_PARTS)
    meta = run(put_source(body))
    dst, journal = store(DST), MemoryJournal()

    async def interrupted() -> None:
        upload_id = await dst.create_multipart(DST_KEY, ObjectHeaders())
        await journal.upload_opened(UploadState(DST_KEY, upload_id, meta.etag, meta.size, PART // 2))

    run(interrupted())
    outcome = run(make_copier(dst=dst, journal=journal).copy(meta, DST_KEY))

    assert outcome.resumed_parts == 0 and outcome.part_size_bytes == PART
    assert calls(DST, "abort_multipart") == 1 and run(destination_body()) == body
