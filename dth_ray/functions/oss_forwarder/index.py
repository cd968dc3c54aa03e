"""Aliyun Function Compute handler: forward OSS event notifications (creates AND deletes) to Amazon SQS.

Each OSS record goes out as its own message, exactly as OSS sent it (`{"events": [record]}`), so deletes
survive (Data Transfer Hub's `{"key", "size"}` body cannot carry one) and `dth-ray watch` parses it like any
OSS event. Messages are sent with SendMessageBatch (10 per call, under the batch size limit); entries SQS
refuses are retried, and if some still fail the invocation fails, so Function Compute retries it (a
duplicate message is harmless: watch reconciles a key with the source's current state).

Environment (the function's configuration, which Function Compute stores encrypted):
  QUEUE_URL       the queue (`dth-ray events setup` prints it)                                    required
  ALLOWED_BUCKETS OSS buckets whose events may be forwarded, comma-separated; events naming any    required
                  other bucket are dropped and logged (unset: every invocation fails, nothing is sent)
  SQS_CREDENTIALS keys of an IAM user allowed only sqs:SendMessage on that queue, as the JSON       required
                  the migration's secret uses: {"access_key_id": ..., "secret_access_key": ...}
                  (or ACCESS_KEY + SECRET_KEY, or AWS_ACCESS_KEY_ID + AWS_SECRET_ACCESS_KEY)
  REGION_NAME     the queue's AWS region (default: from QUEUE_URL)
  SQS_ENDPOINT    an SQS-compatible endpoint URL (default: AWS)
  EVENT_PREFIXES  event names to forward, comma-separated prefixes (default: ObjectCreated:,ObjectRemoved:)
Credentials are read from the environment at call time and never logged; README.md says how to rotate them.

Standalone: imports only the standard library and boto3 (packaged with it at the versions pinned in
requirements.txt; see README.md in this folder).
"""

from __future__ import annotations

import json
import logging
import os
import re

logger = logging.getLogger(__name__)
_BATCH = 10
_MAX_BATCH_BYTES = 250 * 1024  # SQS: 256 KiB per batch request (all bodies together)
_ATTEMPTS = 3
_clients: dict = {}


def _keys() -> tuple[str, str, str]:
    """(access key id, secret, session token) from SQS_CREDENTIALS (the migration secret's JSON), else the
    key/secret variable pairs. Raises RuntimeError without echoing any value."""
    doc = os.environ.get("SQS_CREDENTIALS", "").strip()
    if doc:
        try:
            parsed = json.loads(doc)
            return parsed["access_key_id"], parsed["secret_access_key"], parsed.get("session_token") or ""
        except (ValueError, KeyError, TypeError):
            raise RuntimeError(
                'SQS_CREDENTIALS must be JSON: {"access_key_id": ..., "secret_access_key": ...}') from None
    key = os.environ.get("ACCESS_KEY") or os.environ.get("AWS_ACCESS_KEY_ID", "")
    secret = os.environ.get("SECRET_KEY") or os.environ.get("AWS_SECRET_ACCESS_KEY", "")
    return key, secret, ""


def _settings() -> dict:
    """The function's configuration. Raises RuntimeError when QUEUE_URL or ALLOWED_BUCKETS is unset: with
    no allowlist the forwarder refuses to run rather than pass on events of any bucket."""
    url = os.environ.get("QUEUE_URL", "")
    if not url:
        raise RuntimeError("QUEUE_URL is not set")
    buckets = frozenset(b.strip() for b in os.environ.get("ALLOWED_BUCKETS", "").split(",") if b.strip())
    if not buckets:
        raise RuntimeError("ALLOWED_BUCKETS is not set: name the OSS bucket(s) whose events may be forwarded")
    match = re.search(r"sqs[.-]([a-z]{2}(?:-[a-z]+)+-\d)\.", url)
    key, secret, token = _keys()
    return {
        "url": url,
        "buckets": buckets,
        "region": os.environ.get("REGION_NAME") or (match.group(1) if match else "us-east-1"),
        "endpoint": os.environ.get("SQS_ENDPOINT") or None,
        "key": key,
        "secret": secret,
        "token": token,
        "prefixes": tuple(p.strip() for p in os.environ.get("EVENT_PREFIXES", "ObjectCreated:,ObjectRemoved:").split(",")
                          if p.strip()),
    }


