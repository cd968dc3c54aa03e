"""The workers the scheduler dispatches to: in-process (a thread running its own event loop) or Ray actors.

Both answer a call with a `concurrent.futures.Future`, so the scheduler waits on one kind of thing and treats
both the same way. A worker is a plain class (TransferWorker, ExportWorker): wrapped with `ray.remote` for an
actor, or built inside the local worker's thread. Nothing here blocks on Ray (`ray.get`/`ray.wait` belong to
the scheduler alone); an actor's future comes from `ObjectRef.future()`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import inspect
import logging
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dth_ray.runtime.rayhost import ray_is_up

log = logging.getLogger(__name__)


class WorkerLost(Exception):
    """The worker died (or was killed) with the call in flight; the call's effects are unknown."""


def local_node_id() -> str:
    """This machine's node: Ray's id for it once Ray is up here, else `local:<hostname>`."""
    if ray_is_up():
        import ray

        return ray.get_runtime_context().get_node_id()
    return f"local:{socket.gethostname()}"


class LocalWorker:
    """A worker object living in its own thread and event loop, inside this process.

    `build()` runs in that thread (a worker may import heavy modules or open clients there). `kill()` cancels
    every call in flight and builds a fresh object on the next start, as Ray restarts a lost actor.
    """

    def __init__(self, worker_id: str, build: Callable[[], Any]):
        self.worker_id = worker_id
        self._build = build
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"dth-{worker_id}", daemon=True)
        self._obj: Any = None
        self._tasks: set[asyncio.Task] = set()
        self._killed = False
        self._closing = False  # set (under _lock) before close() cancels what is left: no call is taken after
        self._lock = threading.Lock()

    @property
    def node_id(self) -> str:
        return local_node_id()

    def start(self) -> concurrent.futures.Future:
        """Start the thread and build the object; the future resolves to this node's id once it is built."""
        if not self._thread.is_alive():
            self._thread.start()
        return asyncio.run_coroutine_threadsafe(self._make(), self._loop)

    async def _make(self) -> str:
        self._obj = self._build()
        self._killed = False
        return self.node_id

    def submit(self, method: str, args: tuple) -> concurrent.futures.Future:
        return self._soon(lambda: self._call(method, args))

    def run(self, coro_fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run `coro_fn()` (a coroutine function, not a worker method) in this worker's loop."""
        return self._soon(coro_fn)

    def _soon(self, make: Callable[[], Any]) -> concurrent.futures.Future:
        """`make()` scheduled in the loop, or a future failed with WorkerLost once the worker is closing or not
        running: a coroutine handed to a loop that never runs it again would never finish (its caller would
        wait forever) and is reported as never awaited."""
        with self._lock:
            if not self._closing and self._thread.is_alive():
                return asyncio.run_coroutine_threadsafe(make(), self._loop)
        lost: concurrent.futures.Future = concurrent.futures.Future()
        lost.set_exception(WorkerLost(f"{self.worker_id} is not running"))
        return lost

    async def _call(self, method: str, args: tuple):
        if self._obj is None or self._killed:
            raise WorkerLost(f"{self.worker_id} is not running")
        task = asyncio.current_task()
        self._tasks.add(task)
        try:
            result = getattr(self._obj, method)(*args)
            return await result if inspect.isawaitable(result) else result
        except asyncio.CancelledError:
            if self._killed:
                raise WorkerLost(f"{self.worker_id} was killed") from None
            raise
        finally:
            self._tasks.discard(task)

    def kill(self) -> None:
        """As a crash would: every task of the worker's loop is cancelled (its calls fail with WorkerLost, the
        copies they started stop where they are, nothing more is flushed) and the object is dropped; the next
        `start()` builds a fresh one, as Ray restarts a lost actor."""
        def cancel() -> None:
            self._killed = True
            self._obj = None
            for task in asyncio.all_tasks(self._loop):
                task.cancel()

        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(cancel)

    def close(self, timeout_s: float) -> None:
        """Let the object flush (`close()`), then stop the loop and join the thread."""
        if not self._thread.is_alive():
            return
        obj = self._obj
        if obj is not None and hasattr(obj, "close") and not self._killed:
            async def closing():
                result = obj.close()
                if inspect.isawaitable(result):
                    await result

            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(closing(), self._loop).result(timeout_s)
        with self._lock:  # calls taken before this are queued ahead of cancel_rest, which cancels them
            self._closing = True

        async def cancel_rest() -> None:
            """Cancel what is left and let it unwind (a task destroyed while pending would be logged)."""
            rest = [t for t in asyncio.all_tasks(self._loop) if t is not asyncio.current_task()]
            for task in rest:
                task.cancel()
            await asyncio.wait(rest, timeout=timeout_s) if rest else None

        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(cancel_rest(), self._loop).result(timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()


class ActorWorker:
    """A Ray actor (created by the scheduler). Its start future resolves to its node id once it is up."""

    def __init__(self, worker_id: str, handle: Any):
        self.worker_id = worker_id
        self.handle = handle
        self.node_id = ""

    def start(self) -> concurrent.futures.Future:
        return self.handle.node_id.remote().future()

    def submit(self, method: str, args: tuple) -> concurrent.futures.Future:
        return getattr(self.handle, method).remote(*args).future()

    def kill(self) -> None:
        import ray

        with contextlib.suppress(Exception):
            ray.kill(self.handle, no_restart=True)


@dataclass(eq=False)  # slots are compared and hashed by identity
class Slot:
    """One worker as the scheduler sees it: capacity, load, health."""

    worker: LocalWorker | ActorWorker
    capacity: int
    local: bool
    node_id: str = ""
    ready: bool = False
    starting: concurrent.futures.Future | None = None
    load: int = 0
    resting_until: float = 0.0  # a lost actor gets no work until Ray has had time to restart it
    deaths: int = 0
    gone: bool = False  # lost more often than it may restart: never used again
    intended_node: str = ""  # the node an actor was softly pinned to, until it is up

    @property
    def worker_id(self) -> str:
        return self.worker.worker_id
