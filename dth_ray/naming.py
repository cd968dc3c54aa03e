"""Credential-free names: a store location for reports, and the job a run belongs to."""

from __future__ import annotations

import hashlib
import os

from dth_ray.config import StoreConfig, StoreType, SyncConfig


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
