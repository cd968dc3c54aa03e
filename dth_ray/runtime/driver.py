"""The sync driver: check both stores, plan shards, start Ray, dispatch shards to transfer actors, report.

Only this module blocks on `ray.get`/`ray.wait`. Lifecycle: preflight (nothing written on bad config) →
start (manifest actor, run record) → run (shards over actors, progress) → complete (abort leftover uploads,
finish the run, report).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from dth_ray.config import StoreConfig, StoreType, SyncConfig
from dth_ray.errors import ConfigError, DthError, NotFound, PermissionDenied
from dth_ray.model import Shard, ShardResult, Tally
from dth_ray.plan.filters import KeyFilter, load_prefix_list
from dth_ray.plan.parts import choose_part_size
from dth_ray.plan.shard import order_largest_first, shards_for_prefixes, shards_from_level
from dth_ray.runtime.manifest import Manifest, Progress
from dth_ray.runtime.worker import TransferWorker
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
_PREFLIGHT_TIMEOUT_S = 25.0
_SHARD_ATTEMPTS = 3
_MAX_PLANNED_SHARDS = 20_000


def describe(cfg: StoreConfig) -> str:
    """A credential-free name for a store location, e.g. s3://bucket/prefix or local:/path."""
    if cfg.type == StoreType.local:
        return f"local:{os.path.abspath(cfg.path)}/{cfg.prefix}"
    return f"{cfg.type.value}://{cfg.bucket}/{cfg.prefix}" + (f"@{cfg.endpoint}" if cfg.endpoint else "")


def job_name(cfg: SyncConfig) -> str:
    """The job a run belongs to: named by the user or derived from source and destination."""
    if cfg.job:
        return cfg.job
    pairing = f"{describe(cfg.source)} -> {describe(cfg.destination)}"
    return "job-" + hashlib.sha256(pairing.encode()).hexdigest()[:12]


