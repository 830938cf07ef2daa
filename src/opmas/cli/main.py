"""The `opmas` command: `up` runs everything in one process, `run NAME` one component.

Every command lives in its own module, imported only when it runs (`cli/lazy.py`), so that a
command starts without loading what the others need (the SSH client, the API server...).
"""

from __future__ import annotations

import os
from typing import Annotated

import typer

from opmas import __version__
from opmas.cli.lazy import LazyCommand, LazyGroup


class OpmasGroup(LazyGroup):
    """The `opmas` root: its commands, in the order `--help` lists them."""

    lazy = {  # noqa: RUF012 - read only
        "up": LazyCommand(
            "opmas.cli.serve:up",
            "Run every component, starting embedded PostgreSQL and nats-server where no URL "
            "is configured; migrate the schema first. Ctrl-C stops everything.",
        ),
        "run": LazyCommand(
            "opmas.cli.serve:run",
            "Run components alone, in this process (scale out: many processes on many machines).",
        ),
        "status": LazyCommand(
            "opmas.cli.status:status",
            "Show each component's state, database and NATS reachability, streams and lag.",
        ),
        "explain": LazyCommand(
            "opmas.cli.explain:explain",
            "Show how lines are parsed and the rules they match. Works offline.",
        ),
        "replay": LazyCommand(
            "opmas.cli.replay:replay",
            "Send a log file through the running pipeline (or --dry-run offline).",
        ),
        "migrate": LazyCommand(
            "opmas.cli.migrate:migrate",
            "Upgrade the schema to head, or go up or down to --to REV.",
        ),
        "config": LazyCommand("opmas.cli.config:app", "Inspect the configuration."),
        "events": LazyCommand("opmas.cli.events:app", "Stored log events."),
        "tokens": LazyCommand("opmas.cli.tokens:app", "Ingest tokens for POST /api/v1/logs."),
        "rules": LazyCommand(
            "opmas.cli.rules:app",
            "Detection rules: what the agents run, enable, disable, export, apply; test offline.",
        ),
        "findings": LazyCommand(
            "opmas.cli.findings:app", "Findings of the agents, as stored by the orchestrator."
        ),
        "incidents": LazyCommand(
            "opmas.cli.incidents:app", "Incidents: findings correlated into one problem."
        ),
        "actions": LazyCommand(
            "opmas.cli.actions:app", "Intended actions: review, approve, reject, retry."
        ),
        "decisions": LazyCommand(
            "opmas.cli.decisions:app",
            "Blocks and bans in force on the routers: list them, lift one.",
        ),
        "devices": LazyCommand("opmas.cli.devices:app", "Routers, their SSH access and keys."),
        "playbooks": LazyCommand(
            "opmas.cli.playbooks:app", "Playbooks: which finding leads to which actions."
        ),
        "allowlist": LazyCommand("opmas.cli.allowlist:app", "Targets no action may touch."),
        "notify": LazyCommand(
            "opmas.cli.notify:app", "Notification channels, routing rules and history."
        ),
        "keys": LazyCommand("opmas.cli.keys:app", "The secret key that encrypts stored secrets."),
        "dlq": LazyCommand("opmas.cli.dlq:app", "Dead letters: list, show, replay, drop."),
    }


app = typer.Typer(
    name="opmas",
    cls=OpmasGroup,
    help="OPMAS watches OpenWRT routers through their logs and proposes the fix.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"opmas {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
    debug: Annotated[
        bool,
        typer.Option("--debug", help="Log at debug level; errors show their traceback."),
    ] = False,
) -> None:
    """OPMAS: OpenWRT Proactive Monitoring Agentic System."""
    if debug:  # through the environment, so that the children of `opmas up` inherit it
        os.environ["OPMAS_LOG_LEVEL"] = "debug"
