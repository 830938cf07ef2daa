"""The reverses of the blocking templates (nft_unblock_ip, wifi_unban) and the decision
helpers: expiry from the block's duration, the lift of a block."""

from __future__ import annotations

import json
import shlex
from datetime import UTC, datetime

import pytest

from opmas.errors import ActionError
from opmas.executor.commands import build_command, command_of
from opmas.orchestrator.decisions import duration_s, lift_config, normal_target, state_of


def test_unblock_deletes_the_element_from_the_set_the_block_used() -> None:
    line = build_command({"template": "nft_unblock_ip", "args": {"ip": "198.51.100.7"}})
    present, delete = line.removeprefix("if ").removesuffix("; fi").split(" >/dev/null 2>&1; then ")
    assert shlex.split(present) == [
        "nft", "get", "element", "inet", "fw4", "opmas_block", "{ 198.51.100.7 }"
    ]  # fmt: skip
    assert shlex.split(delete) == [
        "nft", "delete", "element", "inet", "fw4", "opmas_block", "{ 198.51.100.7 }"
    ]  # fmt: skip


def test_an_ipv6_unblock_uses_the_ipv6_set_like_the_block() -> None:
    args = {"ip": "2001:db8::7", "set": "mine"}
    block = build_command({"template": "nft_block_ip", "args": args})
    unblock = build_command({"template": "nft_unblock_ip", "args": args})
    assert "mine6" in block
    assert "mine6" in unblock
    assert "'{ 2001:db8::7 }'" in unblock


def test_unblock_arguments_are_checked() -> None:
    with pytest.raises(ActionError, match="IPv4 or IPv6"):
        build_command({"template": "nft_unblock_ip", "args": {"ip": "1.2.3.4; reboot"}})
    with pytest.raises(ActionError, match="unknown argument 'timeout'"):
        build_command({"template": "nft_unblock_ip", "args": {"ip": "1.2.3.4", "timeout": 5}})


def test_wifi_unban_sets_the_ban_time_to_zero_without_deauth() -> None:
    config = {"template": "wifi_unban", "args": {"mac": "AA-BB-CC-DD-EE-01", "interface": "wl0"}}
    words = shlex.split(build_command(config))
    assert words[:4] == ["ubus", "call", "hostapd.wl0", "del_client"]
    assert json.loads(words[4]) == {
        "addr": "aa:bb:cc:dd:ee:01",
        "reason": 5,
        "deauth": False,
        "ban_time": 0,
    }
    everywhere = command_of({"template": "wifi_unban", "args": {"mac": "aa:bb:cc:dd:ee:01"}})
    assert everywhere.line.startswith("for obj in $(ubus list 'hostapd.*')")
    assert everywhere.text.endswith("on every access point")


def test_a_decision_lasts_the_duration_of_its_block() -> None:
    assert duration_s({"template": "nft_block_ip", "args": {"ip": "1.2.3.4", "timeout": "4h"}}) == (
        4 * 3600
    )
    assert duration_s({"template": "nft_block_ip", "args": {"ip": "1.2.3.4"}}) == 3600
    assert duration_s({"template": "wifi_kick_ban", "args": {"mac": "aa:bb:cc:dd:ee:01"}}) == 600
    assert duration_s({"template": "wifi_reload", "args": {}}) is None


def test_the_lift_of_a_block_names_the_same_target_and_set() -> None:
    block = {"template": "nft_block_ip", "args": {"ip": "1.2.3.4", "timeout": 60, "set": "s"}}
    assert lift_config(block) == {
        "template": "nft_unblock_ip",
        "args": {"ip": "1.2.3.4", "set": "s"},
    }
    ban = {"template": "wifi_kick_ban", "args": {"mac": "aa:bb:cc:dd:ee:01", "ban_s": 60}}
    assert lift_config(ban) == {"template": "wifi_unban", "args": {"mac": "aa:bb:cc:dd:ee:01"}}
    with pytest.raises(ActionError, match="not a block"):
        lift_config({"template": "reboot", "args": {}})


def test_state_of_a_decision() -> None:
    now = datetime(2026, 11, 23, 12, tzinfo=UTC)
    later = datetime(2026, 11, 23, 13, tzinfo=UTC)
    assert state_of(later, None, now) == "active"
    assert state_of(now, None, later) == "expired"
    assert state_of(later, 7, now) == "lifted"
    assert normal_target("AA-BB-CC-DD-EE-01") == "aa:bb:cc:dd:ee:01"
    assert normal_target(" 2001:DB8::1 ") == "2001:db8::1"
