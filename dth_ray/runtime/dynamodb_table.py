"""One DynamoDB table (string hash key `pk`, string range key `sk`) as the manifest uses it: client from the
manifest config, errors mapped once, batch writes of at most 25 items with unprocessed items retried.

Every method raises a dth_ray.errors class with a message free of SDK text (no credential can leak).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

from dth_ray.config import is_loopback
from dth_ray.credentials import resolve
from dth_ray.errors import (
    ConfigError,
    DthError,
    Fatal,
    NotFound,
    PermissionDenied,
    PreconditionFailed,
    Throttled,
    Transient,
)

BATCH_WRITE_ITEMS = 25  # AWS refuses more per BatchWriteItem (moto does not: never rely on it)
BATCH_GET_KEYS = 100
SORT_KEY_BYTES = 1024
BATCH_ATTEMPTS = 8  # BatchWriteItem/BatchGetItem rounds for unprocessed items before giving up
_BACKOFF_BASE_S = 0.05
_BACKOFF_MAX_S = 2.0
_SDK_ATTEMPTS = 3  # the SDK's own retries of one request (connection errors, 5xx, throttling)
_TABLE_ACTIVE_TIMEOUT_S = 300.0
_WRITE_OPS = frozenset({"batch_write_item", "put_item", "delete_item", "update_item", "transact_write_items"})
_TABLE_RE = re.compile(r"[A-Za-z0-9_.-]{3,255}")
_THROTTLED = {"ProvisionedThroughputExceededException", "ThrottlingException", "RequestLimitExceeded",
              "LimitExceededException"}
_DENIED = {"AccessDeniedException", "UnrecognizedClientException", "InvalidSignatureException",
           "ExpiredTokenException", "MissingAuthenticationTokenException", "IncompleteSignatureException",
           "InvalidClientTokenId"}


def endpoint_url(cfg) -> str:
    """The endpoint URL ('' for AWS). Plain http only to loopback or with insecure_http. Raises ConfigError."""
    if not cfg.endpoint:
        return ""
    url = cfg.endpoint if "://" in cfg.endpoint else "https://" + cfg.endpoint
    parts = urlsplit(url)
    if "@" in parts.netloc:
        raise ConfigError("manifest.endpoint must not carry credentials (use manifest.credentials)")
    try:
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        raise ConfigError(f"manifest.endpoint={cfg.endpoint!r} has a malformed port") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"manifest.endpoint={cfg.endpoint!r} is not an http(s) URL")
    if parts.scheme == "http" and not cfg.insecure_http and not is_loopback(parts.hostname):
        raise ConfigError(f"manifest.endpoint={cfg.endpoint!r} is plain http; use https or set "
                          "manifest.insecure_http=true")
    return url


def _map_error(exc: BaseException, op: str) -> DthError:
    """One place that turns a botocore error into the taxonomy; the message never carries SDK text."""
    import botocore.exceptions as bce

    if isinstance(exc, DthError):
        return exc
    if isinstance(exc, bce.ClientError):
        code = str(exc.response.get("Error", {}).get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        msg = f"DynamoDB {op}: {status} {code or 'error'}"
        if code == "ResourceNotFoundException":
            return NotFound(msg, code)
        if code == "ConditionalCheckFailedException":
            return PreconditionFailed(msg, code)
        if code in _THROTTLED or status == 429:
            return Throttled(msg, None, code)
        if code in _DENIED or status in (401, 403):
            return PermissionDenied(msg, code)
        if status >= 500 or code in ("InternalServerError", "ServiceUnavailable"):
            return Transient(msg, code)
        return Fatal(msg, code)
    name = type(exc).__name__
    if isinstance(exc, (bce.NoCredentialsError, bce.PartialCredentialsError)):
        return PermissionDenied(f"DynamoDB {op}: no usable credentials (see manifest.credentials)", name)
    if isinstance(exc, (bce.ConnectionError, bce.HTTPClientError)):
        return Transient(f"DynamoDB {op}: {name} (endpoint unreachable or too slow)", name)
    return Fatal(f"DynamoDB {op}: {name}", name)


def _make_clients(cfg):
    """Two DynamoDB clients with keys from manifest.credentials: one for the run, and one for the table check
    at start, bounded (dth_ray.awsenv.bounded_config) so a silent endpoint fails the command in seconds rather
    than after the run client's 4 attempts of 30 s. Raises ConfigError, PermissionDenied."""
    import boto3
    from botocore.config import Config

    from dth_ray.awsenv import bounded_config

    if cfg.credentials == "anonymous":
        raise ConfigError("manifest.credentials=anonymous cannot sign DynamoDB requests")
    endpoint = endpoint_url(cfg)
    creds = resolve(cfg.credentials, "manifest", cfg.region)
    session = boto3.session.Session(
        aws_access_key_id=creds.access_key_id if creds else None,
        aws_secret_access_key=creds.secret_access_key if creds else None,
        aws_session_token=(creds.session_token or None) if creds else None,
    )
    region = cfg.region or session.region_name or ("us-east-1" if endpoint else "")
    if not region:
        raise ConfigError("manifest.region is required for manifest=dynamodb (or set AWS_REGION)")
    config = Config(retries={"max_attempts": _SDK_ATTEMPTS, "mode": "standard"}, connect_timeout=5,
                    read_timeout=30, max_pool_connections=4)
    where = dict(region_name=region, endpoint_url=endpoint or None)
    return (session.client("dynamodb", config=config, **where),
            session.client("dynamodb", config=bounded_config(max_pool_connections=1), **where))


