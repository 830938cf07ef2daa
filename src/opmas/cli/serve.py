"""`opmas up` and `opmas run NAME`: the long-running commands, with their start-up banner."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
from collections.abc import Coroutine
from typing import Annotated, Any

import typer
from rich.markup import escape

from opmas import __version__, instance
from opmas.cli.context import CONFIG_EXIT, console, fail_startup, load_settings
from opmas.errors import ConfigError, OpmasError
from opmas.process import COMPONENT_NAMES, GROUPS, UP_COMPONENTS, Process, expand, run_process
from opmas.runtime import ComponentState, ComponentStatus, run_until_signalled
from opmas.settings import ensure_secret_key, url_address
from opmas.workers import CHILD_ENV


def _announce(process: Process) -> None:
    if os.environ.get(CHILD_ENV):
        return  # a component run by `opmas up` in a process of its own: the parent announced
    settings = process.resources.settings
    endpoints = process.resources.endpoints
    db = "embedded PostgreSQL" if endpoints.embedded_postgres else "PostgreSQL"
    bus = "embedded nats-server" if endpoints.embedded_nats else "NATS"
    console.print(f"[bold]OPMAS {__version__}[/bold]")
    console.print(f"  data      {settings.data_dir.resolve()}")
    console.print(f"  database  {db} at {url_address(endpoints.database_url)}")
    console.print(f"  bus       {bus} at {url_address(endpoints.nats_url)}")
    if process.api_url:
        console.print(f"  API       {process.api_url}  (docs {process.api_url}/docs)")
    instance.record(settings.data_dir, endpoints, api_url=process.api_url)


def _print_status(state: ComponentState) -> None:
    if state.status is ComponentStatus.ACTIVE:
        detail = f"  {state.detail}" if state.detail else ""
        console.print(f"[green]ready[/green]    {state.name:<14}{detail}", soft_wrap=True)
    elif state.status is ComponentStatus.ERROR and not state.fatal:  # fatal: _serve says it
        console.print(
            f"[red]error[/red]    {state.name}: {escape(state.last_error or '')} (restarting)",
            soft_wrap=True,
        )


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run on uvloop where it is installed (several times the UDP receive rate), else asyncio."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
    else:
        uvloop.run(main)


FORCE_MARGIN_S = 10.0  # after the drain grace period, for closing connections


def _serve(names: tuple[str, ...], *, migrate_schema: bool, split: bool = False) -> None:
    """Run `names` until signalled; `split` (`opmas up`) holds the data dir for its life and
    runs `runtime.own_process` in children. A configuration or start-up error (bad setting,
    port in use, data dir held) ends it with one line and exit status 2."""
    settings = load_settings()
    child = bool(os.environ.get(CHILD_ENV))
    try:
        with instance.hold(settings.data_dir) if split else contextlib.nullcontext():
            settings = ensure_secret_key(settings)
            run_loop(
                run_until_signalled(
                    lambda stop: run_process(
                        settings,
                        names,
                        stop,
                        migrate_schema=migrate_schema,
                        split=split,
                        on_open=_announce,
                        on_status=_print_status,
                    ),
                    force_after_s=settings.runtime.shutdown_grace_s + FORCE_MARGIN_S,
                    second_signal_forces=not child,  # its parent forces, after a grace period
                    hard_exit=True,
                )
            )
    except ConfigError as exc:
        fail_startup(str(exc), exc, code=CONFIG_EXIT)
    except OpmasError as exc:
        fail_startup(str(exc), exc)
    except asyncio.CancelledError:
        sys.exit(130)
    if not child:
        console.print("stopped")


def up() -> None:
    """Run every component in one process, starting embedded PostgreSQL and nats-server
    where no URL is configured; migrate the schema first. Ctrl-C stops everything."""
    _serve(UP_COMPONENTS, migrate_schema=True, split=True)


def run(
    names: Annotated[
        list[str],
        typer.Argument(
            help=f"Components: {', '.join(COMPONENT_NAMES)}; or a group: {', '.join(GROUPS)}."
        ),
    ],
) -> None:
    """Run components alone, in this process (scale out: many processes on many machines)."""
    try:
        chosen = expand(names)
    except ValueError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from None
    _serve(chosen, migrate_schema=False)
