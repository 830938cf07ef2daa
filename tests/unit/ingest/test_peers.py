"""A TLS client certificate maps to a device by fingerprint, else by CN or DNS SAN."""

from __future__ import annotations

from opmas.ingest.peers import PeerMap

ENROLLED = {"OpenWrt-Router1": "192.0.2.1", "router2": "192.0.2.2"}


def cert(cn: str, *dns: str) -> dict[str, object]:
    return {
        "subject": ((("organizationName", "lab"),), (("commonName", cn),)),
        "subjectAltName": (*(("DNS", name) for name in dns), ("IP Address", "192.0.2.9")),
    }


def test_the_common_name_of_an_enrolled_device_maps_case_insensitively() -> None:
    peers = PeerMap({}, ENROLLED)
    assert peers.hostname_by_name(cert("OpenWrt-Router1")) == "OpenWrt-Router1"
    assert peers.hostname_by_name(cert("openwrt-router1")) == "OpenWrt-Router1"


def test_a_dns_san_maps_when_the_common_name_does_not() -> None:
    peers = PeerMap({}, ENROLLED)
    assert peers.hostname_by_name(cert("client", "other.lan", "router2")) == "router2"


def test_a_certificate_naming_no_enrolled_device_maps_to_nothing() -> None:
    peers = PeerMap({}, ENROLLED)
    assert peers.hostname_by_name(cert("router3", "router3.lan")) is None
    assert peers.hostname_by_name({}) is None


def test_the_enrolled_map_is_read_at_each_handshake() -> None:
    enrolled: dict[str, str] = {}
    peers = PeerMap({}, enrolled)
    assert peers.hostname_by_name(cert("router2")) is None
    enrolled.update(ENROLLED)
    assert peers.hostname_by_name(cert("router2")) == "router2"


def test_no_tls_object_or_no_certificate_maps_to_nothing() -> None:
    assert PeerMap({"ab" * 32: "router2"}, ENROLLED).hostname_for(None) is None
