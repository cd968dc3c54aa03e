"""Pure parsers of the three event message formats into normalized events, and the scope that selects ours.

Formats (one SQS message body each):
- Data Transfer Hub: `{"key": "...", "size": 123}` (a list of those too). The key is raw; no bucket, no time
  (the message's SentTimestamp stands in), never a delete.
- S3 event notifications: `{"Records": [{"eventName": "ObjectCreated:Put", "eventTime": ..., "s3": {"bucket":
  {"name"}, "object": {"key", "size", "eTag", "sequencer"}}}]}`, also inside an SNS envelope. Keys are
  URL-encoded with '+' for space. `{"Event": "s3:TestEvent", ...}` is ignored.
- Aliyun OSS event notifications as OSS / Function Compute deliver them: `{"events": [{"eventName":
  "ObjectCreated:PutObject", "eventTime": ..., "oss": {"bucket": {"name"}, "object": {"key", "size", "eTag"}}}]}`
  (raw keys; base64-wrapped bodies, as MNS delivers them, are unwrapped).
No I/O and no clock here: the service (sync/watch.py) feeds bodies in and acts on the events.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import calendar
import json
import re
from dataclasses import dataclass
from urllib.parse import unquote_plus

from dth_ray.keyfilter import KeyFilter

CREATED = "created"
REMOVED = "removed"

S3 = "s3"
OSS = "oss"
DTH = "dth"

# Event names outside ObjectCreated:* / ObjectRemoved:* that still change what a key holds.
_S3_EXTRA_KINDS = {
    "LifecycleExpiration:Delete": REMOVED,
    "LifecycleExpiration:DeleteMarkerCreated": REMOVED,
    "ObjectRestore:Completed": CREATED,  # an archived object became readable
}
_TIME_RE = re.compile(r"^(\d{4})-(\d{2})-(\d{2})[T ](\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:?\d{2})?$")


@dataclass(frozen=True, slots=True)
class Event:
    """One change to one source key. `bucket` is '' when the format carries none (DTH); `event_time_s` is
    epoch seconds (0 unknown); `sequencer` is S3's per-key ordering token ('' if none)."""

    bucket: str
    key: str
    kind: str  # created | removed
    event_time_s: float = 0.0
    sequencer: str = ""
    size: int = -1
    etag: str = ""
    fmt: str = ""  # s3 | oss | dth
    name: str = ""  # the event name as sent, e.g. ObjectCreated:Put


@dataclass(frozen=True, slots=True)
class ParsedMessage:
    """What one message body holds: events, a reason per record left out, or an error (poison)."""

    events: tuple[Event, ...] = ()
    ignored: tuple[str, ...] = ()
    error: str = ""


def parse_time(text: object) -> float:
    """ISO 8601 UTC time ('2024-05-01T12:00:00.123Z', offsets allowed) as epoch seconds; 0.0 if unparseable."""
    if not isinstance(text, str):
        return 0.0
    match = _TIME_RE.match(text.strip())
    if not match:
        return 0.0
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        seconds = calendar.timegm((year, month, day, hour, minute, second, 0, 0, 0))
    except (ValueError, OverflowError):
        return 0.0
    fraction = match.group(7)
    if fraction:
        seconds += int(fraction) / 10 ** len(fraction)
    zone = match.group(8)
    if zone and zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        digits = zone[1:].replace(":", "")
        seconds -= sign * (int(digits[:2]) * 3600 + int(digits[2:]) * 60)
    return float(seconds)


def _decode(body: str | bytes) -> object:
    """JSON of the body, or of its base64 decoding (MNS delivers OSS events base64-encoded). Raises ValueError."""
    text = body.decode("utf-8") if isinstance(body, bytes | bytearray) else body
    try:
        return json.loads(text)
    except ValueError:
        pass
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return json.loads(raw.decode("utf-8"))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise ValueError("not JSON (nor base64 JSON)") from None


def _int(value: object, default: int = -1) -> int:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _record(record: dict, events: list[Event], ignored: list[str], fmt: str) -> None:
    """One S3 or OSS notification record (the two share a layout: eventName, eventTime, <fmt>.bucket.name,
    <fmt>.object.key/size/eTag). S3 keys are URL-encoded with '+' for space; OSS keys are raw."""
    name = str(record.get("eventName", "")).removeprefix(f"{fmt}:")
    if name.startswith("ObjectCreated:"):
        kind = CREATED
    elif name.startswith("ObjectRemoved:"):
        kind = REMOVED
    else:
        kind = _S3_EXTRA_KINDS.get(name, "") if fmt == S3 else ""
    if not kind:
        ignored.append(f"event:{name or '?'}")
        return
    body = record.get(fmt)
    obj = body.get("object") if isinstance(body, dict) else None
    key = obj.get("key") if isinstance(obj, dict) else None
    if not isinstance(key, str) or not key:
        ignored.append("malformed")
        return
    bucket = body.get("bucket") if isinstance(body.get("bucket"), dict) else {}
    events.append(Event(
        bucket=str(bucket.get("name", "")), key=unquote_plus(key) if fmt == S3 else key, kind=kind,
        event_time_s=parse_time(record.get("eventTime")), sequencer=str(obj.get("sequencer") or ""),
        size=_int(obj.get("size")), etag=str(obj.get("eTag") or obj.get("etag") or "").strip('"'),
        fmt=fmt, name=name))


