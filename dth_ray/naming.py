"""Credential-free names: a store location for reports, and the job a run belongs to."""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import fields
from urllib.parse import urlsplit, urlunsplit

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


_GROUPS = {"source": ("s3", "oss", "cos", "kodo", "local", "maxcompute"), "destination": ("s3", "local")}
_SAFE_VALUE = re.compile(r"[\w.:/@+%~-]*")


def _hydra_value(value: object) -> str:
    """A Hydra override value: as is when plain, else single-quoted with escapes."""
    text = str(value).lower() if isinstance(value, bool) else str(value)
    if _SAFE_VALUE.fullmatch(text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _override(name: str, value: object) -> str:
    return f"{name}={_hydra_value(value)}"


def _without_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def store_overrides(cfg: SyncConfig) -> list[str]:
    """The overrides that name a job's stores, filters and comparison (Hydra `key=value`, credentials as
    their specs such as env:NAME or secret:ID, never a value; an endpoint without user info), so a console
    can print the job's sync, verify and status commands."""
    out = []
    defaults = StoreConfig()
    for role in ("source", "destination"):
        store = getattr(cfg, role)
        kind = store.type.value
        out.append(f"{role}={kind}" if kind in _GROUPS[role] else f"{role}.type={kind}")
        for f in fields(StoreConfig):
            value = getattr(store, f.name)
            if f.name == "type" or value == getattr(defaults, f.name):
                continue
            if f.name == "endpoint":
                value = _without_userinfo(str(value))
            out.append(_override(f"{role}.{f.name}", value))
    for name in ("include", "exclude"):
        patterns = list(getattr(cfg.filter, name) or ())
        if patterns:
            out.append(f"filter.{name}=[" + ",".join(_hydra_value(p) for p in patterns) + "]")
    if cfg.compare != SyncConfig.compare:
        out.append(f"compare={cfg.compare.value}")
    return out
