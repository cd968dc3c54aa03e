"""Planning a run from inventories (`source.inventory`, `destination.inventory`) with no LIST of the source.

The driver reads the source inventory's manifest.json and data files (GETs on the inventory's store), keeps
the rows under `source.prefix`, and partitions them by key range into shards of about TARGET_SHARD_KEYS
(inventory/partition.py: sorted runs on local disk, bounded memory). Each shard's rows — and the destination
inventory's rows of the same range, when there is one — are written as one Parquet file to the staging store
(`inventory_staging`, by default beside the manifest), with a `plan.json` saying which inventories the run
was planned from. A shard carries its file's key (Shard.listing), so a worker on any node reads its keys
from there, and a resumed run finds them again; the files are deleted when the run succeeds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from dth_ray.config import StoreType
from dth_ray.engine.retry import retry
from dth_ray.errors import ConfigError, Fatal, NotFound, PermissionDenied
from dth_ray.inventory.formats import read_batches
from dth_ray.inventory.manifest import InventoryManifest, parse_manifest
from dth_ray.inventory.partition import Partitioner
from dth_ray.inventory.staged import staged_bytes
from dth_ray.model import ByteRange, ObjectHeaders, Shard
from dth_ray.naming import describe
from dth_ray.plan.keys import dest_key
from dth_ray.plan.shard import order_largest_first, shard_id
from dth_ray.runtime.staging import PLAN_FILE
from dth_ray.settings import InventorySpec, Settings, StoreSpec
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
TARGET_SHARD_KEYS = 100_000  # keys per shard (a worker holds one shard's staged rows while it runs)
MIN_SHARD_KEYS = 1_000
MAX_SHARDS = 20_000
PIECE_BYTES = 16 * 1024 * 1024  # ranged GETs of an inventory file
_ATTEMPTS = 4
_WRITERS = 2  # staged files assembled and uploaded at once (each holds one shard's rows)


@dataclass(frozen=True, slots=True)
class InventoryPlan:
    """The shards of a run planned from inventories, and what the report says about them."""

    shards: list[Shard]
    info: dict


def shard_count(rows: int, actors: int) -> int:
    """Shards for `rows` keys: about TARGET_SHARD_KEYS each, and at least 4 per worker while each keeps
    MIN_SHARD_KEYS."""
    want = max(-(-rows // TARGET_SHARD_KEYS), min(4 * actors, -(-rows // MIN_SHARD_KEYS)))
    return max(1, min(want, MAX_SHARDS))


def _provider(spec: StoreSpec) -> str:
    return "oss" if spec.type == StoreType.oss else "s3"


async def read_manifest(inventory: InventorySpec) -> InventoryManifest:
    """Fetch and parse one side's manifest.json. Raises ConfigError when it is missing, refused or invalid."""
    store = open_store(inventory.store)
    try:
        got = await retry(lambda: store.get(inventory.manifest_key), _ATTEMPTS)
    except NotFound:
        raise ConfigError(f"inventory {inventory.url!r} does not exist") from None
    except PermissionDenied as exc:
        raise ConfigError(f"inventory {inventory.url!r}: its credentials were refused ({exc})") from None
    finally:
        await store.aclose()
    return parse_manifest(got.data, inventory.url, _provider(inventory.store))


async def _download(store, key: str, size: int, md5: str, path: str) -> None:
    """One inventory file to `path` by ranged GETs, checked against the manifest's MD5. Raises DthError."""
    digest = hashlib.md5()
    with open(path, "wb") as out:
        if size <= PIECE_BYTES:
            data = (await retry(lambda: store.get(key), _ATTEMPTS)).data
            digest.update(data)
            out.write(data)
        else:
            for start in range(0, size, PIECE_BYTES):
                piece = ByteRange(start, min(size, start + PIECE_BYTES))
                data = (await retry(lambda piece=piece: store.get(key, piece), _ATTEMPTS)).data
                digest.update(data)
                out.write(data)
    if md5 and digest.hexdigest() != md5:
        raise Fatal(f"inventory file {key!r} does not match the MD5 its manifest gives")


def _fill(path: str, manifest: InventoryManifest, prefix: str, parts: Partitioner, progress) -> None:
    """The rows of one downloaded file under `prefix` into `parts` (runs in a thread)."""
    for table in read_batches(path, manifest):
        if prefix:
            table = table.filter(pc.starts_with(table.column("key"), prefix))
        parts.add(table)
        if progress is not None:
            progress.planned(keys=table.num_rows)


async def _partition(inventory: InventorySpec, manifest: InventoryManifest, prefix: str, workdir: str,
                     progress) -> Partitioner:
    """Every row of the inventory under `prefix`, partitioned (see inventory/partition.py)."""
    parts = Partitioner(workdir)
    store = open_store(inventory.store)
    try:
        for index, entry in enumerate(manifest.files):
            path = os.path.join(workdir, f"file-{index:05d}")
            try:
                await _download(store, entry.key, entry.size, entry.md5, path)
            except NotFound:
                raise ConfigError(f"inventory {inventory.url!r}: its file {entry.key!r} does not exist") from None
            await asyncio.to_thread(_fill, path, manifest, prefix, parts, progress)
            os.unlink(path)
        await asyncio.to_thread(parts.finish)
    finally:
        await store.aclose()
    return parts


