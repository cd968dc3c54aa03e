"""The one scheduler: it alone owns Ray and the pool of workers, dispatches work items, applies one policy to a
lost worker, collects results and calls its client's lifecycle hooks.

Every command that moves or checks data is a client (sync shards, delete batches, verify shards, watch's
event batches, MaxCompute export shards): it hands over `Item`s and reacts in hooks, in the spirit of Ray
Data's datasink (`on_write_start` / `write` / `on_write_complete` / `on_write_failed`):

    on_item_done(item, result, where) -> Item | None     the result; return a retry of the item, or None
    on_item_failed(item, error, where)                   terminal: the item gave up (attempts, losses)
    redo(item, where, lost) -> Item | None               the item again from its checkpoint, after its worker
                                                         was lost (`lost`) or its call raised; None: dropped

`where` is the worker's Slot (its node_id, whether it is in-process) or None when no worker took the item.
    on_tick(scheduler)                                   every tick and `wake()`: progress, autoscaling, new items
    finished() -> bool                                   (optional) a long-running client (watch) says when

Workers are one pool: in-process workers (the driver lane on the embedded cluster: the driver's machine is
the actors' machine, so it copies too, from the first second) and Ray actors, started once Ray is up. A call
answers with a `concurrent.futures.Future` either way (pool.py). One policy for a lost worker: each item it
held is redone from its checkpoint on any worker, at most `max_losses` times; an item whose call raised is
redone at most `max_attempts` times. The loop runs in its own thread, so that the main thread can start Ray
(`ray.init` must run there) while the lane already works. Interrupts (runtime/interrupts.py) stop the
dispatch, ask busy workers to stop at a safe point, give them `stop_grace_s`, and end the loop; every item
not terminal is returned as unfinished. Only this module calls `ray.get`.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from dth_ray.ops.logs import write_relayed
from dth_ray.runtime.interrupts import Interrupts
from dth_ray.runtime.pool import ActorWorker, LocalWorker, Slot, WorkerLost
from dth_ray.runtime.rayhost import owns_ray, ray_is_up, relays_logs, start_ray
from dth_ray.settings import RuntimeSettings

log = logging.getLogger(__name__)
ACTOR_RESTARTS = 3  # Ray restarts a lost actor this many times; then it is gone
_WAIT_S = 0.2  # longest wait for a future: interrupts and new items are noticed within it
_SPREAD_WAIT_S = 30.0  # longest wait for the first actors before dispatching (see _spread_ready)
_LOG_WAIT_S = 5.0  # longest wait at close for the actors' last log lines


@dataclass(frozen=True, slots=True)
class Item:
    """One unit of work: `method` of a worker, called with `args`. `key` names it (unique in a run)."""

    key: str
    method: str
    args: tuple = ()
    attempt: int = 1  # calls that raised or results that asked for a retry, plus one
    losses: int = 0  # workers lost while holding it


def actor_nodes(nodes: list[dict]) -> list[str]:
    """The nodes (ids, sorted) that get transfer actors, from `ray.nodes()`: every alive node that advertises a
    CPU. A node started with none (`ray start --num-cpus=0`, Ray's way to keep work off a head node that runs
    the driver) gets none, unless no alive node advertises any (then all of them take actors)."""
    alive = [n for n in nodes if n.get("Alive")]
    working = [n for n in alive if (n.get("Resources") or {}).get("CPU", 0) > 0]
    return sorted(n["NodeID"] for n in (working or alive))


class Client(Protocol):
    def on_item_done(self, item: Item, result: Any, where: Slot) -> Item | None: ...

    def on_item_failed(self, item: Item, error: str, where: Slot | None) -> None: ...

    def redo(self, item: Item, where: Slot, lost: bool) -> Item | None: ...

    def on_tick(self, scheduler: Scheduler) -> None: ...


@dataclass
class Workers:
    """How a client's pool is made. `build_local` builds the in-process worker object (None: no driver
    lane); `actor_class` (a plain class, wrapped with `ray.remote`) is built with `actor_args()` — called once,
    in the loop, when Ray is up (a client may start its manifest actor there)."""

    build_local: Callable[[], Any] | None = None
    actor_class: type | None = None
    actor_args: Callable[[], tuple] = tuple
    actors: int = 0  # 0: one per CPU of the cluster (one fewer with a driver lane)
    max_actors: int = 0  # at most this many (e.g. no more actors than items); 0: no cap
    per_actor: int = 4
    per_local: int = 8
    max_concurrency: int = 256
    peers: bool = False  # actors send shares of each other's large uploads (TransferWorker.set_peers)
    local_workers: int = 1  # in-process workers (tests use several to run without Ray)


@dataclass
class Outcome:
    """How a loop ended: every item terminal (`completed`), or stopped with `unfinished` items (each with the
    worker that still held it, or None)."""

    completed: bool
    unfinished: list[tuple[Item, Slot | None]] = field(default_factory=list)
    interrupted: bool = False


class Scheduler:
    """The pool and its dispatch loop. Typical use (the sync driver):

        scheduler = Scheduler(workers, interrupts, tick_s)
        scheduler.start_local()                       # the driver lane, working at once
        planned = scheduler.run_local(plan)           # planning in the lane's loop, while ...
        scheduler.start(client, planned)              # ... the dispatch loop waits for the plan
        scheduler.start_ray(runtime)                  # Ray starts on the main thread meanwhile
        outcome = scheduler.wait()
        scheduler.close()
    """

    def __init__(self, workers: Workers, interrupts: Interrupts | None = None, tick_s: float = 1.0, *,
                 max_attempts: int = 3, max_losses: int = 5, stop_grace_s: float = 5.0, ray_on_demand: bool = False):
        """`ray_on_demand`: Ray (and the actors) only once the client calls `want_ray()`; otherwise the caller
        starts or attaches Ray right away and the loop counts on the actors coming."""
        self.workers = workers
        self.interrupts = interrupts or Interrupts()
        self.tick_s = tick_s
        self.max_attempts = max_attempts
        self.max_losses = max_losses
        self.stop_grace_s = stop_grace_s
        self.slots: list[Slot] = []
        self.ray_up_at: float | None = None  # time.monotonic() when Ray was up (None: never started here)
        self.first_actor_at: float | None = None
        self.actors_started = 0
        self._actors_settled_at: float | None = None  # when every first actor was up (or gone)
        self._pending: deque[Item] = deque()
        self._in_flight: dict[concurrent.futures.Future, tuple[Item, Slot]] = {}
        self._ray_ready = threading.Event()
        self._ray_wanted = threading.Event()
        if not ray_on_demand and workers.actor_class is not None:
            self._ray_wanted.set()
        self._actors_made = False
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._outcome: Outcome | None = None
        self._client: Any = None
        self._items: Any = None
        self._lock = threading.Lock()
        self._wake = concurrent.futures.Future()
        self._log_asks: dict[concurrent.futures.Future, Slot | str] = {}  # actors asked for their log lines
        self._named: dict[Any, str] = {}  # named actors that log (handle -> the tag of their lines)

    # ---- workers

    def start_local(self) -> None:
        """Start the in-process workers (if the client has any): they take items at once."""
        if self.workers.build_local is None or any(s.local for s in self.slots):
            return
        for n in range(self.workers.local_workers):
            worker = LocalWorker(f"lane-{n}" if self.workers.local_workers > 1 else "lane", self.workers.build_local)
            slot = Slot(worker, self.workers.per_local, local=True)
            slot.starting = worker.start()
            self.slots.append(slot)

    def run_local(self, coro_fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run a coroutine (e.g. planning) in the first in-process worker's loop; its future."""
        self.start_local()
        local = next((s for s in self.slots if s.local), None)
        if local is None:
            raise RuntimeError("no in-process worker to run on")
        return local.worker.run(coro_fn)

    def start_ray(self, runtime: RuntimeSettings) -> None:
        """Start (or join) Ray on the main thread; the loop then starts the actors (if the pool has any).
        Re-installs the interrupt handlers Ray's start-up replaces."""
        if self.interrupts.requested.is_set():
            return
        start_ray(runtime)
        self.interrupts.install()
        self.ray_up_at = time.monotonic()
        self._ray_ready.set()

    def attach_ray(self) -> None:
        """Use a Ray that is already up in this process (a scan inside `watch`)."""
        if self.workers.actor_class is not None and ray_is_up():
            self.ray_up_at = self.ray_up_at or time.monotonic()
            self._ray_ready.set()

    def _make_actors(self) -> None:
        import ray

        self._actors_made = True
        args = self.workers.actor_args()
        count = self.workers.actors or self._cpus_for_actors()
        if self.workers.max_actors:
            count = min(count, self.workers.max_actors)
        nodes = actor_nodes(ray.nodes())
        for i in range(count):
            self._add_actor(args, nodes[i % len(nodes)] if nodes else "")
        self._introduce()

    def _cpus_for_actors(self) -> int:
        import ray

        cpus = int(ray.cluster_resources().get("CPU", 2))
        return max(1, cpus - 1) if any(s.local for s in self.slots) else max(2, cpus)

    def _add_actor(self, args: tuple, node_id: str, soft: bool = True) -> Slot:
        """One actor pinned to `node_id` (softly: anywhere when its node is gone). Soft node affinity rather
        than SPREAD: SPREAD is best-effort for actors that need no CPU and left whole nodes idle in tests.
        Actors take no CPU so they also run on nodes that advertise a single CPU."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        handle = ray.remote(self.workers.actor_class).options(
            # Async actors: a concurrency slot is a coroutine, not a thread. Peers' part uploads take slots too,
            # so leave room for them beside the items (a low cap could make two actors wait on each other).
            num_cpus=0, max_concurrency=self.workers.max_concurrency, max_restarts=ACTOR_RESTARTS,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=soft) if node_id else None,
        ).remote(*args)
        slot = Slot(ActorWorker(f"actor-{uuid.uuid4().hex[:8]}", handle), self.workers.per_actor, local=False,
                    intended_node=node_id if soft else "")
        slot.starting = slot.worker.start()
        self.slots.append(slot)
        self.actors_started += 1
        return slot

    def grow(self, node_id: str, count: int) -> list[Slot]:
        """Start `count` more actors on a node that joined (autoscaling); their slots."""
        args = self.workers.actor_args()
        fresh = [self._add_actor(args, node_id) for _ in range(count)]
        self._introduce()
        return fresh

    def _introduce(self) -> None:
        """Tell every actor who its peers are (they send shares of each other's large uploads)."""
        if not self.workers.peers:
            return
        actors = [s.worker.handle for s in self.slots if not s.local and not s.gone]
        for i, handle in enumerate(actors):
            handle.set_peers.remote(actors[:i] + actors[i + 1:])

    def _misplaced(self, slot: Slot) -> None:
        """Soft affinity may place an actor elsewhere when its node is slow to answer. While the node it was meant
        for is alive, the actor is stopped before it takes any work and one pinned to that node replaces it, so
        the pool keeps its size and its spread: one node with two actors would carry twice the bytes through
        one link while another node idles (seen in the scale-out benchmark: 7 of 16 large objects through one
        of four nodes). A node started with no CPUs (actor_nodes) is never kept. When the intended node is gone,
        the actor stays where it landed (unless that is such a node)."""
        import ray

        intended, slot.intended_node = slot.intended_node, ""
        if not intended or slot.node_id == intended:
            return
        nodes = [n for n in ray.nodes() if n.get("Alive")]
        if intended not in {n["NodeID"] for n in nodes}:
            if slot.node_id not in actor_nodes(nodes):
                slot.gone = True
                self.kill_actor(slot.worker.handle)
            return
        log.info("worker %s landed on node %s instead of %s: replaced by one pinned there", slot.worker_id,
                 slot.node_id[:12], intended[:12])
        self._add_actor(self.workers.actor_args(), intended, soft=False)
        slot.gone = True
        self.kill_actor(slot.worker.handle)
        self._introduce()

    @property
    def actor_count(self) -> int:
        return sum(1 for s in self.slots if not s.local and not s.gone)

    # ---- the loop

    def start(self, client: Any, items: Iterable[Item] | concurrent.futures.Future) -> None:
        """Run the dispatch loop in its own thread over `items` (or the items a future resolves to)."""
        if self._thread is not None and self._thread.is_alive():
            raise RuntimeError("the scheduler is already running")
        self._client, self._items, self._error, self._outcome = client, items, None, None
        self._thread = threading.Thread(target=self._main, name="dth-scheduler", daemon=True)
        self._thread.start()

    def wait(self, runtime: RuntimeSettings | None = None) -> Outcome:
        """Block until the loop ends (signals are handled meanwhile); re-raise its error, if any. With
        `runtime`, Ray is started here (the main thread) as soon as the client asks for it (`want_ray`)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.2)
            if runtime is not None and self._ray_wanted.is_set() and self.ray_up_at is None:
                self.start_ray(runtime)
        if self._error is not None:
            raise self._error
        return self._outcome

    def ray_wanted(self) -> bool:
        """Whether Ray is up or on its way (started with the pool, or asked for by the client)."""
        return self._ray_wanted.is_set()

    def want_ray(self) -> None:
        """Ask for Ray and the actors (from a hook: the main thread starts Ray in `wait`)."""
        self._ray_wanted.set()

    def run(self, client: Any, items: Iterable[Item], runtime: RuntimeSettings | None = None) -> Outcome:
        """`start` + Ray (when the pool has actors) + `wait`, for clients with no planning to overlap."""
        self.start_local()
        self.start(client, items)
        if runtime is not None:
            self.start_ray(runtime)
        else:
            self.attach_ray()
        return self.wait()

    def _main(self) -> None:
        try:
            items = self._items
            if isinstance(items, concurrent.futures.Future):
                items = self._await(items)
                if items is None:
                    self._outcome = Outcome(False, [], interrupted=True)
                    return
            self._pending.extend(items)
            self._outcome = self._loop(self._client)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller's thread by wait()
            self._error = exc

    def _await(self, future: concurrent.futures.Future):
        """The future's result, or None when an interrupt comes first."""
        while True:
            try:
                return future.result(timeout=_WAIT_S)
            except concurrent.futures.TimeoutError:
                if self.interrupts.requested.is_set():
                    return None

    def _loop(self, client: Any) -> Outcome:
        next_tick = time.monotonic()
        stop_deadline: float | None = None
        finished = getattr(client, "finished", None)
        while True:
            if (self._ray_ready.is_set() and not self._actors_made and self.workers.actor_class is not None
                    and not self.interrupts.requested.is_set()):
                self._make_actors()
            if stop_deadline is None and self.interrupts.requested.is_set():
                stop_deadline = self._begin_stop()
            if stop_deadline is None:
                self._dispatch(client)
            done_waiting = not self._pending and not self._in_flight
            if stop_deadline is not None and (not self._in_flight or time.monotonic() >= stop_deadline):
                break
            if done_waiting and (finished is None or finished()):
                break
            self._wait_some(client, next_tick)
            if time.monotonic() >= next_tick:
                client.on_tick(self)
                self._relay_logs()
                next_tick = time.monotonic() + self.tick_s
        unfinished = [(item, None) for item in self._pending] + list(self._in_flight.values())
        for slot in {slot for _, slot in self._in_flight.values()}:
            slot.load = 0
        self._pending.clear()
        self._in_flight.clear()
        return Outcome(not unfinished and stop_deadline is None, unfinished,
                       interrupted=stop_deadline is not None)

    def _usable(self) -> list[Slot]:
        if not self._spread_ready():
            return []
        return [s for s in self.slots if s.ready and not s.gone and s.load < s.capacity]

    def _spread_ready(self) -> bool:
        """With no in-process worker, the first actors all come up (or fail) before any item is dispatched, at
        most `_SPREAD_WAIT_S`: items then spread over every node instead of going to the first actors up."""
        if self._actors_settled_at is not None or any(s.local for s in self.slots):
            return True
        actors = [s for s in self.slots if not s.local]
        if not actors:
            return False
        waited = time.monotonic() - (self.ray_up_at or time.monotonic())
        if all(s.ready or s.gone for s in actors) or waited > _SPREAD_WAIT_S:
            self._actors_settled_at = time.monotonic()
        return self._actors_settled_at is not None

    def _dispatch(self, client: Any) -> None:
        while self._pending:
            usable = self._usable()
            if not usable:
                if not self._can_ever_run():
                    self._no_worker_left(client)
                return
            slot = min(usable, key=lambda s: s.load / s.capacity)
            item = self._pending.popleft()
            future = slot.worker.submit(item.method, item.args)
            self._in_flight[future] = (item, slot)
            slot.load += 1

    def _relay_logs(self, ask: bool = True) -> None:
        """Print the lines the actors logged since they were last asked, and ask again (one call in flight per
        actor), where the embedded node runs no log monitor to copy them (rayhost.relays_logs). A lost actor's
        lines stay in its log file."""
        for future, whose in list(self._log_asks.items()):
            if future.done():
                del self._log_asks[future]
                if not future.cancelled() and future.exception() is None:
                    write_relayed(whose if isinstance(whose, str) else whose.worker_id, future.result())
        if not ask or not relays_logs():
            return
        asked = set(self._log_asks.values())
        for slot in self.slots:
            if not slot.local and slot.ready and not slot.gone and slot not in asked:
                try:
                    self._log_asks[slot.worker.submit("log_lines", ())] = slot
                except Exception:  # noqa: BLE001 - a worker that cannot be asked now is asked next tick
                    continue
        for handle, tag in self._named.items():
            if tag not in asked:
                try:
                    self._log_asks[handle.log_lines.remote().future()] = tag
                except Exception:  # noqa: BLE001 - asked again next tick
                    continue

    def _can_ever_run(self) -> bool:
        """Some worker is up or starting, or actors will start (Ray is, or was asked for, and they are not made
        yet)."""
        if any(not s.gone for s in self.slots):
            return True
        coming = self._ray_ready.is_set() or self._ray_wanted.is_set()
        return self.workers.actor_class is not None and coming and not self._actors_made

    def _no_worker_left(self, client: Any) -> None:
        while self._pending:
            item = self._pending.popleft()
            client.on_item_failed(item, "no worker left to run it (every worker was lost)", None)

    def _wait_some(self, client: Any, next_tick: float) -> None:
        starting = {s.starting: s for s in self.slots if s.starting is not None}
        futures = set(self._in_flight) | set(starting) | {self._wake}
        timeout = max(0.0, min(_WAIT_S, next_tick - time.monotonic()))
        done, _ = concurrent.futures.wait(futures, timeout=timeout, return_when=concurrent.futures.FIRST_COMPLETED)
        for future in done:
            if future is self._wake:
                with self._lock:
                    self._wake = concurrent.futures.Future()
                client.on_tick(self)
            elif future in starting:
                self._started(starting[future], future)
            else:
                self._settle(client, future)

    def _started(self, slot: Slot, future: concurrent.futures.Future) -> None:
        slot.starting = None
        try:
            slot.node_id = future.result()
        except Exception as exc:  # noqa: BLE001 - an actor that cannot start (or restart) is gone
            log.warning("worker %s could not start: %s", slot.worker_id, type(exc).__name__,
                        extra={"worker": slot.worker_id, "error_class": type(exc).__name__})
            slot.gone = True
            return
        slot.ready = True
        if not slot.local:
            self.first_actor_at = self.first_actor_at or time.monotonic()
            self._misplaced(slot)

    def _settle(self, client: Any, future: concurrent.futures.Future) -> None:
        item, slot = self._in_flight.pop(future)
        slot.load -= 1
        try:
            result = future.result()
        except BaseException as exc:  # noqa: BLE001 - classified below
            if _is_loss(exc):
                self._lost(client, item, slot, exc)
            else:
                self._raised(client, item, slot, exc)
            return
        follow = client.on_item_done(item, result, slot)
        if follow is not None:
            self._retry(client, follow, slot, f"attempt {item.attempt} did not finish")

    def _retry(self, client: Any, item: Item, slot: Slot, error: str) -> None:
        if item.attempt > self.max_attempts:
            client.on_item_failed(item, f"gave up after {self.max_attempts} attempts ({error})", slot)
        else:
            self._pending.append(item)

    def _raised(self, client: Any, item: Item, slot: Slot, exc: BaseException) -> None:
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:300] if str(exc) else ''}"
        log.warning("item %s raised on %s: %s", item.key, slot.worker_id, error,
                    extra={"item": item.key, "attempt": item.attempt, "worker": slot.worker_id,
                           "error_class": type(exc).__name__})
        redo = client.redo(item, slot, False)
        if redo is not None:
            self._retry(client, replace(redo, attempt=item.attempt + 1, losses=item.losses), slot, error)

    def _lost(self, client: Any, item: Item, slot: Slot, exc: BaseException) -> None:
        """The worker died with the item: Ray restarts it (its next start future says when it is back); the
        item is redone from its checkpoint on any worker, at most `max_losses` times (a lost worker costs no
        attempt: the item did nothing wrong)."""
        log.warning("worker %s lost while running %s: %s", slot.worker_id, item.key, type(exc).__name__,
                    extra={"item": item.key, "attempt": item.attempt, "worker": slot.worker_id,
                           "error_class": type(exc).__name__})
        if slot.ready:
            slot.ready = False
            slot.deaths += 1
            if slot.deaths > ACTOR_RESTARTS:
                slot.gone = True
            elif slot.starting is None:
                slot.starting = slot.worker.start()
        redo = client.redo(item, slot, True)
        if redo is None:
            return
        redo = replace(redo, attempt=item.attempt, losses=item.losses + 1)
        if redo.losses > self.max_losses:
            client.on_item_failed(redo, f"its worker was lost {redo.losses} times", slot)
        else:
            self._pending.append(redo)

    def _begin_stop(self) -> float:
        """Stop dispatching; ask every busy worker to stop at a safe point; return the deadline."""
        # routine when idle (a watch service told to stop); work cut short is worth a warning
        busy = bool(self._in_flight or self._pending)
        log.log(logging.WARNING if busy else logging.INFO, "stopping: %d items in flight, %d not started",
                len(self._in_flight), len(self._pending))
        for slot in {slot for _, slot in self._in_flight.values()}:
            try:
                slot.worker.submit("stop", ())
            except Exception:  # noqa: BLE001 - a worker that cannot be told is abandoned at the deadline
                continue
        return time.monotonic() + self.stop_grace_s

    def submit(self, items: Iterable[Item]) -> None:
        """Add items while the loop runs (from a hook, in the loop's thread)."""
        self._pending.extend(items)

    def wake(self) -> None:
        """Have the loop call the client's `on_tick` soon (thread-safe: e.g. a receiver has new work)."""
        with self._lock:
            if not self._wake.done():
                self._wake.set_result(None)

    @property
    def pending(self) -> int:
        """Items not finished: queued or in flight."""
        return len(self._pending) + len(self._in_flight)

    @property
    def queued(self) -> int:
        """Items no worker has taken yet."""
        return len(self._pending)

    # ---- driver-side calls and shutdown

    def call(self, handle: Any, method: str, *args, timeout_s: float = 120.0):
        """Call an actor's method and wait for it (e.g. the manifest actor), or a local object's directly."""
        fn = getattr(handle, method)
        remote = getattr(fn, "remote", None)
        if remote is None:
            return fn(*args)
        import ray

        return ray.get(remote(*args), timeout=timeout_s)

    def named_actor(self, cls: type, args: tuple, name: str, node_id: str, max_concurrency: int = 16, tag: str = ""):
        """A named actor pinned to `node_id` (e.g. the manifest on the driver's node). A threaded actor: Ray makes
        its whole pool of `max_concurrency` threads up front (1,000 cost the manifest actor ~10 MB PSS), and the
        manifest's calls are short (SQLite takes one writer at a time; DynamoDB batches are buffered). With a
        `tag`, its log lines are relayed like the transfer actors' (tagged with it)."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        handle = ray.remote(cls).options(
            name=name, num_cpus=0, max_concurrency=max_concurrency,
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False),
        ).remote(*args)
        if tag and hasattr(cls, "log_lines"):
            self._named[handle] = tag
        return handle

    def close(self, timeout_s: float = 30.0) -> None:
        """Flush and release every worker: in-process ones first (their threads are joined, so no thread of
        ours is inside Ray afterwards), then actors. Actors of the embedded cluster end with it (stopping one
        that is still starting makes Ray print spurious errors); on a shared cluster they are killed."""
        if self._thread is not None and self._thread.is_alive():
            self.interrupts.request()
            self._thread.join(timeout_s)
        for slot in [s for s in self.slots if s.local]:
            slot.worker.close(timeout_s)
        actors = [s for s in self.slots if not s.local]
        closing = []
        for slot in actors:
            if slot.ready and not slot.gone:
                try:
                    closing.append(slot.worker.submit("close", ()))
                except Exception:  # noqa: BLE001 - nothing left to flush
                    continue
        concurrent.futures.wait(closing, timeout=timeout_s)
        if relays_logs():  # what they logged up to their close (a stuck actor's lines stay in its log file)
            wait_s = min(timeout_s, _LOG_WAIT_S)
            concurrent.futures.wait(list(self._log_asks), timeout=wait_s)
            self._relay_logs()
            concurrent.futures.wait(list(self._log_asks), timeout=wait_s)
            self._relay_logs(ask=False)
        if not owns_ray():
            for slot in actors:
                slot.worker.kill()
        self.slots = []

    def kill_actor(self, handle: Any) -> None:
        import ray

        self._named.pop(handle, None)
        try:
            ray.kill(handle, no_restart=True)
        except Exception:  # noqa: BLE001 - already gone
            return


def _is_loss(exc: BaseException) -> bool:
    """Whether a call failed because its worker died (not because the method raised)."""
    if isinstance(exc, (WorkerLost, concurrent.futures.CancelledError)):
        return True
    try:
        import ray.exceptions as rx
    except ImportError:
        return False
    lost = tuple(getattr(rx, name) for name in ("RayActorError", "ActorUnavailableError", "WorkerCrashedError",
                                                "NodeDiedError") if hasattr(rx, name))
    return isinstance(exc, lost)
