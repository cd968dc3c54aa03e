"""Resolve a `credentials` spec (default, anonymous, env:NAME, secret:ID, profile:NAME, role:ARN) into keys.

Specs travel in configs; keys are resolved where they are used (inside each actor), so secrets never
cross Ray and never appear in a repr, a log line or a report. `RefreshingCredentials` keeps one spec's keys
current over a days-long run: re-read on a schedule, before an assumed role expires, and after an auth error.
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from dth_ray.errors import ConfigError, PermissionDenied


@dataclass(frozen=True)
class Credentials:
    """Access keys; repr and str never show the secret or token."""

    access_key_id: str
    secret_access_key: str = field(repr=False)
    session_token: str = field(default="", repr=False)

    def __str__(self) -> str:
        return f"Credentials(access_key_id={self.access_key_id[:4]}…)"

    def __reduce__(self):
        raise TypeError("Credentials hold keys and are never pickled (nor sent to Ray actors); pass the "
                        "credentials spec (env:NAME, secret:ID, ...) and resolve it where it is used")


# Aliyun's own environment variables, read by `default` for OSS (the AWS chain would sign with AWS keys).
_ALIYUN_ENV = (("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN"),
               ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"))


def resolve(spec: str, role: str, region: str = "", provider: str = "aws") -> Credentials | None:
    """Keys for `spec`, or None for anonymous access. `provider` 'aliyun' changes what `default` means (its
    environment variables, else anonymous). `region`: the AWS region of the store, if it is one, where
    secret:ID and role:ARN are looked up before the environment's or profile's region.

    Raises ConfigError for a malformed spec, missing variables, a default chain that finds no keys, or a
    Secrets Manager or STS that does not answer (within about 15 s); PermissionDenied when a secret or
    profile cannot be read.
    """
    if spec == "anonymous":
        return None
    kind, _, arg = spec.partition(":")
    if kind == "env":
        key_id = os.environ.get(f"{arg}_ACCESS_KEY_ID", "")
        secret = os.environ.get(f"{arg}_SECRET_ACCESS_KEY", "")
        if not key_id or not secret:
            raise ConfigError(
                f"{role}.credentials=env:{arg} needs {arg}_ACCESS_KEY_ID and {arg}_SECRET_ACCESS_KEY set"
            )
        return Credentials(key_id, secret, os.environ.get(f"{arg}_SESSION_TOKEN", ""))
    if kind == "secret":
        # An Aliyun region (an OSS or MaxCompute store's) is no place to look for an AWS secret.
        return _from_secret(arg, role, region if provider == "aws" else "")
    if kind == "role":
        if provider == "aliyun":
            raise ConfigError(f"{role}.credentials={spec!r}: role:ARN assumes an AWS IAM role; use env:NAME or secret:ID")
        return _assume_role(arg, role, region)[0]
    if provider == "aliyun" and kind in ("default", "profile"):
        if kind == "profile":
            raise ConfigError(f"{role}.credentials={spec!r}: profiles are AWS's; use env:NAME or secret:ID")
        for key_var, secret_var, token_var in _ALIYUN_ENV:
            if os.environ.get(key_var) and os.environ.get(secret_var):
                return Credentials(os.environ[key_var], os.environ[secret_var], os.environ.get(token_var, ""))
        return None
    if kind in ("default", "profile"):
        return _from_botocore(arg if kind == "profile" else None, role)
    raise ConfigError(
        f"{role}.credentials={spec!r} must be default, anonymous, env:NAME, secret:ID, profile:NAME or role:ARN")


def _from_botocore(profile: str | None, role: str) -> Credentials | None:
    import botocore.exceptions
    import botocore.session

    try:
        session = botocore.session.Session(profile=profile)
        creds = session.get_credentials()
    except botocore.exceptions.ProfileNotFound:
        raise ConfigError(f"{role}.credentials=profile:{profile} names no profile") from None
    if creds is None:
        if profile:
            raise ConfigError(f"{role}.credentials=profile:{profile} holds no keys")
        # As the SDKs do (NoCredentialsError), never fall back to unsigned requests: a server would answer
        # those with an error that blames something else (400 UnsupportedAlgorithm from rclone).
        public = f"; for a public bucket use {role}.credentials=anonymous" if role in ("source", "destination") else ""
        raise ConfigError(f"no credentials found for {role}: tried environment, profile, instance role "
                          f"({role}.credentials=default{public})")
    frozen = creds.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token or "")


def _sdk_failure(spec: str, role: str, service: str, region: str, exc: Exception) -> ConfigError:
    """A botocore failure that is not the service's answer (no base keys, no answer at all) as one line."""
    import botocore.exceptions

    name = type(exc).__name__
    if isinstance(exc, (botocore.exceptions.NoCredentialsError, botocore.exceptions.PartialCredentialsError)):
        return ConfigError(f"{role}.credentials={spec}: no AWS credentials to call {service} with "
                           "(tried environment, profile, instance role)")
    if isinstance(exc, (botocore.exceptions.ConnectionError, botocore.exceptions.HTTPClientError)):
        return ConfigError(f"{role}.credentials={spec}: {service} in {region} did not answer ({name})")
    return ConfigError(f"{role}.credentials={spec}: {service} in {region} failed ({name})")


