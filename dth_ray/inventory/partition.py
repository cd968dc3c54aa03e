"""An external partition of inventory rows by key range, in bounded memory.

Inventory files are not sorted (neither within nor across files, as far as anyone promises), so rows arrive
in any order. They are buffered up to `run_rows`, sorted and spilled to local disk as a run (an Arrow IPC file
of zstd-compressed chunks of `chunk_rows`, each chunk's first and last key kept in memory), and every
`sample_every`-th key of each sorted run is kept as a sample. The sample gives range boundaries of about
equal row counts; the rows of one range are then the overlapping chunks of every run, filtered, merged by a
sort and deduplicated. Peak memory ≈ one run being sorted (`run_rows` rows) or one range's rows; disk ≈ the
normalized rows, compressed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from dth_ray.inventory.formats import ROWS

RUN_ROWS = 250_000
CHUNK_ROWS = 4_096
SAMPLE_EVERY = 256


@dataclass(frozen=True, slots=True)
class _Chunk:
    run: int
    batch: int
    first: str
    last: str


class Partitioner:
    """Rows in, sorted runs on disk under `workdir`; rows of any key range out (see the module docstring)."""

    def __init__(self, workdir: str, run_rows: int = RUN_ROWS, chunk_rows: int = CHUNK_ROWS,
                 sample_every: int = SAMPLE_EVERY):
        os.makedirs(workdir, exist_ok=True)
        self._dir = workdir
        self._run_rows, self._chunk_rows, self._every = run_rows, chunk_rows, sample_every
        self._buffer: list[pa.Table] = []
        self._buffered = 0
        self._chunks: list[_Chunk] = []
        self._readers: list[pa.ipc.RecordBatchFileReader] = []
        self.sample: list[tuple[str, int]] = []  # (key, rows it stands for)
        self.rows = 0
        self.bytes = 0

    def add(self, table: pa.Table) -> None:
        """Take normalized rows (formats.ROWS), spilling a sorted run once `run_rows` are buffered."""
        if not table.num_rows:
            return
        self._buffer.append(table)
        self._buffered += table.num_rows
        self.rows += table.num_rows
        self.bytes += pc.sum(table.column("size")).as_py() or 0
        if self._buffered >= self._run_rows:
            self._spill()

    def finish(self) -> None:
        """Spill what is buffered; ranges can be read from now on."""
        self._spill()
        self.sample.sort()

    def _spill(self) -> None:
        if not self._buffered:
            return
        table = pa.concat_tables(self._buffer).sort_by("key")
        self._buffer, self._buffered = [], 0
        run = len(self._readers)
        path = os.path.join(self._dir, f"run-{run:05d}.arrow")
        keys = table.column("key")
        step = max(1, min(self._every, table.num_rows // 64))  # a small run still leaves a sample, weighted
        picked = keys.take(pa.array(range(step - 1, table.num_rows, step), pa.int64())).to_pylist()
        self.sample.extend((key, step) for key in picked)
        options = pa.ipc.IpcWriteOptions(compression="zstd")
        with pa.OSFile(path, "wb") as sink, pa.ipc.new_file(sink, ROWS, options=options) as writer:
            for index, batch in enumerate(table.to_batches(max_chunksize=self._chunk_rows)):
                writer.write_batch(batch)
                column = batch.column(0)
                self._chunks.append(_Chunk(run, index, column[0].as_py(), column[-1].as_py()))
        self._readers.append(pa.ipc.open_file(pa.OSFile(path, "rb")))  # read, not mapped: bounded memory
        del table, keys
        pa.default_memory_pool().release_unused()  # the allocator keeps freed runs otherwise (mimalloc: ~100 MB)

    def boundaries(self, ranges: int) -> list[str]:
        """Up to `ranges - 1` ascending keys cutting the rows into ranges of about equal counts."""
        if ranges < 2 or not self.sample:
            return []
        total = sum(weight for _, weight in self.sample)
        cuts, seen, target = [], 0, 1
        for key, weight in self.sample:
            seen += weight
            if seen >= target * total / ranges and target < ranges:
                if not cuts or cuts[-1] != key:
                    cuts.append(key)
                while target < ranges and seen >= target * total / ranges:
                    target += 1
        return cuts

    def rows_in(self, start_after: str, end_at: str) -> pa.Table:
        """The rows with start_after < key <= end_at ('' = open), sorted by key, each key once."""
        pieces = []
        for chunk in self._chunks:
            if chunk.last <= start_after or (end_at and chunk.first > end_at):
                continue
            pieces.append(self._readers[chunk.run].get_batch(chunk.batch))
        if not pieces:
            return ROWS.empty_table()
        table = pa.Table.from_batches(pieces, ROWS)
        keys = table.column("key")
        keep = pc.greater(keys, start_after)
        if end_at:
            keep = pc.and_(keep, pc.less_equal(keys, end_at))
        return unique_keys(table.filter(keep).sort_by("key"))

    def close(self) -> None:
        self._readers.clear()


def unique_keys(table: pa.Table) -> pa.Table:
    """A key-sorted table with the later rows of a repeated key dropped."""
    if table.num_rows < 2:
        return table
    keys = table.column("key").combine_chunks()
    repeated = pc.equal(keys.slice(1), keys.slice(0, len(keys) - 1))
    if not pc.any(repeated).as_py():
        return table
    keep = pa.concat_arrays([pa.array([True]), pc.invert(repeated)])
    return table.filter(keep)
