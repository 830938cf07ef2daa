"""Allowlist values are checked by kind: an IP (v4 or v6), a CIDR network, a MAC or an
RFC 1123 hostname; anything else is refused with a one-line reason."""

from __future__ import annotations

import re

import pytest
import typer

from opmas.cli.allowlist import entry_of
from opmas.orchestrator.allowlist import check_hostname, classify


@pytest.mark.parametrize(
    ("value", "entry"),
    [
        ("192.168.1.30", ("ip", "192.168.1.30")),
        ("2001:DB8::1", ("ip", "2001:db8::1")),
        ("10.1.2.3/8", ("network", "10.0.0.0/8")),
        ("2001:db8::/32", ("network", "2001:db8::/32")),
        ("aa:BB:cc:00:11:22", ("mac", "aa:bb:cc:00:11:22")),
        ("gw-1", ("device", "gw-1")),
        ("OpenWRT-Router1.lan", ("device", "OpenWRT-Router1.lan")),
        ("3com-switch.example.net", ("device", "3com-switch.example.net")),
    ],
)
def test_valid_values_get_their_kind(value: str, entry: tuple[str, str]) -> None:
    assert classify(value) == entry


@pytest.mark.parametrize(
    ("value", "why"),
    [
        ("192.168.1.300", "looks like an IPv4 address but is not one: Octet 300 (> 255)"),
        ("192.168.1", "looks like an IPv4 address but is not one: Expected 4 octets"),
        ("10.0.0.0/33", "is not a valid network"),
        ("aa:bb:cc", "is neither an IPv6 address nor a MAC address"),
        ("-gw", "label '-gw' must be 1 to 63 letters"),
        ("gw_1", "label 'gw_1' must be 1 to 63 letters"),
        ("gw..lan", "label '' must be"),
        ("host.123", "its last label is all digits"),
        ("a" * 64, "must be 1 to 63"),
        ("a." * 127 + "ab", "1 to 253 characters"),
    ],
)
def test_invalid_values_are_refused_with_the_reason(value: str, why: str) -> None:
    with pytest.raises(ValueError, match=re.escape(why)) as error:
        classify(value)
    assert why in str(error.value)
    assert "\n" not in str(error.value)


def test_the_cli_turns_a_refusal_into_a_bad_parameter() -> None:
    with pytest.raises(typer.BadParameter, match="Octet 300"):
        entry_of("192.168.1.300")


def test_a_hostname_is_kept_as_written() -> None:
    assert check_hostname("Core-GW") == "Core-GW"
