"""Every configuration key with its default, type and meaning, walked from the schema in dth_ray/config.py
(the meanings live here, beside it), for `dth-ray keys`, the CLI's "did you mean" and the README's table."""

from __future__ import annotations

import dataclasses
import difflib
import enum
import functools
import os
import sys
import typing
from dataclasses import dataclass

from dth_ray.config import SyncConfig

# Config groups (conf/<group>/<option>.yaml): the group's key selects a preset, which sets `<group>.type`.
GROUPS = ("source", "destination", "manifest", "events")

# The meaning of each StoreConfig field, for every store in the schema (source, destination, maxcompute.oss).
STORE_MEANINGS = {
    "type": "store type (set by the `source=`/`destination=` preset)",
    "bucket": "bucket name (required except for `local`)",
    "prefix": "key prefix, a plain string (no `/` added); destination key = `destination.prefix` + (source "
              "key minus `source.prefix`)",
    "endpoint": "URL; empty: for `s3` stores `AWS_ENDPOINT_URL_S3`, else `AWS_ENDPOINT_URL` (as the AWS SDKs), "
                "else from the region: AWS `https://s3.<region>.amazonaws.com` (`.com.cn` for `cn-*`), COS `https://cos.<region>.myqcloud.com`, Kodo `https://s3-<region>.qiniucs.com`, "
                "OSS `https://oss-<region>[-internal].aliyuncs.com`",
    "region": "signing region; empty: for `s3` stores `AWS_REGION`/`AWS_DEFAULT_REGION`, else the profile's "
              "(`profile:NAME`, `AWS_PROFILE`, `~/.aws/config`), else `us-east-1`. A bucket in another region "
              "(301 PermanentRedirect, 400 AuthorizationHeaderMalformed, `x-amz-bucket-region`) is followed and "
              "said once in the log: a derived endpoint moves to that region's, a set one is kept. OSS, COS, "
              "Kodo: the provider's region id, e.g. `cn-hangzhou`",
    "credentials": "`default` (the SDK chain), `anonymous`, `env:NAME`, `secret:ID`, `profile:NAME` or "
                   "`role:ARN` (see Credentials): a spec, never a key",
    "path": "root directory for `local` (the path itself may be a symlink; no symlink below it is ever "
            "followed: a source's links are skipped as `unreadable:symlink_outside_root`, "
            "`unreadable:symlink_inside_root` or `unreadable:symlink_dangling`, and a destination write "
            "whose path crosses a link fails)",
    "addressing_style": "`auto`, `path` or `virtual` (auto: virtual-hosted on AWS/COS/Kodo, path for custom "
                        "endpoints)",
    "requester_pays": "send `x-amz-request-payer: requester`",
    "insecure_http": "allow a plain-http endpoint that is not loopback (refused otherwise)",
    "internal": "OSS: use the internal (VPC) endpoint",
    "prefix_list": "source only: file with one prefix per line; only those prefixes are listed",
    "storage_class": "destination only: one of S3's storage classes: `STANDARD`, `REDUCED_REDUNDANCY`, "
                     "`STANDARD_IA`, `ONEZONE_IA`, `INTELLIGENT_TIERING`, `GLACIER`, `DEEP_ARCHIVE`, `OUTPOSTS`, "
                     "`GLACIER_IR`, `SNOW`, `EXPRESS_ONEZONE` (checked before anything runs; empty: the bucket's "
                     "default)",
    "acl": "destination only: canned ACL: `private`, `public-read`, `public-read-write`, `authenticated-read`, "
           "`aws-exec-read`, `bucket-owner-read`, `bucket-owner-full-control`",
    "sse": "destination only: server-side encryption, `AES256`, `aws:kms` or `aws:kms:dsse`",
    "sse_kms_key_id": "destination only: KMS key id for `aws:kms` or `aws:kms:dsse`",
    "connect_timeout_s": "TCP connect timeout, seconds",
    "read_timeout_s": "socket read timeout, seconds (an endpoint that never answers fails within this)",
    "checksum": "S3-family stores: full-object CRC64NVME. `crc64nvme`: the store checks and keeps it (every PUT "
                "and part carries one, multipart uploads are FULL_OBJECT CRC64NVME so S3 refuses a wrong "
                "object, parts drop their MD5; stored values are trusted as the source's and by `verify`). "
                "`md5`: never (Content-MD5 only). `auto`: `crc64nvme` on AWS S3 itself; elsewhere a destination "
                "sends it beside the MD5 until the first write's answer shows whether the server checks it (no "
                "echo: MD5 only, said once in the log), and stored values are not trusted",
    "inventory": "plan from this inventory instead of listing (see Inventory planning): the URL of an S3 "
                 "Inventory or OSS bucket inventory `manifest.json` on this store's service, e.g. "
                 "`s3://inventory-bucket/src/config-id/2026-01-01T00-00Z/manifest.json`; on the destination it "
                 "replaces the destination's listing too (needs `source.inventory`)",
    "inventory_credentials": "credentials for reading `inventory` (as `credentials`); empty: `credentials`",
}
STORES = {"source": "", "destination": "", "maxcompute.oss": "`maxcompute.mode=unload` staging store: "}

