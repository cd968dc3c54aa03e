"""What each destination provider accepts as storage class, canned ACL and SSE: plain data with no SDK import, so
settings.resolve checks a destination against it before anything is read (stores/s3.py puts it in FEATURES)."""

from __future__ import annotations

import difflib

from dth_ray.errors import ConfigError

# S3 PutObject / CreateMultipartUpload values (botocore's S3 model). FSX_* and AWS_BACKUP_* classes and the
# aws:fsx / aws:backup SSE values are not left out by accident: they are set by those services, not by a PUT.
S3_STORAGE_CLASSES = ("STANDARD", "REDUCED_REDUNDANCY", "STANDARD_IA", "ONEZONE_IA", "INTELLIGENT_TIERING",
                      "GLACIER", "DEEP_ARCHIVE", "OUTPOSTS", "GLACIER_IR", "SNOW", "EXPRESS_ONEZONE")
S3_CANNED_ACLS = ("private", "public-read", "public-read-write", "authenticated-read", "aws-exec-read",
                  "bucket-owner-read", "bucket-owner-full-control")
S3_SSE = ("AES256", "aws:kms", "aws:kms:dsse")

# Destination types and what they accept; a type absent here (local, memory) accepts none of them.
_BY_TYPE = {"s3": {"storage_class": S3_STORAGE_CLASSES, "acl": S3_CANNED_ACLS, "sse": S3_SSE}}


def check_write_options(store, role: str = "destination") -> None:
    """Check `storage_class`, `acl`, `sse` and `sse_kms_key_id` of a destination store config against its
    provider's lists. Raises ConfigError: one line naming the key and the allowed values."""
    kind = getattr(store.type, "value", store.type)
    allowed = _BY_TYPE.get(kind)
    for name in ("storage_class", "acl", "sse"):
        value = getattr(store, name)
        if not value:
            continue
        if allowed is None:
            raise ConfigError(f"{role}.{name}={value!r} has no meaning for {role}={kind} (leave it empty)")
        choices = allowed[name]
        if value not in choices:
            close = difflib.get_close_matches(value, choices, n=1) or \
                [c for c in choices if c.lower() == value.lower()]
            hint = f" (did you mean {close[0]}?)" if close else ""
            raise ConfigError(f"{role}.{name}={value!r} is not accepted by {role}={kind}{hint}; allowed: "
                              f"{', '.join(choices)}")
    if store.sse_kms_key_id and not store.sse.startswith("aws:kms"):
        raise ConfigError(f"{role}.sse_kms_key_id is set but {role}.sse={store.sse!r}; it needs {role}.sse=aws:kms "
                          "or aws:kms:dsse")


__all__ = ["S3_CANNED_ACLS", "S3_SSE", "S3_STORAGE_CLASSES", "check_write_options"]