def _check_bucket(manifest: InventoryManifest, inventory: InventorySpec, spec: StoreSpec, role: str) -> None:
    if manifest.source_bucket and spec.bucket and manifest.source_bucket != spec.bucket:
        raise ConfigError(f"{role}.inventory={inventory.url!r} lists bucket {manifest.source_bucket!r}, not "
                          f"{role}.bucket={spec.bucket!r}")


def _side_info(inventory: InventorySpec, manifest: InventoryManifest, parts: Partitioner) -> dict:
    return {"manifest": inventory.url, "created": manifest.created_iso, "created_s": manifest.created_s,
            "format": manifest.file_format, "files": len(manifest.files), "objects": parts.rows,
            "bytes": parts.bytes}


async def plan_from_inventory(settings: Settings, actors: int, progress=None) -> InventoryPlan:
    """Plan shards from the source inventory (and the destination's, if given) and stage their rows.

    Raises ConfigError for an inventory that is missing, refused, of another bucket or unreadable; DthError
    when the staging store refuses the files.
    """
    inv = settings.inventory
    src, dst = settings.source, settings.destination
    with tempfile.TemporaryDirectory(prefix="dth-ray-inventory-") as work:
        manifest = await read_manifest(inv.source)
        _check_bucket(manifest, inv.source, src, "source")
        parts = await _partition(inv.source, manifest, src.prefix, os.path.join(work, "source"), progress)
        info = {"source": _side_info(inv.source, manifest, parts), "destination": None}
        edges = parts.boundaries(shard_count(parts.rows, actors))
        dst_parts = None
        if inv.destination is not None:
            dst_manifest = await read_manifest(inv.destination)
            _check_bucket(dst_manifest, inv.destination, dst, "destination")
            dst_parts = await _partition(inv.destination, dst_manifest, dst.prefix,
                                         os.path.join(work, "destination"), progress)
            info["destination"] = _side_info(inv.destination, dst_manifest, dst_parts)
        folder = f"{inv.staging_prefix}{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{os.urandom(3).hex()}/"
        info["staging"] = describe(inv.staging) + folder
        shards = await _stage(settings, parts, dst_parts, edges, folder, info)
    if progress is not None:
        progress.planned(shards=len(shards))
    log.info("planned %d shards from inventory %s (%d objects, created %s)", len(shards), inv.source.url,
             info["source"]["objects"], info["source"]["created"])
    return InventoryPlan(shards, info)


async def _stage(settings: Settings, parts: Partitioner, dst_parts: Partitioner | None, edges: list[str],
                 folder: str, info: dict) -> list[Shard]:
    """Write each shard's staged rows and the plan file; the shards, largest first."""
    src, dst = settings.source, settings.destination
    store = open_store(settings.inventory.staging)
    gate = asyncio.Semaphore(_WRITERS)
    starts, ends = ["", *edges], [*edges, ""]

    def to_dst(key: str) -> str:
        return dest_key(key, src.prefix, dst.prefix) if key else ""

    def assemble(start_after: str, end_at: str) -> tuple[bytes, int]:
        rows = parts.rows_in(start_after, end_at)
        theirs = dst_parts.rows_in(to_dst(start_after), to_dst(end_at)) if dst_parts is not None else None
        data, nbytes = staged_bytes(rows, theirs), pc.sum(rows.column("size")).as_py() or 0
        del rows, theirs
        pa.default_memory_pool().release_unused()
        return data, nbytes

    async def one(index: int) -> tuple[Shard, int]:
        start_after, end_at = starts[index], ends[index]
        key = f"{folder}{index:05d}.parquet"
        async with gate:
            data, nbytes = await asyncio.to_thread(assemble, start_after, end_at)
            await _put(store, key, data)
        return Shard(shard_id(src.prefix, start_after, end_at), src.prefix, start_after, end_at, "", key), nbytes

    try:
        sized = await asyncio.gather(*(one(i) for i in range(len(starts))))
        info["shards"] = len(sized)
        await _put(store, folder + PLAN_FILE, json.dumps(info, indent=1).encode())
    finally:
        await store.aclose()
        parts.close()
        if dst_parts is not None:
            dst_parts.close()
    return order_largest_first(sized)


async def _put(store, key: str, data: bytes) -> None:
    """Write one staged file. Raises ConfigError when the staging store refuses it, DthError otherwise."""
    try:
        await retry(lambda: store.put(key, data, ObjectHeaders(content_type="application/octet-stream"),
                                      hashlib.md5(data).digest()), _ATTEMPTS)
    except PermissionDenied as exc:
        raise ConfigError(f"the inventory's staging store refused to write {key!r} ({exc}): set inventory_staging "
                          "to a location the workers can read and the driver can write") from None
