"""The sync driver: check both stores, plan shards, start Ray, dispatch shards to transfer actors, report.

Only this module blocks on `ray.get`/`ray.wait`. Lifecycle: preflight (nothing written on bad config) →
start (manifest actor, run record) → run (shards over actors, progress) → complete (abort leftover uploads,
finish the run, report).
"""

from __future__ import annotations

import asyncio
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
from dth_ray.ops import Ops
from dth_ray.plan.autoscale import ScalePolicy
from dth_ray.plan.filters import KeyFilter
from dth_ray.plan.parts import choose_part_size
from dth_ray.runtime.autoscaling import Elasticity
from dth_ray.runtime.deletes import delete_report, propagate_deletes
from dth_ray.runtime.manifest import DONE, Manifest, Progress, manifest_factory, open_manifest
from dth_ray.runtime.metrics import DriverMetrics
from dth_ray.runtime.naming import describe, job_name
from dth_ray.runtime.planning import plan_shards
from dth_ray.runtime.worker import TransferWorker
from dth_ray.stores import open_store

log = logging.getLogger(__name__)
_PREFLIGHT_TIMEOUT_S = 25.0
_SHARD_ATTEMPTS = 3
_MAX_ACTOR_LOSSES = 5
_ACTOR_RESTARTS = 3
# Shards a worker runs at once. A shard lists, then copies, then is done: several overlap one shard's listing
# round trips with another's copies. The driver lane holds 8 (measured at 150 ms RTT, 301 objects in 21
# shards: 4 → 8 cut the copy from 6.5-6.9 s to 5.3-5.8 s; 16 was no better); an actor holds 4, so that shards
# stay queued for actors on nodes that join later (with 8, two actors took all 16 shards of the autoscaling
# test before any node joined).
_SHARDS_PER_LANE = 8
_SHARDS_PER_ACTOR = 4
_ACTOR_REST_S = 5.0  # how long a lost actor gets no new shards while Ray restarts it


async def probe(cfg: StoreConfig, role: str) -> None:
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


@dataclass
class RunState:
    tally: Tally = field(default_factory=Tally)
    errors: list[str] = field(default_factory=list)
    nodes: dict[str, list[int]] = field(default_factory=dict)
    base: Progress = field(default_factory=Progress)  # what a resumed run had settled before this execution
    resumed: bool = False
    # Seconds from the run's start: Ray up (ray.init returned), the first transfer actor up.
    ray_up_s: float | None = None
    actors_up_s: float | None = None
    lane: Tally = field(default_factory=Tally)  # what the driver lane copied itself
    lane_shards: int = 0
    lane_done_s: float | None = None  # when the driver lane last finished a shard


@dataclass(frozen=True, slots=True)
class WorkItem:
    """A shard to run, from `watermark` on (resuming), adding to `base` (its settled tally so far)."""

    shard: Shard
    attempt: int = 1
    watermark: str = ""
    base: Tally | None = None


def _begin(cfg: SyncConfig, manifest: Manifest, state: RunState) -> tuple[int, deque[WorkItem]]:
    """Resume the job's interrupted run from its checkpoints, or plan and start a new run."""
    latest = None if cfg.dry_run else manifest.latest_run()
    if latest is not None and latest.status == "running":
        queue: deque[WorkItem] = deque()
        for cp in manifest.resume_run(latest.run_id):
            if cp.status == DONE:
                state.tally.merge(cp.tally)
            else:
                queue.append(WorkItem(cp.shard, 1, cp.watermark, cp.tally))
            t = cp.tally
            state.base = _add(state.base, Progress(t.listed, t.copied, t.skipped, t.failed, t.bytes_copied))
        state.resumed = True
        log.info("resuming run %d of job %s: %d shards left", latest.run_id, manifest.job, len(queue))
        return latest.run_id, queue
    # Planning runs before Ray is up, so it sizes shards for this machine's CPUs (or transfer.actors).
    shards = asyncio.run(plan_shards(cfg, cfg.transfer.actors or max(2, os.cpu_count() or 2)))
    run_id = 0 if cfg.dry_run else manifest.start_run(shards)
    return run_id, deque(WorkItem(s) for s in shards)


