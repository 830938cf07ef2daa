"""`opmas decisions list|delete`, `opmas actions approve --wait` and `opmas actions retry`
against dropbear playing the router: the unblock really runs there. The CLI runs in a thread
(it has its own event loop) while the executor runs in the test's loop."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.subjects import ActionState
from opmas.executor.service import Executor
from opmas.models import Device, IntendedAction
from tests.integration.executor.conftest import add_action, opmas, opmas_json, reload, running
from tests.peers.dropbear import Dropbear

pytestmark = pytest.mark.integration

ATTACKER = "198.51.100.7"
BLOCK = {"template": "nft_block_ip", "args": {"ip": ATTACKER, "timeout": "4h"}}


async def _blocked(session: AsyncSession, device: Device, executor: Executor) -> IntendedAction:
    block = await add_action(session, "ssh_command", BLOCK, device=device)
    assert await executor.execute(block.id) is ActionState.SUCCEEDED
    return await reload(session, block)


@pytest.mark.usefixtures("cli")
async def test_a_block_is_listed_and_deleting_it_runs_the_unblock_on_the_router(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    block = await _blocked(session, device, executor)
    (decision,) = await opmas_json("decisions", "list")
    assert (decision["id"], decision["state"], decision["device"]) == (block.id, "active", "r1")
    assert (decision["kind"], decision["target"]) == ("ip", ATTACKER)
    assert block.finished_at is not None
    until = datetime.fromisoformat(decision["until"].replace("Z", "+00:00"))
    assert until == block.finished_at + timedelta(hours=4)

    deleted = await opmas("decisions", "delete", str(block.id))
    assert deleted.exit_code == 0, deleted.output
    assert "unblock action" in deleted.output
    assert "pending" in deleted.output
    (decision,) = await opmas_json("decisions", "list")
    unblock_id = decision["lifting"]
    assert decision["state"] == "active"
    again = await opmas("decisions", "delete", str(block.id))
    assert again.exit_code == 1
    assert f"being lifted by action {unblock_id}" in again.output

    async with running(executor):
        approved = await opmas("actions", "approve", str(unblock_id), "--wait", "--timeout", "30")
    assert approved.exit_code == 0, approved.output
    assert f"action {unblock_id} succeeded: exit status 0" in approved.output
    element = ["inet", "fw4", "opmas_block", f"{{ {ATTACKER} }}"]
    assert router.calls()[-2:] == [
        ["nft", "get", "element", *element],
        ["nft", "delete", "element", *element],
    ]
    assert await opmas_json("decisions", "list") == []
    (lifted,) = await opmas_json("decisions", "list", "--all")
    assert (lifted["state"], lifted["lifted_by"]) == ("lifted", unblock_id)


@pytest.mark.usefixtures("cli")
async def test_delete_by_ip_with_approve_and_wait(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    await _blocked(session, device, executor)
    async with running(executor):
        result = await opmas("decisions", "delete", "--ip", ATTACKER, "-y", "--wait")
    assert result.exit_code == 0, result.output
    assert "approved" in result.output
    assert "succeeded" in result.output
    assert router.calls()[-1][:3] == ["nft", "delete", "element"]
    nothing = await opmas("decisions", "delete", "--ip", ATTACKER)
    assert nothing.exit_code == 1
    assert f"nothing active blocks {ATTACKER}" in nothing.output


@pytest.mark.usefixtures("cli")
async def test_an_expired_block_shows_expired_and_cannot_be_lifted(
    session: AsyncSession, device: Device
) -> None:
    done = datetime.now(UTC) - timedelta(hours=1)
    config = {"template": "nft_block_ip", "args": {"ip": "198.51.100.8", "timeout": "10m"}}
    old = await add_action(
        session, "ssh_command", config, device=device, status="succeeded", finished_at=done
    )
    assert await opmas_json("decisions", "list") == []
    (decision,) = await opmas_json("decisions", "list", "--all", "--device", "r1")
    assert (decision["id"], decision["state"]) == (old.id, "expired")
    refused = await opmas("decisions", "delete", str(old.id))
    assert refused.exit_code == 1
    assert f"decision {old.id} is expired; nothing to lift" in refused.output


@pytest.mark.usefixtures("cli")
async def test_an_allowlisted_target_makes_the_unblock_rejected(
    session: AsyncSession, device: Device, executor: Executor
) -> None:
    block = await _blocked(session, device, executor)
    assert (await opmas("allowlist", "add", ATTACKER)).exit_code == 0
    result = await opmas("decisions", "delete", str(block.id), "--approve")
    assert result.exit_code == 0, result.output
    assert "rejected" in result.output


@pytest.mark.usefixtures("cli")
async def test_approve_wait_prints_a_failure_with_its_exit_status_and_stderr(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    router.fail("nft", "Error: Could not process rule: Operation not permitted")
    action = await add_action(session, "ssh_command", BLOCK, device=device, status="pending")
    async with running(executor):
        result = await opmas("actions", "approve", str(action.id), "--wait", "--timeout", "30")
    assert result.exit_code == 1, result.output
    assert f"action {action.id} failed: exit status 3" in result.output
    assert "stderr: Error: Could not process rule: Operation not permitted" in result.output


@pytest.mark.usefixtures("cli")
async def test_retry_runs_a_failed_action_again_and_keeps_the_history(
    session: AsyncSession, device: Device, router: Dropbear, executor: Executor
) -> None:
    router.fail("wifi")
    action = await add_action(
        session, "ssh_command", {"template": "wifi_reload", "args": {}}, device=device
    )
    assert await executor.execute(action.id) is ActionState.FAILED
    (router.base / "fail.wifi").unlink()
    async with running(executor):
        result = await opmas("actions", "retry", str(action.id), "--wait", "--by", "alice")
    assert result.exit_code == 0, result.output
    assert f"action {action.id} succeeded" in result.output
    row = await reload(session, action)
    assert [h["state"] for h in row.history] == [
        "running", "failed", "approved", "running", "succeeded"
    ]  # fmt: skip
    assert (row.history[2]["by"], row.history[2]["note"]) == ("alice", "retry")
    again = await opmas("actions", "retry", str(action.id))
    assert again.exit_code == 1
    assert "only a failed, timed_out or interrupted one is retried" in again.output