def _from_secret(secret_id: str, role: str, region: str) -> Credentials:
    """Read a Data Transfer Hub style secret: {"access_key_id": ..., "secret_access_key": ...}, from Secrets
    Manager in `region` (the store's), else the environment's or profile's region."""
    import boto3
    import botocore.exceptions

    from dth_ray.awsenv import bounded_config, default_region

    quiet_sdk_logs()
    region = default_region(region)
    try:
        client = boto3.client("secretsmanager", region_name=region, config=bounded_config())
        value = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise PermissionDenied(f"{role}.credentials=secret:{secret_id} cannot be read ({code})", code) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise _sdk_failure(f"secret:{secret_id}", role, "Secrets Manager", region, exc) from None
    try:
        doc = json.loads(value)
        return Credentials(doc["access_key_id"], doc["secret_access_key"], doc.get("session_token", ""))
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{role}.credentials=secret:{secret_id} must hold JSON with access_key_id and secret_access_key"
        ) from None


# -- credentials over days ---------------------------------------------------------------------------------

log = logging.getLogger(__name__)

# Provider codes meaning "these keys are stale or wrong" (rotated, revoked, expired token): worth re-reading the
# spec once. AccessDenied is not among them: it means the keys are fine but lack a permission.
AUTH_ERROR_CODES = frozenset({
    "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken", "ExpiredTokenException", "TokenRefreshRequired",
    "InvalidToken", "InvalidClientTokenId", "UnrecognizedClientException", "InvalidSecurityToken",
    "SecurityTokenExpired",
})
REFRESH_INTERVAL_S = 900.0  # scheduled re-read of secret:/env:/profile:/default keys
ROLE_DURATION_S = 3600  # AssumeRole session length
_ROLE_MARGIN_S = 600.0  # refresh an assumed role this long before it expires (at most a quarter of its life)
_MIN_FORCED_REFRESH_S = 2.0  # auth errors re-read the spec at most this often (bounds Secrets Manager calls)
_FAILED_REFRESH_RETRY_S = 60.0  # a scheduled re-read that failed is tried again after this long
# oss2 logs request headers (x-oss-security-token among them) at DEBUG, botocore bodies with keys; aiohttp and
# pyodps log requests and URLs.
_SDK_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "oss2", "aiohttp", "odps")


def quiet_sdk_logs() -> None:
    """Keep the SDKs' DEBUG and INFO output (request headers, response bodies holding secrets) out of every
    log: their loggers log at WARNING at most, whatever the root level."""
    for name in _SDK_LOGGERS:
        logger = logging.getLogger(name)
        if logger.getEffectiveLevel() < logging.WARNING:
            logger.setLevel(logging.WARNING)


def is_auth_error(exc: BaseException) -> bool:
    """Whether `exc` says the keys themselves were refused (so re-reading the spec may help)."""
    return isinstance(exc, PermissionDenied) and exc.code in AUTH_ERROR_CODES


def _assume_role(role_arn: str, role: str, region: str) -> tuple[Credentials, float]:
    """STS AssumeRole with base keys from the default chain; returns (keys, expiry as a Unix time).

    Raises PermissionDenied when the role cannot be assumed (the message names the code, never a key),
    ConfigError when STS cannot be called (no base keys, no answer).
    """
    import boto3
    import botocore.exceptions

    from dth_ray.awsenv import bounded_config, default_region

    quiet_sdk_logs()
    sts_region = default_region(region)
    try:
        client = boto3.session.Session().client("sts", region_name=sts_region, config=bounded_config())
        answer = client.assume_role(RoleArn=role_arn, RoleSessionName=f"dth-ray-{os.getpid()}",
                                    DurationSeconds=ROLE_DURATION_S)["Credentials"]
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise PermissionDenied(f"{role}.credentials=role:{role_arn} cannot be assumed ({code})", code) from None
    except botocore.exceptions.BotoCoreError as exc:
        raise _sdk_failure(f"role:{role_arn}", role, "STS", sts_region, exc) from None
    keys = Credentials(answer["AccessKeyId"], answer["SecretAccessKey"], answer.get("SessionToken", ""))
    return keys, answer["Expiration"].timestamp()