def backoff_s(attempt: int) -> float:
    """Jittered exponential delay before retry `attempt` + 1."""
    return min(_BACKOFF_MAX_S, _BACKOFF_BASE_S * 2**attempt) * (0.5 + random.random())


def enc(item: dict) -> dict:
    """Plain values (str, int, float, bool, bytes) → DynamoDB's typed attribute values."""
    out = {}
    for name, value in item.items():
        if isinstance(value, bool):
            out[name] = {"BOOL": value}
        elif isinstance(value, (int, float)):
            out[name] = {"N": repr(value)}
        elif isinstance(value, bytes):
            out[name] = {"B": value}
        else:
            out[name] = {"S": value}
    return out


def dec(item: dict) -> dict:
    out = {}
    for name, typed in item.items():
        (kind, value), = typed.items()
        if kind == "N":
            out[name] = int(value) if value.lstrip("-").isdigit() else float(value)
        else:
            out[name] = value
    return out


def key(pk: str, sk: str) -> dict:
    return {"pk": {"S": pk}, "sk": {"S": sk}}


class DynamoTable:
    """The table named by manifest.table, created on demand (pay per request). Counts write requests and
    items written. Thread-safe (boto3 clients are)."""

    def __init__(self, cfg):
        if not _TABLE_RE.fullmatch(cfg.table or ""):
            raise ConfigError(f"manifest.table={cfg.table!r} is not a DynamoDB table name "
                              "(3 to 255 of A-Z a-z 0-9 _ . -)")
        self.name = cfg.table
        self.writes = 0
        self.items_written = 0
        self._lock = threading.Lock()
        self._client, self._check_client = _make_clients(cfg)
        self._where = endpoint_url(cfg) or f"region {self._client.meta.region_name}"

    def call(self, op: str, **kwargs) -> dict:
        """One client call (`op` is the boto3 method name). Raises the mapped DthError, never the SDK's."""
        try:
            resp = getattr(self._client, op)(**kwargs)
        except Exception as exc:
            raise _map_error(exc, op) from None
        if op in _WRITE_OPS:
            with self._lock:
                self.writes += 1
        return resp

    def count_items(self, count: int) -> None:
        with self._lock:
            self.items_written += count

    def put(self, item: dict, condition: str = "") -> None:
        kwargs: dict = {"TableName": self.name, "Item": enc(item)}
        if condition:
            kwargs["ConditionExpression"] = condition
        self.call("put_item", **kwargs)
        self.count_items(1)

    def put_replacing(self, item: dict, old_pk: str, old_sk: str) -> None:
        """Put `item` and delete another item in one atomic request (TransactWriteItems)."""
        self.call("transact_write_items", TransactItems=[
            {"Put": {"TableName": self.name, "Item": enc(item)}},
            {"Delete": {"TableName": self.name, "Key": key(old_pk, old_sk)}}])
        self.count_items(2)

    def get(self, pk: str, sk: str) -> dict | None:
        resp = self.call("get_item", TableName=self.name, Key=key(pk, sk), ConsistentRead=True)
        return dec(resp["Item"]) if "Item" in resp else None

    def delete(self, pk: str, sk: str) -> None:
        self.call("delete_item", TableName=self.name, Key=key(pk, sk))
        self.count_items(1)

    def query(self, pk: str, cond: str = "", values: dict | None = None, *, forward: bool = True,
              page: int = 0, attributes: tuple[str, ...] = ()) -> Iterator[dict]:
        """Items of one partition in sk order, strongly consistent (an item just flushed is never missed).

        `cond` is a condition on `#sk` with `values`; `page` is the Limit per request; `attributes`, if
        given, are the only attributes returned.
        """
        names = {"#pk": "pk", **({"#sk": "sk"} if cond else {})}
        names.update({f"#a{i}": name for i, name in enumerate(attributes)})
        kwargs: dict = {
            "TableName": self.name, "ConsistentRead": True, "ScanIndexForward": forward,
            "KeyConditionExpression": "#pk = :pk" + (f" AND {cond}" if cond else ""),
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": {":pk": {"S": pk}, **(values or {})},
        }
        if page:
            kwargs["Limit"] = page
        if attributes:
            kwargs["ProjectionExpression"] = ", ".join(f"#a{i}" for i in range(len(attributes)))
        while True:
            resp = self.call("query", **kwargs)
            yield from (dec(item) for item in resp.get("Items", []))
            if not resp.get("LastEvaluatedKey"):
                return
            kwargs["ExclusiveStartKey"] = resp["LastEvaluatedKey"]

    def batch_write(self, requests: list[dict]) -> None:
        """One BatchWriteItem of at most 25 Put/DeleteRequests; unprocessed ones retried with jittered
        backoff, at most BATCH_ATTEMPTS rounds. Raises Throttled if some stay unprocessed."""
        if len(requests) > BATCH_WRITE_ITEMS:
            raise ValueError(f"BatchWriteItem takes at most {BATCH_WRITE_ITEMS} requests")
        for attempt in range(BATCH_ATTEMPTS):
            resp = self.call("batch_write_item", RequestItems={self.name: requests})
            left = resp.get("UnprocessedItems", {}).get(self.name, [])
            self.count_items(len(requests) - len(left))
            if not left:
                return
            requests = left
            if attempt + 1 < BATCH_ATTEMPTS:
                time.sleep(backoff_s(attempt))
        raise Throttled(f"DynamoDB batch_write_item: {len(requests)} items still unprocessed after "
                        f"{BATCH_ATTEMPTS} attempts", None, "UnprocessedItems")

    def batch_get(self, keys: list[tuple[str, str]], attribute: str) -> dict[tuple[str, str], object]:
        """`attribute` of each stored item among `keys` (BatchGetItem, 100 keys a request, unprocessed keys
        retried with backoff). Raises Throttled if some stay unprocessed."""
        return {k: item.get(attribute) for k, item in self.batch_items(keys, (attribute,)).items()}

    def batch_items(self, keys: list[tuple[str, str]], attributes: tuple[str, ...]) -> dict[tuple[str, str], dict]:
        """`attributes` of each stored item among `keys`, as plain dicts (see batch_get). Raises Throttled."""
        found: dict[tuple[str, str], dict] = {}
        names = {"#p": "pk", "#s": "sk", **{f"#a{i}": name for i, name in enumerate(attributes)}}
        for start in range(0, len(keys), BATCH_GET_KEYS):
            request = {self.name: {"Keys": [key(pk, sk) for pk, sk in keys[start:start + BATCH_GET_KEYS]],
                                   "ProjectionExpression": ", ".join(names),
                                   "ExpressionAttributeNames": names, "ConsistentRead": True}}
            for attempt in range(BATCH_ATTEMPTS):
                resp = self.call("batch_get_item", RequestItems=request)
                for item in resp.get("Responses", {}).get(self.name, []):
                    plain = dec(item)
                    found[(plain["pk"], plain["sk"])] = plain
                request = resp.get("UnprocessedKeys") or {}
                if not request.get(self.name):
                    break
                time.sleep(backoff_s(attempt))
            else:
                raise Throttled(f"DynamoDB batch_get_item: keys still unprocessed after {BATCH_ATTEMPTS} attempts",
                                None, "UnprocessedKeys")
        return found

    def _describe_first(self) -> dict:
        """The table's description through the bounded client. Raises NotFound, ConfigError (no answer)."""
        try:
            return self._check_client.describe_table(TableName=self.name)["Table"]
        except Exception as exc:
            error = _map_error(exc, "describe_table")
        if isinstance(error, Transient):
            raise ConfigError(f"manifest=dynamodb: DynamoDB at {self._where} did not answer ({error.code})") from None
        raise error

    def ensure(self) -> None:
        """Reuse the table or create it (pay per request); wait until ACTIVE. Raises ConfigError (also when
        DynamoDB does not answer within about 15 s), DthError."""
        try:
            desc = self._describe_first()
        except NotFound:
            try:
                self.call("create_table", TableName=self.name, BillingMode="PAY_PER_REQUEST",
                          AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                {"AttributeName": "sk", "AttributeType": "S"}],
                          KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"},
                                     {"AttributeName": "sk", "KeyType": "RANGE"}])
            except DthError as exc:
                if exc.code != "ResourceInUseException":  # created meanwhile by another process: fine
                    raise
            desc = self.call("describe_table", TableName=self.name)["Table"]
        schema = {(k["AttributeName"], k["KeyType"]) for k in desc.get("KeySchema", [])}
        types = {a["AttributeName"]: a["AttributeType"] for a in desc.get("AttributeDefinitions", [])}
        if schema != {("pk", "HASH"), ("sk", "RANGE")} or types.get("pk") != "S" or types.get("sk") != "S":
            raise ConfigError(f"manifest.table={self.name!r} exists with another key schema "
                              "(needs string hash key pk and string range key sk)")
        deadline = time.monotonic() + _TABLE_ACTIVE_TIMEOUT_S
        delay = 0.2
        while desc.get("TableStatus") != "ACTIVE":
            if time.monotonic() > deadline:
                raise Transient(f"DynamoDB table {self.name} not ACTIVE after {_TABLE_ACTIVE_TIMEOUT_S:.0f} s")
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            desc = self.call("describe_table", TableName=self.name)["Table"]
