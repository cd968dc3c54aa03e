"""`dth-ray status`: a job's progress from its manifest, or whether everything under a prefix (or one key)
is at the destination and was checked at copy time or by `verify`. Driver-side, no Ray needed."""

from __future__ import annotations

import asyncio
import time

from dth_ray.errors import ConfigError, NotFound
from dth_ray.model import Shard, Tally
from dth_ray.plan.diff import Record
from dth_ray.plan.keys import dest_key
from dth_ray.plan.verify import DIFFER, MATCH, READ, classify
from dth_ray.runtime.manifest import DONE, Manifest, newest_covering
from dth_ray.runtime.manifests import open_manifest
from dth_ray.runtime.preflight import probe
from dth_ray.runtime.worker import TransferWorker
from dth_ray.settings import Settings

_RECENT_RUNS = 20
_MAX_KEYS = 100


def job_status(cfg: Settings) -> dict:
    """Progress of the job's latest run: objects and bytes settled, failures, rate, ETA and state."""
    manifest = open_manifest(cfg.manifest, cfg.job)
    try:
        run = manifest.latest_run()
        if run is None:
            return {"job": manifest.job, "state": "never_run"}
        checkpoints = manifest.checkpoints(run.run_id)
    finally:
        manifest.close()
    tally = Tally()
    for cp in checkpoints:
        tally.merge(cp.tally)
    done = sum(cp.status == DONE for cp in checkpoints)
    elapsed_s = (run.finished or time.time()) - run.started
    rate = tally.bytes_copied / elapsed_s if elapsed_s > 0 else 0.0
    # Shards settled so far estimate what is left: bytes listed per settled shard times the shards to go.
    per_shard = tally.bytes_listed / done if done else 0.0
    left_bytes = per_shard * (len(checkpoints) - done)
    # A run recorded as running with no driver alive was cut off; this command cannot tell the two apart.
    state = {"running": "interrupted", "planning": "abandoned"}.get(run.status, run.status)
    return {
        "job": manifest.job, "run_id": run.run_id, "state": state,
        "shards": {"done": done, "total": len(checkpoints)},
        "objects": {"listed": tally.listed, "copied": tally.copied, "skipped": tally.skipped,
                    "failed": tally.failed},
        "bytes": {"copied": tally.bytes_copied, "listed": tally.bytes_listed},
        "bytes_per_s": round(rate, 1),
        "eta_s": round(left_bytes / rate) if rate > 0 and state == "interrupted" else None,
        "failures": [{"key": f.key, "error": f.error} for f in tally.failures[:_MAX_KEYS]],
    }


def prefix_status(cfg: Settings, prefix: str) -> dict:
    """Lists the source under `prefix` live and answers whether every object is at the destination (same
    size) and was checked: at copy time (a record or a done checkpoint of a run) or equal by ETag/checksum."""
    if not prefix.startswith(cfg.source.prefix):
        raise ConfigError(f"prefix={prefix!r} is not under source.prefix={cfg.source.prefix!r}")
    asyncio.run(probe(cfg.source, "source"))
    asyncio.run(probe(cfg.destination, "destination"))
    manifest = open_manifest(cfg.manifest, cfg.job)
    try:
        return asyncio.run(_prefix_status(cfg, manifest, prefix))
    finally:
        manifest.close()


async def _prefix_status(cfg: Settings, manifest: Manifest, prefix: str) -> dict:
    checkpoints = [cp for run in manifest.runs(_RECENT_RUNS) for cp in manifest.checkpoints(run.run_id)]
    worker = TransferWorker(cfg.worker, manifest, "status")
    counts = {"objects": 0, "present": 0, "missing": 0, "differ": 0, "unchecked": 0}
    missing, differ, unchecked = [], [], []
    try:
        async for decision in worker.decisions(Shard("status", prefix)):
            src, dst = decision.src, decision.dst
            if src is None:
                continue
            counts["objects"] += 1
            if dst is None:
                counts["missing"] += 1
                _note(missing, src.key)
                continue
            if src.size != dst.size:
                counts["differ"] += 1
                _note(differ, src.key)
                continue
            counts["present"] += 1
            verdict, _ = classify(src, dst, decision.record, False, worker.src_features, worker.dst_features)
            if verdict == DIFFER:
                counts["differ"] += 1
                _note(differ, src.key)
            elif verdict == READ and newest_covering(checkpoints, src.key) is None:
                counts["unchecked"] += 1
                _note(unchecked, src.key)
    finally:
        await worker.close()
    complete = counts["missing"] == 0 and counts["differ"] == 0 and counts["unchecked"] == 0
    return {"job": manifest.job, "prefix": prefix, "destination_prefix": dest_key(
        prefix, cfg.source.prefix, cfg.destination.prefix), "complete": complete, "counts": counts,
        "missing": missing, "differ": differ, "unchecked": unchecked}


def _note(keys: list[str], key: str) -> None:
    if len(keys) < _MAX_KEYS:
        keys.append(key)


def key_status(cfg: Settings, key: str) -> dict:
    """What the manifest knows of one source key, and what both stores say now."""
    if not key.startswith(cfg.source.prefix):
        raise ConfigError(f"key={key!r} is not under source.prefix={cfg.source.prefix!r}")
    manifest = open_manifest(cfg.manifest, cfg.job)
    try:
        record = manifest.lookup(key)
        checkpoint = manifest.covering_checkpoint(key)
    finally:
        manifest.close()
    dst_key = dest_key(key, cfg.source.prefix, cfg.destination.prefix)
    (src_meta, dst_meta), features = asyncio.run(_heads(cfg, key, dst_key))
    out: dict = {"job": cfg.job, "key": key, "destination_key": dst_key,
                 "source": _meta(src_meta), "destination": _meta(dst_meta)}
    if record is not None:
        out["record"] = {"status": record.status, "size": record.size, "source_etag": record.src_etag,
                         "destination_etag": record.dst_etag, "verified": record.verified,
                         "error": record.error, "run_id": record.run_id}
    if checkpoint is not None:
        out["checkpoint"] = {"run_id": checkpoint.run_id, "shard": checkpoint.shard.prefix,
                             "status": checkpoint.status}
    out["in_sync"] = False
    if src_meta is not None and dst_meta is not None:
        as_record = None if record is None else Record(record.key, record.src_etag, record.size, record.dst_etag)
        verdict, how = classify(src_meta, dst_meta, as_record, False, features[0], features[1])
        out["checked_by"] = how if verdict == MATCH else ("copy_checkpoint" if checkpoint else "")
        out["in_sync"] = verdict == MATCH or (verdict == READ and checkpoint is not None)
    return out


async def _heads(cfg: Settings, key: str, dst_key: str):
    from dth_ray.stores import open_store

    out, features = [], []
    for store_cfg, k in ((cfg.source, key), (cfg.destination, dst_key)):
        store = open_store(store_cfg)
        features.append(store.features)
        try:
            out.append((await store.head(k)).meta)
        except NotFound:
            out.append(None)
        finally:
            await store.aclose()
    return out, features


def _meta(meta) -> dict | None:
    return None if meta is None else {"size": meta.size, "etag": meta.etag, "checksum": meta.checksum}
