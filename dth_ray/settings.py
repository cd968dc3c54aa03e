"""Configuration resolved once into frozen, typed values (sizes in bytes, durations in seconds, filters compiled).

`dth_ray.config` holds the Hydra schemas (mutable dataclasses of strings, as users write them); `resolve()`
turns one into `Settings`, raising ConfigError with a one-line message naming the first bad value. The
driver, the scheduler and every actor receive these values; nothing after this point parses a size or builds
a filter. Store specs carry credential *specs* (`env:NAME`, `secret:ID`), never secret values: keys are read
where the stores run.

Memory bound per transfer worker (by construction): every GET and part holds bytes only after taking them
from a byte budget of `transfer.buffer_size` (small objects may pass a full budget by up to an eighth of it),
so peak payload memory ≈ workers × 9/8 × buffer_size, plus about 50-60 MB of interpreter/Ray per actor. While
Ray runs on the embedded cluster each worker holds `transfer.near_buffer_size` instead while the source is near.
"""

from __future__ import annotations

import dataclasses
import os
import sys
from dataclasses import dataclass, field

from dth_ray.awsenv import s3_conventions
from dth_ray.config import (
    ChecksumMode,
    Compare,
    ConsoleConfig,
    LogFormat,
    ManifestType,
    MaxComputeMode,
    ScheduleConfig,
    StoreType,
    SyncConfig,
    VerifyMode,
    is_loopback,
    parse_duration,
    parse_max_delete,
    parse_size,
    split_location,
    validate,
)
from dth_ray.errors import ConfigError
from dth_ray.keyfilter import KeyFilter
from dth_ray.locations import check_no_overlap
from dth_ray.naming import job_name, legacy_job_name
from dth_ray.stores.writeoptions import check_write_options
from dth_ray.window import Window, parse_window

DRY_RUN_SAMPLE = 10  # would-copy and would-delete objects a dry run's summary shows


@dataclass(frozen=True, slots=True)
class StoreSpec:
    """One store's settings (see StoreConfig for each field), frozen; credentials as a spec, never a value."""

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


@dataclass(frozen=True, slots=True)
class InventorySpec:
    """One side's inventory: the store holding its manifest.json (the side's service, with the inventory's
    credentials) and the manifest's key in it; `url` as the user wrote it."""

    store: StoreSpec
    manifest_key: str
    url: str


@dataclass(frozen=True, slots=True)
class InventorySettings:
    """`source.inventory` (and `destination.inventory`): plan from inventories, no source listing. Planning
    writes one file of sorted rows per shard under `staging_prefix` of `staging` (`inventory_staging`; empty:
    a `dth-ray/<job>/` folder beside the source's manifest.json), which every worker can read."""

    source: InventorySpec
    destination: InventorySpec | None
    staging: StoreSpec
    staging_prefix: str


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """`report_objects`: where the per-object completion report's parts go (a folder, or a bucket prefix on
    the destination's service with its credentials) and their format (csv or parquet)."""

    store: StoreSpec
    prefix: str
    format: str
    url: str


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """`transfer.*` in bytes and counts. `multipart_threshold_bytes` is already capped by the byte budget: an
    object larger than the budget goes up in parts, so one PUT never holds more than it."""

    multipart_threshold_bytes: int = 200 * 1024**2
    part_size_bytes: int | None = None  # None: chosen per object within the destination's limits
    parts_in_flight: int = 8
    concurrency: int = 128
    actors: int = 0
    buffer_bytes: int = 160 * 1024**2
    # Held instead while Ray runs on this machine's embedded cluster and the source is known to be near (0:
    # never; TransferWorker._fit_budget).
    near_buffer_bytes: int = 0
    max_bandwidth_bytes_per_s: int = 0
    max_requests_per_s: float = 0.0
    max_attempts: int = 5
    progress_interval_s: float = 1.0
    server_side_copy: bool = True
    spread_threshold_bytes: int = 1024**3
    get_range_bytes: int = 0  # 0: sized by the engine's ReadSizer
    copy_cutoff_bytes: int = 5 * 1024**3
    resume_parts: bool = True  # reuse the recorded parts of an interrupted upload (off: a diagnostic switch)


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """What every transfer worker receives (picklable; the only configuration that crosses actors)."""

    job: str
    source: StoreSpec
    destination: StoreSpec
    transfer: TransferSettings
    key_filter: KeyFilter
    compare: Compare = Compare.size_etag
    dry_run: bool = False
    dry_run_changes: int = 0  # dry run: would-copy/delete objects a shard's result carries (its sample, or all)
    note_extras: bool = False  # sync.delete: shards report the destination-only keys they meet
    staging: StoreSpec | None = None  # inventory planning: where the shards' staged rows are (Shard.listing)
    report: ReportSpec | None = None  # report_objects
    log_level: str = "WARNING"  # `log_level` and `log.format`, so actors log like the driver (redacted)
    log_format: str = "text"