async def _probe(cfg: StoreConfig, role: str) -> None:
    """One listing call per store, so bad buckets, credentials and endpoints fail before anything runs."""
    store = open_store(cfg)
    try:
        if cfg.type == StoreType.local and role == "source" and not os.path.isdir(cfg.path):
            raise ConfigError(f"{role}.path={cfg.path!r} is not a directory")
        if cfg.type == StoreType.local and role == "destination":
            return
        await asyncio.wait_for(store.list_page(cfg.prefix, max_keys=1), _PREFLIGHT_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ConfigError(f"{role}.endpoint={cfg.endpoint or '(default)'!r} did not answer within "
                          f"{_PREFLIGHT_TIMEOUT_S:.0f}s") from None
    except NotFound:
        raise ConfigError(f"{role}.bucket={cfg.bucket!r} does not exist") from None
    except PermissionDenied as exc:
        raise ConfigError(f"{role}.credentials={cfg.credentials!r} were refused ({exc})") from None
    except ConfigError:
        raise
    except DthError as exc:
        raise ConfigError(f"{role}.endpoint={cfg.endpoint or '(default)'!r} is unreachable ({exc})") from None
    finally:
        await store.aclose()


async def _plan_shards(cfg: SyncConfig, actors: int) -> list[Shard]:
    """Shards from the first one or two levels of common prefixes (or the prefix-list file)."""
    if cfg.source.prefix_list:
        prefixes = [p for p in load_prefix_list(cfg.source.prefix_list) if p.startswith(cfg.source.prefix)]
        if not prefixes:
            raise ConfigError(f"source.prefix_list={cfg.source.prefix_list!r} has no prefix under "
                              f"source.prefix={cfg.source.prefix!r}")
        return shards_for_prefixes(prefixes)
    store = open_store(cfg.source)
    try:
        shards = await _level(store, cfg.source.prefix)
        if len(shards) < 4 * actors:
            deeper: list[Shard] = []
            for shard in shards:
                if shard.delimiter or len(deeper) > _MAX_PLANNED_SHARDS:
                    deeper.append(shard)
                else:
                    deeper.extend(await _level(store, shard.prefix))
            shards = deeper
    finally:
        await store.aclose()
    return order_largest_first([(s, 0) for s in shards])


async def _level(store, prefix: str) -> list[Shard]:
    prefixes: list[str] = []
    has_objects = False
    token = ""
    while True:
        page = await store.list_page(prefix, token=token, delimiter="/", max_keys=1000)
        prefixes.extend(page.prefixes)
        has_objects = has_objects or bool(page.objects)
        if not page.next_token or len(prefixes) > _MAX_PLANNED_SHARDS:
            break
        token = page.next_token
    if len(prefixes) > _MAX_PLANNED_SHARDS:
        # Too many to plan one by one: let a single shard stream this whole level instead.
        return [Shard(shard_id=f"all:{prefix}", prefix=prefix)]
    return shards_from_level(prefix, prefixes, has_objects)


@dataclass
class RunState:
    tally: Tally = field(default_factory=Tally)
    errors: list[str] = field(default_factory=list)
    nodes: dict[str, list[int]] = field(default_factory=dict)


def _start_ray(cfg: SyncConfig) -> None:
    import ray

    if ray.is_initialized():
        return
    address = cfg.runtime.address
    kwargs: dict = dict(include_dashboard=False, logging_level=logging.ERROR, log_to_driver=True,
                        configure_logging=True)
    if address == "local":
        kwargs["address"] = "local"
        # Ray starts workers at nice 15; our transfer actors are the workload, not background tasks (Ray's
        # job manager resets it to 0 for submitted jobs too). Measured: at 15, a CPU-bound host starves them.
        kwargs["_system_config"] = {"worker_niceness": 0}
        if cfg.runtime.num_cpus:
            kwargs["num_cpus"] = cfg.runtime.num_cpus
    else:
        kwargs["address"] = address
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(**kwargs)


def _actor_count(cfg: SyncConfig) -> int:
    if cfg.transfer.actors:
        return cfg.transfer.actors
    import ray

    return max(2, int(ray.cluster_resources().get("CPU", 2)))


class StartupWorker:
    """Copies shards inside the driver while Ray starts, so Ray's start-up seconds are not idle ones.

    It takes shards from the same queue as the actors until `stop_taking()`, then finishes what it holds.
    `ray.init` must stay on the main thread (off it, the session breaks), hence this worker's own thread.
    """

    lanes = 4

    def __init__(self, cfg: SyncConfig, manifest: Manifest, queue: deque):
        self.manifest = manifest
        self._worker = TransferWorker(cfg, manifest)
        self._queue = queue
        self._lock = threading.Lock()
        self._stopped = False
        self._done: list[tuple[Shard, int, ShardResult]] = []
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="dth-startup", daemon=True)

    def start(self) -> StartupWorker:
        self._thread.start()
        return self

    def _take(self) -> tuple[Shard, int] | None:
        with self._lock:
            return None if self._stopped or not self._queue else self._queue.popleft()

    def stop_taking(self) -> None:
        with self._lock:
            self._stopped = True

    async def _main(self) -> None:
        async def lane() -> None:
            while (item := self._take()) is not None:
                result = await self._worker.run_shard(item[0])
                with self._lock:
                    self._done.append((item[0], item[1], result))

        try:
            await asyncio.gather(*(lane() for _ in range(self.lanes)))
        finally:
            await self._worker.close()

    def harvest(self) -> list[tuple[Shard, int, ShardResult]]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()


