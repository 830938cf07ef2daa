"""Protected targets: addresses no action may block, whatever a log line or a playbook says.

Built in and not configurable away: loopback, link-local, multicast, unspecified, broadcast and
the other special-purpose ranges; OPMAS's own addresses; enrolled devices' addresses; the
gateway and DNS servers a router's own logs named. Configured: the operator's management
networks (`actions.protected_networks`), and private ranges unless `allow_private_targets`.
Documentation ranges (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24, 2001:db8::/32) may be
targeted: they are the examples of the docs and tests. The orchestrator rejects a proposal
against a protected target, and the executor checks again before it runs one.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import psutil
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.models import Device, Event
from opmas.models.core import ENROLLED
from opmas.orchestrator.allowlist import IP_ARGS
from opmas.settings import Settings

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network

DECIDED_BY = "protected-target"
UNCHECKED_TEMPLATES = frozenset({"nft_unblock_ip"})  # lifting a block harms nobody
UNCHECKED_TYPES = frozenset({"notify"})  # telling people about an address targets nothing
PRIVATE = tuple(
    ipaddress.ip_network(n)
    for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10", "fc00::/7")
)
DOCUMENTATION = tuple(
    ipaddress.ip_network(n)
    for n in ("192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24", "2001:db8::/32")
)
IETF_PROTOCOL = ipaddress.ip_network("192.0.0.0/24")  # not judged global by every Python
BROADCAST = ipaddress.IPv4Address("255.255.255.255")
# Events whose field names the router's gateway, DHCP server or DNS server (pattern -> field).
GATEWAY_EVENTS: Mapping[str, str] = {
    "dhcp_lease_obtained": "server",  # udhcpc (alone or wrapped by netifd)
    "dhcp_select_sent": "server",
    "dhcp_renew_sent": "server",
    "ppp_remote_ip": "ip",  # pppd: the peer is the default gateway
    "ppp_remote_ip_default": "ip",
    "ppp_dns_address": "ip",
    "dns_upstream_server": "server",  # dnsmasq: using nameserver X#53
}
GATEWAY_PROGRAMS = ("udhcpc", "netifd", "pppd", "dnsmasq")
GATEWAY_LOOKBACK = timedelta(days=30)
GATEWAY_TRUST = ("address", "verified")  # a spoofed line must not shield an attacker
GATEWAY_LIMIT = 1000


def target_address(value: str) -> Address | None:
    """The address of an action argument (None when it is not a plain one: a scope id
    `fe80::1%x` is not); IPv4-mapped IPv6 is judged as its IPv4 address."""
    if "%" in value:
        return None
    try:
        address = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def special_reason(address: Address, allow_private: bool) -> str | None:
    """Why `address` is special-purpose (never a target), or None for an ordinary one."""
    if address.is_loopback:
        return "loopback address"
    if address.is_unspecified:
        return "unspecified address"
    if address == BROADCAST:
        return "broadcast address"
    if address.is_link_local:
        return "link-local address"
    if address.is_multicast:
        return "multicast address"
    if isinstance(address, ipaddress.IPv6Address) and address.is_site_local:
        return "site-local address"
    if address.is_reserved:
        return "reserved address"
    if any(address in network for network in PRIVATE if network.version == address.version):
        if allow_private:
            return None
        return "private address (OPMAS_ACTIONS__ALLOW_PRIVATE_TARGETS=true allows it)"
    if any(address in n for n in DOCUMENTATION if n.version == address.version):
        return None
    if not address.is_global or address in IETF_PROTOCOL:
        return "special-purpose address (IANA registry)"
    return None


def own_addresses(settings: Settings) -> dict[Address, str]:
    """Every address of this host's interfaces (and their subnet broadcasts), plus the
    configured bind addresses: what OPMAS itself is reached on."""
    own: dict[Address, str] = {}
    for name, addresses in psutil.net_if_addrs().items():
        for entry in addresses:
            if entry.family not in (socket.AF_INET, socket.AF_INET6):
                continue
            for value, what in ((entry.address, "address"), (entry.broadcast, "broadcast")):
                address = target_address(str(value).split("%", 1)[0]) if value else None
                if address is not None:
                    own.setdefault(address, f"OPMAS host {what} ({name})")
    for setting in ("http_host", "syslog_host"):
        address = target_address(str(getattr(settings, setting)))
        if address is not None and not address.is_unspecified:
            own.setdefault(address, f"OPMAS {setting}")
    return own


@dataclass(frozen=True)
class TargetPolicy:
    """The protected targets as of one transaction; `check_action` adds the router's
    gateways from its logs when the action names an address."""

    allow_private: bool = False
    networks: tuple[tuple[Network, str], ...] = ()
    own: Mapping[Address, str] = field(default_factory=dict)
    devices: Mapping[Address, str] = field(default_factory=dict)

    def reason(self, address: Address, gateways: Mapping[Address, str] | None = None) -> str | None:
        """Why `address` may not be targeted, or None."""
        special = special_reason(address, self.allow_private)
        if special is not None:
            return special
        for found in (self.own, self.devices, gateways or {}):
            if address in found:
                return found[address]
        for network, text in self.networks:
            if address.version == network.version and address in network:
                return text
        return None

    async def check_action(
        self,
        session: AsyncSession,
        action_type: str,
        config: Mapping[str, Any],
        device_hostname: str | None,
    ) -> str | None:
        """Why this action may not run (`target 10.0.0.1 is protected: private address`),
        or None. Only actions naming an address query the router's gateways."""
        values = target_values(action_type, config)
        if not values:
            return None
        gateways: dict[Address, str] | None = None
        for value in values:
            address = target_address(value)
            if address is None:
                if "%" in value:
                    return f"target {value!r} is protected: an IPv6 scope id is never a target"
                continue
            why = self.reason(address)
            if why is None and device_hostname:
                if gateways is None:
                    gateways = await router_gateways(session, device_hostname)
                why = self.reason(address, gateways)
            if why is not None:
                return f"target {address} is protected: {why}"
        return None


