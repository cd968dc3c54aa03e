"""Resolve a `credentials` spec (default, anonymous, env:NAME, secret:ID, profile:NAME) into keys.

Specs travel in configs; keys are resolved where they are used (inside each actor), so secrets never
cross Ray and never appear in a repr, a log line or a report.
"""

from __future__ import annotations

import json
import os
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


# Aliyun's own environment variables, read by `default` for OSS (the AWS chain would sign with AWS keys).
_ALIYUN_ENV = (("ALIBABA_CLOUD_ACCESS_KEY_ID", "ALIBABA_CLOUD_ACCESS_KEY_SECRET", "ALIBABA_CLOUD_SECURITY_TOKEN"),
               ("OSS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_SECRET", "OSS_SESSION_TOKEN"))


def resolve(spec: str, role: str, region: str = "", provider: str = "aws") -> Credentials | None:
    """Keys for `spec`, or None for anonymous access. `provider` 'aliyun' changes what `default` means.

    Raises ConfigError for a malformed spec or missing variables, PermissionDenied when a secret or
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
        return _from_secret(arg, role, region)
    if provider == "aliyun" and kind in ("default", "profile"):
        if kind == "profile":
            raise ConfigError(f"{role}.credentials={spec!r}: profiles are AWS's; use env:NAME or secret:ID")
        for key_var, secret_var, token_var in _ALIYUN_ENV:
            if os.environ.get(key_var) and os.environ.get(secret_var):
                return Credentials(os.environ[key_var], os.environ[secret_var], os.environ.get(token_var, ""))
        return None
    if kind in ("default", "profile"):
        return _from_botocore(arg if kind == "profile" else None, role)
    raise ConfigError(f"{role}.credentials={spec!r} must be default, anonymous, env:NAME, secret:ID or profile:NAME")


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
        return None  # no default chain configured: behave like the SDKs and go anonymous
    frozen = creds.get_frozen_credentials()
    return Credentials(frozen.access_key, frozen.secret_key, frozen.token or "")


def _from_secret(secret_id: str, role: str, region: str) -> Credentials:
    """Read a Data Transfer Hub style secret: {"access_key_id": ..., "secret_access_key": ...}."""
    import boto3
    import botocore.exceptions

    client = boto3.client("secretsmanager", region_name=os.environ.get("AWS_REGION") or region or "us-east-1")
    try:
        value = client.get_secret_value(SecretId=secret_id)["SecretString"]
    except botocore.exceptions.ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        raise PermissionDenied(f"{role}.credentials=secret:{secret_id} cannot be read ({code})") from None
    except botocore.exceptions.BotoCoreError as exc:
        raise PermissionDenied(
            f"{role}.credentials=secret:{secret_id} cannot be read ({type(exc).__name__})"
        ) from None
    try:
        doc = json.loads(value)
        return Credentials(doc["access_key_id"], doc["secret_access_key"], doc.get("session_token", ""))
    except (ValueError, KeyError, TypeError):
        raise ConfigError(
            f"{role}.credentials=secret:{secret_id} must hold JSON with access_key_id and secret_access_key"
        ) from None