MEANINGS = {
    "source": "where data comes from (preset): `s3` (any S3-compatible store), `oss` (Aliyun OSS), `cos` "
              "(Tencent COS), `kodo` (Qiniu Kodo), `local` (a directory), `maxcompute` (a table, see "
              "docs/maxcompute.md)",
    "destination": "where data goes (preset): `s3` or `local`",
    "compare": "`size`, `size_etag` (ETag/MD5 where comparable, else the ETag recorded at copy time, else "
               "size), `size_mtime`, `checksum` (like size_etag but copies when content cannot be compared)",
    "dry_run": "list and diff only; write nothing; the summary shows the counts and the first 10 keys it would "
               "copy and delete, with why (`new`, `size`, `etag`, `not_at_source`, ...)",
    "dry_run_list": "with `dry_run=true`: write every key it would copy or delete to this file, as JSON lines "
                    "(`action`, `key`, `size`, `reason`; in no particular order); written only when every shard "
                    "finished",
    "inventory_staging": "with `source.inventory`: where planning writes one file of sorted keys per shard for "
                         "the workers to read, `s3://bucket/prefix` on the source's service (with "
                         "`source.inventory_credentials`) or a folder every worker sees; empty: a `dth-ray/<job>/` "
                         "folder beside the source's `manifest.json`. Deleted when the run succeeds",
    "report_objects": "per-object completion report (see Completion report): a folder path or "
                      "`s3://bucket/prefix` on the destination's service (outside the destination's scope); one "
                      "row per object (key, size, checksums, result, reason, attempts, run id), written per "
                      "shard in parts under `run-<id>/`, listed in the JSON report",
    "report_objects_format": "`auto` (`parquet` when `report_objects` ends in `.parquet`, else `csv`), `csv` "
                             "or `parquet`",
    "resume": "resume the job's latest run when it is unfinished (see Resume); `false` starts a new run",
    "report": "path of the JSON report (checked writable before the run)",
    "job": "job name; empty: derived from source and destination, `<source bucket>-<destination bucket>-<6 "
           "hex>` (a local store: its folder's name); a job an earlier release named `job-<12 hex>` keeps "
           "that name",
    "progress": "progress on stderr: `auto` (a live bar on a terminal, stats lines otherwise), `bar`, `lines`, "
                "`none`; `on`/`off` mean `bar`/`none`",
    "progress_interval": "how often stats lines are written when there is no live bar (`progress=lines`, or "
                         "`auto` off a terminal): one line on stderr whatever `log_level` says, a JSON event "
                         "under `log.format=json` (`10s`, `1m`)",
    "log_level": "Python log level: `DEBUG`, `INFO`, `WARNING`, `ERROR`, `CRITICAL`",
    "filter.include": "globs on the key relative to `source.prefix` (`*` no `/`, `**` any, leading `/` "
                      "anchors); when given, only keys matching one are copied, e.g. "
                      "`filter.include='[*.parquet]'`",
    "filter.exclude": "globs as for `filter.include`; keys matching one are left out",
    "transfer.multipart_threshold": "objects at or above this (or above `transfer.buffer_size`) use a "
                                    "multipart upload; below it one PUT, whose Content-MD5 is the source's "
                                    "MD5",
    "transfer.part_size": "part size; auto: 16 MiB, or a third of a smaller byte budget (whole MiB), grown so "
                          "no object needs more than 10,000 parts (5 MiB–5 GiB)",
    "transfer.parts_in_flight": "parts of one object read/written concurrently",
    "transfer.concurrency": "objects in flight per worker (the driver lane, each actor; requests in flight "
                            "up to 2×, halved on throttling). Measured, 5,000 × 64 KiB between two local "
                            "rclone servers with no Ray: 64 → 477 objects/s, 128 → 909-954, 256 → 696 (the "
                            "servers saturate)",
    "transfer.actors": "transfer actors; 0 = one per CPU in the Ray cluster (at least 2), or one per CPU "
                       "minus one on the embedded Ray, where the driver lane counts as one (at least 1); "
                       "planning cuts the listing into about 4 shards per worker (0: this machine's CPUs; set "
                       "it for a large cluster)",
    "transfer.buffer_size": "payload bytes one worker (the driver lane, each actor) may hold (see Memory "
                            "bound)",
    "transfer.near_buffer_size": "what each worker holds instead while Ray runs on the embedded cluster "
                                 "(`runtime.address=local`) and the source is near (its connections' round "
                                 "trip under 10 ms); at most `transfer.buffer_size`, 0 = `transfer.buffer_size` "
                                 "always (see Memory bound)",
    "transfer.max_bandwidth": "bytes/s read from the source by the whole job (every worker on every node, "
                              "shared out by what each uses), 0 = unlimited (e.g. `50MB`); see Job-wide budgets",
    "transfer.max_requests_per_s": "requests/s to the source (list, head, get) by the whole job, shared out as "
                                   "`transfer.max_bandwidth` is; 0 = unlimited",
    "transfer.max_attempts": "attempts per object (each request also has 3 quick tries at the HTTP layer)",
    "transfer.progress_interval_s": "how often actors send batched progress to the manifest, seconds",
    "transfer.server_side_copy": "no bytes through dth-ray when source and destination are one S3 service "
                                 "with one identity (same endpoint, region, credentials): CopyObject up to "
                                 "`transfer.copy_cutoff`, a multipart upload of UploadPartCopy ranges above "
                                 "it (size checked; a service that stores empty parts, such as `rclone "
                                 "serve s3`, is caught before Complete); falls back to GET/PUT if refused",
    "transfer.spread_threshold": "objects at least this large share their parts with the other transfer "
                                 "actors (each sends its share itself)",
    "transfer.get_range_size": "a part (or a single-PUT object) is read as ranged GETs of this size, at "
                               "most 16 at once per part (≥ 256KiB); `auto`: about one second of a single "
                               "stream's measured rate (see \"Large objects\")",
    "transfer.copy_cutoff": "largest object copied server-side with one CopyObject (5MiB–5GiB)",
    "transfer.resume_parts": "diagnostic switch: `false` makes a resumed run abort the multipart uploads an "
                             "interrupted run left and send every part again (tests/integration/test_resume.py "
                             "uses it to show its byte bound catches a build without part reuse); leave it on",
    "manifest": "manifest backend (preset): `sqlite` (one local file) or `dynamodb` (one table)",
    "manifest.path": "SQLite file; empty: `~/.local/state/dth_ray/manifest.sqlite` (`$XDG_STATE_HOME` "
                     "honoured)",
    "manifest.table": "DynamoDB table (`manifest=dynamodb`); created on demand, pay-per-request",
    "manifest.region": "DynamoDB region; empty: the SDK's default (`AWS_REGION`, ~/.aws/config)",
    "manifest.endpoint": "DynamoDB endpoint URL; empty: AWS",
    "manifest.credentials": "DynamoDB credentials (as for stores)",
    "manifest.insecure_http": "allow a plain-http DynamoDB endpoint that is not loopback",
    "manifest.flush_interval_s": "DynamoDB: how often the manifest actor flushes its batched writes, "
                                 "seconds",
    "runtime.address": "`local` (embedded Ray), `auto`, `HOST:PORT` or `ray://HOST:PORT`",
    "runtime.num_cpus": "CPUs for the embedded Ray (0 = all)",
    "runtime.autoscale": "`auto` (on unless `runtime.address=local`), `on`, `off`: request `transfer_slot` "
                         "bundles from the Ray autoscaler in proportion to the backlog (at most ×2 per "
                         "step), release them as it drains; start transfer actors on nodes that join",
    "runtime.metrics_port": "embedded Ray: Prometheus port of its metrics agent (0: Ray picks one); setting "
                            "it starts Ray at once",
    "runtime.max_transfer_slots": "cap on the autoscaler request",
    "runtime.ray": "embedded runs: `auto` starts Ray and its actors only when the backlog says it pays (see "
                   "\"Ray only when it pays\"); `always` starts it at once",
    "runtime.ray_pays_after_s": "`runtime.ray=auto`: start Ray when the driver alone would need longer than "
                                "this for what is left, seconds",
    "verify.mode": "`dth-ray verify`: `fast` (listings + copy-time records, read only what they cannot "
                   "prove) or `full` (read every byte)",
    "verify.strict": "`dth-ray verify`: objects only at the destination fail the verify",
    "plan.nodes": "`dth-ray plan`: nodes the estimate assumes",
    "plan.node_throughput": "`dth-ray plan`: bytes/s one node sustains (1.25GB: 10 Gbit/s)",
    "plan.node_objects_per_s": "`dth-ray plan`: objects/s one node sustains",
    "plan.egress_per_gb": "`dth-ray plan`: source egress price, USD per GB",
    "plan.egress_per_gb_night": "`dth-ray plan` with `schedule.window`: the egress price inside the window "
                                "(off-peak), USD per GB; 0 = as `plan.egress_per_gb`",
    "plan.put_per_1000": "`dth-ray plan`: PUT/Create/Complete price, USD per 1,000 requests",
    "plan.get_per_1000": "`dth-ray plan`: GET price, USD per 1,000 requests",
    "plan.dynamodb_write_per_million": "`dth-ray plan`: manifest write price, USD per million writes",
    "plan.instance_per_hour": "`dth-ray plan`: price of one node per hour, USD",
    "sync.delete": "batch runs delete destination objects under `destination.prefix` whose source key is "
                   "gone (HEADed again first); `dry_run` only counts them (`objects.would_delete`) and shows the "
                   "first ones. A non-empty `destination.prefix` must end in `/` (see Delete scope)",
    "sync.delete_prefix_as_is": "with deletes on (`sync.delete`, or `watch`'s `events.deletes`), accept a "
                                "`destination.prefix` that does not end in `/` as a plain string: keys of sibling "
                                "prefixes (`backup-2023/…` for `backup`) are then in the delete scope. Without it "
                                "such a prefix is refused (exit 2)",
    "sync.max_delete": "limit for `sync.delete`: a count (`100`) or a percent of the destination objects "
                       "seen (`10%`); more candidates → nothing deleted, run fails with a one-line error; "
                       "empty = no limit",
    "schedule.interval": "`dth-ray watch`: scheduled batch sync every interval (`90s`, `10m`, `1h`, `1d`); "
                         "`none` disables it",
    "schedule.cron": "`dth-ray watch`: 5-field cron in UTC (`minute hour day month weekday`, `@hourly`…); "
                     "overrides `schedule.interval`",
    "schedule.max_defer": "`dth-ray watch`: event transfers in flight defer a due tick by at most this; "
                          "then the scan runs anyway",
    "schedule.on_start": "`dth-ray watch`: also scan once at start",
    "schedule.window": "batch transfer only inside this daily window, `HH:MM-HH:MM` (seconds optional; past "
                       "midnight allowed, e.g. `22:00-06:00`): at its end a `sync` checkpoints, pauses and exits 75 "
                       "(status `paused`, saying when the next window opens; the next invocation continues); "
                       "`watch` starts scans only inside it and continues a paused one when it opens; empty = "
                       "always",
    "schedule.timezone": "time zone of `schedule.window` (an IANA name, e.g. `UTC`, `Asia/Shanghai`)",
    "events": "event source for `dth-ray watch` (preset): `none` or `sqs`",
    "events.queue_url": "the SQS queue (`https://sqs.<region>.amazonaws.com/<account>/<name>`)",
    "events.queue_name": "`dth-ray events setup`: queue name (empty: from `events.queue_url`); with "
                         "`alerts.sns_topic_arn` set, setup also adds an alarm on dead-letter depth",
    "events.region": "SQS region; empty: from `events.queue_url`",
    "events.endpoint": "SQS endpoint URL; empty: AWS",
    "events.credentials": "SQS credentials (as for stores)",
    "events.insecure_http": "allow a plain-http SQS endpoint that is not loopback",
    "events.max_delete": "`watch`: at most this many event-driven deletes in any sliding window of "
                         "`events.max_delete_window`; beyond it deletes are skipped (message acknowledged), "
                         "counted (`deletes.skipped` in the report), logged, and alerted once per window through "
                         "`alerts.sns_topic_arn`; the next scan with `sync.delete=true` reconciles them",
    "events.max_delete_window": "`watch`: the sliding window of `events.max_delete` (`90s`, `10m`, `1h`, `1d`)",
    "events.outside_window": "`watch`: events are acted on outside `schedule.window` too; `false`: messages "
                             "wait in the queue until the window opens",
    "events.source_account": "`dth-ray events setup` with an S3 `source.bucket`: the account owning that bucket "
                             "(the queue policy's `aws:SourceAccount`); empty = the queue's account",
    "events.deletes": "`ObjectRemoved` events (and created events whose source object is gone) delete at the "
                      "destination (DTH's CreateAndDelete), within the job's scope and `events.max_delete`; "
                      "`false` = Create only. A non-empty `destination.prefix` must end in `/` (see Delete scope)",
    "events.wait_s": "long-polling wait, seconds (0–20)",
    "events.visibility_timeout_s": "how long a received message stays invisible, seconds (extended at half "
                                   "of it while its work runs)",
    "events.max_receives": "a message received more often is poison: moved to "
                           "`events.dead_letter_queue_url`, else left to the queue's redrive policy, else "
                           "dropped with an error line",
    "events.dead_letter_queue_url": "where `watch` moves poison messages itself (unparseable ones at once)",
    "events.receivers": "receiving threads",
    "events.max_held": "messages held at a time (receiving pauses beyond; bounds memory)",
    "events.batch_keys": "keys per call to a transfer actor",
    "events.actors": "transfer actors for events (0 = as `transfer.actors`)",
    "events.shutdown_timeout_s": "on SIGTERM/SIGINT, how long in-flight transfers may finish before they "
                                 "are abandoned (messages released), seconds",
    "events.report_interval_s": "how often `watch` logs its metrics line and rewrites `report`, seconds",
    "maxcompute.project": "`source=maxcompute`: the project of the table to export",
    "maxcompute.table": "`source=maxcompute`: the table to export",
    "maxcompute.partitions": "partition filters, `key=value[/key=value]`; a partition is selected when "
                             "every given key matches; empty: all (quote for Hydra: "
                             "`'maxcompute.partitions=[\"ds=2024-01-01/region=cn\"]'`)",
    "maxcompute.tunnel_endpoint": "Tunnel endpoint; empty: the one the service routes to",
    "maxcompute.mode": "`direct` (Tunnel → Parquet → S3) or `unload` (UNLOAD to OSS, then a sync)",
    "maxcompute.file_size": "direct: a file is closed after the row group that reaches this",
    "maxcompute.row_group_size": "direct: Arrow bytes buffered per Parquet row group",
    "maxcompute.compression": "direct: Parquet codec, `zstd`, `snappy`, `gzip`, `lz4`, `brotli` or `none`",
    "maxcompute.coerce_timestamps": "direct: empty keeps DATETIME as ms and TIMESTAMP as ns; `us`/`ms` "
                                    "coerce (an export that would lose precision fails instead)",
    "maxcompute.shard_rows": "direct: rows per shard (one shard = one actor task, its own files)",
    "maxcompute.role_arn": "unload: the RAM role MaxCompute assumes to write OSS "
                           "(`acs:ram::<uid>:role/<name>`)",
    "maxcompute.unload_compression": "unload: `SNAPPY`, `LZO`, `GZIP`, `ZSTD` or `NONE`",
    "maxcompute.oss.type": "`maxcompute.mode=unload` staging store: must be `oss`",
    "maxcompute.oss.prefix": "`maxcompute.mode=unload` staging store: a folder ending in `/` (UNLOAD "
                             "appends, so the export empties a partition's folder before unloading it)",
    "maxcompute.oss_location_endpoint": "unload: host written into `LOCATION 'oss://…'`; empty: "
                                        "`oss-<region>-internal.aliyuncs.com`",
    "maxcompute.instance_timeout_s": "unload: how long to wait for one UNLOAD instance, seconds",
    "metrics.cloudwatch": "publish the run's counters to CloudWatch (see Operations)",
    "metrics.namespace": "CloudWatch namespace",
    "metrics.region": "CloudWatch region; empty: `AWS_REGION`, else `us-east-1`",
    "metrics.endpoint": "CloudWatch endpoint URL; empty: AWS",
    "metrics.credentials": "CloudWatch credentials (as for stores)",
    "metrics.insecure_http": "allow a plain-http CloudWatch endpoint that is not loopback",
    "metrics.interval_s": "seconds between CloudWatch publishes (1–3600)",
    "alerts.sns_topic_arn": "SNS topic for one alarm per finished run: failed runs always, succeeded runs "
                            "if `alerts.on_success`",
    "alerts.region": "SNS region; empty: the topic ARN's",
    "alerts.endpoint": "SNS endpoint URL; empty: AWS",
    "alerts.credentials": "SNS credentials (as for stores)",
    "alerts.insecure_http": "allow a plain-http SNS endpoint that is not loopback",
    "alerts.on_success": "also alarm when a one-time run succeeds (with the report summary)",
    "alerts.email": "`dth-ray alerts setup`: who is subscribed",
    "alerts.topic_name": "`dth-ray alerts setup`: the topic it creates",
    "log.format": "`text` or `json` (one JSON object per line: `ts`, `level`, `logger`, `msg`, and the "
                  "event's `job`, `key`, `attempt`, `error_class`, …)",
    "console.host": "`dth-ray console`: the address its page listens on; any but loopback needs `console.token`",
    "console.port": "`dth-ray console`: its port (0: any free port, printed)",
    "console.token": "`dth-ray console`: required for any host but loopback; a value of at least 16 characters "
                     "or `env:NAME`; sent as `Authorization: Bearer` or once in the URL the command prints",
}

