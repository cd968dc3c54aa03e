"""AWS conventions in one place: endpoints and regions found the way the AWS SDKs find them, and bounded botocore settings."""

from __future__ import annotations

import configparser
import os
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

# Control-plane calls made before anything is copied (Secrets Manager, STS, the DynamoDB table and SQS queue
# checks) must fail within 30 s when an endpoint accepts connections and never answers. botocore's defaults
# (60 s connect, 60 s read, 5 legacy attempts) took 183 s. Worst case here: 3 attempts x 5 s read (or 4 s
# connect), plus the standard retry mode's backoff between them (under 0.2 s for timeouts) = about 15 s.
CONNECT_TIMEOUT_S = 4
READ_TIMEOUT_S = 5
TOTAL_ATTEMPTS = 3
DEFAULT_REGION = "us-east-1"

_ENDPOINT_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def bounded_config(**extra: Any):
    """A botocore Config whose calls give up within about 15 s in total (see the constants above); `extra`
    adds or overrides settings (e.g. max_pool_connections)."""
    from botocore.config import Config

    settings: dict[str, Any] = {"connect_timeout": CONNECT_TIMEOUT_S, "read_timeout": READ_TIMEOUT_S,
                                "retries": {"total_max_attempts": TOTAL_ATTEMPTS, "mode": "standard"}}
    settings.update(extra)
    return Config(**settings)


def s3_endpoint_from_env(environ: Mapping[str, str] | None = None) -> tuple[str, str]:
    """(URL, variable name) from AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, as the AWS SDKs read them;
    ('', '') when neither is set or AWS_IGNORE_CONFIGURED_ENDPOINT_URLS=true."""
    env = os.environ if environ is None else environ
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return "", ""
    for name in _ENDPOINT_VARS:
        value = env.get(name, "").strip()
        if value:
            return value, name
    return "", ""


def profile_name(credentials: str = "default", environ: Mapping[str, str] | None = None) -> str:
    """The AWS profile in use: NAME of a `profile:NAME` credentials spec, else AWS_PROFILE
    (AWS_DEFAULT_PROFILE), else 'default'."""
    env = os.environ if environ is None else environ
    if credentials.startswith("profile:"):
        return credentials.split(":", 1)[1]
    return env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE") or "default"


def profile_region(profile: str, environ: Mapping[str, str] | None = None) -> str:
    """The `region` of `profile` in the shared config file (AWS_CONFIG_FILE, else ~/.aws/config); '' when the
    file, the profile or the setting is missing or the file cannot be parsed."""
    env = os.environ if environ is None else environ
    path = env.get("AWS_CONFIG_FILE") or os.path.join(os.path.expanduser("~"), ".aws", "config")
    parser = configparser.RawConfigParser()
    try:
        if not parser.read(os.path.expanduser(path), encoding="utf-8"):
            return ""
    except (configparser.Error, OSError, UnicodeDecodeError):
        return ""
    # The default profile may be written [default] or [profile default]; others only [profile NAME].
    sections = [f"profile {profile}"] + (["default"] if profile == "default" else [])
    for section in sections:
        if parser.has_option(section, "region"):
            return parser.get(section, "region").strip()
    return ""


def default_region(region: str = "", credentials: str = "default", environ: Mapping[str, str] | None = None) -> str:
    """`region`, else AWS_REGION / AWS_DEFAULT_REGION, else the profile's region (see profile_name), else
    us-east-1."""
    env = os.environ if environ is None else environ
    return (region or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
            or profile_region(profile_name(credentials, env), env) or DEFAULT_REGION)


def s3_conventions(store, role: str, environ: Mapping[str, str] | None = None):
    """A copy of an S3 store config (`type` s3; others are returned as they are) with the AWS SDKs' defaults
    filled in: no endpoint set → AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL (see s3_endpoint_from_env); no
    region set → default_region. Resolved once, by the driver, so every actor signs for the same endpoint and
    region. Raises ConfigError naming the variable when its URL is unusable."""
    from dataclasses import replace

    from dth_ray.config import is_loopback
    from dth_ray.errors import ConfigError

    if getattr(store.type, "value", store.type) != "s3":
        return store
    env = os.environ if environ is None else environ
    changes: dict[str, str] = {}
    if not store.endpoint:
        url, name = s3_endpoint_from_env(env)
        if url:
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ConfigError(f"{name}={url!r} (the {role} endpoint) is not an http(s) URL")
            if parts.scheme == "http" and not store.insecure_http and not is_loopback(parts.hostname):
                raise ConfigError(f"{name}={url!r} (the {role} endpoint) is plain http; use https or set "
                                  f"{role}.insecure_http=true")
            changes["endpoint"] = url
    if not store.region:
        changes["region"] = default_region("", store.credentials, env)
    return replace(store, **changes) if changes else store


def is_aws_host(host: str) -> bool:
    """Whether `host` is an AWS service endpoint (amazonaws.com or amazonaws.com.cn)."""
    return bool(re.search(r"(^|\.)amazonaws\.com(\.cn)?$", host.lower()))


def endpoint_host(url: str) -> str:
    """The host of an endpoint URL (a scheme is optional), lower-cased; '' when there is none."""
    if not url:
        return ""
    return (urlsplit(url if "://" in url else "https://" + url).hostname or "").lower()


def aws_endpoint(region: str) -> str:
    """The regional S3 endpoint AWS serves `region` from (.com.cn in the China partition)."""
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"https://s3.{region}.{suffix}"


__all__ = ["DEFAULT_REGION", "aws_endpoint", "bounded_config", "default_region", "endpoint_host", "is_aws_host",
           "profile_name", "profile_region", "s3_conventions", "s3_endpoint_from_env"]
