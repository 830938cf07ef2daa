"""The OpenWRT commands an `ssh_command` action may run: named templates with checked arguments.

`action_config` is `{"template": NAME, "args": {...}}`. Every argument is validated and every
word of the command line is quoted with `shlex.quote`, so no argument is pasted raw into the
router's shell. There is no free-form command on purpose.
"""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from opmas.errors import ActionError

NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SET_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,30}$")
MAC_RE = re.compile(r"^[0-9A-Fa-f]{2}([:-][0-9A-Fa-f]{2}){5}$")
DURATION_RE = re.compile(r"^(\d+)\s*([smhd]?)$")
UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
MAX_BLOCK_S = 30 * 86400
MAX_BAN_S = 7 * 86400
DEAUTH_REASON = 5  # IEEE 802.11: "disassociated because AP is unable to handle all stations"


@dataclass(frozen=True)
class Command:
    """A built command: the shell line to run and a one-line human description."""

    line: str
    text: str


@dataclass(frozen=True)
class Template:
    """A built-in command template, as listed by docs and the CLI."""

    name: str
    summary: str
    args: tuple[str, ...]  # "name" required, "name=default" optional


def words(*parts: str) -> str:
    """One shell command line from `parts`, each quoted."""
    return " ".join(shlex.quote(part) for part in parts)


def name_arg(args: Mapping[str, Any], key: str, default: str | None = None) -> str:
    """An interface or service name: letters, digits, `._-`."""
    value = args.get(key, default)
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ActionError(f"argument {key!r} must be a name of [a-zA-Z0-9._-], got {value!r}")
    return value


def mac_arg(args: Mapping[str, Any], key: str = "mac") -> str:
    value = args.get(key)
    if not isinstance(value, str) or not MAC_RE.match(value):
        raise ActionError(f"argument {key!r} must be a MAC address, got {value!r}")
    return value.lower().replace("-", ":")


def ip_arg(
    args: Mapping[str, Any], key: str = "ip"
) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """A plain IPv4 or IPv6 address; an IPv6 scope id (`fe80::1%eth0`) is refused, since
    Python would keep its text (`%x;flush`) in the address it returns."""
    value = args.get(key)
    if isinstance(value, str) and "%" not in value:
        try:
            return ipaddress.ip_address(value)
        except ValueError:
            pass
    raise ActionError(f"argument {key!r} must be an IPv4 or IPv6 address, got {value!r}")


def seconds_arg(args: Mapping[str, Any], key: str, default: int, maximum: int) -> int:
    """A duration: whole seconds, or a string such as `600s`, `30m`, `4h`, `1d`."""
    value = args.get(key, default)
    seconds: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        seconds = value
    elif isinstance(value, str) and (match := DURATION_RE.match(value.strip())):
        seconds = int(match.group(1)) * UNIT_S[match.group(2)]
    if seconds is None or not 1 <= seconds <= maximum:
        raise ActionError(
            f"argument {key!r} must be a duration of 1 s to {maximum} s (e.g. 600, '600s', "
            f"'4h'), got {value!r}"
        )
    return seconds


def _wifi_reload(args: Mapping[str, Any]) -> Command:
    return Command(words("wifi", "reload"), "reload Wi-Fi")


def _service_restart(args: Mapping[str, Any]) -> Command:
    service = name_arg(args, "service")
    return Command(words(f"/etc/init.d/{service}", "restart"), f"restart service {service}")


def _wifi_kick_ban(args: Mapping[str, Any]) -> Command:
    mac = mac_arg(args)
    ban_s = seconds_arg(args, "ban_s", 600, MAX_BAN_S)
    message = json.dumps(
        {"addr": mac, "reason": DEAUTH_REASON, "deauth": True, "ban_time": ban_s * 1000},
        separators=(",", ":"),
    )
    return _each_hostapd(args, message, f"disconnect {mac} and ban it for {ban_s} s")


FW4 = ("inet", "fw4")


def _block_set(
    args: Mapping[str, Any],
) -> tuple[ipaddress.IPv4Address | ipaddress.IPv6Address, str]:
    """The address of an nft block or unblock and its set: `set` (default opmas_block), with
    `6` appended for an IPv6 address, so a block and its unblock name the same set."""
    address = ip_arg(args)
    base = args.get("set", "opmas_block")
    if not isinstance(base, str) or not SET_RE.match(base):
        raise ActionError(f"argument 'set' must be an nft set name, got {base!r}")
    return address, f"{base}6" if address.version == 6 else base


def _nft_block_ip(args: Mapping[str, Any]) -> Command:
    address, name = _block_set(args)
    timeout_s = seconds_arg(args, "timeout", 3600, MAX_BLOCK_S)
    kind, match = ("ipv6_addr", "ip6") if address.version == 6 else ("ipv4_addr", "ip")
    exists = words("nft", "list", "set", *FW4, name)
    make_set = words("nft", "add", "set", *FW4, name, f"{{ type {kind}; flags timeout; }}")
    make_rule = words(
        "nft", "insert", "rule", *FW4, "input_wan", match, "saddr", f"@{name}", "drop"
    )
    create = f"{exists} >/dev/null 2>&1 || {{ {make_set} && {make_rule}; }}"
    add = words("nft", "add", "element", *FW4, name, f"{{ {address} timeout {timeout_s}s }}")
    return Command(f"{create}; {add}", f"block {address} for {timeout_s} s (nft set {name})")


