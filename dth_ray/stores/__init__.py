"""Store registry: backend by type with lazy imports, so a missing SDK only matters when it is used."""

from __future__ import annotations

import importlib

from dth_ray.config import StoreConfig, StoreType
from dth_ray.errors import ConfigError
from dth_ray.stores.base import Store, StoreFeatures

_BACKENDS = {
    StoreType.s3: ("dth_ray.stores.s3", "S3Store", ""),
    StoreType.cos: ("dth_ray.stores.s3", "S3Store", ""),
    StoreType.kodo: ("dth_ray.stores.s3", "S3Store", ""),
    StoreType.oss: ("dth_ray.stores.oss", "OssStore", "oss2"),
    StoreType.local: ("dth_ray.stores.local", "LocalStore", ""),
    StoreType.memory: ("dth_ray.stores.memory", "MemoryStore", ""),
}


# Backends that resolve credentials, so their errors can name the side (`source.credentials=...`).
_SIGNED = {"S3Store"}


def open_store(cfg: StoreConfig, role: str = "") -> Store:
    """Build the backend for `cfg` (no network I/O yet; clients connect lazily inside the event loop). `role`
    (source, destination) names the side in its error messages."""
    try:
        module_name, class_name, sdk = _BACKENDS[StoreType(cfg.type)]
    except (KeyError, ValueError):
        raise ConfigError(f"type={cfg.type!r} is not a known store (s3, oss, cos, kodo, local, memory)") from None
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"store type {cfg.type.value} needs the {sdk or exc.name} package: pip install {sdk}") from exc
    backend = getattr(module, class_name)
    return backend(cfg, role=role) if role and class_name in _SIGNED else backend(cfg)


__all__ = ["Store", "StoreFeatures", "open_store"]
