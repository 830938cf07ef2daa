"""What the operator commands share: running one unit of work on the database (and the bus),
finding a row by id or uuid prefix, failing with one red line, and printing rows as a table
or JSON.
"""

from __future__ import annotations

import asyncio
import getpass
import ipaddress
import json
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy import Text, cast, inspect, select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from opmas.cli.context import console, err_console, load_settings
from opmas.db.engine import create_engine, session_factory
from opmas.embedded import embedded_services
from opmas.errors import OpmasError
from opmas.settings import Settings

if TYPE_CHECKING:  # the bus client is imported by the commands that use it
    from opmas.bus.connect import Bus

T = TypeVar("T")
M = TypeVar("M")

SessionWork = Callable[[AsyncSession], Awaitable[T]]
BusWork = Callable[[AsyncSession, "Bus"], Awaitable[T]]


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one red line on stderr and exit with `code` (1: not found or wrong state)."""
    err_console.print(f"[red]error:[/red] {escape(message)}")
    raise typer.Exit(code)


def run_async(
    work: Callable[[Settings], Coroutine[Any, Any, T]], settings: Settings | None = None
) -> T:
    """Run `work(settings)`; an OpmasError or a database error becomes `fail` (exit 1)."""
    resolved = settings or load_settings()
    try:
        return asyncio.run(work(resolved))
    except OpmasError as exc:
        fail(str(exc))
    except DBAPIError as exc:  # the server refused or is unreachable: its first line says why
        fail(f"database: {str(exc.orig or exc).splitlines()[0]}")


async def in_session(settings: Settings, work: SessionWork[T]) -> T:
    """`work` in one session on the configured (or embedded) database; committed if it returns."""
    async with embedded_services(settings, with_nats=False) as endpoints:
        engine = create_engine(endpoints.database_url, settings.database)
        try:
            async with session_factory(engine)() as session:
                result = await work(session)
                await session.commit()
                return result
        finally:
            await engine.dispose()


def with_session(work: SessionWork[T]) -> T:
    """Run `work` in one committed session (see `in_session`), failing cleanly on OpmasError."""

    async def _run(settings: Settings) -> T:
        return await in_session(settings, work)

    return run_async(_run)


def with_session_and_bus(work: BusWork[T]) -> T:
    """Run `work` with a session and a connected bus; `work` commits before it publishes."""

    # here: only the commands that publish need it
    from opmas.bus.connect import NatsAuth, connect_bus

    async def _run(settings: Settings) -> T:
        async with (
            embedded_services(settings) as endpoints,
            connect_bus(
                endpoints.nats_url,
                settings.bus,
                name="opmas-cli",
                auth=NatsAuth.from_settings(settings),
            ) as bus,
        ):
            engine = create_engine(endpoints.database_url, settings.database)
            try:
                async with session_factory(engine)() as session:
                    return await work(session, bus)
            finally:
                await engine.dispose()

    return run_async(_run)


MAX_ID = 2**63 - 1  # a bigint id; a longer number can only be a uuid prefix
MIN_PREFIX = 4  # a digits-only ref this long may also be the start of a uuid


async def lookup(
    session: AsyncSession,
    model: type[M],
    ref: str,
    uuid_column: InstrumentedAttribute[uuid.UUID],
    *,
    what: str,
    for_update: bool = False,
) -> M:
    """The row of `model` named by `ref`: its numeric id, its uuid, or a unique uuid prefix.

    Raises:
        OpmasError: nothing matches, or the prefix matches several rows.
    """
    key = ref.strip().lower()
    id_column = getattr(model, "id")  # noqa: B009 - every looked-up model has an integer id
    if not key or not all(c in "0123456789abcdef-" for c in key):
        raise OpmasError(f"no {what} {ref!r}: give its id or (a prefix of) its uuid")
    by_prefix = select(model).where(cast(uuid_column, Text).like(f"{key}%")).limit(2)
    rows: list[M] = []
    if key.isdigit() and int(key) <= MAX_ID:  # an id; else (or none) a uuid may start so
        by_id = select(model).where(id_column == int(key))
        rows = list((await session.scalars(by_id.with_for_update() if for_update else by_id)).all())
    if not rows and (not key.isdigit() or len(key) >= MIN_PREFIX):
        query = by_prefix.with_for_update() if for_update else by_prefix
        rows = list((await session.scalars(query)).all())
    if not rows:
        raise OpmasError(f"no {what} {ref}")
    if len(rows) > 1:
        raise OpmasError(f"{ref} names several {what}s; give more of the uuid")
    return rows[0]


def current_user() -> str:
    """Default for `--by`: the operating-system user running the command."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):
        return "cli"


def jsonable(value: Any) -> Any:
    """`value` with datetimes (UTC ISO 8601), uuids and IP addresses as strings."""
    if isinstance(value, datetime):
        return when_iso(value)
    if isinstance(value, uuid.UUID | ipaddress.IPv4Address | ipaddress.IPv6Address):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def row_dict(row: object, exclude: Iterable[str] = ()) -> dict[str, Any]:
    """Every mapped column of ORM `row` as JSON-ready data, minus `exclude`."""
    skip = set(exclude)
    mapper = inspect(row).mapper
    return {
        attr.key: jsonable(getattr(row, attr.key))
        for attr in mapper.column_attrs
        if attr.key not in skip
    }


def print_json(data: Any) -> None:
    """`data` as indented JSON on stdout."""
    typer.echo(json.dumps(jsonable(data), indent=2, ensure_ascii=False))


def when_iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def when(value: datetime | None) -> str:
    """A time for a table cell: `YYYY-MM-DD HH:MM:SS` UTC, or `-`."""
    return f"{value.astimezone(UTC):%Y-%m-%d %H:%M:%S}" if value else "-"


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]], empty: str) -> None:
    """A rich table of `rows` (cells escaped), or the line `empty` when there are none."""
    table = Table(*headers)
    count = 0
    for row in rows:
        table.add_row(*(escape("-" if cell is None else str(cell)) for cell in row))
        count += 1
    if count:
        console.print(table)
    else:
        console.print(empty)


def print_fields(title: str, fields: Mapping[str, object]) -> None:
    """A bold title, then one `name: value` line per field (mappings and lists as JSON)."""
    console.print(f"[bold]{escape(title)}[/bold]")
    width = max((len(name) for name in fields), default=0)
    for name, value in fields.items():
        console.print(f"  {name.ljust(width)}  {escape(_cell(value))}")


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, datetime):
        return when(value)
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(jsonable(value), ensure_ascii=False, sort_keys=True)
    return str(value)
