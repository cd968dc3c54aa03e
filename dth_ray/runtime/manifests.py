"""The configured manifest backend (SQLite or DynamoDB): built in this process, or its class and arguments
for an actor. Apart from dth_ray/runtime/manifest.py so the backends and their protocol import no circle."""

from __future__ import annotations

from dth_ray.config import ManifestType
from dth_ray.runtime.manifest import Manifest
from dth_ray.runtime.manifest_dynamodb import DynamoManifest
from dth_ray.runtime.manifest_sqlite import SqliteManifest


def manifest_factory(cfg, job: str, run_id: int = 0, read_only: bool = False) -> tuple[type, tuple]:
    """The configured backend class and its constructor arguments (cfg is a ManifestConfig), so the driver
    can build it in-process or as an actor with `ray.remote(cls).remote(*args)`."""
    if ManifestType(cfg.type) is ManifestType.dynamodb:
        return DynamoManifest, (cfg, job, run_id, read_only)
    return SqliteManifest, (cfg.path, job, run_id, read_only)


def open_manifest(cfg, job: str, run_id: int = 0, read_only: bool = False) -> Manifest:
    """The configured backend, in this process (`read_only`: as it is, never created or migrated, for
    `dth-ray console`). Raises ConfigError for a bad setting."""
    cls, args = manifest_factory(cfg, job, run_id, read_only)
    return cls(*args)
