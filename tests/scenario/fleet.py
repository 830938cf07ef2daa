"""The fleet of the scripted day: routers, sites, clients, and the syslog line format."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import NamedTuple

LEARNING_S = 3600.0  # new-log-template learns each program's kinds silently this long
DAY_S = 86_400
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# facility * 8 + severity
KERN, USER, DAEMON, AUTHPRIV, CRON = 0, 1, 3, 10, 9
EMERG, ALERT, CRIT, ERR, WARNING, NOTICE, INFO, DEBUG = range(8)


class Expected(NamedTuple):
    """One finding a correct system produces: rule, device and the finding's details.key."""

    rule_name: str
    device_hostname: str
    key: str


@dataclass(frozen=True)
class Injection:
    """One injected incident: what happened, where and when, and the findings it must give."""

    name: str
    domain: str
    hostname: str
    at: float  # seconds after midnight of the base date (UTC)
    expected: tuple[Expected, ...]


@dataclass(frozen=True)
class Router:
    hostname: str
    site: str
    wan: str | None  # "pppoe", "dhcp" or None (a bridged access point)
    radios: tuple[str, ...]
    uptime: float  # seconds since boot at midnight; > 10,000 s so kernel stamps keep one form
    mwan3: bool = False

    @property
    def is_gateway(self) -> bool:
        return self.wan is not None


@dataclass(frozen=True)
class Client:
    mac: str
    name: str | None  # the hostname it sends with DHCP, if any
    router: str
    iface: str
    gateway: str  # the router whose dnsmasq serves its site
    ip: str
    static: bool  # a desktop or printer (long sessions) rather than a phone


@dataclass
class Record:
    at: float
    host: str
    pri: int
    tag: str
    message: str
    incident: str | None = None


FLEET = (
    Router("gw-office", "office", "pppoe", ("phy0-ap0", "phy1-ap0"), 1_902_311.0, mwan3=True),
    Router("ap-lobby", "office", None, ("phy0-ap0", "phy1-ap0"), 1_902_284.0),
    Router("ap-floor1", "office", None, ("phy0-ap0", "phy1-ap0", "phy2-ap0"), 1_902_290.0),
    Router("ap-floor2", "office", None, ("phy0-ap0", "phy1-ap0", "phy2-ap0"), 764_021.0),
    Router("ap-meeting", "office", None, ("phy0-ap0", "phy1-ap0"), 1_902_277.0),
    Router("gw-branch", "branch", "dhcp", ("phy0-ap0", "phy1-ap0", "phy2-ap0"), 3_412_008.0),
    Router("ap-warehouse", "branch", None, ("phy0-ap0", "phy1-ap0"), 3_411_950.0),
    Router("gw-shop", "shop", "dhcp", ("phy0-ap0", "phy1-ap0"), 512_377.0),
    Router("gw-home", "home", "pppoe", ("phy0-ap0", "phy1-ap0"), 98_115.0),
    Router("ap-garden", "home", None, ("phy0-ap0", "phy1-ap0"), 98_070.0),
)
SITES = {  # site -> (gateway, LAN prefix, admin workstation)
    "office": ("gw-office", "192.168.10", "192.168.10.5"),
    "branch": ("gw-branch", "192.168.20", "192.168.20.8"),
    "shop": ("gw-shop", "192.168.1", "192.168.1.10"),
    "home": ("gw-home", "192.168.2", "192.168.2.20"),
}
WAN = {  # gateway -> (device, public address, upstream server or peer)
    "gw-office": ("pppoe-wan", "93.184.12.77", "93.184.0.1"),
    "gw-branch": ("eth1", "100.70.12.34", "100.64.0.1"),
    "gw-shop": ("eth1", "100.71.3.9", "100.64.0.1"),
    "gw-home": ("pppoe-wan", "87.122.40.18", "87.122.0.1"),
}
CLIENT_NAMES = (
    "laptop-anna", "laptop-ben", "iPhone", "android-4f1a", "printer-hp", "DESKTOP-7K2Q",
    "Galaxy-S21", "iPad", "sonos-kitchen", "tv-livingroom", "macbook-carl", None, None,
)  # fmt: skip
NTP_SERVERS = ("162.159.200.1", "162.159.200.123", "194.58.207.20", "185.125.190.57")
SCANNER_PORTS = (22, 23, 80, 443, 445, 1433, 3389, 5060, 7547, 8080)


def router_named(hostname: str) -> Router:
    return next(r for r in FLEET if r.hostname == hostname)


def syslog_line(base: date, record: Record) -> str:
    """The record as logd's remote syslog sends it over TCP (RFC 3164, with hostname)."""
    stamp = datetime(base.year, base.month, base.day, tzinfo=UTC) + timedelta(seconds=record.at)
    header = f"{MONTHS[stamp.month - 1]} {stamp.day:>2} {stamp:%H:%M:%S}"
    return f"<{record.pri}>{header} {record.host} {record.tag}: {record.message}"


def epoch(base: date, at: float) -> float:
    """Epoch seconds of `at` seconds after midnight (UTC) of `base`."""
    return datetime(base.year, base.month, base.day, tzinfo=UTC).timestamp() + at