_owned_ray = False  # this process started the embedded cluster (stop_ray ends only that one)
_parked: list = []  # handles of finished runs' actors on that cluster: they end with it, not one by one


def start_ray(cfg: SyncConfig) -> None:
    global _owned_ray
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
        if cfg.runtime.metrics_port:
            kwargs["_metrics_export_port"] = cfg.runtime.metrics_port
    else:
        kwargs["address"] = address
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    ray.init(**kwargs)
    _owned_ray = address == "local"


def stop_ray() -> None:
    """End the embedded cluster this process started, without Ray's exit-time waits.

    Ray's own exit hook sleeps 0.5 s and gives the autoscaler monitor (idle on an embedded cluster, and slow
    to honour SIGTERM) a full second: 1.5 s of every short run. A cluster we only joined is left alone.
    """
    global _owned_ray
    import ray

    if not _owned_ray or not ray.is_initialized():
        return
    _owned_ray = False
    node = getattr(ray._private.worker, "_global_node", None)
    for info in (node.all_processes.get("monitor", []) if node is not None else []):
        info.process.kill()
    ray.shutdown()
    _parked.clear()


def actor_count(cfg: SyncConfig, lane: bool = False) -> int:
    """transfer.actors, else one per CPU of the cluster (the driver lane, when it runs, counts as one)."""
    if cfg.transfer.actors:
        return cfg.transfer.actors
    import ray

    cpus = int(ray.cluster_resources().get("CPU", 2))
    return max(1, cpus - 1) if lane else max(2, cpus)


class DriverLane:
    """Copies shards inside the driver, from the same queue as the actors, for the whole run.

    On the embedded cluster the driver's machine is the actors' machine: working from the first second hides
    Ray's start-up, and for the rest of the run the driver is one more worker rather than an idle waiter.
    `begin` plans (or resumes) the run first, in the lane's thread, so that listing a far source overlaps
    Ray's start-up too; `begun()` hands its run id and queue to the driver. `stop_taking()` makes the lane
    finish what it holds and end. `ray.init` must stay on the main thread (off it, the session breaks),
    hence the lane's own thread.
    """

    lanes = _SHARDS_PER_LANE

    def __init__(self, cfg: SyncConfig, manifest: Manifest, begin: Callable[[], tuple[int, deque[WorkItem]]]):
        self.manifest = manifest
        self._cfg = cfg
        self._worker: TransferWorker | None = None  # made in the lane's thread after planning (it imports Ray)
        self._begin = begin
        self._begun = threading.Event()
        self._planned: tuple[int, deque[WorkItem]] | BaseException | None = None
        self._queue: deque[WorkItem] = deque()
        self._lock = threading.Lock()
        self._stopped = False
        self._done: list[tuple[WorkItem, ShardResult]] = []
        self.last_done = 0.0  # time.monotonic() when it last finished a shard
        self._thread = threading.Thread(target=self._body, name="dth-lane", daemon=True)

    def start(self) -> DriverLane:
        self._thread.start()
        return self

    def _body(self) -> None:
        try:
            planned = self._begin()
            self._worker = TransferWorker(self._cfg, self.manifest)
            self._queue, self._planned = planned[1], planned
        except BaseException as exc:  # noqa: BLE001 - raised in the driver's thread by begun()
            self._planned = exc
            return
        finally:
            self._begun.set()
        asyncio.run(self._main())

    def begun(self) -> tuple[int, deque[WorkItem]]:
        """The run's id and its shard queue once planned; planning's error, raised here, if it failed."""
        self._begun.wait()
        if isinstance(self._planned, BaseException):
            raise self._planned
        return self._planned

    def _take(self) -> WorkItem | None:
        if self._stopped:
            return None
        try:
            return self._queue.popleft()  # deque pops are atomic: the dispatch loop pops the same queue
        except IndexError:
            return None

    def stop_taking(self) -> None:
        self._stopped = True

    async def _main(self) -> None:
        async def lane() -> None:
            while (item := self._take()) is not None:
                try:
                    result = await self._worker.run_shard(item.shard, item.watermark, item.base)
                except Exception as exc:  # noqa: BLE001 - a shard held here must come back to the driver
                    result = ShardResult(item.shard.shard_id, item.base or Tally(), error=type(exc).__name__,
                                         watermark=item.watermark)
                with self._lock:
                    self._done.append((item, result))
                    self.last_done = time.monotonic()

        try:
            await asyncio.gather(*(lane() for _ in range(self.lanes)))
        finally:
            await self._worker.close()

    def harvest(self) -> list[tuple[WorkItem, ShardResult]]:
        with self._lock:
            done, self._done = self._done, []
        return done

    def alive(self) -> bool:
        return self._thread.is_alive()

    def join(self) -> None:
        self._thread.join()


