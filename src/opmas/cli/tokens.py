"""`opmas tokens`: create, list and revoke the tokens devices and clients send logs with."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Annotated

import typer
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.cli import render
from opmas.cli.context import console, err_console
from opmas.ingest import tokens
from opmas.ingest.tokens import SHOWN_PREFIX_CHARS as SHOWN_PREFIX

app = typer.Typer(help="Ingest tokens for POST /api/v1/logs.", no_args_is_help=True)


@app.command()
def create(
    name: Annotated[str, typer.Option("--name", help="Unique name, e.g. the router or client.")],
    device: Annotated[
        str | None, typer.Option("--device", help="Hostname of the device the token is for.")
    ] = None,
    expires_days: Annotated[
        int | None, typer.Option("--expires-days", min=1, help="Expire after N days.")
    ] = None,
) -> None:
    """Create a token and print it once (only its sha256 is stored)."""

    async def _create(session: AsyncSession) -> tuple[str, tokens.TokenInfo]:
        return await tokens.create_token(session, name, device=device, expires_days=expires_days)

    token, info = render.with_session(_create)
    typer.echo(token)
    expiry = f", expires {info.expires_at:%Y-%m-%d %H:%M} UTC" if info.expires_at else ""
    err_console.print(
        f"token [bold]{info.name}[/bold] created{expiry}; it is shown only this once. Send it as "
        "`Authorization: Bearer <token>`."
    )


@app.command("list")
def list_(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List every token: name, prefix, device, state, last use (never the secret)."""
    rows = render.with_session(tokens.list_tokens)
    now = datetime.now(UTC)
    if as_json:
        render.print_json([{**dataclasses.asdict(row), "state": row.state(now)} for row in rows])
        return
    table = Table("id", "name", "device", "state", "created", "expires", "last used")
    table.add_column("prefix", no_wrap=True, min_width=SHOWN_PREFIX + 1)
    for row in rows:
        table.add_row(
            str(row.id),
            row.name,
            row.device or "-",
            row.state(now),
            _when(row.created_at),
            _when(row.expires_at),
            _when(row.last_used_at),
            row.prefix + "…",
        )
    console.print(table)


@app.command()
def revoke(
    name: Annotated[str, typer.Argument(help="Name (or id) of the token.")],
) -> None:
    """Revoke a token: requests with it get 401 from now on."""

    async def _revoke(session: AsyncSession) -> tokens.TokenInfo:
        return await tokens.revoke_token(session, name)

    info = render.with_session(_revoke)
    console.print(f"token {info.name} revoked")


def _when(value: datetime | None) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value else "-"
