"""HMAC-SHA256 signatures of webhook bodies (notifier channels and executor webhook actions).

The receiver recomputes `sha256=<hex HMAC(secret, timestamp + "." + body)>` and compares it in
constant time; the timestamp header lets it refuse replays older than it accepts.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Opmas-Signature"
TIMESTAMP_HEADER = "X-Opmas-Timestamp"


def signature(secret: bytes, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of `timestamp.body` under `secret`."""
    digest = hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def signed_headers(secret: bytes, body: bytes, *, now: float | None = None) -> dict[str, str]:
    """Headers to send with `body`: content type, timestamp and signature."""
    timestamp = str(int(time.time() if now is None else now))
    return {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: signature(secret, timestamp, body),
    }


def verify(
    secret: bytes,
    body: bytes,
    headers: dict[str, str],
    *,
    max_age_s: float = 300.0,
    now: float | None = None,
) -> bool:
    """True when `headers` carry a valid signature of `body`, signed at most `max_age_s`
    seconds from now (either way): what a receiver does, so a captured request cannot be
    replayed later."""
    lowered = {k.lower(): v for k, v in headers.items()}
    timestamp = lowered.get(TIMESTAMP_HEADER.lower(), "")
    given = lowered.get(SIGNATURE_HEADER.lower(), "")
    if not hmac.compare_digest(given, signature(secret, timestamp, body)):
        return False
    try:
        signed_at = int(timestamp)
    except ValueError:
        return False
    return abs((time.time() if now is None else now) - signed_at) <= max_age_s
