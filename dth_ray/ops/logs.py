"""Structured logs: `log.format=json` writes one JSON object per line (time, level, logger, message and the
event's fields: job, run_id, key, attempt, error_class, ...), `text` plain lines with the same fields as
key=value. Lines are scrubbed of anything shaped like a credential or a signature on the way out, and the
AWS SDK's DEBUG output (headers, response bodies holding secrets) is kept out whatever `log_level` says.

Log an event with its fields as `extra`, e.g.
`log.warning("copy failed", extra=fields(job=job, key=key, attempt=n, error_class="Throttled"))`.
"""

from __future__ import annotations

import collections
import contextlib
import datetime
import json
import logging
import re
import sys
from typing import Any

from dth_ray.config import LogFormat, SyncConfig
from dth_ray.credentials import quiet_sdk_logs
from dth_ray.errors import error_class

# Fields an event may carry (others passed in `extra` are kept too); listed first, in this order.
EVENT_FIELDS = ("event", "job", "run_id", "shard", "key", "attempt", "error_class", "error_code", "error",
                "status", "node", "objects", "bytes", "duration_s")
_RECORD_ATTRS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime",
                                                                                   "taskName"}
_TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# What a credential or signature looks like in text that reaches a log line; the value is replaced.
_REDACT = (
    re.compile(r"(Credential=)[^\s,/]+"),
    re.compile(r"((?:X-Amz-|x-oss-)?(?:Signature|Security-Token|security-token|signature|Credential|credential)"
               r"=)[^&\s,\"']+"),
    re.compile(r"((?:Signature|OSSAccessKeyId)=)[^&\s,\"']+"),
    re.compile(r"((?:x-amz-security-token|x-oss-security-token|authorization)[\"']?\s*[:=]\s*[\"']?)[^\"'\n]+",
               re.IGNORECASE),
    re.compile(r"((?:secret_access_key|SecretAccessKey|SessionToken|session_token|access_key_secret|AccessKeySecret|"
               r"access_key_id|AccessKeyId|security_token|SecurityToken)(?:\\*[\"'])?\s*[:=]\s*(?:\\*[\"'])?)"
               r"([^\"'\\\s,}]+)", re.IGNORECASE),
)


def redact(text: str) -> str:
    """`text` with credential-shaped values (signatures, tokens, secret fields) replaced by ***."""
    for pattern in _REDACT:
        text = pattern.sub(lambda m: m.group(1) + "***", text)
    return text


def fields(**values: Any) -> dict[str, Any]:
    """An `extra` dict for one event, without the unset (None) values."""
    return {k: v for k, v in values.items() if v is not None}


