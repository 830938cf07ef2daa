"""ssh_command actions against dropbear playing the router: what ran, host key pinning,
timeouts, retries, the allowlist, and a private key that never reaches the logs."""

from __future__ import annotations

import json
import logging

import asyncssh
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.subjects import ActionState
from opmas.executor.service import Executor
from opmas.models import AllowlistEntry, Device
from tests.integration.executor.conftest import ClientKey, add_action, reload
from tests.peers.dropbear import HOSTAPD_OBJECTS, Dropbear

pytestmark = pytest.mark.integration

KICK = {"template": "wifi_kick_ban", "args": {"mac": "AA:BB:CC:DD:EE:01", "interface": "phy0-ap0"}}
WIFI_RELOAD = {"template": "wifi_reload", "args": {}}


async def test_approved_ssh_command_runs_on_the_router_and_its_output_is_stored(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    action = await add_action(session, "ssh_command", KICK, device=device)

    assert await executor.execute(action.id) is ActionState.SUCCEEDED

    message = '{"addr":"aa:bb:cc:dd:ee:01","reason":5,"deauth":true,"ban_time":600000}'
    assert router.calls() == [["ubus", "call", "hostapd.phy0-ap0", "del_client", message]]
    row = await reload(session, action)
    assert row.status == "succeeded"
    assert row.attempts == 1
    assert row.result is not None
    assert row.result["exit_status"] == 0
    assert row.result["stdout"] == "ubus done\n"
    assert row.result["command"].startswith("ubus call hostapd.phy0-ap0 del_client ")
    assert [a["outcome"] for a in row.result["attempts"]] == ["succeeded"]
    assert [h["state"] for h in row.history] == ["running", "succeeded"]


async def test_kick_without_interface_reaches_every_hostapd_object(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    config = {"template": "wifi_kick_ban", "args": {"mac": "aa:bb:cc:dd:ee:02", "ban_s": 60}}
    action = await add_action(session, "ssh_command", config, device=device)

    assert await executor.execute(action.id) is ActionState.SUCCEEDED

    calls = router.calls()
    assert calls[0] == ["ubus", "list", "hostapd.*"]
    assert [call[2] for call in calls[1:]] == list(HOSTAPD_OBJECTS)
    assert all(json.loads(call[4])["ban_time"] == 60000 for call in calls[1:])


async def test_nft_block_creates_the_set_once_and_adds_the_address_each_time(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    for ip in ("198.51.100.9", "198.51.100.10"):
        config = {"template": "nft_block_ip", "args": {"ip": ip, "timeout": "10m"}}
        action = await add_action(session, "ssh_command", config, device=device)
        assert await executor.execute(action.id) is ActionState.SUCCEEDED

    calls = router.calls()
    first_time = [["nft", "list"], ["nft", "add"], ["nft", "insert"], ["nft", "add"]]
    assert [c[:2] for c in calls] == [*first_time, ["nft", "list"], ["nft", "add"]]
    assert calls[1][:6] == ["nft", "add", "set", "inet", "fw4", "opmas_block"]
    assert calls[1][6:] == ["{ type ipv4_addr; flags timeout; }"]
    assert calls[2][-4:] == ["ip", "saddr", "@opmas_block", "drop"]
    assert calls[3][-1] == "{ 198.51.100.9 timeout 600s }"
    assert calls[5][-1] == "{ 198.51.100.10 timeout 600s }"


async def test_first_connection_pins_the_host_key(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    assert device.ssh_host_key is None
    action = await add_action(session, "ssh_command", WIFI_RELOAD, device=device)

    await executor.execute(action.id)

    await session.refresh(device)
    assert device.ssh_host_key == router.host_public_key
    assert device.ssh_host_key_pinned_at is not None


async def test_changed_host_key_is_refused_without_retry_and_nothing_runs(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    first = await add_action(session, "ssh_command", WIFI_RELOAD, device=device)
    assert await executor.execute(first.id) is ActionState.SUCCEEDED
    await session.refresh(device)
    pinned = device.ssh_host_key
    router.restart_with_new_host_key()
    second = await add_action(session, "ssh_command", WIFI_RELOAD, device=device, retry_count=2)

    assert await executor.execute(second.id) is ActionState.FAILED

    assert router.calls() == [["wifi", "reload"]]  # the first action only
    row = await reload(session, second)
    assert row.attempts == 1
    assert row.result is not None
    assert "host key of r1 changed" in row.result["error"]
    await session.refresh(device)
    assert device.ssh_host_key == pinned


async def test_hanging_command_times_out_on_every_attempt(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    router.hang()
    action = await add_action(
        session, "ssh_command", WIFI_RELOAD, device=device, timeout_seconds=1, retry_count=1
    )

    assert await executor.execute(action.id) is ActionState.TIMED_OUT

    row = await reload(session, action)
    assert row.status == "timed_out"
    assert row.attempts == 2
    assert row.result is not None
    assert [a["outcome"] for a in row.result["attempts"]] == ["timed_out", "timed_out"]
    assert router.calls() == [["wifi", "reload"], ["wifi", "reload"]]


async def test_failing_command_is_retried_then_failed_with_its_exit_status(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    router.fail("ifup", "interface lan6 not found")
    config = {"template": "ifup", "args": {"interface": "lan6"}}
    action = await add_action(session, "ssh_command", config, device=device, retry_count=2)

    assert await executor.execute(action.id) is ActionState.FAILED

    assert router.calls() == [["ifup", "lan6"]] * 3
    row = await reload(session, action)
    assert row.attempts == 3
    assert row.result is not None
    assert row.result["exit_status"] == 3
    assert row.result["stderr"] == "interface lan6 not found\n"
    assert len(row.result["attempts"]) == 3


async def test_allowlisted_target_is_refused_and_nothing_runs(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    session.add(AllowlistEntry(kind="network", value="192.0.2.0/24", reason="office"))
    await session.commit()
    config = {"template": "nft_block_ip", "args": {"ip": "192.0.2.44"}}
    action = await add_action(session, "ssh_command", config, device=device, retry_count=3)

    assert await executor.execute(action.id) is ActionState.FAILED

    assert router.calls() == []
    row = await reload(session, action)
    assert row.attempts == 0
    assert row.result is not None
    assert "allowlisted" in row.result["error"]
    assert "192.0.2.0/24" in row.result["error"]


async def test_bad_arguments_fail_the_action_without_connecting(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    config = {"template": "service_restart", "args": {"service": "x; reboot"}}
    action = await add_action(session, "ssh_command", config, device=device, retry_count=2)

    assert await executor.execute(action.id) is ActionState.FAILED

    assert router.calls() == []
    row = await reload(session, action)
    assert row.result is not None
    assert "'service'" in row.result["error"]
    await session.refresh(device)
    assert device.ssh_host_key is None  # never connected


async def test_decrypted_private_key_never_appears_in_logs_or_results(
    session: AsyncSession,
    device: Device,
    router: Dropbear,
    executor: Executor,
    client_key: ClientKey,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    asyncssh.set_debug_level(3)
    try:
        ok = await add_action(session, "ssh_command", WIFI_RELOAD, device=device)
        await executor.execute(ok.id)
        router.fail("wifi")
        bad = await add_action(session, "ssh_command", WIFI_RELOAD, device=device, retry_count=1)
        await executor.execute(bad.id)
    finally:
        asyncssh.set_debug_level(1)

    captured = capsys.readouterr()
    logs = caplog.text + captured.out + captured.err
    assert "action finished" in logs  # the executor's own lines were captured
    secret_lines = [
        line for line in client_key.private.splitlines() if line and not line.startswith("---")
    ]
    rows = [await reload(session, ok), await reload(session, bad)]
    stored = json.dumps([row.result for row in rows] + [row.history for row in rows])
    for line in secret_lines:
        assert line not in logs
        assert line not in stored
