"""`opmas migrate`: move the schema to head, or up or down to a given revision."""

from __future__ import annotations

import asyncio
from typing import Annotated

import typer

from opmas.cli.context import console, err_console, load_settings
from opmas.db import migrate as migrations
from opmas.embedded import embedded_services
from opmas.errors import OpmasError


def migrate(
    to: Annotated[
        str, typer.Option("--to", help="Target revision: head, base, or a revision id.")
    ] = "head",
    show: Annotated[
        bool, typer.Option("--show", help="Print the current and head revisions only.")
    ] = False,
) -> None:
    """Upgrade the schema to head, or go up or down to --to REV (embedded or configured DB)."""
    settings = load_settings()

    async def _migrate() -> tuple[str | None, str | None]:
        async with embedded_services(settings, with_nats=False) as endpoints:
            url = endpoints.database_url
            before = await migrations.current_revision(url)
            if not show:
                await migrations.migrate_to(url, to)
            return before, await migrations.current_revision(url)

    try:
        with console.status(f"migrating to {to}"):
            before, after = asyncio.run(_migrate())
    except OpmasError as exc:
        err_console.print(f"[red]migration failed:[/red] {exc}")
        raise typer.Exit(1) from exc
    head = migrations.head_revision()
    if show:
        console.print(f"current {before or 'base'}  head {head}")
    else:
        console.print(f"schema {before or 'base'} -> {after or 'base'}  (head {head})")
