"""Per-shard bookkeeping inside a transfer worker: paged listings merged in key order, and the settled prefix
of a shard's keys, so a checkpoint counts exactly the keys up to its watermark.

Each object's result is counted by one outcome function (`skipped`, `would_copy`, `copied`, `recovered`,
`failed`, `destination_only`) applied to the tallies that track it: the shard's live tally when the result is known, the settled
tally once every key before it is settled too (what checkpoints and results carry).
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any

from dth_ray.engine.context import CopyOutcome
from dth_ray.model import Shard, Tally
from dth_ray.runtime.manifest import Checkpoint

Outcome = Callable[[Tally], None]
NOT_AT_SOURCE = "not_at_source"  # a dry run's reason for a would-delete


class ListingCursor:
    """Buffered read-ahead over a paged async source, handing out items up to a bound in key order."""

    def __init__(self, pages: AsyncIterator[list], key_of: Callable[[Any], str]):
        self._pages = pages
        self._key_of = key_of
        self._buffer: list = []
        self._done = False

    async def take_through(self, bound: str | None) -> list:
        """Items with key <= bound (all remaining items when bound is None)."""
        while not self._done and (bound is None or not self._buffer or self._key_of(self._buffer[-1]) <= bound):
            page = await anext(self._pages, None)
            if page is None:
                self._done = True
            else:
                self._buffer.extend(page)
        if bound is None:
            out, self._buffer = self._buffer, []
            return out
        cut = 0
        while cut < len(self._buffer) and self._key_of(self._buffer[cut]) <= bound:
            cut += 1
        out, self._buffer = self._buffer[:cut], self._buffer[cut:]
        return out


class SettledKeys:
    """The settled prefix of one shard's key order, and its live tally.

    Decisions arrive in key order; copies finish out of order. Each queue entry is [key, done, outcomes, rows];
    runs of finished entries behind an unfinished one merge into one entry, so the queue stays at most about
    twice the copies in flight, whatever the number of skips. `live` counts every known result (settled or
    not), `tally` only the settled ones (keys <= watermark).

    With `report` (report_objects), each result may carry a completion-report row; settled rows collect in
    `rows` until `cut` hands them out as the part after `part_start` (runtime/objectreport.py).
    """

    __slots__ = ("shard", "tally", "live", "watermark", "_queue", "dirty", "seq", "rows", "part_start", "first",
                 "run_id")

    def __init__(self, shard: Shard, base: Tally, watermark: str, seq: int = 0, report: bool = False,
                 run_id: int = 0):
        self.shard = shard
        self.tally = base
        self.live = Tally.from_dict(base.to_dict())
        self.watermark = watermark
        self.seq = seq
        self._queue: deque[list] = deque()
        self.dirty = False
        self.rows: list[tuple] | None = [] if report else None
        self.part_start = watermark  # the rows in `rows` are those of keys after it
        self.first = watermark  # where this attempt started (a lost attempt's part may start there)
        self.run_id = run_id

    def _settle(self, key: str, outcomes: list[Outcome], rows: list[tuple]) -> None:
        for apply in outcomes:
            apply(self.tally)
        if self.rows is not None and rows:
            self.rows.extend(rows)
            self.tally.report_rows += len(rows)
        self.watermark = key
        self.dirty = True

    def now(self, key: str, outcome: Outcome, row: tuple | None = None) -> None:
        """A decision settled at once (skip, dry-run count)."""
        outcome(self.live)
        rows = [row] if row is not None else []
        if not self._queue:
            self._settle(key, [outcome], rows)
        elif self._queue[-1][1]:
            tail = self._queue[-1]
            tail[0] = key
            tail[2].append(outcome)
            tail[3].extend(rows)
        else:
            self._queue.append([key, True, [outcome], rows])

    def open(self, key: str) -> list:
        entry = [key, False, [], []]
        self._queue.append(entry)
        return entry

    def close(self, entry: list, outcome: Outcome, row: tuple | None = None) -> None:
        outcome(self.live)
        entry[1] = True
        entry[2].append(outcome)
        if row is not None:
            entry[3].append(row)
        while self._queue and self._queue[0][1]:
            key, _, outcomes, rows = self._queue.popleft()
            self._settle(key, outcomes, rows)

    def checkpoint(self, status: str) -> Checkpoint:
        self.dirty = False
        return Checkpoint(self.shard, status, self.watermark, Tally.from_dict(self.tally.to_dict()))

    def cut(self, part_key: str) -> tuple[str, list[tuple]]:
        """Hand out the settled rows not in a part yet (the part after `part_start`, named `part_key`), listed
        in the tally; returns (start, rows) for `uncut` should the part not be written."""
        start, rows = self.part_start, self.rows
        self.rows = []
        self.part_start = self.watermark
        if rows:
            self.tally.report_parts.append([part_key, len(rows)])
        return start, rows

    def uncut(self, start: str, rows: list[tuple]) -> None:
        """Take back what `cut` handed out (its part could not be written): the next part starts at `start`."""
        if rows:
            self.tally.report_parts.pop()
        self.rows = rows + self.rows
        self.part_start = start
        self.dirty = True


def _listed(size: int, tally: Tally) -> None:
    tally.listed += 1
    tally.bytes_listed += size


def skipped(size: int, reason: str, tally: Tally) -> None:
    _listed(size, tally)
    tally.skip(reason)


def would_copy(key: str, size: int, reason: str, multipart: bool, tally: Tally) -> None:
    _listed(size, tally)
    tally.change("copy", key, size, reason)
    tally.would_copy += 1
    tally.would_copy_bytes += size
    if multipart:
        tally.would_copy_multipart += 1
        tally.would_copy_multipart_bytes += size


def copied(size: int, outcome: CopyOutcome, tally: Tally) -> None:
    _listed(size, tally)
    tally.copied += 1
    tally.bytes_copied += size
    tally.part_size_bytes = max(tally.part_size_bytes, outcome.part_size_bytes)
    tally.server_side_copies += int(outcome.server_side)
    tally.spread_parts += outcome.spread_parts
    tally.resumed_parts += outcome.resumed_parts


def recovered(size: int, tally: Tally) -> None:
    """Copied earlier in this run by a worker that was lost before it reported it: copied, counted once."""
    _listed(size, tally)
    tally.copied += 1
    tally.bytes_copied += size
    tally.recovered += 1
    tally.recovered_bytes += size


def failed(size: int, key: str, error: str, tally: Tally) -> None:
    _listed(size, tally)
    tally.fail(key, error)


def destination_only(dst_key: str, size: int, tally: Tally) -> None:
    """sync.delete: a destination object with no source object (a delete candidate)."""
    tally.change("delete", dst_key, size, NOT_AT_SOURCE)
    tally.dst_seen += 1
    tally.dst_only += 1
    if len(tally.dst_only_keys) < tally.max_dst_only_keys:
        tally.dst_only_keys.append(dst_key)


def seen_too(result: Outcome) -> Outcome:
    """`result`, for an object the destination also holds (sync.delete counts them: a percent limit's base)."""
    def both(tally: Tally) -> None:
        result(tally)
        tally.dst_seen += 1

    return both
