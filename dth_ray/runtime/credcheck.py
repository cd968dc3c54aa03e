"""A credentials check on the first transfer actor before any shard goes out: keys missing where actors run fail in seconds."""

from __future__ import annotations

import concurrent.futures
import logging
from typing import Any

from dth_ray.errors import ConfigError
from dth_ray.runtime.pool import Slot
from dth_ray.runtime.scheduler import Item

log = logging.getLogger(__name__)
CHECK = Item("credentials-check", "check_credentials")


class CredentialGate:
    """Stands between the scheduler and a client (the sync run) whose workers are all Ray actors (a driver
    joining a cluster). The scheduler first gets one item: TransferWorker.check_credentials on whichever actor
    is up first; the client's items are held until it answers. A refusal (keys missing on the nodes, a
    bucket they cannot reach) raises ConfigError from the scheduler's loop, so `wait()` raises it and the
    command exits 2 before a shard was dispatched. A check that cannot run (every actor lost) lets the items
    go: the client's own failure handling then reports them. Every other hook goes to the client."""

    def __init__(self, client: Any, scheduler: Any):
        self._client = client
        self._scheduler = scheduler
        self._held: list[Item] = []

    def hold(self, planned: concurrent.futures.Future) -> concurrent.futures.Future:
        """The check in place of the planned items (a resolved future of them), which wait for its answer."""
        self._held = list(planned.result())
        # A run planned from an inventory lists no source: the check reads a staged shard instead (see
        # TransferWorker.check_credentials).
        listing = next((item.args[0].shard.listing for item in self._held
                        if item.args and getattr(getattr(item.args[0], "shard", None), "listing", "")), "")
        gated: concurrent.futures.Future = concurrent.futures.Future()
        gated.set_result([Item(CHECK.key, CHECK.method, (listing,)) if listing else CHECK])
        return gated

    def _release(self) -> None:
        items, self._held = self._held, []
        self._scheduler.submit(items)

    def on_item_done(self, item: Item, result: Any, where: Slot) -> Item | None:
        if item.key != CHECK.key:
            return self._client.on_item_done(item, result, where)
        if result:
            raise ConfigError(str(result))
        log.info("credentials checked on a transfer actor on node %s", where.node_id)
        self._release()
        return None

    def on_item_failed(self, item: Item, error: str, where: Slot | None) -> None:
        if item.key != CHECK.key:
            self._client.on_item_failed(item, error, where)
            return
        log.warning("credentials could not be checked on a transfer actor (%s); starting anyway", error)
        self._release()

    def redo(self, item: Item, where: Slot, lost: bool) -> Item | None:
        if item.key != CHECK.key:
            return self._client.redo(item, where, lost)
        return item  # on another actor (the scheduler bounds the attempts and losses)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)  # on_tick, and `finished` only if the client has one


__all__ = ["CHECK", "CredentialGate"]
