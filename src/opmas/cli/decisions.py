"""`opmas decisions`: what is blocked or banned on the routers now (like CrowdSec's `cscli
decisions` or fail2ban's bans), and lifting one: an unblock action, approved like any other,
run on the router by the executor.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.connect import Bus
from opmas.cli import render
from opmas.cli.actions import Wait, WaitTimeout, report_outcomes, wait_outcomes
from opmas.cli.context import console, load_settings
from opmas.cli.findings import AsJson, By, Limit
from opmas.errors import OpmasError
from opmas.orchestrator.allowlist import load_allowlist
from opmas.orchestrator.decisions import Decision, lift, list_decisions, normal_target
from opmas.orchestrator.lifecycle import action_message, publish_action

app = typer.Typer(
    help="Blocks and bans in force on the routers: list them, lift one.", no_args_is_help=True
)

Device = Annotated[str | None, typer.Option("--device", help="Only this hostname or IP.")]


def _why(d: Decision) -> str:
    what = d.finding_type or "-"
    if d.rule_name:
        what += f" ({d.rule_name})"
    if d.incident_id is not None:
        what += f", incident {d.incident_id}"
    return what


def _state(d: Decision) -> str:
    if d.state == "lifted":
        return f"lifted by action {d.lifted_by}"
    if d.lifting is not None:
        return f"{d.state}, lifting: action {d.lifting}"
    return d.state


@app.command("list")
def list_(
    device: Device = None,
    show_all: Annotated[
        bool, typer.Option("--all", help="Also expired and lifted ones (newest first).")
    ] = False,
    limit: Limit = 1000,
    as_json: AsJson = False,
) -> None:
    """List what is blocked (IPs, nft_block_ip) or banned (Wi-Fi clients, wifi_kick_ban) now:
    router, target, until when, why."""

    async def _fetch(session: AsyncSession) -> list[Decision]:
        return await list_decisions(session, device=device, include_all=show_all, limit=limit)

    rows = render.with_session(_fetch)
    if as_json:
        render.print_json([d.to_dict() for d in rows])
        return
    render.print_table(
        ("id", "state", "device", "kind", "target", "since (UTC)", "until (UTC)", "why"),
        (
            (
                d.id,
                _state(d),
                d.device,
                d.kind,
                d.target,
                render.when(d.since),
                render.when(d.until),
                _why(d),
            )
            for d in rows
        ),
        empty="nothing is blocked or banned" if not show_all else "no decisions",
    )


@app.command()
def delete(
    ids: Annotated[list[int] | None, typer.Argument(help="Decision ids (see `list`).")] = None,
    ip: Annotated[
        str | None, typer.Option("--ip", help="Every active block of this IP (or MAC).")
    ] = None,
    device: Device = None,
    approve: Annotated[
        bool, typer.Option("--approve", "-y", help="Approve the unblock: it runs at once.")
    ] = False,
    by: By = None,
    wait: Wait = False,
    timeout: WaitTimeout = 120,
) -> None:
    """Lift decisions: create the unblock action (nft_unblock_ip, wifi_unban) on the router,
    pending approval unless --approve; the allowlist applies as to any action."""
    if not ids and ip is None:
        raise typer.BadParameter("give decision ids or --ip")
    if wait and not approve:
        raise typer.BadParameter("--wait needs --approve (a pending action waits for you)")
    who = by or render.current_user()
    pending_ttl_s = load_settings().orchestrator.pending_ttl_s

    async def _work(session: AsyncSession, bus: Bus) -> list[tuple[int, int, str]]:
        chosen = await _chosen(session, ids, ip, device)
        allowlist = await load_allowlist(session)
        created = []
        for decision in chosen:
            action = await lift(
                session,
                decision,
                by=who,
                approve=approve,
                allowlist=allowlist,
                pending_ttl_s=pending_ttl_s,
            )
            created.append((decision.id, action.id, action.status))
        await session.commit()
        for _, action_id, _ in created:
            await publish_action(bus, await action_message(session, action_id))
        return created

    created = render.with_session_and_bus(_work)
    for decision_id, action_id, status in created:
        console.print(f"decision {decision_id}: unblock action {action_id} {status}")
        if status == "pending":
            console.print(f"  approve it: opmas actions approve {action_id}")
    if wait:
        action_ids = [a for _, a, status in created if status == "approved"]

        async def _wait(session: AsyncSession) -> list[Any]:
            return await wait_outcomes(session, action_ids, timeout)

        code = report_outcomes(render.with_session(_wait), timeout)
        if code:
            raise typer.Exit(code)


async def _chosen(
    session: AsyncSession, ids: list[int] | None, ip: str | None, device: str | None
) -> list[Decision]:
    """The decisions named by id (each must exist), or the active ones of `ip`."""
    if ids:
        found = await list_decisions(session, device=device, ids=ids)
        missing = sorted(set(ids) - {d.id for d in found})
        if missing:
            raise OpmasError(f"no decision {', '.join(map(str, missing))}")
        return found
    target = normal_target(ip)
    found = [d for d in await list_decisions(session, device=device) if d.target == target]
    if not found:
        where = f" on {device}" if device else ""
        raise OpmasError(f"nothing active blocks {ip}{where}")
    return found
