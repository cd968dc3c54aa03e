"""The configured manifest backend (SQLite or DynamoDB): built in this process, or its class and arguments
for an actor. Apart from dth_ray/runtime/manifest.py so the backends and their protocol import no circle."""

from __future__ import annotations

from dth_ray.config import ManifestType
from dth_ray.runtime.manifest import Manifest
from dth_ray.runtime.manifest_dynamodb import DynamoManifest
from dth_ray.runtime.manifest_sqlite import SqliteManifest


def manifest_factory(cfg, job: str, run_id: int = 0) -> tuple[type, tuple]:
    """The configured backend class and its constructor arguments (cfg is a ManifestConfig), so the driver
    can build it in-process or as an actor with `ray.remote(cls).remote(*args)`."""
    if ManifestType(cfg.type) is ManifestType.dynamodb:
        return DynamoManifest, (cfg, job, run_id)
    return SqliteManifest, (cfg.path, job, run_id)


def open_manifest(cfg, job: str, run_id: int = 0) -> Manifest:
    """The configured backend, in this process. Raises ConfigError for a bad setting."""
    cls, args = manifest_factory(cfg, job, run_id)
    return cls(*args)