def _nft_unblock_ip(args: Mapping[str, Any]) -> Command:
    """The reverse of nft_block_ip: delete the element if the set still holds it (an element
    whose timeout passed is gone already, which is success too)."""
    address, name = _block_set(args)
    element = f"{{ {address} }}"
    present = words("nft", "get", "element", *FW4, name, element)
    delete = words("nft", "delete", "element", *FW4, name, element)
    line = f"if {present} >/dev/null 2>&1; then {delete}; fi"
    return Command(line, f"unblock {address} (nft set {name})")


def _wifi_unban(args: Mapping[str, Any]) -> Command:
    """The reverse of wifi_kick_ban: hostapd's del_client with `ban_time` 0 drops the ban.
    A banned client is connected nowhere it is banned, so this disconnects nobody."""
    mac = mac_arg(args)
    message = json.dumps(
        {"addr": mac, "reason": DEAUTH_REASON, "deauth": False, "ban_time": 0},
        separators=(",", ":"),
    )
    return _each_hostapd(args, message, f"lift the Wi-Fi ban of {mac}")


def _each_hostapd(args: Mapping[str, Any], message: str, what: str) -> Command:
    """`ubus call hostapd.<interface> del_client MESSAGE`, or on every hostapd.* object."""
    if args.get("interface") is not None:
        interface = name_arg(args, "interface")
        line = words("ubus", "call", f"hostapd.{interface}", "del_client", message)
        return Command(line, f"{what} on {interface}")
    call = f'ubus call "$obj" del_client {shlex.quote(message)}'
    line = f"for obj in $({words('ubus', 'list', 'hostapd.*')}); do {call}; done"
    return Command(line, f"{what} on every access point")


def _ifup(args: Mapping[str, Any]) -> Command:
    interface = name_arg(args, "interface", "wan")
    return Command(words("ifup", interface), f"bring interface {interface} up")


def _reboot(args: Mapping[str, Any]) -> Command:
    return Command(words("reboot"), "reboot the router")


_BUILDERS: dict[str, tuple[Callable[[Mapping[str, Any]], Command], Template]] = {
    "wifi_reload": (_wifi_reload, Template("wifi_reload", "wifi reload", ())),
    "service_restart": (
        _service_restart,
        Template("service_restart", "/etc/init.d/<service> restart", ("service",)),
    ),
    "wifi_kick_ban": (
        _wifi_kick_ban,
        Template(
            "wifi_kick_ban",
            "hostapd del_client with deauth and ban (every hostapd.* without interface)",
            ("mac", "ban_s=600", "interface="),
        ),
    ),
    "nft_block_ip": (
        _nft_block_ip,
        Template(
            "nft_block_ip",
            "add the IP to a timeout set of fw4 dropped in input_wan (<set>6 for IPv6)",
            ("ip", "timeout=3600", "set=opmas_block"),
        ),
    ),
    "nft_unblock_ip": (
        _nft_unblock_ip,
        Template(
            "nft_unblock_ip",
            "delete the IP from the timeout set of nft_block_ip if it is still there",
            ("ip", "set=opmas_block"),
        ),
    ),
    "wifi_unban": (
        _wifi_unban,
        Template(
            "wifi_unban",
            "hostapd del_client with ban_time 0: lifts a wifi_kick_ban (every hostapd.* "
            "without interface)",
            ("mac", "interface="),
        ),
    ),
    "ifup": (_ifup, Template("ifup", "ifup <interface>", ("interface=wan",))),
    "reboot": (_reboot, Template("reboot", "reboot", ())),
}
TEMPLATES: tuple[Template, ...] = tuple(template for _, template in _BUILDERS.values())


def command_of(config: Mapping[str, Any]) -> Command:
    """The command of an `ssh_command` action_config.

    Raises:
        ActionError: unknown template, unknown, missing or invalid argument (named).
    """
    name = config.get("template")
    entry = _BUILDERS.get(name) if isinstance(name, str) else None
    if entry is None:
        known = ", ".join(_BUILDERS)
        raise ActionError(f"unknown command template {name!r} (known: {known})")
    builder, template = entry
    args = config.get("args") or {}
    if not isinstance(args, Mapping):
        raise ActionError(f"'args' of {name} must be an object")
    allowed = {spec.split("=", 1)[0] for spec in template.args}
    unknown = sorted(set(args) - allowed)
    if unknown:
        raise ActionError(f"unknown argument {unknown[0]!r} for {name}")
    return builder(args)


def build_command(config: Mapping[str, Any]) -> str:
    """The shell line of an `ssh_command` action_config (see `command_of`)."""
    return command_of(config).line


def describe(config: Mapping[str, Any]) -> str:
    """One line saying what the action does; names the problem when the config is invalid."""
    try:
        return command_of(config).text
    except ActionError as exc:
        return f"invalid command: {exc}"
