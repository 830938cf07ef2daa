"""Which device a syslog TLS client certificate speaks for (ingest, per connection).

A certificate maps to a device when its SHA-256 fingerprint is listed for it
(`OPMAS_SYSLOG_TLS_PEERS`), or else when its subject CN or one of its DNS SANs is the hostname
of an enrolled device. Every line of a mapped connection is attributed to that device and
trusted as verified; an unmapped certificate's lines are graded like plain TCP ones.
"""

from __future__ import annotations

import hashlib
import ssl
from collections.abc import Iterator, Mapping
from typing import Any


def fingerprint(der: bytes) -> str:
    """SHA-256 of a DER certificate, lower-case hex without colons."""
    return hashlib.sha256(der).hexdigest()


def _names(cert: Mapping[str, Any]) -> Iterator[str]:
    """The subject CNs, then the DNS SANs, of a decoded certificate (`getpeercert()`)."""
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName" and isinstance(value, str):
                yield value
    for kind, value in cert.get("subjectAltName", ()):
        if kind == "DNS" and isinstance(value, str):
            yield value


class PeerMap:
    """Maps a verified client certificate to a device hostname, or None.

    `enrolled` is the live hostname -> IP map of EnrolledDevices (read at each handshake).
    """

    def __init__(self, fingerprints: Mapping[str, str], enrolled: Mapping[str, str]) -> None:
        self._fingerprints = {k.replace(":", "").lower(): v for k, v in fingerprints.items()}
        self._enrolled = enrolled

    def hostname_for(self, tls: ssl.SSLObject | None) -> str | None:
        """The device of the peer's certificate; None without a (verified) certificate."""
        if tls is None:
            return None
        der = tls.getpeercert(binary_form=True)
        if not der:
            return None
        listed = self._fingerprints.get(fingerprint(der))
        if listed is not None:
            return listed
        return self.hostname_by_name(tls.getpeercert() or {})

    def hostname_by_name(self, cert: Mapping[str, Any]) -> str | None:
        """The enrolled hostname a certificate's CN or DNS SAN names (case-insensitive)."""
        names = list(_names(cert))
        for name in names:
            if name in self._enrolled:
                return name
        wanted = {name.lower() for name in names}
        if not wanted:
            return None
        for hostname in self._enrolled:
            if hostname.lower() in wanted:
                return hostname
        return None
