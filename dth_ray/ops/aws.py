"""boto3 clients for the operations side (CloudWatch, SNS) whose keys follow a `credentials` spec and stay
current over a days-long run; a handful of calls per minute, so the SDK's per-request cost does not matter."""

from __future__ import annotations

import re
from typing import Any

from dth_ray.awsenv import bounded_config
from dth_ray.awsenv import default_region as aws_default_region
from dth_ray.credentials import AUTH_ERROR_CODES, RefreshingCredentials, quiet_sdk_logs


def default_region(region: str = "", arn: str = "") -> str:
    """`region`, else the region in an ARN (arn:aws:sns:REGION:...), else AWS_REGION/AWS_DEFAULT_REGION,
    else the profile's region, else us-east-1."""
    if region:
        return region
    match = re.match(r"arn:aws[\w-]*:\w+:([a-z0-9-]+):", arn)
    if match:
        return match.group(1)
    return aws_default_region()


def error_code(exc: BaseException) -> str:
    """The service's error code of a botocore ClientError, else the exception's class name (never a message)."""
    response = getattr(exc, "response", None) or {}
    return response.get("Error", {}).get("Code", "") or type(exc).__name__


class AwsClient:
    """One AWS service client. `default` credentials are left to boto3's chain (which refreshes instance and
    SSO roles itself); any other spec is held in a RefreshingCredentials, re-read on its schedule and once
    after the service refuses the keys. Not thread-safe for concurrent calls from several threads."""

    def __init__(self, service: str, *, region: str, endpoint: str = "", credentials: str = "default",
                 role: str = ""):
        self.service = service
        self.region = region
        self._endpoint = endpoint
        self._creds = None if credentials == "default" else RefreshingCredentials(credentials, role or service,
                                                                                  region)
        self._client: Any = None
        self._generation = -1

    def __repr__(self) -> str:
        return f"AwsClient({self.service!r}, region={self.region!r})"

    def _current(self) -> tuple[Any, int]:
        import boto3

        generation = 0
        keys = None
        if self._creds is not None:
            self._creds.refresh_if_due()
            keys, generation = self._creds.current()
        if self._client is None or generation != self._generation:
            quiet_sdk_logs()
            # Bounded (about 15 s a call): `dashboard create` and `alerts setup` must not hang on a silent
            # endpoint, and a run's metrics and alarms must not hold it up.
            kwargs: dict[str, Any] = {"region_name": self.region, "config": bounded_config()}
            if self._endpoint:
                kwargs["endpoint_url"] = self._endpoint
            if keys is not None:
                kwargs.update(aws_access_key_id=keys.access_key_id, aws_secret_access_key=keys.secret_access_key,
                              aws_session_token=keys.session_token or None)
            self._client = boto3.session.Session().client(self.service, **kwargs)
            self._generation = generation
        return self._client, generation

    def call(self, operation: str, **kwargs: Any) -> dict:
        """`client.<operation>(**kwargs)`. Raises what botocore raises (callers log `error_code(exc)`), and
        ConfigError/PermissionDenied when the credentials spec cannot be resolved."""
        import botocore.exceptions

        client, generation = self._current()
        try:
            return getattr(client, operation)(**kwargs)
        except botocore.exceptions.ClientError as exc:
            if self._creds is None or error_code(exc) not in AUTH_ERROR_CODES:
                raise
        self._creds.refresh(generation)
        client, _ = self._current()
        return getattr(client, operation)(**kwargs)
