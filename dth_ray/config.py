"""Config schemas (registered in Hydra's ConfigStore) and their validation into clear one-line errors.

These are the values as users write them (sizes and durations as text); dth_ray/settings.py resolves them
once into the frozen, typed values the rest of the package uses (and states the memory bound).
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
    memory = "memory"  # process-local, for tests and benchmarks (dth_ray/stores/memory.py); no conf/ preset
    maxcompute = "maxcompute"  # a table, read through pyodps; see MaxComputeConfig


class ChecksumMode(str, Enum):
    """Full-object CRC64NVME on an S3-family store (see config_keys.py, `checksum`)."""

    auto = "auto"
    crc64nvme = "crc64nvme"
    md5 = "md5"


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
    """Where data lives. `local` uses `path`; `memory` only `bucket`; the others use
    bucket/endpoint/region/credentials."""

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
    checksum: ChecksumMode = ChecksumMode.auto
    inventory: str = ""  # plan from this inventory's manifest.json (bucket://key on this store's service)
    inventory_credentials: str = ""  # reading the inventory; empty: `credentials`


@dataclass
class FilterConfig:
    include: list[str] = field(default_factory=list)
    exclude: list[str] = field(default_factory=list)


@dataclass
class TransferConfig:
    """Sizes accept units: 8MiB, 64MB, 1GiB, or plain bytes."""

    multipart_threshold: str = "200MiB"
    part_size: str = "auto"
    parts_in_flight: int = 8
    concurrency: int = 128
    actors: int = 0
    buffer_size: str = "160MiB"
    near_buffer_size: str = "24MiB"
    max_bandwidth: str = "0"
    max_requests_per_s: float = 0.0
    max_attempts: int = 5
    progress_interval_s: float = 1.0
    server_side_copy: bool = True
    spread_threshold: str = "1GiB"
    get_range_size: str = "auto"
    copy_cutoff: str = "5GiB"
    resume_parts: bool = True  # diagnostic: false sends every part of an interrupted upload again


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
    egress_per_gb_night: float = 0.0  # egress inside schedule.window, when the provider prices it lower (0: same)
    put_per_1000: float = 0.005  # S3 PUT/Create/Complete
    get_per_1000: float = 0.0004
    dynamodb_write_per_million: float = 1.25
    instance_per_hour: float = 2.0  # per node


@dataclass
class RuntimeConfig:
    address: str = "local"
    num_cpus: int = 0
    autoscale: str = "auto"  # auto: request transfer slots from the autoscaler unless address=local
    metrics_port: int = 0  # embedded Ray: Prometheus port of its metrics agent (0: Ray picks one)
    max_transfer_slots: int = 1024
    ray: str = "auto"  # embedded runs: auto (Ray only when the backlog says it pays) or always
    ray_pays_after_s: float = 30.0  # auto: start Ray when the driver alone would need longer than this


class MaxComputeMode(str, Enum):
    direct = "direct"
    unload = "unload"


@dataclass
class MaxComputeConfig:
    """`source=maxcompute`: export a MaxCompute table (`source.endpoint`, `source.region`, `source.credentials`
    reach the service) as Parquet under `destination.prefix`, one Hive-style folder per partition
    (`key=value/`) holding a `_SUCCESS` manifest written only once the partition is complete and checked.

    `direct` reads the table through the Tunnel in Arrow batches, `shard_rows` rows per shard spread over the
    export actors, and streams Parquet files of about `file_size` into S3 multipart uploads. Memory bound per
    export actor (by construction): ≈ `row_group_size` (Arrow batches buffered for one row group) +
    (`transfer.parts_in_flight` + 1) × part size (`transfer.part_size`, auto 16 MiB), plus the Parquet
    encoder's copy of one row group. `unload` runs `UNLOAD ... STORED AS PARQUET` into `oss` (RAM role
    `role_arn`, `unload_compression`) and syncs those files with the normal engine.
    """

    project: str = ""
    table: str = ""
    partitions: list[str] = field(default_factory=list)  # 'ds=2024-01-01/region=cn' or a prefix; [] = all
    tunnel_endpoint: str = ""  # default: the one the service routes to
    mode: MaxComputeMode = MaxComputeMode.direct
    file_size: str = "256MiB"
    row_group_size: str = "64MiB"
    compression: str = "zstd"  # direct: Parquet codec (zstd, snappy, gzip, lz4, brotli, none)
    coerce_timestamps: str = ""  # direct: '' keeps DATETIME ms / TIMESTAMP ns; 'us' or 'ms' (never truncates)
    shard_rows: int = 1_000_000
    role_arn: str = ""  # unload: acs:ram::<uid>:role/<role> that MaxCompute assumes to write OSS
    unload_compression: str = "SNAPPY"  # unload: SNAPPY, LZO, GZIP, ZSTD or NONE
    oss: StoreConfig = field(default_factory=lambda: StoreConfig(type=StoreType.oss))  # unload: staging
    oss_location_endpoint: str = ""  # unload: host in LOCATION; default oss-<region>-internal.aliyuncs.com
    instance_timeout_s: float = 6 * 3600.0


class EventsType(str, Enum):
    none = "none"
    sqs = "sqs"


@dataclass
class ScheduleConfig:
    """`dth-ray watch`: when the scheduled batch sync (the repair scan) runs. `interval` (`30m`, `1h`, `none`)
    or a 5-field `cron` (UTC; overrides interval). A tick is skipped while the previous scan runs; event-driven
    transfers in flight defer it by at most `max_defer`. `on_start` also scans once at start."""

    interval: str = "1h"
    cron: str = ""
    max_defer: str = "10m"
    on_start: bool = False
    window: str = ""  # HH:MM-HH:MM: batch transfer only inside it, daily (sync pauses at its end, exit 75)
    timezone: str = "UTC"  # of `window` (an IANA name, e.g. Asia/Shanghai)


@dataclass
class EventsConfig:
    """`dth-ray watch` event source (`events=sqs`) and `dth-ray events setup`. Memory bound: at most
    `max_held` received messages (and their events) are held at a time; receiving pauses beyond that."""

    type: EventsType = EventsType.none
    queue_url: str = ""
    queue_name: str = ""  # `events setup`: default from queue_url
    region: str = ""
    endpoint: str = ""
    credentials: str = "default"
    insecure_http: bool = False
    deletes: bool = True  # ObjectRemoved events (and created events whose source is gone) delete at the destination
    wait_s: int = 20  # long polling
    visibility_timeout_s: int = 300  # extended while work runs
    max_receives: int = 5  # a message received more often than this is poison
    dead_letter_queue_url: str = ""  # poison goes here; empty: the queue's redrive policy (if any) moves it
    receivers: int = 2  # receiving threads
    max_held: int = 2000
    batch_keys: int = 64  # keys per call to a transfer actor
    actors: int = 0  # transfer actors for events; 0 = as for transfer.actors
    shutdown_timeout_s: float = 30.0  # SIGTERM: how long in-flight transfers may finish
    report_interval_s: float = 10.0  # metrics log line and `report` file
    max_delete: int = 1000  # deletes (ObjectRemoved, or a source found gone) per window; more are skipped
    max_delete_window: str = "1h"  # sliding; skipped deletes are left to a scan with sync.delete=true
    outside_window: bool = True  # events are acted on outside schedule.window too (false: only inside it)
    source_account: str = ""  # `events setup`: the S3 source bucket's account (aws:SourceAccount); "" = queue's


@dataclass
class SyncDeleteConfig:
    """`sync.delete=true`: a batch run deletes destination objects under destination.prefix that the source
    no longer has. `max_delete`: a count (`100`) or percent of the destination objects seen (`10%`); more
    candidates than that → nothing is deleted and the run fails with a clear error. Empty: no limit.
    Deletes (these and `watch`'s) stay inside destination.prefix as a folder: a prefix not ending in '/' is
    refused unless `delete_prefix_as_is` accepts it as a plain string (sibling keys such as `backup-2023/`
    of `backup` are then in scope)."""

    delete: bool = False
    max_delete: str = ""
    delete_prefix_as_is: bool = False  # accept a destination.prefix without a trailing '/' as a plain string


class LogFormat(str, Enum):
    text = "text"
    json = "json"


@dataclass
class MetricsConfig:
    """CloudWatch metrics (`cloudwatch=true`, dth_ray/ops/cloudwatch.py): the run's counters published every
    `interval_s` — per-interval sums of CompletedBytes, TransferredObjects, SkippedObjects, FailedObjects and
    gauges PendingObjects, PendingBytes, WorkerCount — with dimension Job, in batched PutMetricData calls; the
    sums over a run equal the report. `dth-ray dashboard create` builds the matching dashboard."""

    cloudwatch: bool = False
    namespace: str = "DTH-Ray"
    region: str = ""  # default: AWS_REGION, else us-east-1
    endpoint: str = ""
    credentials: str = "default"
    insecure_http: bool = False
    interval_s: float = 60.0


@dataclass
class AlertsConfig:
    """SNS alarms (dth_ray/ops/alerts.py): one message per finished run to `sns_topic_arn` when it failed
    (objects that exhausted their retries, or shard errors), and when it succeeded if `on_success`.
    `dth-ray alerts setup alerts.email=ADDR` creates topic `topic_name` with an email subscription."""

    sns_topic_arn: str = ""
    region: str = ""  # default: the topic ARN's region
    endpoint: str = ""
    credentials: str = "default"
    insecure_http: bool = False
    on_success: bool = True
    email: str = ""  # `alerts setup`
    topic_name: str = "dth-ray-alerts"  # `alerts setup`


@dataclass
class LogConfig:
    """`format=json`: one JSON object per log line (dth_ray/ops/logs.py); `text`: plain lines."""

    format: LogFormat = LogFormat.text


@dataclass
class ConsoleConfig:
    """`dth-ray console` (dth_ray/console): a read-only web page of the manifest's jobs and runs, served on
    `host`:`port` (0: any free port). Any address but loopback needs `token` (a value of at least 16
    characters, or env:NAME to read it from the environment), sent as `Authorization: Bearer <token>` or once
    in the URL the command prints."""

    host: str = "127.0.0.1"
    port: int = 8266
    token: str = ""


@dataclass
class SyncConfig:
    source: StoreConfig = field(default_factory=StoreConfig)
    destination: StoreConfig = field(default_factory=StoreConfig)
    compare: Compare = Compare.size_etag
    dry_run: bool = False
    dry_run_list: str = ""  # with dry_run=true: write every key it would copy or delete here (JSON lines)
    inventory_staging: str = ""  # inventory planning: where the per-shard key files go (see InventorySettings)
    report_objects: str = ""  # per-object completion report: a folder path or s3://bucket/prefix
    report_objects_format: str = "auto"  # auto (by the location's extension), csv or parquet
    resume: bool = True  # false: start a new run even when the job's latest run can be resumed
    report: str = ""
    job: str = ""
    progress: str = "auto"  # auto (a live bar on a terminal, stats lines otherwise), bar, lines, none; on/off
    progress_interval: str = "10s"  # stats lines: how often
    log_level: str = "WARNING"
    filter: FilterConfig = field(default_factory=FilterConfig)
    transfer: TransferConfig = field(default_factory=TransferConfig)
    manifest: ManifestConfig = field(default_factory=ManifestConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)
    verify: VerifyConfig = field(default_factory=VerifyConfig)
    plan: PlanConfig = field(default_factory=PlanConfig)
    sync: SyncDeleteConfig = field(default_factory=SyncDeleteConfig)  # batch-run delete propagation
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)  # dth-ray watch
    events: EventsConfig = field(default_factory=EventsConfig)  # dth-ray watch, events setup
    maxcompute: MaxComputeConfig = field(default_factory=MaxComputeConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)  # CloudWatch (dth_ray/ops)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)  # SNS alarms (dth_ray/ops)
    log: LogConfig = field(default_factory=LogConfig)  # log.format (dth_ray/ops/logs.py)
    console: ConsoleConfig = field(default_factory=ConsoleConfig)  # dth-ray console (dth_ray/console)


PROGRESS_MODES = ("auto", "bar", "lines", "none", "on", "off")  # on/off: the old names of bar/none

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
    s3_family = (StoreType.s3, StoreType.cos, StoreType.kodo)
    if ChecksumMode(getattr(cfg, "checksum", ChecksumMode.auto)) is not ChecksumMode.auto \
            and cfg.type not in s3_family:
        raise ConfigError(f"{role}.checksum={ChecksumMode(cfg.checksum).value} applies to S3-family stores "
                          f"(s3, cos, kodo), not {role}={cfg.type.value}")
    if cfg.type == StoreType.local:
        if not cfg.path:
            raise ConfigError(f"{role}.path is required for {role}=local")
        return
    if not cfg.bucket and cfg.type != StoreType.maxcompute:
        raise ConfigError(f"{role}.bucket is required for {role}={cfg.type.value}")
    if cfg.bucket and not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", cfg.bucket):
        raise ConfigError(f"{role}.bucket={cfg.bucket!r} is not a valid bucket name")
    if cfg.type == StoreType.memory:
        return  # a bucket name is all it needs: no endpoint, credentials or network settings
    if cfg.endpoint:
        parts = urlsplit(cfg.endpoint if "://" in cfg.endpoint else "https://" + cfg.endpoint)
        if "@" in parts.netloc:  # first: the messages below echo the endpoint, and it would show the password
            shown = cfg.endpoint.replace(parts.netloc, "***@" + parts.netloc.rpartition("@")[2], 1)
            raise ConfigError(f"{role}.endpoint={shown!r} must not carry user info (user:password@): keys go in "
                              f"a credentials spec (env:NAME, secret:ID, ...), never in the URL")
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
    cred = cfg.credentials
    kinds = ("default", "anonymous")
    prefixed = ("env:", "secret:", "profile:", "role:")
    if cred not in kinds and not (cred.startswith(prefixed) and len(cred.split(":", 1)[1]) > 0):
        raise ConfigError(
            f"{role}.credentials={cred!r} must be default, anonymous, env:NAME, secret:ID, profile:NAME or role:ARN"
        )
    if cred.startswith("role:") and not re.fullmatch(r"arn:aws[\w-]*:iam::\d{12}:role/[\w+=,.@/-]+", cred[5:]):
        raise ConfigError(f"{role}.credentials={cred!r}: role:ARN needs an IAM role ARN (arn:aws:iam::ACCOUNT:role/NAME)")
    if cfg.connect_timeout_s <= 0 or cfg.read_timeout_s <= 0:
        raise ConfigError(f"{role} timeouts must be positive")


def validate(cfg: SyncConfig) -> None:
    """Check the whole sync config; raises ConfigError with a one-line message naming the bad value."""
    validate_store(cfg.source, "source")
    validate_store(cfg.destination, "destination")
    if cfg.source.type == StoreType.maxcompute:
        validate_maxcompute(cfg)
    if cfg.destination.type not in (StoreType.s3, StoreType.local, StoreType.memory):
        raise ConfigError(f"destination={cfg.destination.type.value} is not supported (use s3 or local)")
    t = cfg.transfer
    for name in ("parts_in_flight", "concurrency", "max_attempts"):
        if getattr(t, name) < 1:
            raise ConfigError(f"transfer.{name}={getattr(t, name)!r} must be at least 1")
    if cfg.runtime.autoscale not in ("auto", "on", "off"):
        raise ConfigError(f"runtime.autoscale={cfg.runtime.autoscale!r} must be auto, on or off")
    if cfg.runtime.ray not in ("auto", "always"):
        raise ConfigError(f"runtime.ray={cfg.runtime.ray!r} must be auto or always")
    if cfg.runtime.ray_pays_after_s <= 0:
        raise ConfigError(f"runtime.ray_pays_after_s={cfg.runtime.ray_pays_after_s!r} must be positive")
    if cfg.runtime.max_transfer_slots < 1:
        raise ConfigError(f"runtime.max_transfer_slots={cfg.runtime.max_transfer_slots!r} must be at least 1")
    if t.actors < 0:
        raise ConfigError(f"transfer.actors={t.actors!r} must be 0 (auto) or more")
    if t.max_requests_per_s < 0:
        raise ConfigError(f"transfer.max_requests_per_s={t.max_requests_per_s!r} must be 0 (off) or more")
    validate_transfer_sizes(cfg)
    if cfg.progress not in PROGRESS_MODES:
        raise ConfigError(f"progress={cfg.progress!r} must be one of {', '.join(PROGRESS_MODES)}")
    if parse_duration(cfg.progress_interval, "progress_interval") <= 0:
        raise ConfigError(f"progress_interval={cfg.progress_interval!r} must be positive")
    if cfg.dry_run_list and not cfg.dry_run:
        raise ConfigError(f"dry_run_list={cfg.dry_run_list!r} needs dry_run=true (it lists what a dry run would do)")
    addr = cfg.runtime.address
    if addr not in ("local", "auto") and not addr.startswith("ray://") and not re.fullmatch(r"[\w.-]+:\d+", addr):
        raise ConfigError(f"runtime.address={addr!r} must be local, auto, HOST:PORT or ray://HOST:PORT")
    m = cfg.manifest
    if m.endpoint or m.credentials != "default":
        validate_store(StoreConfig(bucket="manifest", endpoint=m.endpoint, insecure_http=m.insecure_http,
                                   credentials=m.credentials), "manifest")
    validate_sync_settings(cfg)
    check_delete_scope(cfg)
    validate_ops(cfg)
    validate_inventory(cfg)
    validate_report_objects(cfg)


LOCATION_SCHEMES = ("s3", "oss", "cos", "kodo", "memory")
REPORT_FORMATS = ("auto", "csv", "parquet")


def split_location(url: str, name: str) -> tuple[str, str]:
    """(bucket, key) of `scheme://bucket/key` (a scheme of LOCATION_SCHEMES), or ('', path) for a local path.
    Raises ConfigError naming `name`."""
    if "://" not in url:
        if not url.strip():
            raise ConfigError(f"{name} is empty")
        return "", url
    scheme, _, rest = url.partition("://")
    bucket, _, key = rest.partition("/")
    if scheme.lower() not in LOCATION_SCHEMES or not bucket:
        raise ConfigError(f"{name}={url!r} must be a folder path or {'|'.join(LOCATION_SCHEMES)}://BUCKET/KEY")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{1,254}", bucket):
        raise ConfigError(f"{name}={url!r}: {bucket!r} is not a valid bucket name")
    return bucket, key


def _check_credentials(spec: str, name: str) -> None:
    if spec:
        validate_store(StoreConfig(bucket="inventory", credentials=spec), name)


def validate_inventory(cfg: SyncConfig) -> None:
    """Check `source.inventory`, `destination.inventory` and `inventory_staging`; raises ConfigError."""
    src, dst = cfg.source, cfg.destination
    for role, store in (("source", src), ("destination", dst)):
        _check_credentials(store.inventory_credentials, f"{role}.inventory_credentials")
        if not store.inventory:
            continue
        bucket, key = split_location(store.inventory, f"{role}.inventory")
        if not bucket or not key or key.endswith("/"):
            raise ConfigError(f"{role}.inventory={store.inventory!r} must name the inventory's manifest.json "
                              "as SCHEME://BUCKET/KEY (e.g. s3://inventory-bucket/src/config/2026-01-01T00-00Z/"
                              "manifest.json)")
        if store.type in (StoreType.local, StoreType.maxcompute):
            raise ConfigError(f"{role}.inventory needs a bucket store, not {role}={store.type.value}")
    if dst.inventory and not src.inventory:
        raise ConfigError("destination.inventory needs source.inventory (the destination's inventory only "
                          "replaces its listing in shards planned from the source's inventory)")
    if src.inventory and src.prefix_list:
        raise ConfigError("source.inventory and source.prefix_list exclude each other: the inventory plans the "
                          "shards")
    if cfg.inventory_staging:
        if not src.inventory:
            raise ConfigError("inventory_staging needs source.inventory")
        split_location(cfg.inventory_staging, "inventory_staging")


def validate_report_objects(cfg: SyncConfig) -> None:
    """Check `report_objects` and `report_objects_format`; raises ConfigError."""
    if cfg.report_objects_format not in REPORT_FORMATS:
        raise ConfigError(f"report_objects_format={cfg.report_objects_format!r} must be one of "
                          f"{', '.join(REPORT_FORMATS)}")
    if not cfg.report_objects:
        return
    if cfg.dry_run:
        raise ConfigError("report_objects needs a real run (dry_run_list=PATH lists what a dry run would do)")
    bucket, prefix = split_location(cfg.report_objects, "report_objects")
    dst = cfg.destination
    if bucket and dst.type == StoreType.local:
        raise ConfigError(f"report_objects={cfg.report_objects!r}: with destination=local give a folder path")
    if bucket and bucket == dst.bucket and (prefix.startswith(dst.prefix) or dst.prefix.startswith(prefix)):
        raise ConfigError(f"report_objects={cfg.report_objects!r} lies inside the destination's scope "
                          f"(destination.prefix={dst.prefix!r}): its parts would be synced against; choose a "
                          "prefix outside it")


def validate_transfer_sizes(cfg: SyncConfig) -> None:
    """The ranges of `transfer.*` sizes; raises ConfigError naming the bad key."""
    t = cfg.transfer
    if parse_size(t.multipart_threshold, "transfer.multipart_threshold") < 5 * 1024 * 1024:
        raise ConfigError(f"transfer.multipart_threshold={t.multipart_threshold!r} must be at least 5MiB")
    if t.part_size != "auto" and not 5 * 1024**2 <= parse_size(t.part_size, "transfer.part_size") <= 5 * 1024**3:
        raise ConfigError(f"transfer.part_size={t.part_size!r} must be between 5MiB and 5GiB")
    if parse_size(t.buffer_size, "transfer.buffer_size") < 16 * 1024 * 1024:
        raise ConfigError(f"transfer.buffer_size={t.buffer_size!r} must be at least 16MiB")
    if 0 < parse_size(t.near_buffer_size, "transfer.near_buffer_size") < 16 * 1024 * 1024:
        raise ConfigError(f"transfer.near_buffer_size={t.near_buffer_size!r} must be 0 or at least 16MiB")
    parse_size(t.max_bandwidth, "transfer.max_bandwidth")
    parse_size(t.spread_threshold, "transfer.spread_threshold")
    if not 5 * 1024**2 <= parse_size(t.copy_cutoff, "transfer.copy_cutoff") <= 5 * 1024**3:
        raise ConfigError(f"transfer.copy_cutoff={t.copy_cutoff!r} must be between 5MiB and 5GiB")
    if t.get_range_size != "auto" and parse_size(t.get_range_size, "transfer.get_range_size") < 256 * 1024:
        raise ConfigError(f"transfer.get_range_size={t.get_range_size!r} must be auto or at least 256KiB")


_PARQUET_CODECS = ("zstd", "snappy", "gzip", "lz4", "brotli", "none")
_UNLOAD_CODECS = ("SNAPPY", "LZO", "GZIP", "ZSTD", "NONE")


def validate_maxcompute(cfg: SyncConfig) -> None:
    """Check `maxcompute.*` for `source=maxcompute`; raises ConfigError naming the bad key."""
    mc = cfg.maxcompute
    for name in ("project", "table"):
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]{0,127}", getattr(mc, name)):
            raise ConfigError(f"maxcompute.{name}={getattr(mc, name)!r} must be a MaxCompute name (letters, digits, _)")
    if not cfg.source.endpoint and not cfg.source.region:
        raise ConfigError("source=maxcompute needs source.endpoint or source.region")
    for spec in mc.partitions:
        if not re.fullmatch(r"\s*[A-Za-z_]\w*\s*=[^,/]*([,/]\s*[A-Za-z_]\w*\s*=[^,/]*)*", spec):
            raise ConfigError(f"maxcompute.partitions entry {spec!r} must look like key=value[/key2=value2]")
    if mc.tunnel_endpoint:
        validate_store(StoreConfig(type=StoreType.maxcompute, endpoint=mc.tunnel_endpoint,
                                   insecure_http=cfg.source.insecure_http), "maxcompute.tunnel_endpoint")
    if cfg.destination.type not in (StoreType.s3,):
        raise ConfigError("source=maxcompute writes to destination=s3 only")
    if not cfg.destination.prefix.endswith("/"):
        raise ConfigError(f"destination.prefix={cfg.destination.prefix!r} must be the table's folder, ending in "
                          "'/' (e.g. lake/orders/): its partition folders are managed by the export")
    for name in ("file_size", "row_group_size"):
        if parse_size(getattr(mc, name), f"maxcompute.{name}") < 1:
            raise ConfigError(f"maxcompute.{name}={getattr(mc, name)!r} must be positive")
    if mc.compression.lower() not in _PARQUET_CODECS:
        raise ConfigError(f"maxcompute.compression={mc.compression!r} must be one of {', '.join(_PARQUET_CODECS)}")
    if mc.coerce_timestamps not in ("", "ms", "us"):
        raise ConfigError(f"maxcompute.coerce_timestamps={mc.coerce_timestamps!r} must be '', ms or us")
    if mc.shard_rows < 1:
        raise ConfigError(f"maxcompute.shard_rows={mc.shard_rows!r} must be at least 1")
    if mc.instance_timeout_s <= 0:
        raise ConfigError(f"maxcompute.instance_timeout_s={mc.instance_timeout_s!r} must be positive")
    if mc.mode == MaxComputeMode.unload:
        if not re.fullmatch(r"acs:ram::\d+:role/[\w.@-]+", mc.role_arn):
            raise ConfigError(f"maxcompute.role_arn={mc.role_arn!r} must look like acs:ram::<uid>:role/<name>")
        if mc.unload_compression.upper() not in _UNLOAD_CODECS:
            raise ConfigError(f"maxcompute.unload_compression={mc.unload_compression!r} must be one of "
                              f"{', '.join(_UNLOAD_CODECS)}")
        if mc.oss.type != StoreType.oss:
            raise ConfigError("maxcompute.oss.type must be oss")
        validate_store(mc.oss, "maxcompute.oss")
        if not mc.oss.prefix.endswith("/"):
            raise ConfigError(f"maxcompute.oss.prefix={mc.oss.prefix!r} must be a staging folder ending in '/' "
                              "(UNLOAD appends, so the export empties a partition's folder before unloading it)")
        if mc.oss_location_endpoint and not re.fullmatch(r"[A-Za-z0-9.-]+(:\d+)?", mc.oss_location_endpoint):
            raise ConfigError(f"maxcompute.oss_location_endpoint={mc.oss_location_endpoint!r} must be a host name")


_DURATION_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|)\s*$")
_DURATION_UNITS = {"ms": 0.001, "": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, name: str) -> float:
    """Parse '90s', '10m', '1h', '2d', '1h30m' or plain seconds into seconds. Raises ConfigError naming `name`."""
    text = str(value).strip().lower()
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)", text)
    if parts and re.fullmatch(r"(?:\s*\d+(?:\.\d+)?\s*(?:ms|s|m|h|d))+\s*", text):
        return sum(float(number) * _DURATION_UNITS[unit] for number, unit in parts)
    match = _DURATION_RE.match(text)
    if not match:
        raise ConfigError(f"{name}={value!r} is not a duration (examples: 90s, 10m, 1h, 1d)")
    return float(match.group(1)) * _DURATION_UNITS[match.group(2)]


def parse_max_delete(value: str) -> tuple[int | None, float | None]:
    """`sync.max_delete` as (count, percent); (None, None) when empty (no limit). Raises ConfigError."""
    text = str(value).strip()
    if not text:
        return None, None
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*%", text)
    if match:
        percent = float(match.group(1))
        if percent > 100:
            raise ConfigError(f"sync.max_delete={value!r} must be at most 100%")
        return None, percent
    if not text.isdigit():
        raise ConfigError(f"sync.max_delete={value!r} must be a count (100) or a percent (10%)")
    return int(text), None


def validate_sync_settings(cfg: SyncConfig) -> None:
    """Check `sync.*` and `events.*`; raises ConfigError naming the bad key. (`schedule.*` durations are
    resolved by dth_ray/settings.py; the cron syntax and events=sqs's queue are checked by `dth-ray watch`, the
    only command that uses them.)"""
    parse_max_delete(cfg.sync.max_delete)
    e = cfg.events
    if e.endpoint:
        validate_store(StoreConfig(bucket="events", endpoint=e.endpoint, insecure_http=e.insecure_http,
                                   credentials=e.credentials), "events")
    elif e.credentials != "default":
        validate_store(StoreConfig(bucket="events", credentials=e.credentials), "events")
    if e.queue_url and not re.match(r"https?://[^/]+/.+", e.queue_url):
        raise ConfigError(f"events.queue_url={e.queue_url!r} is not an SQS queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
    if e.queue_name and not re.fullmatch(r"[A-Za-z0-9_-]{1,80}", e.queue_name):
        raise ConfigError(f"events.queue_name={e.queue_name!r} must be 1-80 of A-Z a-z 0-9 _ -")
    if not 0 <= e.wait_s <= 20:
        raise ConfigError(f"events.wait_s={e.wait_s!r} must be between 0 and 20")
    if not 10 <= e.visibility_timeout_s <= 43200:
        raise ConfigError(f"events.visibility_timeout_s={e.visibility_timeout_s!r} must be between 10 and 43200")
    for name in ("max_receives", "receivers", "max_held", "batch_keys"):
        if getattr(e, name) < 1:
            raise ConfigError(f"events.{name}={getattr(e, name)!r} must be at least 1")
    if e.actors < 0:
        raise ConfigError(f"events.actors={e.actors!r} must be 0 (auto) or more")
    if e.shutdown_timeout_s < 0 or e.report_interval_s <= 0:
        raise ConfigError("events.shutdown_timeout_s must be >= 0 and events.report_interval_s > 0")
    if e.max_delete < 1:
        raise ConfigError(f"events.max_delete={e.max_delete!r} must be at least 1 (events.deletes=false "
                          "turns event deletes off)")
    if parse_duration(e.max_delete_window, "events.max_delete_window") < 1:
        raise ConfigError(f"events.max_delete_window={e.max_delete_window!r} must be at least 1s")


def check_delete_scope(cfg: SyncConfig, events_deletes: bool = False) -> None:
    """Deletes only remove keys under destination.prefix treated as a folder: with `sync.delete` (or
    `events_deletes`, for `watch` with events=sqs), a non-empty prefix that does not end in '/' would reach
    sibling keys ('backup' → 'backup-2023/...'), so it is refused unless `sync.delete_prefix_as_is`.
    The empty prefix (the whole bucket) is allowed. Raises ConfigError."""
    prefix = cfg.destination.prefix
    if not prefix or prefix.endswith("/") or cfg.sync.delete_prefix_as_is:
        return
    which = "sync.delete=true" if cfg.sync.delete else "events.deletes=true" if events_deletes else ""
    if which:
        raise ConfigError(f"destination.prefix={prefix!r} does not end in '/': with {which} deletes would "
                          f"also reach sibling keys such as {prefix + '-old/x'!r}; use "
                          f"destination.prefix={prefix}/ or set sync.delete_prefix_as_is=true to delete "
                          "under it as a plain string")


_LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")


def validate_ops(cfg: SyncConfig) -> None:
    """Check `metrics.*`, `alerts.*`, `log.*` and `log_level`; raises ConfigError naming the bad key."""
    if str(cfg.log_level).upper() not in _LOG_LEVELS:
        raise ConfigError(f"log_level={cfg.log_level!r} must be one of {', '.join(_LOG_LEVELS)}")
    for name, section in (("metrics", cfg.metrics), ("alerts", cfg.alerts)):
        if section.endpoint or section.credentials != "default":
            validate_store(StoreConfig(bucket=name, endpoint=section.endpoint, insecure_http=section.insecure_http,
                                       credentials=section.credentials), name)
        if section.credentials == "anonymous":
            raise ConfigError(f"{name}.credentials=anonymous cannot sign {name} requests")
        if section.region and not _REGION_RE.fullmatch(section.region):
            raise ConfigError(f"{name}.region={section.region!r} is not an AWS region (e.g. us-west-2)")
    m = cfg.metrics
    if not re.fullmatch(r"[A-Za-z0-9._/#-][A-Za-z0-9._/#:-]{0,254}", m.namespace) or m.namespace.startswith("AWS/"):
        raise ConfigError(f"metrics.namespace={m.namespace!r} must be 1-255 of A-Z a-z 0-9 . _ - / # : and not AWS/...")
    if not 1 <= m.interval_s <= 3600:
        raise ConfigError(f"metrics.interval_s={m.interval_s!r} must be between 1 and 3600")
    a = cfg.alerts
    if a.sns_topic_arn and not re.fullmatch(r"arn:aws[\w-]*:sns:[a-z0-9-]+:\d{12}:[\w.-]{1,256}", a.sns_topic_arn):
        raise ConfigError(f"alerts.sns_topic_arn={a.sns_topic_arn!r} is not an SNS topic ARN "
                          "(arn:aws:sns:REGION:ACCOUNT:NAME)")
    if a.email and not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", a.email):
        raise ConfigError(f"alerts.email={a.email!r} is not an email address")
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,256}", a.topic_name):
        raise ConfigError(f"alerts.topic_name={a.topic_name!r} must be 1-256 of A-Z a-z 0-9 _ -")


def register() -> None:
    """Register the schema with Hydra's ConfigStore (idempotent)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="sync_schema", node=SyncConfig)
