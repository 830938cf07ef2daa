"""The OpenWRT command templates: exact command lines, and refusals of unsafe arguments."""

from __future__ import annotations

import shlex
from typing import Any

import pytest

from opmas.errors import ActionError
from opmas.executor.commands import TEMPLATES, build_command, describe


def _cmd(template: str, **args: Any) -> str:
    return build_command({"template": template, "args": args})


def test_wifi_reload_reboot_and_ifup_are_plain_commands() -> None:
    assert _cmd("wifi_reload") == "wifi reload"
    assert _cmd("reboot") == "reboot"
    assert _cmd("ifup") == "ifup wan"
    assert _cmd("ifup", interface="lan") == "ifup lan"


def test_service_restart_runs_the_init_script() -> None:
    assert _cmd("service_restart", service="dnsmasq") == "/etc/init.d/dnsmasq restart"


def test_kick_ban_on_one_interface_calls_hostapd_del_client_with_ban_in_ms() -> None:
    line = _cmd("wifi_kick_ban", mac="AA-BB-CC-DD-EE-FF", ban_s="10m", interface="phy0-ap0")
    assert shlex.split(line) == [
        "ubus",
        "call",
        "hostapd.phy0-ap0",
        "del_client",
        '{"addr":"aa:bb:cc:dd:ee:ff","reason":5,"deauth":true,"ban_time":600000}',
    ]


def test_kick_ban_without_interface_loops_over_every_hostapd_object() -> None:
    line = _cmd("wifi_kick_ban", mac="aa:bb:cc:dd:ee:ff")
    assert line.startswith("for obj in $(ubus list 'hostapd.*'); do ubus call \"$obj\" del_client ")
    assert '"ban_time":600000' in line


def test_nft_block_ipv4_creates_set_and_rule_only_when_missing_then_adds_element() -> None:
    line = _cmd("nft_block_ip", ip="203.0.113.7", timeout="4h")
    exists, rest = line.split(" >/dev/null 2>&1 || ", 1)
    assert exists == "nft list set inet fw4 opmas_block"
    assert "nft add set inet fw4 opmas_block '{ type ipv4_addr; flags timeout; }'" in rest
    assert "nft insert rule inet fw4 input_wan ip saddr @opmas_block drop" in rest
    assert line.endswith("; nft add element inet fw4 opmas_block '{ 203.0.113.7 timeout 14400s }'")


def test_nft_block_ipv6_uses_the_separate_v6_set() -> None:
    line = _cmd("nft_block_ip", ip="2001:db8::1", timeout=600, set="bad")
    assert "nft add set inet fw4 bad6 '{ type ipv6_addr; flags timeout; }'" in line
    assert "input_wan ip6 saddr @bad6 drop" in line
    assert line.endswith("'{ 2001:db8::1 timeout 600s }'")


@pytest.mark.parametrize(
    ("template", "args", "named"),
    [
        ("service_restart", {"service": "dnsmasq; rm -rf /"}, "service"),
        ("service_restart", {}, "service"),
        ("ifup", {"interface": "wan$(reboot)"}, "interface"),
        ("wifi_kick_ban", {"mac": "aa:bb:cc:dd:ee"}, "mac"),
        ("wifi_kick_ban", {"mac": "aa:bb:cc:dd:ee:ff", "interface": "a b"}, "interface"),
        ("wifi_kick_ban", {"mac": "aa:bb:cc:dd:ee:ff", "ban_s": 0}, "ban_s"),
        ("nft_block_ip", {"ip": "203.0.113.7; reboot"}, "ip"),
        ("nft_block_ip", {"ip": "203.0.113.7", "timeout": "4 weeks"}, "timeout"),
        ("nft_block_ip", {"ip": "203.0.113.7", "timeout": True}, "timeout"),
        ("nft_block_ip", {"ip": "203.0.113.7", "set": "x y"}, "set"),
        ("reboot", {"now": True}, "now"),
    ],
)
def test_bad_arguments_are_refused_naming_the_argument(
    template: str, args: dict[str, Any], named: str
) -> None:
    with pytest.raises(ActionError, match=f"'{named}'"):
        build_command({"template": template, "args": args})


def test_unknown_template_is_refused() -> None:
    with pytest.raises(ActionError, match="unknown command template 'rm'"):
        build_command({"template": "rm", "args": {}})


def test_describe_says_what_happens_or_what_is_wrong() -> None:
    assert describe({"template": "nft_block_ip", "args": {"ip": "203.0.113.7"}}) == (
        "block 203.0.113.7 for 3600 s (nft set opmas_block)"
    )
    assert describe({"template": "ifup", "args": {"interface": "a b"}}).startswith(
        "invalid command: argument 'interface'"
    )


def test_every_template_is_listed_and_builds_with_its_required_args() -> None:
    required = {"service": "network", "mac": "aa:bb:cc:dd:ee:ff", "ip": "192.0.2.1"}
    for template in TEMPLATES:
        args = {a: required[a] for a in template.args if "=" not in a}
        assert build_command({"template": template.name, "args": args})