def run_sync(cfg: SyncConfig, on_progress: Callable[[Progress, float], None] | None = None, *,
             one_time: bool = True) -> dict:
    """Run one sync to completion (resuming the job's interrupted run, if any) and return its report.
    `one_time=False` (a scheduled scan of `dth-ray watch`) alarms on failure only, not on success.

    Raises ConfigError before anything is written when a store is unreachable, missing or refuses us.
    """

    KeyFilter.from_config(cfg.filter)  # bad globs fail here, before any work
    asyncio.run(probe(cfg.source, "source"))
    asyncio.run(probe(cfg.destination, "destination"))
    job = job_name(cfg)
    ops = Ops(cfg, job, one_time=one_time)
    try:
        report = _run(cfg, job, ops, on_progress)
    except BaseException as exc:
        ops.aborted(exc)
        raise
    finally:
        ops.close()
    return report


def _run(cfg: SyncConfig, job: str, ops: Ops, on_progress: Callable[[Progress, float], None] | None) -> dict:
    started = time.monotonic()
    # Ray not imported yet means not started by this process either (importing it takes a quarter second:
    # the lane plans and copies meanwhile).
    fresh_ray = "ray" not in sys.modules or not sys.modules["ray"].is_initialized()
    local_manifest = open_manifest(cfg.manifest, job)
    state = RunState()
    # Only for the embedded cluster: a laptop driving a remote cluster must not pull data through itself.
    if fresh_ray and cfg.runtime.address == "local":
        lane = DriverLane(cfg, local_manifest, lambda: _begin(cfg, local_manifest, state)).start()
        start_ray(cfg)
        run_id, queue = lane.begun()
    else:
        lane = None
        run_id, queue = _begin(cfg, local_manifest, state)
        start_ray(cfg)
    import ray

    state.ray_up_s = time.monotonic() - started
    actors = actor_count(cfg, lane=lane is not None)
    driver_node = ray.get_runtime_context().get_node_id()
    manifest, manifest_name = start_manifest(cfg, job, run_id, driver_node)
    workers = spawn_workers(cfg, manifest_name, actors)
    # With the lane working, nobody waits for the actors to come up: each takes shards once it is up.
    starting = introduce(workers, wait=lane is None)
    if lane is None and workers:
        state.actors_up_s = time.monotonic() - started
    never_up: set[int] = set()
    elastic = _elasticity(cfg, manifest_name, workers)
    driver_metrics = DriverMetrics(job)

    def observe(progress: Progress, pending_shards: int) -> list:
        fresh = elastic.tick(pending_shards, max(0, progress.bytes_pending)) if elastic is not None else []
        actors_now = len(workers) + len(fresh)
        driver_metrics.update(max(0, progress.objects_pending), max(0, progress.bytes_pending), pending_shards,
                              actors_now, elastic.requested if elastic is not None else 0)
        ops.progress(progress, actors_now, time.monotonic() - started)
        return fresh

    try:
        never_up = _dispatch(queue, workers, manifest, state, on_progress, cfg.transfer.progress_interval_s,
                             started, lane, driver_node, run_id, observe, starting)
        up = [w for i, w in enumerate(workers) if i not in never_up]
        # sync.delete: destination-only keys noted during the diff, deleted within sync.max_delete (deletes.py)
        deletes = propagate_deletes(cfg, up, lane, local_manifest, run_id, state) if cfg.sync.delete else None
    finally:
        if elastic is not None:
            elastic.release()
        if lane is not None:
            lane.stop_taking()
            lane.join()
        # Actors of the embedded cluster this run started end with it (stop_ray). Until then their handles are
        # kept: an actor still starting, killed or dropped, makes Ray print spurious errors (a KillActor RPC
        # failure, ray-project/ray#58544, or its constructor not finding the manifest actor).
        _close_workers(workers, never_up, end=lane is None)
        if lane is not None:
            _parked.extend(workers)
        local_manifest.flush()  # the driver lane's records (a DynamoDB manifest buffers them)
    if lane is not None and lane.last_done:
        state.lane_done_s = lane.last_done - started
    report = build_report(cfg, job, run_id, state, time.monotonic() - started)
    if deletes is not None:
        delete_report(report, deletes, cfg.dry_run)
    if elastic is not None:
        report["autoscaler"] = {"slot_requests": elastic.requests, "actors": len(workers)}
    if report["status"] == "succeeded" and not cfg.dry_run:
        # Uploads the job opened and no longer needs (a failed run keeps them for the next run to continue).
        leftover = ray.get(manifest.open_uploads.remote())
        settled = asyncio.run(_abort_uploads(cfg.destination, leftover)) if leftover else []
        ray.get([manifest.upload_closed.remote(dst_key, upload_id) for dst_key, upload_id in settled])
        if len(settled) < len(leftover):
            report["status"] = "failed"
            report["errors"].append(f"{len(leftover) - len(settled)} multipart uploads could not be aborted")
    if not cfg.dry_run:
        ray.get(manifest.finish_run.remote(report["status"], report))
        ray.get(manifest.flush.remote())
    counts = [ray.get(manifest.write_counts.remote()), local_manifest.write_counts()]
    report["manifest"] = {"type": cfg.manifest.type.value, "writes": sum(c[0] for c in counts),
                          "items_written": sum(c[1] for c in counts)}
    ray.get(manifest.close.remote())
    if lane is None:
        ray.kill(manifest, no_restart=True)
    else:
        _parked.append(manifest)
    local_manifest.close()
    ops.finished(report)
    return report


