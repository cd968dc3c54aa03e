"""Preflight: one listing call per store, so bad buckets, credentials and endpoints fail before anything runs."""

from __future__ import annotations

import asyncio
import os

from dth_ray.config import StoreType
from dth_ray.engine.retry import retry
from dth_ray.errors import ConfigError, DthError, NotFound, PermissionDenied
from dth_ray.settings import StoreSpec
from dth_ray.stores import open_store

PREFLIGHT_TIMEOUT_S = 25.0
_ATTEMPTS = 3  # a dropped connection or a 5xx is tried again (within the timeout); a refusal is not


async def probe(cfg: StoreSpec, role: str) -> None:
    """List one key of the store. Raises ConfigError naming `role`'s bad setting."""
    store = open_store(cfg)
    try:
        if cfg.type == StoreType.local and role == "source" and not os.path.isdir(cfg.path):
            raise ConfigError(f"{role}.path={cfg.path!r} is not a directory")
        if cfg.type == StoreType.local and role == "destination":
            return
        await asyncio.wait_for(retry(lambda: store.list_page(cfg.prefix, max_keys=1), _ATTEMPTS),
                               PREFLIGHT_TIMEOUT_S)
    except asyncio.TimeoutError:
        raise ConfigError(f"{role}.endpoint={cfg.endpoint or '(default)'!r} did not answer within "
                          f"{PREFLIGHT_TIMEOUT_S:.0f}s") from None
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


def check_stores(source: StoreSpec, destination: StoreSpec) -> None:
    """Probe both stores of a run (see probe)."""
    asyncio.run(probe(source, "source"))
    asyncio.run(probe(destination, "destination"))