class RefreshingCredentials:
    """The current keys of one `credentials` spec, for a store or client that signs every request.

    `current()` answers from memory; `due()` says a scheduled re-read is owed (every `refresh_interval_s`,
    and for `role:ARN` before the session expires), `refresh_if_due()` does it, and `refresh(generation)`
    re-reads after an auth error — once for all the requests that saw the same keys fail, and at most every
    few seconds. A failed re-read keeps the keys in hand. Thread-safe. Holds keys: never pickle or log it.
    """

    def __init__(self, spec: str, role: str, region: str = "", provider: str = "aws",
                 refresh_interval_s: float = REFRESH_INTERVAL_S, clock: Callable[[], float] = time.monotonic,
                 wall_clock: Callable[[], float] = time.time):
        self.spec = spec
        self._role = role
        self._region = region
        self._provider = provider
        self._interval_s = refresh_interval_s
        self._clock = clock
        self._wall = wall_clock
        self._lock = threading.Lock()
        self._creds: Credentials | None = None
        self._loaded = False
        self._forced_at = -math.inf  # when an auth error last made us re-read
        self._next_due = math.inf
        self.generation = 0  # bumped whenever the keys in hand change
        self.refreshes = 0  # re-reads done after the first resolve (scheduled or forced)

    def __repr__(self) -> str:
        return f"RefreshingCredentials(spec={self.spec!r}, generation={self.generation})"

    def __reduce__(self):
        raise TypeError("RefreshingCredentials holds keys and is never pickled; pickle the spec instead")

    @property
    def static(self) -> bool:
        return self.spec == "anonymous"

    def current(self) -> tuple[Credentials | None, int]:
        """(keys or None for anonymous, generation). The first call resolves the spec and raises what
        `resolve` raises (ConfigError, PermissionDenied)."""
        if not self._loaded:
            with self._lock:
                if not self._loaded:
                    self._fetch()
        return self._creds, self.generation

    def due(self) -> bool:
        return self._loaded and not self.static and self._clock() >= self._next_due

    def refresh_if_due(self) -> None:
        """The scheduled re-read, if owed (cheap when not). Never raises: failures keep the keys in hand."""
        if not self.due():
            return
        with self._lock:
            if self.due():
                self._refetch("scheduled")

    def refresh(self, seen_generation: int) -> None:
        """After an auth error with the keys of `seen_generation`: re-read the spec unless another caller
        already did (the generation moved on) or one was done moments ago. Never raises."""
        if self.static:
            return
        with self._lock:
            if self.generation != seen_generation or self._clock() - self._forced_at < _MIN_FORCED_REFRESH_S:
                return
            self._forced_at = self._clock()
            self._refetch("after an auth error")

    def _refetch(self, why: str) -> None:
        self.refreshes += 1
        try:
            self._fetch()
        except Exception as exc:  # a failed re-read must not fail requests that the keys in hand still serve
            self._next_due = self._clock() + _FAILED_REFRESH_RETRY_S
            log.warning("re-reading %s.credentials (%s) failed: %s; keeping the current keys",
                        self._role, why, type(exc).__name__)

    def _fetch(self) -> None:
        """Resolve the spec now (caller holds the lock). Raises what `resolve` raises."""
        kind, _, arg = self.spec.partition(":")
        expires_at = math.inf
        if kind == "role" and self._provider != "aliyun":
            creds, expiry_wall = _assume_role(arg, self._role, self._region)
            life_s = max(0.0, expiry_wall - self._wall())
            expires_at = self._clock() + life_s - min(_ROLE_MARGIN_S, life_s / 4)
        else:
            creds = resolve(self.spec, self._role, self._region, self._provider)
        now = self._clock()
        if self._loaded and creds != self._creds:
            self.generation += 1
            log.info("%s.credentials: keys changed (generation %d)", self._role, self.generation)
        self._creds = creds
        self._loaded = True
        self._next_due = min(now + self._interval_s, expires_at)
