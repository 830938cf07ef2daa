"""Addresses, networks, MACs and routers that no action may target (`action_allowlist`).

The orchestrator does not propose an action against an allowlisted target, and the executor
checks again before it runs one (the list may have changed in between).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.models import AllowlistEntry

MAC_RE = re.compile(r"^[0-9a-f]{2}([:-][0-9a-f]{2}){5}$", re.IGNORECASE)
HOSTNAME_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
MAX_HOSTNAME = 253
IP_ARGS = ("ip", "src_ip", "source_ip", "address")
MAC_ARGS = ("mac", "mac_address", "client_mac")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def classify(value: str) -> tuple[str, str]:
    """(kind, normalised value) of an allowlist entry: ip, network, mac or device (hostname).

    Raises:
        ValueError: none of them; the one-line message says why (`192.168.1.300`: octet 300).
    """
    text = value.strip()
    try:
        return "ip", str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if "/" in text:
        try:
            return "network", str(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ValueError(f"{text!r} is not a valid network: {exc}") from None
    if MAC_RE.match(text):
        return "mac", normal_mac(text)
    if ":" in text:
        raise ValueError(f"{text!r} is neither an IPv6 address nor a MAC address")
    return "device", check_hostname(text)


def check_hostname(text: str) -> str:
    """`text` if it is a hostname of RFC 1123 labels (letters, digits, inner hyphens, 1 to 63
    each, 253 in all) whose last label is not all digits, so never a mistyped IPv4 address.

    Raises:
        ValueError: why it is not one.
    """
    if not text or len(text) > MAX_HOSTNAME:
        raise ValueError(f"{text!r} is not a hostname: 1 to {MAX_HOSTNAME} characters")
    labels = text.split(".")
    if all(label.isdigit() for label in labels):
        try:
            ipaddress.IPv4Address(text)
        except ValueError as exc:
            raise ValueError(f"{text!r} looks like an IPv4 address but is not one: {exc}") from None
    for label in labels:
        if not HOSTNAME_LABEL.match(label):
            raise ValueError(
                f"{text!r} is not a hostname: label {label!r} must be 1 to 63 letters, digits"
                " or inner hyphens"
            )
    if labels[-1].isdigit():
        raise ValueError(f"{text!r} is not a hostname: its last label is all digits")
    return text


def normal_mac(mac: str) -> str:
    return mac.lower().replace("-", ":")


@dataclass
class Allowlist:
    """The entries, indexed for lookups."""

    ips: dict[str, str] = field(default_factory=dict)  # normalised value -> description
    networks: list[tuple[Network, str]] = field(default_factory=list)
    macs: dict[str, str] = field(default_factory=dict)
    devices: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[tuple[str, str, str | None]]) -> Allowlist:
        """From (kind, value, reason) triples."""
        allow = cls()
        for kind, value, reason in entries:
            text = f"{kind} {value}" + (f" ({reason})" if reason else "")
            if kind == "ip":
                allow.ips[str(ipaddress.ip_address(value))] = text
            elif kind == "network":
                allow.networks.append((ipaddress.ip_network(value, strict=False), text))
            elif kind == "mac":
                allow.macs[normal_mac(value)] = text
            else:
                allow.devices[value.lower()] = text
        return allow

    def protects(
        self, *, ip: str | None = None, mac: str | None = None, device: str | None = None
    ) -> str | None:
        """The entry protecting one of the given targets, or None."""
        if device is not None and device.lower() in self.devices:
            return self.devices[device.lower()]
        if mac is not None and normal_mac(mac) in self.macs:
            return self.macs[normal_mac(mac)]
        if ip is not None:
            try:
                address = ipaddress.ip_address(ip)
            except ValueError:
                return None
            if str(address) in self.ips:
                return self.ips[str(address)]
            for network, text in self.networks:
                if address.version == network.version and address in network:
                    return text
        return None

    def check_action(
        self, action_type: str, config: Mapping[str, Any], device_hostname: str | None
    ) -> str | None:
        """The entry protecting a target of this action (its router, or an IP or MAC among
        its arguments), or None when it may run."""
        del action_type  # every type is checked the same way: by what it names
        found = self.protects(device=device_hostname)
        if found:
            return found
        args = config.get("args")
        values: Mapping[str, Any] = args if isinstance(args, Mapping) else config
        for name in IP_ARGS:
            if isinstance(values.get(name), str) and (hit := self.protects(ip=values[name])):
                return hit
        for name in MAC_ARGS:
            if isinstance(values.get(name), str) and (hit := self.protects(mac=values[name])):
                return hit
        return None


async def load_allowlist(session: AsyncSession) -> Allowlist:
    """Every allowlist entry, as of now."""
    rows = await session.execute(
        select(AllowlistEntry.kind, AllowlistEntry.value, AllowlistEntry.reason)
    )
    return Allowlist.of((kind, value, reason) for kind, value, reason in rows)
