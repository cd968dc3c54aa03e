"""Where a store's keys live, as a comparable identity, so a destination that overlaps its source is refused up front."""

from __future__ import annotations

import os
from urllib.parse import urlsplit

from dth_ray.awsenv import endpoint_host, is_aws_host
from dth_ray.errors import ConfigError

_S3_FAMILY = ("s3", "cos", "kodo", "oss")


def _kind(store) -> str:
    return getattr(store.type, "value", store.type)


def _port(url: str) -> int | None:
    parts = urlsplit(url if "://" in url else "https://" + url)
    try:
        return parts.port or (80 if parts.scheme == "http" else 443)
    except ValueError:
        return None


def location(store) -> tuple[tuple, str, str] | None:
    """(key space, full prefix, the key that names it) of a store config: two configs address overlapping keys
    exactly when their spaces are equal and one full prefix starts with the other. None when unknown (a
    MaxCompute table). AWS bucket names are global within a partition, so every AWS endpoint and region of one
    partition is one space; other services are told apart by endpoint, else by their region. A local store's
    full prefix is its resolved directory plus its prefix."""
    kind = _kind(store)
    if kind == "local":
        return ("local",), os.path.realpath(store.path or ".").rstrip("/") + "/" + store.prefix, "path"
    if kind == "memory":
        return ("memory", store.bucket), store.prefix, "prefix"
    if kind not in _S3_FAMILY:
        return None
    host = endpoint_host(store.endpoint)
    if kind == "s3" and (not host or is_aws_host(host)):
        china = host.endswith(".cn") if host else store.region.startswith("cn-")
        return ("aws-cn" if china else "aws", store.bucket), store.prefix, "prefix"
    if host:
        return ("endpoint", host, _port(store.endpoint), store.bucket), store.prefix, "prefix"
    return (kind, store.region, store.bucket), store.prefix, "prefix"


def check_no_overlap(source, destination, deletes: bool = False) -> None:
    """Refuse a destination whose keys a rerun would list again as source keys: the same bucket (or directory)
    and prefix, or a destination inside the source prefix (each rerun would copy the last run's copies one
    level deeper). With `deletes` (sync.delete), also a destination around the source: the source's own
    objects would look like destination-only keys and be deleted. Raises ConfigError (one line)."""
    src, dst = location(source), location(destination)
    if src is None or dst is None or src[0] != dst[0]:
        return
    (_, src_prefix, src_key), (_, dst_prefix, dst_key) = src, dst
    if src_key == "path" and os.path.realpath(source.path) == os.path.realpath(destination.path):
        src_key = dst_key = "prefix"  # one directory: the prefixes are what differ
    names = (f"destination.{dst_key}={getattr(destination, dst_key)!r}",
             f"source.{src_key}={getattr(source, src_key)!r}")
    where = f" of bucket {source.bucket!r}" if src_key == "prefix" and source.bucket else ""
    if dst_prefix == src_prefix:
        raise ConfigError(f"{names[0]} and {names[1]} are the same location{where}: source and destination would "
                          "be the same objects (use another bucket or prefix)")
    if dst_prefix.startswith(src_prefix):
        raise ConfigError(f"{names[0]} is inside {names[1]}{where}: every run would copy the last run's copies one "
                          "level deeper (use a destination outside the source)")
    if deletes and src_prefix.startswith(dst_prefix):
        raise ConfigError(f"sync.delete=true with {names[0]} around {names[1]}{where} would delete the source's own "
                          "objects (use a destination outside the source)")

__all__ = ["check_no_overlap", "location"]
