"""Protected targets: which addresses no block may name, and why (pure policy, no database)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import psutil
import pytest

from opmas.errors import ActionError
from opmas.executor.commands import build_command
from opmas.orchestrator.targets import (
    TargetPolicy,
    own_addresses,
    special_reason,
    target_address,
    target_values,
)
from opmas.settings import ActionsSettings, Settings


def block(ip: str) -> dict[str, Any]:
    return {"template": "nft_block_ip", "args": {"ip": ip}}


def policy(**overrides: Any) -> TargetPolicy:
    return TargetPolicy(**overrides)


async def refusal(targets: TargetPolicy, ip: str) -> str | None:
    # no router hostname: the gateways query (which needs a session) is not made
    return await targets.check_action(None, "ssh_command", block(ip), None)  # type: ignore[arg-type] # no session needed without a router


@pytest.mark.parametrize(
    ("ip", "why"),
    [
        ("127.0.0.1", "loopback"),
        ("127.8.9.10", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),  # IPv4-mapped is judged as the IPv4 address
        ("10.0.0.1", "private"),
        ("172.16.5.4", "private"),
        ("192.168.1.1", "private"),
        ("100.64.0.1", "private"),
        ("fd00::1", "private"),
        ("169.254.1.1", "link-local"),
        ("fe80::1", "link-local"),
        ("224.0.0.1", "multicast"),
        ("ff02::1", "multicast"),
        ("255.255.255.255", "broadcast"),
        ("0.0.0.0", "unspecified"),  # noqa: S104 - an address under test, not a bind
        ("::", "unspecified"),
        ("240.0.0.1", "reserved"),
        ("fec0::1", "site-local"),
        ("198.18.0.1", "special-purpose"),
        ("192.0.0.8", "special-purpose"),
        ("0.1.2.3", "special-purpose"),
    ],
)
async def test_special_purpose_addresses_are_never_a_target(ip: str, why: str) -> None:
    reason = await refusal(policy(), ip)

    assert reason is not None
    assert reason.startswith(f"target {target_address(ip)} is protected: {why}")


@pytest.mark.parametrize(
    "ip", ["203.0.113.7", "198.51.100.9", "192.0.2.44", "2001:db8::1", "8.8.8.8", "2a00:1450::1"]
)
async def test_public_and_documentation_addresses_may_be_blocked(ip: str) -> None:
    assert await refusal(policy(), ip) is None


async def test_private_addresses_need_the_setting() -> None:
    allowed = policy(allow_private=True)

    assert await refusal(allowed, "10.0.0.1") is None
    assert await refusal(allowed, "fd00::1") is None
    assert await refusal(allowed, "127.0.0.1") is not None  # never allowed by it
    reason = await refusal(policy(), "10.0.0.1")
    assert reason is not None
    assert "OPMAS_ACTIONS__ALLOW_PRIVATE_TARGETS" in reason


async def test_an_ipv6_scope_id_is_refused_not_parsed() -> None:
    reason = await refusal(policy(), "fe80::1%x;flush")

    assert reason is not None
    assert "scope id" in reason
    assert target_address("fe80::1%eth0") is None
    with pytest.raises(ActionError, match="IPv4 or IPv6 address"):
        build_command(block("fe80::1%x;flush"))


async def test_management_network_from_the_settings_is_protected() -> None:
    settings = ActionsSettings(protected_networks=["198.51.100.0/28", "2001:db8:1::/48"])
    networks = tuple(
        (ipaddress.ip_network(n), f"protected network {n}") for n in settings.protected_networks
    )
    targets = policy(networks=networks)

    assert await refusal(targets, "198.51.100.7") == (
        "target 198.51.100.7 is protected: protected network 198.51.100.0/28"
    )
    assert await refusal(targets, "2001:db8:1::9") is not None
    assert await refusal(targets, "198.51.100.77") is None


def test_protected_networks_setting_takes_a_comma_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPMAS_ACTIONS__PROTECTED_NETWORKS", "198.51.100.0/24, 192.0.2.7")
    monkeypatch.setenv("OPMAS_ACTIONS__ALLOW_PRIVATE_TARGETS", "true")

    actions = Settings().actions

    assert actions.protected_networks == ["198.51.100.0/24", "192.0.2.7/32"]
    assert actions.allow_private_targets is True


async def test_opmas_own_addresses_and_bind_addresses_are_protected() -> None:
    settings = Settings(http_host="198.51.100.200", syslog_host="0.0.0.0")  # noqa: S104
    own = own_addresses(settings)
    targets = policy(own=own, allow_private=True)
    interface_ips = [
        entry.address
        for entries in psutil.net_if_addrs().values()
        for entry in entries
        if entry.family == socket.AF_INET
    ]

    assert ipaddress.ip_address("198.51.100.200") in own
    assert await refusal(targets, "198.51.100.200") == (
        "target 198.51.100.200 is protected: OPMAS http_host"
    )
    assert ipaddress.ip_address("0.0.0.0") not in own  # noqa: S104 - unspecified: not an address
    for ip in interface_ips:
        reason = await refusal(targets, ip)
        assert reason is not None, ip
        if not ipaddress.ip_address(ip).is_loopback:
            assert "OPMAS host address" in reason


async def test_enrolled_device_address_is_protected() -> None:
    targets = policy(devices={ipaddress.ip_address("198.51.100.3"): "enrolled device r9"})

    assert await refusal(targets, "198.51.100.3") == (
        "target 198.51.100.3 is protected: enrolled device r9"
    )


def test_unblock_and_notify_name_no_target() -> None:
    unblock = {"template": "nft_unblock_ip", "args": {"ip": "10.0.0.1"}}
    assert target_values("ssh_command", unblock) == []
    assert target_values("notify", {"ip": "127.0.0.1"}) == []
    assert target_values("ssh_command", block("127.0.0.1")) == ["127.0.0.1"]
    assert target_values("webhook", {"url": "http://127.0.0.1/", "ip": "127.0.0.1"}) == [
        "127.0.0.1"
    ]


def test_special_reason_of_an_ordinary_address_is_none() -> None:
    assert special_reason(ipaddress.ip_address("203.0.113.7"), allow_private=False) is None