# What a value is, where the schema's Python type (a str) says less than the key accepts.
_SIZE, _SIZE_AUTO = "size", "size or auto"
KINDS = {
    "transfer.multipart_threshold": _SIZE, "transfer.part_size": _SIZE_AUTO, "transfer.buffer_size": _SIZE,
    "transfer.near_buffer_size": _SIZE,
    "transfer.max_bandwidth": _SIZE, "transfer.spread_threshold": _SIZE,
    "transfer.get_range_size": _SIZE_AUTO, "transfer.copy_cutoff": _SIZE, "plan.node_throughput": _SIZE,
    "maxcompute.file_size": _SIZE, "maxcompute.row_group_size": _SIZE,
    "schedule.interval": "duration or none", "schedule.max_defer": "duration", "progress_interval": "duration",
    "events.max_delete_window": "duration", "schedule.window": "HH:MM-HH:MM or empty",
    "progress": "auto|bar|lines|none", "runtime.autoscale": "auto|on|off", "runtime.ray": "auto|always",
    "log_level": "level", "sync.max_delete": "count or percent", "schedule.cron": "cron",
    "maxcompute.oss.type": "oss", "report_objects_format": "auto|csv|parquet",
    "source.inventory": "URL", "destination.inventory": "URL", "inventory_staging": "URL or path",
    "report_objects": "URL or path",
}
STORE_KINDS = {"addressing_style": "auto|path|virtual", "credentials": "credentials spec",
               "inventory_credentials": "credentials spec"}