def _walk(doc: object, sent_time_s: float, events: list[Event], ignored: list[str], depth: int = 0) -> str:
    """Collect the events of one decoded body; returns an error string when the format is unknown."""
    if depth > 3:
        return "nested too deeply"
    if isinstance(doc, list):
        for item in doc:
            error = _walk(item, sent_time_s, events, ignored, depth + 1)
            if error:
                return error
        return ""
    if not isinstance(doc, dict):
        return "not a JSON object"
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):  # SNS envelope
        try:
            return _walk(json.loads(doc["Message"]), sent_time_s, events, ignored, depth + 1)
        except ValueError:
            return "SNS message is not JSON"
    if doc.get("Event") == "s3:TestEvent":
        ignored.append("test_event")
        return ""
    if isinstance(doc.get("Records"), list):
        for record in doc["Records"]:
            if isinstance(record, dict) and isinstance(record.get("oss"), dict):
                _record(record, events, ignored, OSS)
            elif isinstance(record, dict):
                _record(record, events, ignored, S3)
            else:
                ignored.append("malformed")
        return ""
    if isinstance(doc.get("events"), list):
        for record in doc["events"]:
            if isinstance(record, dict):
                _record(record, events, ignored, OSS)
            else:
                ignored.append("malformed")
        return ""
    if isinstance(doc.get("key"), str) and doc["key"]:
        events.append(Event(bucket="", key=doc["key"], kind=CREATED, event_time_s=sent_time_s,
                            sequencer=str(doc.get("sequencer") or ""), size=_int(doc.get("size")), fmt=DTH))
        return ""
    return "unknown message format"


def parse_body(body: str | bytes, sent_time_s: float = 0.0) -> ParsedMessage:
    """Parse one message body. `sent_time_s` (the queue's SentTimestamp) dates events that carry no time.

    Never raises: a body in no known format comes back with `error` set (a poison message).
    """
    try:
        doc = _decode(body)
    except ValueError as exc:
        return ParsedMessage(error=str(exc))
    events: list[Event] = []
    ignored: list[str] = []
    error = _walk(doc, sent_time_s, events, ignored)
    if error:
        return ParsedMessage(error=error)
    return ParsedMessage(tuple(events), tuple(ignored))


@dataclass(frozen=True)
class EventScope:
    """Which events concern this job, exactly as a scan would list them: the source bucket (events without
    one are assumed ours), keys under `prefix` and — with source.prefix_list — under one of `prefix_list`
    (sorted, none covering another, as load_prefix_list returns them), that the key filter accepts; removals
    only when `deletes`."""

    bucket: str
    prefix: str = ""
    deletes: bool = True
    key_filter: KeyFilter | None = None
    prefix_list: tuple[str, ...] = ()

    def reason_to_ignore(self, event: Event) -> str:
        """'' when the event is ours, else why not (other_bucket, outside_prefix, outside_prefix_list,
        deletes_disabled, filtered)."""
        if event.bucket and self.bucket and event.bucket != self.bucket:
            return "other_bucket"
        if not event.key.startswith(self.prefix):
            return "outside_prefix"
        if self.prefix_list and not self._listed(event.key):
            return "outside_prefix_list"
        if event.kind == REMOVED and not self.deletes:
            return "deletes_disabled"
        kf = self.key_filter
        if kf is not None and not kf.is_noop and not kf.accepts(event.key[len(self.prefix):]):
            return "filtered"
        return ""

    def _listed(self, key: str) -> bool:
        # Keys under one prefix sort together and no listed prefix covers another, so the only prefix that
        # can hold `key` is the greatest one not after it.
        i = bisect.bisect_right(self.prefix_list, key)
        return i > 0 and key.startswith(self.prefix_list[i - 1])


def newer(a: Event, b: Event) -> bool:
    """Whether `b` describes a later state of the key than `a`: by S3 sequencer when both carry one (same
    bucket), else by event time when both are dated, else `b` (the later arrival) wins."""
    if a.sequencer and b.sequencer and a.fmt == b.fmt == S3 and a.bucket == b.bucket:
        try:
            return int(b.sequencer, 16) > int(a.sequencer, 16)
        except ValueError:
            pass
    if a.event_time_s and b.event_time_s and a.event_time_s != b.event_time_s:
        return b.event_time_s > a.event_time_s
    return True