@dataclass(frozen=True, slots=True)
class ManifestSpec:
    """`manifest.*`, frozen (see ManifestConfig)."""

    type: ManifestType = ManifestType.sqlite
    path: str = ""
    table: str = "dth-ray-manifest"
    region: str = ""
    endpoint: str = ""
    credentials: str = "default"
    insecure_http: bool = False
    flush_interval_s: float = 2.0


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """`runtime.*`: where Ray runs and how the pool grows."""

    address: str = "local"
    num_cpus: int = 0
    autoscale: str = "auto"
    metrics_port: int = 0
    max_transfer_slots: int = 1024
    ray: str = "auto"
    ray_pays_after_s: float = 30.0

    @property
    def embedded(self) -> bool:
        """The run starts its own Ray on this machine (and the driver copies too)."""
        return self.address == "local"

    @property
    def ray_on_demand(self) -> bool:
        """Embedded runs start Ray only when it pays (runtime.ray=auto), unless Ray's metrics agent was asked
        for (runtime.metrics_port)."""
        return self.embedded and self.ray == "auto" and not self.metrics_port


@dataclass(frozen=True, slots=True)
class DeleteSettings:
    """`sync.delete` and its rail `sync.max_delete` (a count, or a percent of the destination objects seen)."""

    enabled: bool = False
    max_count: int | None = None
    max_percent: float | None = None
    text: str = ""  # as the user wrote it, for messages
    prefix_as_is: bool = False  # sync.delete_prefix_as_is: destination.prefix is a plain string, not a folder

    def limit(self, destination_objects: int) -> int | None:
        if self.max_percent is not None:
            return int(destination_objects * self.max_percent / 100)
        return self.max_count


@dataclass(frozen=True, slots=True)
class PlanSettings:
    """`plan.*`: throughput per node and prices (USD) for the pre-transfer estimate."""

    nodes: int
    node_bytes_per_s: int
    node_objects_per_s: float
    egress_per_gb: float
    put_per_1000: float
    get_per_1000: float
    dynamodb_write_per_million: float
    instance_per_hour: float
    egress_per_gb_night: float = 0.0  # inside schedule.window (0: as egress_per_gb)


@dataclass(frozen=True, slots=True)
class ScheduleSettings:
    """`dth-ray watch`'s scheduled scan: every `interval_s` (None: off) or on `cron` (overrides the interval)."""

    interval_s: float | None = 3600.0
    cron: str = ""
    max_defer_s: float = 600.0
    on_start: bool = False
    window: Window | None = None  # batch transfer only inside it (sync and watch's scans)


@dataclass(frozen=True, slots=True)
class EventDeleteLimit:
    """`dth-ray watch`: at most `max_count` event-driven deletes in any `window_s` (events.max_delete per
    events.max_delete_window); `window` as the user wrote it, for messages."""

    max_count: int = 1000
    window_s: float = 3600.0
    window: str = "1h"


@dataclass(frozen=True, slots=True)
class ExportSettings:
    """`maxcompute.*` sizes for the direct export, in bytes."""

    file_bytes: int
    row_group_bytes: int
    part_size_bytes: int | None


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """`console.*`: where `dth-ray console` listens and the token it asks for ('' = none: loopback only)."""

    host: str = "127.0.0.1"
    port: int = 8266
    token: str = field(default="", repr=False)

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)


