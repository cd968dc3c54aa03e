"""AWS Signature Version 4 for S3 requests (header auth, unsigned payload; integrity comes from Content-MD5)."""

from __future__ import annotations

import datetime
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import quote

UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"


def uri_encode(value: str, safe: str = "-_.~") -> str:
    """RFC 3986 encoding as SigV4 wants it (unreserved characters kept, everything else %XX, UTF-8)."""
    return quote(value, safe=safe)


def canonical_query(params: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{uri_encode(k)}={uri_encode(v)}" for k, v in sorted(params))


def _hmac(key: bytes, msg: str) -> bytes:
    return hmac.new(key, msg.encode(), hashlib.sha256).digest()


class SigV4Signer:
    """Signs requests for one access key, region and service; caches the daily signing key."""

    def __init__(self, access_key_id: str, secret_access_key: str, region: str, session_token: str = "",
                 service: str = "s3"):
        self._access_key_id = access_key_id
        self._secret = secret_access_key
        self._token = session_token
        self._region = region
        self._service = service
        self._day = ""
        self._key = b""

    def __repr__(self) -> str:
        return f"SigV4Signer(region={self._region!r})"

    def __reduce__(self):
        raise TypeError("SigV4Signer holds a secret key and is never pickled (nor sent to Ray actors); pickle "
                        "the store, which rebuilds its signer from the credentials spec")

    def _signing_key(self, day: str) -> bytes:
        if day != self._day:
            key = _hmac(("AWS4" + self._secret).encode(), day)
            key = _hmac(key, self._region)
            key = _hmac(key, self._service)
            self._key = _hmac(key, "aws4_request")
            self._day = day
        return self._key

    def sign(self, method: str, host: str, path: str, params: Sequence[tuple[str, str]],
             headers: Mapping[str, str], now: datetime.datetime | None = None) -> dict[str, str]:
        """Return `headers` plus x-amz-date, x-amz-content-sha256, token and Authorization.

        `path` must already be URI-encoded exactly as it goes on the wire (S3 does not double-encode).
        """
        now = now or datetime.datetime.now(datetime.timezone.utc)
        amz_date = now.strftime("%Y%m%dT%H%M%SZ")
        day = amz_date[:8]
        out = dict(headers)
        out["x-amz-date"] = amz_date
        out["x-amz-content-sha256"] = UNSIGNED_PAYLOAD
        if self._token:
            out["x-amz-security-token"] = self._token
        items = sorted((k.lower(), " ".join(str(v).split())) for k, v in out.items())
        items.append(("host", host))
        items.sort()
        canonical_headers = "".join(f"{k}:{v}\n" for k, v in items)
        signed_headers = ";".join(k for k, _ in items)
        request = "\n".join(
            (method, path, canonical_query(params), canonical_headers, signed_headers, UNSIGNED_PAYLOAD)
        )
        scope = f"{day}/{self._region}/{self._service}/aws4_request"
        to_sign = "\n".join(
            ("AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(request.encode()).hexdigest())
        )
        signature = hmac.new(self._signing_key(day), to_sign.encode(), hashlib.sha256).hexdigest()
        out["Authorization"] = (
            f"AWS4-HMAC-SHA256 Credential={self._access_key_id}/{scope}, "
            f"SignedHeaders={signed_headers}, Signature={signature}"
        )
        return out
