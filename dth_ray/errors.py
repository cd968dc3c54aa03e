"""One error taxonomy for every store and layer; each SDK's errors are mapped once, in its backend."""

from __future__ import annotations


class DthError(Exception):
    """Base of every dth_ray error. `retryable` tells the engine whether a bounded retry may help."""

    retryable = False
    attempts = 0  # tries made before giving up, set by the layer that retried (the copier): for logs

    def __init__(self, message: str = "", code: str = ""):
        super().__init__(message)
        self.code = code  # the provider's error code (e.g. NoSuchBucket), for decisions; never parse messages


class ConfigError(DthError):
    """Bad configuration: the message is one line naming the bad value."""


class NotFound(DthError):
    """The object, bucket or upload does not exist."""


class PreconditionFailed(DthError):
    """The source changed since it was listed (If-Match failed) or a guard did not hold."""


class PermissionDenied(DthError):
    """Credentials were refused or lack the permission."""


class Throttled(DthError):
    """The service asked us to slow down (503 SlowDown, 429, OSS qos delay)."""

    retryable = True

    def __init__(self, message: str, delay_s: float | None = None, code: str = ""):
        super().__init__(message, code)
        self.delay_s = delay_s


class Transient(DthError):
    """A network error, timeout or 5xx that a retry may fix."""

    retryable = True


class IntegrityError(DthError):
    """Bytes written do not match the source (size, MD5, CRC)."""

    retryable = True


class Unreadable(DthError):
    """The source cannot serve this object directly (archive or cold storage class)."""


class Fatal(DthError):
    """Anything else: not retried."""


def error_class(exc: BaseException) -> str:
    """Short class name of an error for reports and logs (never the message of an SDK exception)."""
    return type(exc).__name__ if isinstance(exc, DthError) else "Fatal"