CONSOLE_TOKEN_MIN_CHARS = 16


def resolve_console(cfg: ConsoleConfig) -> ConsoleSettings:
    """`console.*` checked, the token read from the environment for env:NAME. Raises ConfigError (one line;
    it never repeats a token)."""
    host = str(cfg.host).strip()
    if not host or any(c.isspace() or c in "/@?#" for c in host):
        raise ConfigError(f"console.host={cfg.host!r} is not a host name or address")
    if not 0 <= int(cfg.port) <= 65535:
        raise ConfigError(f"console.port={cfg.port!r} must be between 0 (any free port) and 65535")
    spec = str(cfg.token or "")
    token = spec
    if spec.startswith("env:"):
        name = spec[4:]
        token = os.environ.get(name, "") if name else ""
        if not token:
            raise ConfigError(f"console.token={spec}: the environment variable {name or '(none)'} is not set")
    if token and len(token) < CONSOLE_TOKEN_MIN_CHARS:
        raise ConfigError(f"console.token must have at least {CONSOLE_TOKEN_MIN_CHARS} characters "
                          "(e.g. from `openssl rand -hex 16`)")
    if not token and not is_loopback(host):
        raise ConfigError(f"console.host={host} is not a loopback address: set console.token (or env:NAME) so "
                          "only those who hold it can read the console, or use port forwarding to 127.0.0.1")
    return ConsoleSettings(host, int(cfg.port), token)


@dataclass(frozen=True)
class Settings:
    """One command's resolved configuration. `config` is the schema it came from, for the parts that need no
    parsing (events, schedule, metrics, alerts, log, maxcompute names)."""

    config: SyncConfig
    worker: WorkerSettings
    manifest: ManifestSpec
    runtime: RuntimeSettings
    delete: DeleteSettings
    plan: PlanSettings
    export: ExportSettings
    schedule: ScheduleSettings = ScheduleSettings()
    verify_full: bool = False
    verify_strict: bool = False
    report_path: str = ""
    dry_run_list: str = ""  # dry run: write every would-copy and would-delete object here (JSON lines)
    resume: bool = True
    progress: str = "auto"  # auto, bar, lines or none
    progress_interval_s: float = 10.0
    event_deletes: EventDeleteLimit = EventDeleteLimit()
    # The name earlier releases derived for this job (see naming.legacy_job_name): a job they created keeps
    # its runs and records under it (dth_ray/runtime/jobs.py adopt_legacy_job). '' once adopted or named.
    legacy_job: str = ""
    console: ConsoleSettings = ConsoleSettings()
    inventory: InventorySettings | None = None  # source.inventory: plan from it (dth_ray/runtime/inventory.py)

    @property
    def job(self) -> str:
        return self.worker.job

    @property
    def source(self) -> StoreSpec:
        return self.worker.source

    @property
    def destination(self) -> StoreSpec:
        return self.worker.destination

    @property
    def transfer(self) -> TransferSettings:
        return self.worker.transfer

    @property
    def dry_run(self) -> bool:
        return self.worker.dry_run

    def with_stores(self, source: StoreSpec, destination: StoreSpec) -> Settings:
        """These settings with other store specs (e.g. with the regions preflight found the buckets in)."""
        if (source, destination) == (self.source, self.destination):
            return self
        return dataclasses.replace(self, worker=dataclasses.replace(self.worker, source=source,
                                                                     destination=destination))

    def default_workers(self, cpus: int | None = None) -> int:
        """transfer.actors, else one worker per CPU of this machine (at least two)."""
        return self.transfer.actors or max(2, cpus or os.cpu_count() or 2)


def store_spec(cfg) -> StoreSpec:
    """A StoreConfig (schema) as a frozen StoreSpec."""
    return StoreSpec(**{f.name: getattr(cfg, f.name) for f in dataclasses.fields(StoreSpec)})