def target_values(action_type: str, config: Mapping[str, Any]) -> list[str]:
    """The address arguments of an action (those the allowlist checks), unless lifting a block
    or a notification."""
    if action_type in UNCHECKED_TYPES or config.get("template") in UNCHECKED_TEMPLATES:
        return []
    args = config.get("args")
    values: Mapping[str, Any] = args if isinstance(args, Mapping) else config
    return [values[name] for name in IP_ARGS if isinstance(values.get(name), str)]


async def router_gateways(session: AsyncSession, hostname: str) -> dict[Address, str]:
    """The gateway, DHCP and DNS server addresses the router's own recent logs named (lines
    whose trust is `address` or `verified`, of the last GATEWAY_LOOKBACK)."""
    since = datetime.now(UTC) - GATEWAY_LOOKBACK
    event = Event.structured_fields["event"].astext
    rows = await session.execute(
        select(event, Event.structured_fields)
        .where(
            Event.hostname == hostname,
            Event.arrival_ts_utc >= since,
            Event.process_name.in_(GATEWAY_PROGRAMS),
            event.in_(list(GATEWAY_EVENTS)),
            Event.trust.in_(GATEWAY_TRUST),
        )
        .order_by(Event.arrival_ts_utc.desc())
        .limit(GATEWAY_LIMIT)
    )
    found: dict[Address, str] = {}
    for name, fields in rows:
        value = fields.get(GATEWAY_EVENTS.get(name, ""))
        address = target_address(value) if isinstance(value, str) else None
        if address is not None:
            found.setdefault(address, f"gateway or DNS server of {hostname} ({name} in its logs)")
    return found


async def load_policy(session: AsyncSession, settings: Settings) -> TargetPolicy:
    """The protected targets now: built-in ranges, this host, enrolled devices, settings."""
    rows = await session.execute(
        select(Device.ip_address, Device.hostname).where(Device.enrolment == ENROLLED)
    )
    devices: dict[Address, str] = {}
    for ip, hostname in rows:
        address = target_address(str(ip))
        if address is not None:
            devices[address] = f"address of enrolled device {hostname}"
    networks = tuple(
        (
            ipaddress.ip_network(text),
            f"protected network {text} (OPMAS_ACTIONS__PROTECTED_NETWORKS)",
        )
        for text in settings.actions.protected_networks
    )
    return TargetPolicy(
        allow_private=settings.actions.allow_private_targets,
        networks=networks,
        own=own_addresses(settings),
        devices=devices,
    )