def run_sync(cfg: SyncConfig, on_progress: Callable[[Progress, float], None] | None = None) -> dict:
    """Run one sync to completion and return its report (a JSON-ready dict).

    Raises ConfigError before anything is written when a store is unreachable, missing or refuses us.
    """
    import ray

    KeyFilter.from_config(cfg.filter)  # bad globs fail here, before any work
    asyncio.run(_probe(cfg.source, "source"))
    asyncio.run(_probe(cfg.destination, "destination"))
    job = job_name(cfg)
    started = time.monotonic()
    fresh_ray = not ray.is_initialized()
    # Planning runs before Ray is up, so it sizes shards for this machine's CPUs (or transfer.actors).
    shards = asyncio.run(_plan_shards(cfg, cfg.transfer.actors or max(2, os.cpu_count() or 2)))
    queue: deque[tuple[Shard, int]] = deque((s, 1) for s in shards)
    local_manifest = Manifest(cfg.manifest.path, job)
    run_id = 0 if cfg.dry_run else local_manifest.start_run()
    # Only for the embedded cluster: a laptop driving a remote cluster must not pull data through itself.
    use_startup = fresh_ray and cfg.runtime.address == "local"
    startup = StartupWorker(cfg, local_manifest, queue).start() if use_startup else None
    _start_ray(cfg)
    if startup is not None:
        startup.stop_taking()
    actors = _actor_count(cfg)
    manifest = ray.remote(Manifest).options(num_cpus=0).remote(local_manifest.path, job, run_id)
    workers = _start_workers(cfg, manifest, actors)
    state = RunState()
    driver_node = ray.get_runtime_context().get_node_id()
    try:
        _dispatch(queue, workers, manifest, state, on_progress, cfg.transfer.progress_interval_s, started,
                  startup, driver_node)
    finally:
        if startup is not None:
            startup.stop_taking()
            startup.join()
        ray.get([w.close.remote() for w in workers])
    leftover = ray.get(manifest.open_uploads.remote())
    aborted = asyncio.run(_abort_uploads(cfg.destination, leftover)) if leftover else 0
    for dst_key, upload_id in leftover[:aborted]:
        ray.get(manifest.upload_closed.remote(dst_key, upload_id))

    report = build_report(cfg, job, run_id, state, time.monotonic() - started)
    if not cfg.dry_run:
        ray.get(manifest.finish_run.remote(report["status"], report))
    ray.get(manifest.close.remote())
    local_manifest.close()
    return report


