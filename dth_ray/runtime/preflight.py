"""Preflight: one listing call per store, so bad buckets, credentials and endpoints fail before anything runs.
A source planned from an inventory is not listed: its inventory's manifest.json is read instead."""

from __future__ import annotations

import asyncio
import dataclasses
import os

from dth_ray.awsenv import DEFAULT_REGION
from dth_ray.config import StoreType
from dth_ray.engine.retry import retry
from dth_ray.errors import ConfigError, DthError, NotFound, PermissionDenied
from dth_ray.settings import InventorySettings, StoreSpec
from dth_ray.stores import open_store

PREFLIGHT_TIMEOUT_S = 25.0
_ATTEMPTS = 3  # a dropped connection or a 5xx is tried again (within the timeout); a refusal is not


async def probe(cfg: StoreSpec, role: str) -> str:
    """List one key of the store; returns the region the bucket answered in ('' when the store has none),
    which differs from `cfg.region` when S3 redirected to the bucket's region. Raises ConfigError naming
    `role`'s bad setting."""
    store = open_store(cfg, role)
    try:
        if cfg.type == StoreType.local and role == "source" and not os.path.isdir(cfg.path):
            raise ConfigError(f"{role}.path={cfg.path!r} is not a directory")
        if cfg.type == StoreType.local and role == "destination":
            return ""
        await asyncio.wait_for(retry(lambda: store.list_page(cfg.prefix, max_keys=1), _ATTEMPTS),
                               PREFLIGHT_TIMEOUT_S)
        return getattr(store, "region", "")
    except asyncio.TimeoutError:
        raise ConfigError(f"{role}.endpoint={cfg.endpoint or '(default)'!r} did not answer within "
                          f"{PREFLIGHT_TIMEOUT_S:.0f}s") from None
    except NotFound:
        raise ConfigError(f"{role}.bucket={cfg.bucket!r} does not exist") from None
    except PermissionDenied as exc:
        if str(exc).startswith(f"{role}.credentials="):  # already says which spec and why (a secret, a role)
            raise ConfigError(str(exc)) from None
        raise ConfigError(f"{role}.credentials={cfg.credentials!r} were refused ({exc})") from None
    except ConfigError:
        raise
    except DthError as exc:
        raise ConfigError(f"{role}.endpoint={cfg.endpoint or '(default)'!r} is unreachable ({exc})") from None
    finally:
        await store.aclose()


def _in_region(spec: StoreSpec, found: str) -> StoreSpec:
    """`spec` with the region its bucket answered in, when that is not the one it signed for."""
    return dataclasses.replace(spec, region=found) if found and found != (spec.region or DEFAULT_REGION) else spec


def check_stores(source: StoreSpec, destination: StoreSpec, inventory: InventorySettings | None = None
                 ) -> tuple[StoreSpec, StoreSpec]:
    """Probe both stores of a run (see probe); returns them with the region each bucket answered in, so a
    run's workers sign for it from their first request (a redirect is then followed, and said, once). With
    `inventory` the source is not listed: its inventory's manifest.json is read instead (the source keeps the
    region it was given). Raises ConfigError."""
    if inventory is None:
        source = _in_region(source, asyncio.run(probe(source, "source")))
    else:
        from dth_ray.runtime.inventory import read_manifest

        asyncio.run(read_manifest(inventory.source))
    destination = _in_region(destination, asyncio.run(probe(destination, "destination")))
    return source, destination