@dataclass(frozen=True)
class Key:
    """One key as users write it: `name=value`. `group`: a preset selector (`source=oss`), not a field."""

    name: str
    default: object
    kind: str
    meaning: str
    group: bool = False

    @property
    def default_text(self) -> str:
        return format_value(self.default)


def format_value(value: object) -> str:
    """A value as it is written on the command line (`true`, `""`, `[]`, `size_etag`, `200MiB`)."""
    if isinstance(value, enum.Enum):
        return str(value.value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if value == "":
        return '""'
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    return str(value)


def _kind(tp: object) -> str:
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        return "|".join(str(m.value) for m in tp)
    if typing.get_origin(tp) is list:
        return f"list of {typing.get_args(tp)[0].__name__}"
    return getattr(tp, "__name__", str(tp))


def _meaning(name: str) -> str:
    if name in MEANINGS:
        return MEANINGS[name]
    root, _, field_name = name.rpartition(".")
    if root in STORES and field_name in STORE_MEANINGS:
        return STORES[root] + STORE_MEANINGS[field_name]
    return ""  # a key added to the schema without one: tests/unit/test_config_keys.py fails until it has one


def _walk(cls: type, node: object, prefix: str) -> typing.Iterator[tuple[str, object, object]]:
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        value = getattr(node, f.name)
        if dataclasses.is_dataclass(value):
            yield from _walk(type(value), value, f"{prefix}{f.name}.")
        else:
            yield f"{prefix}{f.name}", hints[f.name], value


def group_options(group: str) -> list[str]:
    """The presets of a config group (conf/<group>/*.yaml), the schema's default first."""
    from dth_ray.compose import conf_dir

    folder = os.path.join(conf_dir(), group)
    names = sorted(n[:-5] for n in os.listdir(folder) if n.endswith(".yaml")) if os.path.isdir(folder) else []
    default = format_value(getattr(SyncConfig(), group).type)
    return sorted(names, key=lambda n: n != default)


@functools.cache
def all_keys() -> tuple[Key, ...]:
    """Every key in schema order; a group's `<group>.type` is shown as the group itself (`source=oss`)."""
    out = []
    for name, tp, default in _walk(SyncConfig, SyncConfig(), ""):
        root, _, field_name = name.rpartition(".")
        if root in GROUPS and field_name == "type":
            kind = "preset: " + "|".join(group_options(root))
            out.append(Key(root, default, kind, _meaning(root), group=True))
            continue
        kind = KINDS.get(name) or (STORE_KINDS.get(field_name) if root in STORES else None) or _kind(tp)
        out.append(Key(name, default, kind, _meaning(name)))
    return tuple(out)


@functools.cache
def accepted_names() -> frozenset[str]:
    """Everything `name=value` may name: keys, groups, `<group>.type`, and the sections (`transfer={...}`)."""
    names = {k.name for k in all_keys()} | {f"{g}.type" for g in GROUPS}
    names |= {n.rsplit(".", i)[0] for n in list(names) for i in range(1, n.count(".") + 1)}
    return frozenset(names)


def matching(prefix: str) -> list[Key]:
    """The keys whose name starts with `prefix` (all for '')."""
    return [k for k in all_keys() if k.name.startswith(prefix)]


def suggest(name: str, limit: int = 3) -> list[str]:
    """Known keys a misspelled or section-less `name` probably meant: the closest spellings (only the best
    when it is clearly closer than the rest), and the same last part in other sections (`concurrency` →
    `transfer.concurrency`; first for a name without a section)."""
    names = [k.name for k in all_keys()]
    same_tail = [n for n in names if n.rpartition(".")[2] == name.rpartition(".")[2] and n != name]
    scored = sorted(((difflib.SequenceMatcher(None, name, n).ratio(), n) for n in names), reverse=True)
    best = scored[0][0] if scored else 0.0
    close = [n for score, n in scored[:limit] if score >= max(0.6, best - 0.08)]
    if "." in name and close:  # a section was given: a close spelling beats the same field elsewhere
        return close
    return list(dict.fromkeys(same_tail + close))[:limit]


def did_you_mean(name: str) -> str:
    """'; did you mean a or b?' for `name`, or '' when nothing is close."""
    found = suggest(name)
    return f"; did you mean {' or '.join(found)}?" if found else ""


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def markdown_table() -> str:
    """The README's configuration table: one row per key, in schema order."""
    rows = ["| key | default | type | meaning |", "|---|---|---|---|"]
    for k in all_keys():
        rows.append(f"| `{k.name}` | `{_cell(k.default_text)}` | {_cell(k.kind)} | {_cell(k.meaning)} |")
    return "\n".join(rows)


BEGIN = ("<!-- keys:begin: generated from dth_ray/config_keys.py by "
         "`python -m dth_ray.config_keys --write-readme README.md` -->")
END = "<!-- keys:end -->"


def with_table(readme: str) -> str:
    """`readme` with the text between the BEGIN and END markers replaced by the current table. Raises
    ValueError when the markers are missing."""
    head, begin, rest = readme.partition(BEGIN)
    _, end, tail = rest.partition(END)
    if not begin or not end:
        raise ValueError("the README has no keys:begin/keys:end markers")
    return f"{head}{BEGIN}\n{markdown_table()}\n{END}{tail}"


def main(argv: list[str]) -> int:
    """`python -m dth_ray.config_keys --write-readme README.md` regenerates the README's table in place (a
    test fails while it differs); without arguments the table goes to stdout."""
    if argv[:1] == ["--write-readme"] and len(argv) == 2:
        with open(argv[1], encoding="utf-8") as handle:
            text = handle.read()
        with open(argv[1], "w", encoding="utf-8") as handle:
            handle.write(with_table(text))
        return 0
    sys.stdout.write(markdown_table() + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
