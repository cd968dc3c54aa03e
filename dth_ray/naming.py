"""Credential-free names: a store location for reports, and the job a run belongs to."""

from __future__ import annotations

import hashlib
import os
import re

from dth_ray.config import StoreConfig, StoreType, SyncConfig

_NAME_PART_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_NAME_PART_MAX = 63  # a bucket name's limit; keeps a derived job name short enough to read


def describe(cfg: StoreConfig) -> str:
    """A credential-free name for a store location, e.g. s3://bucket/prefix or local:/path."""
    if cfg.type == StoreType.local:
        return f"local:{os.path.abspath(cfg.path)}/{cfg.prefix}"
    return f"{cfg.type.value}://{cfg.bucket}/{cfg.prefix}" + (f"@{cfg.endpoint}" if cfg.endpoint else "")


def _pairing(cfg: SyncConfig) -> str:
    return f"{describe(cfg.source)} -> {describe(cfg.destination)}"


def _readable(cfg: StoreConfig) -> str:
    """The part of a derived job name that says which store: its bucket, or a local store's folder name."""
    text = os.path.basename(os.path.abspath(cfg.path)) if cfg.type == StoreType.local else cfg.bucket
    text = _NAME_PART_CHARS.sub("-", text).strip("-.")[:_NAME_PART_MAX]
    return text or cfg.type.value


def job_name(cfg: SyncConfig) -> str:
    """The job a run belongs to: named by the user, or derived from source and destination as
    `<source bucket>-<destination bucket>-<6 hex>` (a local store contributes its folder's name; the hex tells
    apart pairings of the same buckets with other prefixes or endpoints)."""
    if cfg.job:
        return cfg.job
    digest = hashlib.sha256(_pairing(cfg).encode()).hexdigest()[:6]
    return f"{_readable(cfg.source)}-{_readable(cfg.destination)}-{digest}"


def legacy_job_name(cfg: SyncConfig) -> str:
    """The name earlier releases derived (`job-<12 hex>`), so a job they created is found again; '' for a job
    named by the user (its name never changed)."""
    if cfg.job:
        return ""
    return "job-" + hashlib.sha256(_pairing(cfg).encode()).hexdigest()[:12]