def _start_workers(cfg: SyncConfig, manifest, count: int) -> list:
    """Transfer actors placed round-robin over the alive nodes.

    Soft node affinity rather than SPREAD: SPREAD is best-effort for actors that need no CPU, and left whole
    nodes idle in tests; soft affinity pins the intended layout yet lets Ray place an actor elsewhere if its
    node is gone. Actors take no CPU so they also run on nodes that advertise a single CPU.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    worker_cls = ray.remote(TransferWorker)
    return [
        worker_cls.options(
            num_cpus=0, max_concurrency=8,
            scheduling_strategy=NodeAffinitySchedulingStrategy(nodes[i % len(nodes)], soft=True) if nodes else None,
        ).remote(cfg, manifest)
        for i in range(count)
    ]


def _dispatch(queue: deque, workers: list, manifest, state: RunState,
              on_progress: Callable[[Progress, float], None] | None, interval_s: float, started: float,
              startup: StartupWorker | None = None, driver_node: str = "") -> None:
    """Keep every actor busy with a few shards; re-run a shard whose listing failed (bounded)."""
    import ray

    in_flight: dict = {}
    per_worker = 4
    load = {i: 0 for i in range(len(workers))}
    next_progress = time.monotonic()

    def settle(shard: Shard, attempt: int, result: ShardResult) -> None:
        if result.error and attempt < _SHARD_ATTEMPTS:
            queue.append((shard, attempt + 1))
            return
        if result.error:
            state.errors.append(f"shard {shard.prefix!r}: {result.error}")
        state.tally.merge(result.tally)
        node = state.nodes.setdefault(result.node_id or driver_node, [0, 0])
        node[0] += result.tally.copied
        node[1] += result.tally.bytes_copied

    while queue or in_flight or (startup is not None and startup.alive()):
        while queue:
            index = min(load, key=load.get)  # one shard at a time to the least-loaded actor
            if load[index] >= per_worker:
                break
            shard, attempt = queue.popleft()
            ref = workers[index].run_shard.remote(shard)
            in_flight[ref] = (shard, attempt, index)
            load[index] += 1
        if in_flight:
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=interval_s)
        else:
            ready = []
            time.sleep(0.05)  # only the start-up worker is still busy
        for ref in ready:
            shard, attempt, index = in_flight.pop(ref)
            load[index] -= 1
            settle(shard, attempt, ray.get(ref))
        if startup is not None:
            for shard, attempt, result in startup.harvest():
                settle(shard, attempt, result)
        if on_progress is not None and time.monotonic() >= next_progress:
            progress = ray.get(manifest.progress.remote())
            if startup is not None:
                progress = _add(progress, startup.manifest.progress())
            on_progress(progress, time.monotonic() - started)
            next_progress = time.monotonic() + interval_s
    if startup is not None:
        for shard, attempt, result in startup.harvest():
            settle(shard, attempt, result)


def _add(a: Progress, b: Progress) -> Progress:
    return Progress(**{k: getattr(a, k) + getattr(b, k) for k in vars(a)})


async def _abort_uploads(cfg: StoreConfig, uploads: list[tuple[str, str]]) -> int:
    """Abort uploads the job opened and no longer needs; returns how many (in order) were aborted."""
    store = open_store(cfg)
    done = 0
    try:
        for dst_key, upload_id in uploads:
            try:
                await store.abort_multipart(dst_key, upload_id)
            except DthError as exc:
                log.warning("could not abort upload key=%s error=%s", dst_key, type(exc).__name__)
                break
            done += 1
    finally:
        await store.aclose()
    return done


def build_report(cfg: SyncConfig, job: str, run_id: int, state: RunState, duration_s: float) -> dict:
    t = state.tally
    failed = t.failed > 0 or bool(state.errors)
    objects = {"listed": t.listed, "copied": t.copied, "skipped": t.skipped, "failed": t.failed}
    nbytes = {"copied": t.bytes_copied, "listed": t.bytes_listed}
    if cfg.dry_run:
        objects["would_copy"] = t.would_copy
        nbytes["would_copy"] = t.would_copy_bytes
    part_size = t.part_size_bytes
    if not part_size:
        from dth_ray.stores.s3 import FEATURES as S3_FEATURES

        requested = None if cfg.transfer.part_size == "auto" else cfg.transfer.part_size
        part_size = choose_part_size(0, S3_FEATURES, int(requested) if requested and requested.isdigit() else None)
    return {
        "status": "failed" if failed else "succeeded",
        "job": job,
        "run_id": run_id,
        "dry_run": cfg.dry_run,
        "source": describe(cfg.source),
        "destination": describe(cfg.destination),
        "objects": objects,
        "bytes": nbytes,
        "skipped_reasons": dict(sorted(t.skipped_reasons.items())),
        "duration_s": round(duration_s, 3),
        "bytes_per_s": round(t.bytes_copied / duration_s, 1) if duration_s > 0 else 0.0,
        "objects_per_s": round(t.copied / duration_s, 1) if duration_s > 0 else 0.0,
        "part_size_bytes": part_size,
        "server_side_copies": t.server_side_copies,
        "failures": [{"key": f.key, "error": f.error} for f in t.failures],
        "errors": state.errors,
        "nodes": [{"node_id": n, "objects": v[0], "bytes": v[1]} for n, v in sorted(state.nodes.items())],
    }


def progress_line(p: Progress, elapsed_s: float) -> str:
    """One status line: counts, bytes, rate, and an ETA for the copies already decided (listing streams)."""
    rate = p.bytes_copied / elapsed_s if elapsed_s > 0 else 0.0
    obj_rate = p.copied / elapsed_s if elapsed_s > 0 else 0.0
    eta = f"ETA {p.bytes_pending / rate:,.0f}s" if rate > 0 and p.bytes_pending > 0 else "ETA -"
    return (f"\rlisted {p.listed:,} · copied {p.copied:,} · skipped {p.skipped:,} · failed {p.failed:,} · "
            f"{p.bytes_copied / 1e6:,.1f} MB · {rate / 1e6:,.1f} MB/s · {obj_rate:,.0f} obj/s · "
            f"{eta} · {elapsed_s:,.0f}s ")


def terminal_progress(p: Progress, elapsed_s: float) -> None:
    sys.stderr.write(progress_line(p, elapsed_s))
    sys.stderr.flush()
