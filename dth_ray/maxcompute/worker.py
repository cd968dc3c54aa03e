"""The export actor's logic: read one shard (a row range of a partition's download session) as Arrow batches
and stream it into Parquet files at the destination. A plain class: the runner wraps it with `ray.remote`,
tests call it directly. Keys are resolved here, inside the actor; only the shard's metadata crosses Ray."""

from __future__ import annotations

import logging
import time

from dth_ray.errors import DthError, IntegrityError, error_class
from dth_ray.maxcompute.client import MaxComputeClient
from dth_ray.maxcompute.parquet_sink import LoopThread, ParquetFiles, WriterSettings
from dth_ray.maxcompute.plan import ShardOutcome, ShardTask, data_file_name, spec_text
from dth_ray.ops.logs import relayed_lines, setup_actor_logging
from dth_ray.plan.parts import choose_part_size
from dth_ray.runtime.pool import local_node_id
from dth_ray.settings import Settings
from dth_ray.stores import open_store

log = logging.getLogger(__name__)


def writer_settings(settings: Settings, features) -> WriterSettings:
    mc, sizes = settings.config.maxcompute, settings.export
    # A file closes after the row group that reaches file_size, so it may exceed it by one row group.
    part_size = choose_part_size(sizes.file_bytes + sizes.row_group_bytes, features, sizes.part_size_bytes)
    return WriterSettings(
        file_size_bytes=sizes.file_bytes,
        row_group_bytes=sizes.row_group_bytes,
        part_size_bytes=part_size,
        parts_in_flight=settings.transfer.parts_in_flight,
        compression=mc.compression.lower(),
        coerce_timestamps=mc.coerce_timestamps,
        metadata=(("dth_ray.source", f"maxcompute://{mc.project}.{mc.table}"),),
    )


class ExportWorker:
    """Exports shards one at a time (the runner gives each actor one shard, so memory stays per shard)."""

    def __init__(self, settings: Settings):
        setup_actor_logging(settings.worker.log_level, settings.worker.log_format)  # first: the clients may log
        self._client = MaxComputeClient(settings.config.source, settings.config.maxcompute)
        self._store = open_store(settings.destination)
        self._settings = writer_settings(settings, self._store.features)
        self._loop: LoopThread | None = None

    def node_id(self) -> str:
        return local_node_id()

    def log_lines(self) -> list[str]:
        """Log lines for the driver to print, where no log monitor copies them (ops/logs.relay_to_driver)."""
        return relayed_lines()

    def stop(self) -> None:
        """An interrupt: the shard in hand is abandoned at the scheduler's deadline (its files are rewritten
        whole by the next run, under the same names)."""

    def export(self, task: ShardTask) -> ShardOutcome:
        """Write the shard's rows; the outcome carries its files or the error (never raises a DthError)."""
        started = time.monotonic()
        try:
            files, rows = self._export(task)
        except DthError as exc:
            log.warning("shard %s/%d failed: %s", spec_text(task.spec), task.shard, exc)
            return ShardOutcome(task.spec, task.shard, error=f"{error_class(exc)}: {exc}",
                                retryable=exc.retryable, duration_s=time.monotonic() - started)
        except Exception as exc:  # a bug or an unmapped failure fails this shard, not the actor
            log.exception("shard %s/%d failed unexpectedly", spec_text(task.spec), task.shard)
            return ShardOutcome(task.spec, task.shard, error=f"Fatal: {type(exc).__name__}: {exc}",
                                retryable=False, duration_s=time.monotonic() - started)
        return ShardOutcome(task.spec, task.shard, files=tuple(files), rows=rows,
                            duration_s=time.monotonic() - started)

    def _export(self, task: ShardTask):
        if self._loop is None:
            self._loop = LoopThread()
        settings = self._settings
        if task.spec:
            settings = WriterSettings(**{**settings.__dict__,
                                         "metadata": settings.metadata + (("dth_ray.partition", spec_text(task.spec)),)})
        writer = ParquetFiles(self._store, self._loop, lambda i: task.dst_prefix + data_file_name(task.shard, i),
                              settings)
        rows = 0
        try:
            for batch in self._client.read(task.spec, task.download_id, task.start, task.rows):
                writer.write(batch)
                rows += batch.num_rows
            if rows != task.rows:
                raise IntegrityError(f"read {rows} rows of the {task.rows} in rows [{task.start}, "
                                     f"{task.start + task.rows})")
            files = writer.finish()
        except BaseException:
            writer.abort()
            raise
        if sum(f.rows for f in files) != rows:
            raise IntegrityError(f"files hold {sum(f.rows for f in files)} rows, {rows} were read")
        return files, rows

    def close(self) -> None:
        if self._loop is not None:
            self._loop.run(self._store.aclose())
            self._loop.close()
            self._loop = None