def start_manifest(cfg: SyncConfig, job: str, run_id: int, driver_node: str) -> tuple:
    """The manifest actor, on the driver's node (a SQLite manifest is a file local to the driver), and its
    unique name: transfer actors look it up by name, so a restarted actor finds it again and Ray need not
    keep a handle among their constructor arguments."""
    import uuid

    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    cls, args = manifest_factory(cfg.manifest, job, run_id)
    name = f"dth-manifest-{uuid.uuid4().hex}"
    handle = ray.remote(cls).options(
        name=name, num_cpus=0, scheduling_strategy=NodeAffinitySchedulingStrategy(driver_node, soft=False),
    ).remote(*args)
    return handle, name


def _close_workers(workers: list, never_up: set[int] = frozenset(), end: bool = True) -> None:
    """Flush and close every transfer actor, then (`end`) end it: a long-lived `watch` or a shared cluster
    must not collect them. Actors in `never_up` were never given work and are not waited for."""
    import ray

    for ref in [w.close.remote() for i, w in enumerate(workers) if i not in never_up]:
        try:
            ray.get(ref)
        except ray.exceptions.RayActorError:
            continue  # a dead actor has nothing left to flush
    for worker in workers if end else []:
        ray.kill(worker, no_restart=True)


def spawn_workers(cfg: SyncConfig, manifest: str, count: int) -> list:
    """Transfer actors placed round-robin over the alive nodes (created, not waited for).

    Soft node affinity rather than SPREAD: SPREAD is best-effort for actors that need no CPU, and left whole
    nodes idle in tests; soft affinity pins the intended layout yet lets Ray place an actor elsewhere if its
    node is gone. Actors take no CPU so they also run on nodes that advertise a single CPU.
    """
    import ray

    nodes = sorted(n["NodeID"] for n in ray.nodes() if n.get("Alive"))
    workers = [new_worker(cfg, manifest, nodes[i % len(nodes)] if nodes else "") for i in range(count)]
    if count >= len(nodes) > 1:
        # Soft affinity may place an actor elsewhere when its node is slow to answer; a node left without
        # any actor gets one pinned to it, so every node takes part.
        placed = set(ray.get([w.node_id.remote() for w in workers]))
        workers += [new_worker(cfg, manifest, node, soft=False) for node in nodes if node not in placed]
    return workers