def _transfer(cfg: SyncConfig) -> TransferSettings:
    t = cfg.transfer
    buffer_bytes = parse_size(t.buffer_size, "transfer.buffer_size")
    return TransferSettings(
        multipart_threshold_bytes=min(parse_size(t.multipart_threshold, "transfer.multipart_threshold"),
                                      buffer_bytes),
        part_size_bytes=None if t.part_size == "auto" else parse_size(t.part_size, "transfer.part_size"),
        parts_in_flight=t.parts_in_flight,
        concurrency=t.concurrency,
        actors=t.actors,
        buffer_bytes=buffer_bytes,
        near_buffer_bytes=min(parse_size(t.near_buffer_size, "transfer.near_buffer_size"), buffer_bytes)
        if cfg.runtime.address == "local" else 0,
        max_bandwidth_bytes_per_s=parse_size(t.max_bandwidth, "transfer.max_bandwidth"),
        max_requests_per_s=float(t.max_requests_per_s),
        max_attempts=t.max_attempts,
        progress_interval_s=float(t.progress_interval_s),
        server_side_copy=t.server_side_copy,
        spread_threshold_bytes=parse_size(t.spread_threshold, "transfer.spread_threshold"),
        get_range_bytes=0 if t.get_range_size == "auto" else parse_size(t.get_range_size, "transfer.get_range_size"),
        copy_cutoff_bytes=parse_size(t.copy_cutoff, "transfer.copy_cutoff"),
        resume_parts=t.resume_parts,
    )


def located(url: str, base: StoreSpec, credentials: str, name: str) -> tuple[StoreSpec, str]:
    """The store and key (or prefix) `url` names: `scheme://bucket/key` on `base`'s service (its endpoint and
    region) with `credentials` (empty: base's), or a local folder path. Raises ConfigError."""
    bucket, key = split_location(url, name)
    if not bucket:
        return StoreSpec(type=StoreType.local, path=os.path.abspath(key)), ""
    if base.type == StoreType.local:
        raise ConfigError(f"{name}={url!r} names a bucket, but its store is local: give a folder path")
    return dataclasses.replace(base, bucket=bucket, prefix="", prefix_list="", credentials=credentials or
                               base.credentials), key


def _inventory(cfg: SyncConfig, job: str, source: StoreSpec, destination: StoreSpec) -> InventorySettings | None:
    if not cfg.source.inventory:
        return None
    sides = []
    for role, spec, store in (("source", source, cfg.source), ("destination", destination, cfg.destination)):
        if store.inventory:
            where, key = located(store.inventory, spec, store.inventory_credentials, f"{role}.inventory")
            sides.append(InventorySpec(where, key, store.inventory))
        else:
            sides.append(None)
    if cfg.inventory_staging:
        staging, prefix = located(cfg.inventory_staging, source, cfg.source.inventory_credentials,
                                  "inventory_staging")
    else:
        staging, prefix = sides[0].store, sides[0].manifest_key.rpartition("/")[0]
    prefix = "/".join(p for p in (prefix.strip("/"), "dth-ray", job) if p) + "/"
    return InventorySettings(sides[0], sides[1], staging, prefix)


def _report(cfg: SyncConfig, destination: StoreSpec) -> ReportSpec | None:
    if not cfg.report_objects:
        return None
    store, prefix = located(cfg.report_objects, destination, "", "report_objects")
    fmt = cfg.report_objects_format
    if fmt == "auto":
        fmt = "parquet" if cfg.report_objects.rstrip("/").lower().endswith(".parquet") else "csv"
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    return ReportSpec(store, prefix, fmt, cfg.report_objects)


def _plan(cfg: SyncConfig) -> PlanSettings:
    p = cfg.plan
    return PlanSettings(p.nodes, parse_size(p.node_throughput, "plan.node_throughput"), p.node_objects_per_s,
                        p.egress_per_gb, p.put_per_1000, p.get_per_1000, p.dynamodb_write_per_million,
                        p.instance_per_hour, p.egress_per_gb_night)


def _export(cfg: SyncConfig, transfer: TransferSettings) -> ExportSettings:
    mc = cfg.maxcompute
    return ExportSettings(parse_size(mc.file_size, "maxcompute.file_size"),
                          parse_size(mc.row_group_size, "maxcompute.row_group_size"), transfer.part_size_bytes)