def error_fields(exc: BaseException) -> dict[str, Any]:
    """`error_class` (the taxonomy's name) and `error_code` (the provider's code, when it gave one)."""
    return fields(error_class=error_class(exc), error_code=getattr(exc, "code", "") or None)


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    out = {name: getattr(record, name) for name in EVENT_FIELDS if hasattr(record, name)}
    for name, value in vars(record).items():
        if name not in _RECORD_ATTRS and name not in out and not name.startswith("_"):
            out[name] = value
    return out


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts (UTC, ISO 8601), level, logger, msg, the event's fields, exc (if any)."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc).isoformat(
                timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
            exc = record.exc_info[1]
            out.setdefault("error_class", type(exc).__name__ if exc is not None else "")
        out["process"] = record.process
        return redact(json.dumps(out, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """`time LEVEL logger message key=value ...` with the event's fields."""

    def __init__(self) -> None:
        super().__init__(_TEXT_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        extras = _extras(record)
        if extras:
            line += " " + " ".join(f"{k}={v!r}" if isinstance(v, str) and (" " in v or not v) else f"{k}={v}"
                                   for k, v in extras.items())
        return redact(line)


class _Handler(logging.StreamHandler):
    """The stderr handler `setup_logging` installs (so a second call replaces it instead of adding one).
    Without an explicit stream it writes to whatever `sys.stderr` is at the time of the record, as Python's
    last-resort handler does: a caller that redirects stderr later (a test's capture, a daemon's log file)
    gets the lines instead of a closed file's error."""

    def __init__(self, stream: Any = None) -> None:
        self._fixed = stream
        super().__init__(stream or sys.stderr)

    @property
    def stream(self) -> Any:
        return self._fixed if self._fixed is not None else sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:  # StreamHandler.__init__ and setStream assign it
        self._fixed = None if value is sys.stderr else value


def formatter_for(fmt: LogFormat | str) -> logging.Formatter:
    return JsonFormatter() if LogFormat(fmt) == LogFormat.json else TextFormatter()


def setup_logging(cfg: SyncConfig, stream: Any = None) -> logging.Handler:
    """Root logger at `log_level` with one stderr handler in `log.format`; the SDK loggers at WARNING at most.
    Idempotent. Returns the handler."""
    return _install(str(cfg.log_level), cfg.log.format, stream)


_SERVICE_LOGGERS: set[str] = set()  # loggers `service_lines` raised to INFO; the next install resets them


def service_lines(name: str) -> None:
    """A long-running service's lifecycle lines (logger `name`) at INFO while `log_level` is WARNING or more
    verbose, as a service's log is expected to read; a stricter `log_level` (ERROR, CRITICAL) is kept."""
    if logging.getLogger().level <= logging.WARNING:
        logging.getLogger(name).setLevel(min(logging.INFO, logging.getLogger().level))
        _SERVICE_LOGGERS.add(name)


def _install(level: str, fmt: LogFormat | str, stream: Any = None) -> logging.Handler:
    root = logging.getLogger()
    for name in _SERVICE_LOGGERS:  # a second setup (a later command in the same process) starts from none
        logging.getLogger(name).setLevel(logging.NOTSET)
    _SERVICE_LOGGERS.clear()
    for handler in list(root.handlers):
        if isinstance(handler, _Handler):
            root.removeHandler(handler)
    handler = _Handler(stream)
    handler.setFormatter(formatter_for(fmt))
    root.addHandler(handler)
    root.setLevel(level.upper())
    quiet_sdk_logs()
    return handler


class _Relay(logging.Handler):
    """An actor's formatted lines kept for the driver, which asks for them (`relayed_lines`) every tick. Bounded:
    when the driver falls behind, the oldest lines go (they stay in the worker's log file) and are counted."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.lines: collections.deque[str] = collections.deque(maxlen=limit)
        self.dropped = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging must not raise; as logging.Handler.handleError would
            return
        with self.lock:
            if len(self.lines) == self.lines.maxlen:
                self.dropped += 1
            self.lines.append(line)

    def take(self) -> list[str]:
        with self.lock:
            out = list(self.lines)
            self.lines.clear()
            dropped, self.dropped = self.dropped, 0
        if dropped:
            notice = logging.makeLogRecord({"name": __name__, "levelno": logging.WARNING, "levelname": "WARNING",
                                            "msg": f"{dropped:,} earlier lines were not relayed (this worker's log "
                                                   "file has them)"})
            out.insert(0, self.format(notice))
        return out


RELAY_LIMIT = 2000  # lines an actor keeps between two asks of the driver (one a second)
_relay: _Relay | None = None
_relay_wanted = False


def relay_to_driver() -> None:
    """In a worker process of a node without Ray's log monitor (the lean embedded cluster): the actor's log
    lines are kept for the driver, which fetches them, instead of Ray's monitor copying them over."""
    global _relay_wanted
    _relay_wanted = True


def relayed_lines() -> list[str]:
    """The lines this actor logged since the last call (none when it does not relay)."""
    return _relay.take() if _relay is not None else []


def write_relayed(worker: str, lines: list[str]) -> None:
    """An actor's relayed lines on the driver's stderr, through its handler's stream (a live progress bar
    prints them above itself), text lines tagged with the worker as Ray's log monitor tags them."""
    handler = next((h for h in logging.getLogger().handlers if isinstance(h, _Handler)), None)
    stream = handler.stream if handler is not None else sys.stderr
    text = "".join((line if line.startswith("{") else f"({worker}) {line}") + "\n" for line in lines)
    if not text:
        return
    try:
        with handler.lock if handler is not None and handler.lock is not None else contextlib.nullcontext():
            stream.write(redact(text))  # one block, between the driver's own lines
            stream.flush()
    except (OSError, ValueError):
        pass  # stderr closed: the lines stay in the worker's log file


def setup_actor_logging(level: str, fmt: LogFormat | str) -> bool:
    """In a Ray actor's process, what `setup_logging` does in the driver: the root logger at `level` with one
    redacting stderr handler in `fmt` (Ray keeps the actor's stderr in its session's worker-*.err files; its
    log monitor, where the node runs one, copies them to the driver's terminal, else the driver fetches the
    lines: `relay_to_driver`), the SDK loggers at WARNING at most. Ray leaves an actor's root logger without
    a handler, so its lines would go out unredacted. Elsewhere (the driver lane's in-process workers, unit
    tests) the driver's logging stays as it is. Returns whether it configured this process."""
    global _relay
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized() or ray.get_runtime_context().get_actor_id() is None:
        return False
    _install(level, fmt)
    root = logging.getLogger()
    if _relay is not None:
        root.removeHandler(_relay)
        _relay = None
    if _relay_wanted:
        _relay = _Relay(RELAY_LIMIT)
        _relay.setFormatter(formatter_for(fmt))
        root.addHandler(_relay)
    logging.getLogger(__name__).debug("actor logging: level=%s format=%s", level.upper(), LogFormat(fmt).value)
    return True


def ray_logging_config(cfg: SyncConfig) -> Any:
    """A `ray.LoggingConfig` for `ray.init(logging_config=...)`, so actors log in `log.format` at `log_level`
    (Ray's own JSON encoding in the workers' log files). None when this Ray has no LoggingConfig."""
    import ray

    config_type = getattr(ray, "LoggingConfig", None)
    if config_type is None:
        return None
    encoding = "JSON" if LogFormat(cfg.log.format) == LogFormat.json else "TEXT"
    return config_type(encoding=encoding, log_level=str(cfg.log_level).upper())