def start_workers(cfg: SyncConfig, manifest: str, count: int) -> list:
    """Transfer actors (see spawn_workers), introduced to each other and up."""
    workers = spawn_workers(cfg, manifest, count)
    introduce(workers)
    return workers


def _elasticity(cfg: SyncConfig, manifest: str, workers: list) -> Elasticity | None:
    """Autoscaling for a run on a real cluster (runtime.autoscale=auto: any address but the embedded one)."""
    import ray

    mode = cfg.runtime.autoscale
    if mode == "off" or (mode == "auto" and cfg.runtime.address == "local"):
        return None

    def spawn(node_id: str, count: int) -> list:
        fresh = [new_worker(cfg, manifest, node_id) for _ in range(count)]
        introduce(workers + fresh)
        return fresh

    elastic = Elasticity(True, cfg.transfer.actors == 0, ScalePolicy(max_slots=cfg.runtime.max_transfer_slots),
                         spawn)
    elastic.known_nodes = {n["NodeID"] for n in ray.nodes() if n.get("Alive")}
    return elastic


def new_worker(cfg: SyncConfig, manifest: str, node_id: str, soft: bool = True):
    """One transfer actor pinned to `node_id` (softly: anywhere when it is empty or gone)."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    return ray.remote(TransferWorker).options(
        # Async actors: a concurrency slot is a coroutine, not a thread. Peers' part uploads take slots too,
        # so leave room for them beside the shards (a low cap could make two actors wait on each other).
        num_cpus=0, max_concurrency=256, max_restarts=_ACTOR_RESTARTS,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=soft) if node_id else None,
    ).remote(cfg, manifest)


def introduce(workers: list, wait: bool = True) -> list:
    """Tell every transfer actor who its peers are (they send shares of each other's large uploads).
    Returns one reference per actor, resolved once it is up; `wait` blocks until all are."""
    import ray

    refs = [w.set_peers.remote(workers[:i] + workers[i + 1:]) for i, w in enumerate(workers)]
    if wait:
        ray.get(refs)
    return refs


def _dispatch(queue: deque[WorkItem], workers: list, manifest, state: RunState,
              on_progress: Callable[[Progress, float], None] | None, interval_s: float, started: float,
              lane: DriverLane | None = None, driver_node: str = "", run_id: int = 0,
              observe: Callable[[Progress, int], list] | None = None, starting: list | None = None) -> set[int]:
    """Keep every actor busy with a few shards; re-run a shard whose listing failed or whose actor died,
    from its last checkpoint (bounded attempts). Each progress tick, `observe(progress, pending_shards)`
    (autoscaling, metrics, operations) may return transfer actors started on nodes that joined.
    `starting` holds one reference per actor that resolves once it is up; an actor gets shards only then.
    Returns the indices of actors that never came up."""
    import ray

    warming = {ref: i for i, ref in enumerate(starting or [])}  # readiness reference -> actor index
    in_flight: dict = {}
    per_worker = _SHARDS_PER_ACTOR
    load = {i: 0 for i in range(len(workers))}
    next_progress = time.monotonic()

    def settle(item: WorkItem, result: ShardResult, by_lane: bool = False) -> None:
        # A re-run shard carries what earlier attempts copied (its base): count only the rest here.
        base = item.base or Tally()
        objects, nbytes = result.tally.copied - base.copied, result.tally.bytes_copied - base.bytes_copied
        if by_lane:
            state.lane.copied += objects
            state.lane.bytes_copied += nbytes
            state.lane_shards += 0 if result.error else 1
        if result.error and item.attempt < _SHARD_ATTEMPTS:
            queue.append(WorkItem(item.shard, item.attempt + 1, result.watermark, result.tally))
            return
        if result.error:
            state.errors.append(f"shard {item.shard.prefix!r}: {result.error}")
        state.tally.merge(result.tally)
        node = state.nodes.setdefault(result.node_id or driver_node, [0, 0])
        node[0] += objects
        node[1] += nbytes

    resting: dict[int, float] = {}  # actor index -> when its restart should be done
    losses: dict[str, int] = {}  # shard id -> actors lost while running it
    deaths: dict[int, int] = {}  # actor index -> times it was lost; past its restarts it is gone for good

    def lost(item: WorkItem, index: int, exc: Exception) -> None:
        """The actor died mid-shard: Ray restarts it; the shard continues from its last durable checkpoint
        on any actor (a lost actor costs no attempt: the shard did nothing wrong)."""
        log.warning("transfer actor lost while running shard %r: %s", item.shard.prefix, type(exc).__name__)
        resting[index] = time.monotonic() + _ACTOR_REST_S
        deaths[index] = deaths.get(index, 0) + 1
        if deaths[index] > _ACTOR_RESTARTS + 1:
            resting[index] = float("inf")
        losses[item.shard.shard_id] = losses.get(item.shard.shard_id, 0) + 1
        checkpoint = next((cp for cp in ray.get(manifest.checkpoints.remote(run_id))
                           if cp.shard.shard_id == item.shard.shard_id), None) if run_id else None
        watermark, base = (checkpoint.watermark, checkpoint.tally) if checkpoint else (item.watermark, item.base)
        if losses[item.shard.shard_id] > _MAX_ACTOR_LOSSES:  # this shard keeps killing actors: give up on it
            settle(WorkItem(item.shard, _SHARD_ATTEMPTS), ShardResult(
                item.shard.shard_id, base or Tally(), error=f"actor lost {_MAX_ACTOR_LOSSES + 1} times"))
        else:
            queue.append(WorkItem(item.shard, item.attempt, watermark, base))

    while queue or in_flight or (lane is not None and lane.alive()):
        if queue and all(resting.get(i, 0.0) == float("inf") for i in load):
            while queue:  # every actor is gone for good: the rest of the run cannot be done
                item = queue.popleft()
                settle(WorkItem(item.shard, _SHARD_ATTEMPTS),
                       ShardResult(item.shard.shard_id, item.base or Tally(), error="no transfer actor left"))
            continue
        cold = set(warming.values())
        while queue:
            now = time.monotonic()
            ready_actors = [i for i in load if i not in cold and resting.get(i, 0.0) <= now] or [
                i for i in load if i not in cold and resting.get(i, 0.0) != float("inf")]
            if not ready_actors:
                break
            index = min(ready_actors, key=load.get)  # one shard at a time to the least-loaded actor
            if load[index] >= per_worker:
                break
            try:
                item = queue.popleft()
            except IndexError:  # the driver lane took the last one
                break
            ref = workers[index].run_shard.remote(item.shard, item.watermark, item.base)
            in_flight[ref] = (item, index)
            load[index] += 1
        waiting = [*in_flight, *warming] if queue else list(in_flight)  # an actor coming up matters only with work
        if waiting:
            ready, _ = ray.wait(waiting, num_returns=1, timeout=interval_s if in_flight or not lane else 0.05)
        else:
            ready = []
            time.sleep(0.05)  # only the driver lane is still busy
        for ref in ready:
            if ref in warming:
                warming.pop(ref)  # up (or dead: its first shard then takes the actor-loss path)
                if state.actors_up_s is None:
                    state.actors_up_s = time.monotonic() - started
                continue
            item, index = in_flight.pop(ref)
            load[index] -= 1
            try:
                result = ray.get(ref)
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                lost(item, index, exc)
                continue
            settle(item, result)
        if lane is not None:
            for item, result in lane.harvest():
                settle(item, result, by_lane=True)
        if time.monotonic() >= next_progress:
            progress = _add(ray.get(manifest.progress.remote()), state.base)
            if lane is not None:
                progress = _add(progress, lane.manifest.progress())
            if on_progress is not None:
                on_progress(progress, time.monotonic() - started)
            if observe is not None:
                for worker in observe(progress, len(queue) + len(in_flight)):
                    load[len(workers)] = 0
                    workers.append(worker)
            next_progress = time.monotonic() + interval_s
    if lane is not None:
        for item, result in lane.harvest():
            settle(item, result, by_lane=True)
    return set(warming.values())


def _add(a: Progress, b: Progress) -> Progress:
    return Progress(**{k: getattr(a, k) + getattr(b, k) for k in vars(a)})


async def _abort_uploads(cfg: StoreConfig, uploads: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Abort uploads the job opened and no longer needs, including any a crash left unrecorded behind an
    intent (empty upload id); returns the entries that are settled and can leave the manifest."""
    from dth_ray.engine.copier import sweep_intent

    known: dict[str, set[str]] = {}
    for dst_key, upload_id in uploads:
        known.setdefault(dst_key, set()).add(upload_id)
    store = open_store(cfg)
    settled = []
    try:
        for dst_key, upload_id in uploads:
            try:
                if upload_id:
                    await store.abort_multipart(dst_key, upload_id)
                else:
                    await sweep_intent(store, dst_key, known[dst_key])
            except NotFound:
                pass  # already gone
            except DthError as exc:
                log.warning("could not abort upload key=%s error=%s", dst_key, type(exc).__name__)
                continue
            settled.append((dst_key, upload_id))
    finally:
        await store.aclose()
    return settled


def build_report(cfg: SyncConfig, job: str, run_id: int, state: RunState, duration_s: float) -> dict:
    t = state.tally
    failed = t.failed > 0 or bool(state.errors)
    objects = {"listed": t.listed, "copied": t.copied, "skipped": t.skipped, "failed": t.failed}
    nbytes = {"copied": t.bytes_copied, "listed": t.bytes_listed}
    if cfg.dry_run:
        objects["would_copy"] = t.would_copy
        objects["would_copy_multipart"] = t.would_copy_multipart
        nbytes["would_copy"] = t.would_copy_bytes
        nbytes["would_copy_multipart"] = t.would_copy_multipart_bytes
    part_size = t.part_size_bytes
    if not part_size:
        from dth_ray.stores.s3 import FEATURES as S3_FEATURES

        requested = None if cfg.transfer.part_size == "auto" else cfg.transfer.part_size
        part_size = choose_part_size(0, S3_FEATURES, int(requested) if requested and requested.isdigit() else None)
    return {
        "status": "failed" if failed else "succeeded",
        "job": job,
        "run_id": run_id,
        "resumed": state.resumed,
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
        "spread_parts": t.spread_parts,
        "resumed_parts": t.resumed_parts,
        "failures": [{"key": f.key, "error": f.error} for f in t.failures],
        "errors": state.errors,
        "nodes": [{"node_id": n, "objects": v[0], "bytes": v[1]} for n, v in sorted(state.nodes.items())],
        "runtime": {
            "ray_up_s": _round(state.ray_up_s), "actors_up_s": _round(state.actors_up_s),
            "driver_lane": {"shards": state.lane_shards, "objects": state.lane.copied,
                            "bytes": state.lane.bytes_copied, "last_shard_done_s": _round(state.lane_done_s)},
        },
    }


def _round(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 3)


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