def resolve(cfg: SyncConfig, *, check: bool = True, console: bool = False) -> Settings:
    """Validate `cfg` (`check`) and resolve it (`console`: `console.*` too, which only `dth-ray console`
    reads). Raises ConfigError naming the first bad value."""
    if check:
        validate(cfg)
    # S3 stores get the AWS SDKs' endpoint and region defaults here, once, so every actor agrees on them.
    source = s3_conventions(store_spec(cfg.source), "source")
    destination = s3_conventions(store_spec(cfg.destination), "destination")
    if check:
        check_write_options(destination, "destination")
        check_no_overlap(source, destination, deletes=cfg.sync.delete)
    transfer = _transfer(cfg)
    count, percent = parse_max_delete(cfg.sync.max_delete)
    job = job_name(cfg)
    inventory = _inventory(cfg, job, source, destination)
    worker = WorkerSettings(
        job=job, source=source, destination=destination,
        transfer=transfer, key_filter=KeyFilter(list(cfg.filter.include or ()), list(cfg.filter.exclude or ())),
        compare=Compare(cfg.compare), dry_run=cfg.dry_run, note_extras=cfg.sync.delete,
        staging=inventory.staging if inventory is not None else None, report=_report(cfg, destination),
        dry_run_changes=(sys.maxsize if cfg.dry_run_list else DRY_RUN_SAMPLE) if cfg.dry_run else 0,
        log_level=str(cfg.log_level).upper(), log_format=LogFormat(cfg.log.format).value)
    r = cfg.runtime
    m = cfg.manifest
    return Settings(
        config=cfg, worker=worker,
        manifest=ManifestSpec(ManifestType(m.type), m.path, m.table, m.region, m.endpoint, m.credentials,
                              m.insecure_http, float(m.flush_interval_s)),
        runtime=RuntimeSettings(r.address, r.num_cpus, r.autoscale, r.metrics_port, r.max_transfer_slots, r.ray,
                                float(r.ray_pays_after_s)),
        delete=DeleteSettings(cfg.sync.delete, count, percent, cfg.sync.max_delete,
                              cfg.sync.delete_prefix_as_is),
        plan=_plan(cfg), export=_export(cfg, transfer), schedule=resolve_schedule(cfg.schedule),
        verify_full=VerifyMode(cfg.verify.mode) is VerifyMode.full, verify_strict=cfg.verify.strict,
        report_path=cfg.report, dry_run_list=cfg.dry_run_list, resume=cfg.resume, legacy_job=legacy_job_name(cfg),
        progress={"on": "bar", "off": "none"}.get(cfg.progress, cfg.progress),
        progress_interval_s=parse_duration(cfg.progress_interval, "progress_interval"),
        event_deletes=EventDeleteLimit(cfg.events.max_delete, parse_duration(
            cfg.events.max_delete_window, "events.max_delete_window"), cfg.events.max_delete_window),
        console=resolve_console(cfg.console) if console else ConsoleSettings(),
        inventory=inventory,
    )


def parse_interval(text: str) -> float | None:
    """`schedule.interval` in seconds; None for none/off/''. Raises ConfigError."""
    if str(text).strip().lower() in ("none", "off", ""):
        return None
    seconds = parse_duration(text, "schedule.interval")
    if seconds < 1:
        raise ConfigError(f"schedule.interval={text!r} must be at least 1s (or none)")
    return seconds


def resolve_schedule(cfg: ScheduleConfig) -> ScheduleSettings:
    """`schedule.*` in seconds (the cron expression is compiled by dth_ray.sync.schedule). Raises ConfigError."""
    cron = cfg.cron.strip()
    try:
        window = parse_window(cfg.window, cfg.timezone)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    return ScheduleSettings(None if cron else parse_interval(cfg.interval), cron,
                            parse_duration(cfg.max_defer, "schedule.max_defer"), cfg.on_start, window)


__all__ = ["ConsoleSettings", "EventDeleteLimit", "ExportSettings", "InventorySettings", "InventorySpec",
           "ManifestSpec", "MaxComputeMode", "ReportSpec", "RuntimeSettings", "Settings", "StoreSpec",
           "TransferSettings", "WorkerSettings", "located", "resolve", "store_spec"]
