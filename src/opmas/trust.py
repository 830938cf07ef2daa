"""How far the origin of a log line is verified: set at ingest and the parser, carried to findings.

``verified``: mTLS client certificate or ingest token bound to the device.
``address``: from the enrolled device's registered IP (spoofable over UDP).
``untrusted``: anything else, and anything unknown or missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

VERIFIED = "verified"
ADDRESS = "address"
UNTRUSTED = "untrusted"

LEVELS = (UNTRUSTED, ADDRESS, VERIFIED)
_RANK = {level: rank for rank, level in enumerate(LEVELS)}


def rank(level: str | None) -> int:
    """Order of a level: 0 untrusted .. 2 verified; unknown or None counts as untrusted."""
    return _RANK.get(level or UNTRUSTED, 0)


def normalise(level: str | None) -> str:
    """The level itself when known, else ``untrusted``."""
    return LEVELS[rank(level)]


def weakest(levels: Iterable[str | None]) -> str:
    """The lowest level in ``levels``; unknown or missing values count as untrusted.

    An empty iterable has no evidence at all, so it is ``untrusted`` too.
    """
    best = len(LEVELS)
    for level in levels:
        r = rank(level)
        if r < best:
            best = r
            if r == 0:
                break
    return LEVELS[best] if best < len(LEVELS) else UNTRUSTED


def same_ip(registered: str, source: str | None) -> bool:
    """Whether a line's source IP is the registered one (an IPv4-mapped IPv6 source too)."""
    if source is None:
        return False
    return source == registered or (source.startswith("::ffff:") and source[7:] == registered)


def grade(enrolled: Mapping[str, str], hostname: str | None, source_ip: str | None) -> str:
    """`address` when `hostname` is an enrolled device (in `enrolled`, hostname -> registered
    IP) and `source_ip` is its registered IP, else `untrusted`. A verified binding (token,
    client certificate) is decided before this, at ingest."""
    registered = enrolled.get(hostname) if hostname else None
    if registered is not None and same_ip(registered, source_ip):
        return ADDRESS
    return UNTRUSTED