def _client(settings: dict):
    """One boto3 SQS client per configuration, reused across warm invocations."""
    # keyed by the key id too, so a rotation (new configuration) gets a new client on a warm instance
    cache_key = (settings["region"], settings["endpoint"], settings["key"])
    found = _clients.get(cache_key)
    if found is None:
        import boto3

        if not settings["key"] or not settings["secret"]:
            raise RuntimeError("SQS_CREDENTIALS (or ACCESS_KEY and SECRET_KEY) must be set")
        found = boto3.client("sqs", region_name=settings["region"], endpoint_url=settings["endpoint"],
                             aws_access_key_id=settings["key"], aws_secret_access_key=settings["secret"],
                             aws_session_token=settings["token"] or None)
        _clients.clear()
        _clients[cache_key] = found
    return found


def _records(event) -> list:
    """The OSS records of one invocation (`event` is the JSON bytes Function Compute passes, or a dict)."""
    doc = json.loads(event) if isinstance(event, bytes | bytearray | str) else event
    records = doc.get("events") if isinstance(doc, dict) else None
    if not isinstance(records, list):
        raise ValueError("not an OSS event: no 'events' list")
    return records


def _batches(bodies: list[str]) -> list[list[str]]:
    out: list[list[str]] = []
    size = 0
    for body in bodies:
        if not out or len(out[-1]) == _BATCH or size + len(body.encode()) > _MAX_BATCH_BYTES:
            out.append([])
            size = 0
        out[-1].append(body)
        size += len(body.encode())
    return out


def _send(sqs, url: str, bodies: list[str]) -> int:
    """Send every body; raises RuntimeError naming how many could not be sent after retries."""
    unsent = 0
    for batch in _batches(bodies):
        entries = {str(i): body for i, body in enumerate(batch)}
        for _ in range(_ATTEMPTS):
            try:
                answer = sqs.send_message_batch(
                    QueueUrl=url, Entries=[{"Id": i, "MessageBody": b} for i, b in entries.items()])
            except Exception as exc:  # the SDK's own retries are done; try the batch again
                logger.warning("SendMessageBatch failed: %s", type(exc).__name__)
                continue
            entries = {f["Id"]: entries[f["Id"]] for f in answer.get("Failed", []) if f["Id"] in entries}
            if not entries:
                break
            logger.warning("SQS refused %d messages; retrying", len(entries))
        unsent += len(entries)
    if unsent:
        raise RuntimeError(f"{unsent} of {len(bodies)} events could not be sent to SQS")
    return len(bodies)


def _bucket(record) -> str:
    oss = record.get("oss") if isinstance(record, dict) else None
    bucket = oss.get("bucket") if isinstance(oss, dict) else None
    name = bucket.get("name") if isinstance(bucket, dict) else None
    return name if isinstance(name, str) else ""


def handler(event, context):
    """Function Compute entry point (handler `index.handler`); returns a JSON summary. Raises RuntimeError
    when the configuration is incomplete or events could not be sent (Function Compute retries)."""
    settings = _settings()
    records = _records(event)
    allowed = [r for r in records if _bucket(r) in settings["buckets"]]
    if len(allowed) < len(records):
        others: dict[str, int] = {}
        for record in records:
            name = _bucket(record)
            if name not in settings["buckets"]:
                others[name[:63]] = others.get(name[:63], 0) + 1  # (an OSS bucket name is at most 63 chars)
        logger.warning("dropped %d events of buckets not in ALLOWED_BUCKETS: %r",
                       len(records) - len(allowed), others)
    wanted = [r for r in allowed if str(r.get("eventName", "")).startswith(settings["prefixes"])]
    names: dict[str, int] = {}
    for record in wanted:
        names[record.get("eventName", "")] = names.get(record.get("eventName", ""), 0) + 1
    bodies = [json.dumps({"events": [record]}, ensure_ascii=False, separators=(",", ":")) for record in wanted]
    sent = _send(_client(settings), settings["url"], bodies) if bodies else 0
    logger.info("forwarded %d of %d OSS events %s", sent, len(records), names)
    return json.dumps({"received": len(records), "forwarded": sent, "dropped": len(records) - len(allowed),
                       "ignored": len(allowed) - len(wanted)})
