"""`opmas allowlist`: addresses, networks, MACs and devices no action may ever target."""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy import ColumnElement, delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.cli import render
from opmas.cli.context import console
from opmas.cli.findings import AsJson
from opmas.errors import OpmasError
from opmas.models import AllowlistEntry
from opmas.orchestrator.allowlist import classify

app = typer.Typer(help="Targets no action may touch.", no_args_is_help=True)

Value = Annotated[
    str, typer.Argument(help="An IP, a CIDR network, a MAC address or a device hostname.")
]


def entry_of(value: str) -> tuple[str, str]:
    """(kind, normalised value) of `value`.

    Raises:
        typer.BadParameter: not an IP, a CIDR network, a MAC or an RFC 1123 hostname (why).
    """
    try:
        return classify(value)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None


def _checked(value: str) -> tuple[str, str]:
    """`entry_of`, or one red line saying why and exit 2."""
    try:
        return entry_of(value)
    except typer.BadParameter as exc:
        render.fail(exc.message, code=2)


@app.command("list")
def list_entries(as_json: AsJson = False) -> None:
    """List allowlist entries."""

    async def _fetch(session: AsyncSession) -> list[AllowlistEntry]:
        query = select(AllowlistEntry).order_by(AllowlistEntry.kind, AllowlistEntry.value)
        return list((await session.scalars(query)).all())

    rows = render.with_session(_fetch)
    if as_json:
        render.print_json([render.row_dict(e) for e in rows])
        return
    render.print_table(
        ("kind", "value", "reason", "added (UTC)"),
        ((e.kind, e.value, e.reason, render.when(e.created_at)) for e in rows),
        empty="the allowlist is empty",
    )


@app.command()
def add(
    value: Value,
    reason: Annotated[str | None, typer.Option(help="Why it must never be touched.")] = None,
) -> None:
    """Add an entry; its kind (ip, network, mac, device) is detected from the value, which
    must be a valid IP (v4 or v6), CIDR network, MAC or RFC 1123 hostname."""
    kind, normal = _checked(value)

    async def _work(session: AsyncSession) -> bool:
        entry = await session.scalar(
            select(AllowlistEntry).where(
                AllowlistEntry.kind == kind, AllowlistEntry.value == normal
            )
        )
        if entry is not None:
            entry.reason = reason if reason is not None else entry.reason
            return False
        session.add(AllowlistEntry(kind=kind, value=normal, reason=reason))
        return True

    added = render.with_session(_work)
    console.print(f"{kind} {normal} {'added to' if added else 'already on'} the allowlist")


@app.command()
def remove(value: Value) -> None:
    """Remove an entry (also one stored before values were checked, by its exact text)."""
    match: ColumnElement[bool]
    try:
        kind, normal = entry_of(value)
        match = (AllowlistEntry.kind == kind) & (AllowlistEntry.value == normal)
    except typer.BadParameter:
        kind, normal = "entry", value.strip()
        match = AllowlistEntry.value == normal

    async def _work(session: AsyncSession) -> None:
        result = await session.execute(
            delete(AllowlistEntry).where(match).returning(AllowlistEntry.id)
        )
        if not result.all():
            raise OpmasError(f"{kind} {normal} is not on the allowlist")

    render.with_session(_work)
    console.print(f"{kind} {normal} removed from the allowlist")
