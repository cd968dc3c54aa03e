"""Config schemas (registered in Hydra's ConfigStore) and their validation into clear one-line errors.

Memory bound per transfer actor (by construction): every GET and part holds bytes only after taking them
from a byte budget of `transfer.buffer_size`, so peak payload memory ≈ actors × buffer_size, plus about
150 MB of interpreter/Ray overhead per actor. A part or object larger than the budget waits until it has the
whole budget to itself. Defaults: 2 actors × 256 MiB on a 2-core machine.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from enum import Enum
from urllib.parse import urlsplit

from dth_ray.errors import ConfigError


class StoreType(str, Enum):
    s3 = "s3"
    oss = "oss"
    cos = "cos"
    kodo = "kodo"
    local = "local"


class Compare(str, Enum):
    size = "size"
    size_etag = "size_etag"
    size_mtime = "size_mtime"
    checksum = "checksum"


class ManifestType(str, Enum):
    sqlite = "sqlite"
    dynamodb = "dynamodb"


@dataclass
class StoreConfig:
    """Where data lives. `local` uses `path`; the others use bucket/endpoint/region/credentials."""

    type: StoreType = StoreType.s3
    bucket: str = ""
    prefix: str = ""
    endpoint: str = ""
    region: str = ""
    credentials: str = "default"
    path: str = ""
    addressing_style: str = "auto"
    requester_pays: bool = False
    insecure_http: bool = False
    internal: bool = False
    prefix_list: str = ""
    storage_class: str = ""
    acl: str = ""
    sse: str = ""
    sse_kms_key_id: str = ""
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0


@dataclass
class FilterConfig:
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)


@dataclass
class TransferConfig:
    """Sizes accept units: 8MiB, 64MB, 1GiB, or plain bytes."""

    multipart_threshold: str = "64MiB"
    part_size: str = "auto"
    parts_in_flight: int = 8
    concurrency: int = 64
    actors: int = 0
    buffer_size: str = "256MiB"
    max_bandwidth: str = "0"
    max_requests_per_s: float = 0.0
    max_attempts: int = 5
    progress_interval_s: float = 1.0
    server_side_copy: bool = True
    spread_threshold: str = "1GiB"


@dataclass
class ManifestConfig:
    """`sqlite` uses `path`; `dynamodb` uses table/region/endpoint/credentials (table created on demand)."""

    type: ManifestType = ManifestType.sqlite
    path: str = ""
    table: str = "dth-ray-manifest"
    region: str = ""
    endpoint: str = ""
    credentials: str = "default"
    insecure_http: bool = False
    flush_interval_s: float = 2.0


class VerifyMode(str, Enum):
    fast = "fast"
    full = "full"


@dataclass
class VerifyConfig:
    """`dth-ray verify`: `fast` trusts listings and copy-time records where they prove equality and reads
    both sides only where they cannot; `full` reads every byte. `strict` fails on extra destination objects."""

    mode: VerifyMode = VerifyMode.fast
    strict: bool = False


@dataclass
class PlanConfig:
    """`dth-ray plan`: throughput per node and prices (USD) for the pre-transfer estimate."""

    nodes: int = 1
    node_throughput: str = "1.25GB"  # bytes/s one node sustains (10 Gbit/s)
    node_objects_per_s: float = 2000.0
    egress_per_gb: float = 0.09  # source egress to the internet
    put_per_1000: float = 0.005  # S3 PUT/Create/Complete
    get_per_1000: float = 0.0004
    dynamodb_write_per_million: float = 1.25
    instance_per_hour: float = 2.0  # per node


@dataclass
class RuntimeConfig:
    address: str = "local"
    num_cpus: int = 0


@dataclass
class SyncConfig:
    source: StoreConfig = field(default_factory=StoreConfig)
    destination: StoreConfig = field(default_factory=StoreConfig)
    compare: Compare = Compare.size_etag
    dry_run: bool = False
    report: str = ""
    job: str = ""
    progress: str = "auto"
    log_level: str = "WARNING"
    filter: FilterConfig = field(default_factory=FilterConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)


_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$")


def parse_size(value: object, name: str) -> int:
    """Parse '64MiB', '8MB', '1024' into bytes. Raises ConfigError naming `name` and the value."""
    match = _SIZE_RE.match(str(value))
    unit = match.group(2).lower() if match else ""
    if not match or unit not in _UNITS:
        raise ConfigError(f"{name}={value!r} is not a size (examples: 8MiB, 64MB, 1GiB, 1048576)")
    return int(float(match.group(1)) * _UNITS[unit])


def is_loopback(host: str) -> bool:
    if host in ("localhost", "localhost.localdomain"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def validate_store(cfg: StoreConfig, role: str) -> None:
    """Check one store's settings; raises ConfigError naming the bad key."""
    if cfg.type == StoreType.local:
        if not cfg.path:
            raise ConfigError(f"{role}.path is required for {role}=local")
        return
    if not cfg.bucket:
        raise ConfigError(f"{role}.bucket is required for {role}={cfg.type.value}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", cfg.bucket):
        raise ConfigError(f"{role}.bucket={cfg.bucket!r} is not a valid bucket name")
    if cfg.endpoint:
        parts = urlsplit(cfg.endpoint if "://" in cfg.endpoint else "https://" + cfg.endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{role}.endpoint={cfg.endpoint!r} is not an http(s) URL")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError:
            raise ConfigError(f"{role}.endpoint={cfg.endpoint!r} has a malformed port") from None
        if parts.scheme == "http" and not cfg.insecure_http and not is_loopback(parts.hostname):
            raise ConfigError(
                f"{role}.endpoint={cfg.endpoint!r} is plain http; use https or set {role}.insecure_http=true"
            )
    if cfg.addressing_style not in ("auto", "path", "virtual"):
        raise ConfigError(f"{role}.addressing_style={cfg.addressing_style!r} must be auto, path or virtual")
    if cfg.sse not in ("", "AES256", "aws:kms"):
        raise ConfigError(f"{role}.sse={cfg.sse!r} must be AES256 or aws:kms")
    cred = cfg.credentials
    kinds = ("default", "anonymous")
    prefixed = ("env:", "secret:", "profile:")
    if cred not in kinds and not (cred.startswith(prefixed) and len(cred.split(":", 1)[1]) > 0):
        raise ConfigError(
            f"{role}.credentials={cred!r} must be default, anonymous, env:NAME, secret:ID or profile:NAME"
        )
    if cfg.connect_timeout_s <= 0 or cfg.read_timeout_s <= 0:
        raise ConfigError(f"{role} timeouts must be positive")


def validate(cfg: SyncConfig) -> None:
    """Check the whole sync config; raises ConfigError with a one-line message naming the bad value."""
    validate_store(cfg.source, "source")
    validate_store(cfg.destination, "destination")
    if cfg.destination.type not in (StoreType.s3, StoreType.local):
        raise ConfigError(f"destination={cfg.destination.type.value} is not supported (use s3 or local)")
    t = cfg.transfer
    threshold = parse_size(t.multipart_threshold, "transfer.multipart_threshold")
    if threshold < 5 * 1024 * 1024:
        raise ConfigError(f"transfer.multipart_threshold={t.multipart_threshold!r} must be at least 5MiB")
    if t.part_size != "auto":
        part = parse_size(t.part_size, "transfer.part_size")
        if not 5 * 1024**2 <= part <= 5 * 1024**3:
            raise ConfigError(f"transfer.part_size={t.part_size!r} must be between 5MiB and 5GiB")
    buffer = parse_size(t.buffer_size, "transfer.buffer_size")
    if buffer < 16 * 1024 * 1024:
        raise ConfigError(f"transfer.buffer_size={t.buffer_size!r} must be at least 16MiB")
    parse_size(t.max_bandwidth, "transfer.max_bandwidth")
    parse_size(t.spread_threshold, "transfer.spread_threshold")
    for name in ("parts_in_flight", "concurrency", "max_attempts"):
        if getattr(t, name) < 1:
            raise ConfigError(f"transfer.{name}={getattr(t, name)!r} must be at least 1")
    if t.actors < 0:
        raise ConfigError(f"transfer.actors={t.actors!r} must be 0 (auto) or more")
    if t.max_requests_per_s < 0:
        raise ConfigError(f"transfer.max_requests_per_s={t.max_requests_per_s!r} must be 0 (off) or more")
    if cfg.progress not in ("auto", "on", "off"):
        raise ConfigError(f"progress={cfg.progress!r} must be auto, on or off")
    addr = cfg.runtime.address
    if addr not in ("local", "auto") and not addr.startswith("ray://") and not re.fullmatch(r"[\w.-]+:\d+", addr):
        raise ConfigError(f"runtime.address={addr!r} must be local, auto, HOST:PORT or ray://HOST:PORT")


def register() -> None:
    """Register the schema with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="sync_schema", node=SyncConfig)
