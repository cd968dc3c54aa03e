"""Which AWS region an S3 store's bucket and keys belong to: wrong-region answers read in one place, redirects said once."""

from __future__ import annotations

import logging
import re

from dth_ray.awsenv import endpoint_host, is_aws_host
from dth_ray.config import StoreConfig, StoreType

log = logging.getLogger("dth_ray.stores.s3")
_REGION_RE = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")
_ANNOUNCED: set[tuple[str, str, str]] = set()  # (role, bucket, region) redirects this process already logged


def credentials_region(cfg: StoreConfig) -> str:
    """The AWS region where a `secret:ID` or `role:ARN` of this store is looked up first: the store's own
    region when the store is AWS S3 ('' otherwise: a COS, Kodo or MinIO region is no AWS region)."""
    host = endpoint_host(cfg.endpoint)
    return cfg.region if cfg.type == StoreType.s3 and (not host or is_aws_host(host)) else ""


def bucket_region(status: int, headers: dict[str, str], body: bytes) -> str:
    """The bucket's region when an answer says the request went to the wrong one: any error answer carrying
    `x-amz-bucket-region` (lower-cased names), a 301 PermanentRedirect, or a 400 AuthorizationHeaderMalformed
    naming `<Region>` (HEAD answers have no body, only the header). '' when it says nothing of the kind."""
    if status < 300:
        return ""
    region = headers.get("x-amz-bucket-region", "")
    if not region and status in (301, 400):
        match = re.search(rb"<Region>([a-z0-9-]{1,32})</Region>", body)
        if match is None and status == 301:  # PermanentRedirect names the regional endpoint instead
            match = re.search(rb"<Endpoint>[^<]*?\bs3[.-]([a-z]{2}(?:-[a-z]+)+-\d{1,2})\.amazonaws", body)
        region = match.group(1).decode() if match else ""
    return region if _REGION_RE.fullmatch(region) else ""


def announce_redirect(role: str, bucket: str, old: str, region: str, endpoint: str) -> None:
    """Say once per process and bucket that requests now go to the bucket's region (a WARNING: the default
    log level shows it, and setting the region saves a round trip on every run)."""
    if (role, bucket, region) in _ANNOUNCED:
        return
    _ANNOUNCED.add((role, bucket, region))
    log.warning("%s.bucket=%r is in region %s, not %s: following it at %s (set %s.region=%s to skip the redirect)",
                role, bucket, region, old, endpoint, role, region)


__all__ = ["announce_redirect", "bucket_region", "credentials_region"]
