"""`opmas notify`: notification channels (email, Slack, webhook), the rules that route
findings to them, and what was sent. Secrets are read from a file, an environment variable
or a hidden prompt, stored encrypted, and never printed."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any, TypeVar

import httpx
import typer
from rich.markup import escape
from rich.table import Column, Table
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.cli.context import console, err_console, load_settings
from opmas.crypto import SecretKeys
from opmas.db.engine import create_engine, session_factory
from opmas.embedded import embedded_services
from opmas.errors import OpmasError
from opmas.models.notify import NOTIFICATION_STATUSES
from opmas.notify import catalog
from opmas.notify import history as queue
from opmas.notify.channels import deliver
from opmas.notify.render import PREFIX, Message
from opmas.settings import Settings

app = typer.Typer(help="Notification channels, routing rules and history.", no_args_is_help=True)
channel_app = typer.Typer(help="Email, Slack and webhook channels.", no_args_is_help=True)
rule_app = typer.Typer(help="Which findings go to which channels.", no_args_is_help=True)
app.add_typer(channel_app, name="channel")
app.add_typer(rule_app, name="rule")

T = TypeVar("T")
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
SECRET_VARIABLE = "OPMAS_NOTIFY_SECRET"  # noqa: S105 - the name of a variable, not a secret


def _with_session(work: Callable[[AsyncSession, Settings], Awaitable[T]]) -> T:
    """Run `work` in one committed session on the configured (or embedded) database."""
    settings = load_settings()

    async def _run() -> T:
        async with embedded_services(settings, with_nats=False) as endpoints:
            engine = create_engine(endpoints.database_url, settings.database)
            try:
                async with session_factory(engine)() as session:
                    result = await work(session, settings)
                    await session.commit()
                    return result
            finally:
                await engine.dispose()

    try:
        return asyncio.run(_run())
    except (OpmasError, ValueError) as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


def _fail(text: str) -> typer.Exit:
    err_console.print(f"[red]error:[/red] {escape(text)}")
    return typer.Exit(2)


def _read_secret(secret_file: Path | None, secret_env: str | None, prompt: str) -> str:
    """The secret from the file (`-`: stdin), the variable named by --secret-env, then
    OPMAS_NOTIFY_SECRET, then a hidden prompt on a terminal; never from argv."""
    if secret_file is not None and str(secret_file) == "-":
        secret = sys.stdin.read().strip()
    elif secret_file is not None:
        try:
            secret = secret_file.read_text().strip()
        except OSError as exc:
            raise _fail(f"cannot read {secret_file}: {exc.strerror}") from exc
    elif secret_env is not None:
        secret = os.environ.get(secret_env, "").strip()
        if not secret:
            raise _fail(f"environment variable {secret_env} is unset or empty")
    elif SECRET_VARIABLE in os.environ:
        secret = os.environ[SECRET_VARIABLE].strip()
    elif _stdin_is_terminal():
        secret = str(typer.prompt(prompt, hide_input=True)).strip()
    else:
        raise _fail(
            f"no terminal to ask for the {prompt}: give --secret-file FILE (- reads stdin), "
            f"--secret-env NAME or set {SECRET_VARIABLE}"
        )
    if not secret:
        raise _fail("the secret is empty")
    return secret


def _stdin_is_terminal() -> bool:
    try:
        return sys.stdin is not None and sys.stdin.isatty()
    except ValueError:  # stdin closed
        return False


def _channel_config(
    channel_type: str, email: dict[str, Any], url: str | None
) -> tuple[dict[str, Any], str | None]:
    """The stored config and the prompt for the secret (None: the channel has none)."""
    if channel_type == "email":
        if not email["host"] or not email["from"] or not email["to"]:
            raise _fail("an email channel needs --smtp-host, --from and at least one --to")
        config = {k: v for k, v in email.items() if v is not None}
        return config, ("SMTP password" if email["username"] else None)
    if channel_type == "slack":
        if url:
            raise _fail("the Slack webhook URL is a secret: give it by --secret-file/--secret-env")
        return {}, "Slack webhook URL"
    if channel_type == "webhook":
        if not url:
            raise _fail("a webhook channel needs --url")
        return {"url": url}, "webhook signing secret"
    raise _fail("--type must be email, slack or webhook")


@channel_app.command("add")
def channel_add(
    name: Annotated[str, typer.Argument(help="Unique channel name.")],
    channel_type: Annotated[str, typer.Option("--type", help="email, slack or webhook.")],
    smtp_host: Annotated[str | None, typer.Option("--smtp-host", help="SMTP server.")] = None,
    smtp_port: Annotated[int, typer.Option("--smtp-port", help="SMTP port.")] = 587,
    username: Annotated[str | None, typer.Option("--username", help="SMTP login.")] = None,
    sender: Annotated[str | None, typer.Option("--from", help="Email sender.")] = None,
    to: Annotated[list[str] | None, typer.Option("--to", help="Recipient (repeatable).")] = None,
    no_starttls: Annotated[bool, typer.Option("--no-starttls", help="Plain SMTP.")] = False,
    insecure: Annotated[
        bool, typer.Option("--no-verify-cert", help="Accept any SMTP certificate.")
    ] = False,
    ca_file: Annotated[str | None, typer.Option("--ca-file", help="CA bundle for SMTP.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Webhook URL (not Slack).")] = None,
    secret_file: Annotated[
        Path | None,
        typer.Option("--secret-file", help="Read the secret from this file; - reads stdin."),
    ] = None,
    secret_env: Annotated[
        str | None,
        typer.Option(
            "--secret-env",
            help=f"Read the secret from this variable (default: {SECRET_VARIABLE} if set).",
        ),
    ] = None,
) -> None:
    """Add a channel; its secret (SMTP password, Slack URL, webhook key) is stored encrypted.

    The secret comes from --secret-file (- for stdin), --secret-env, OPMAS_NOTIFY_SECRET or,
    on a terminal only, a hidden prompt; never from the command line.
    """
    email = {
        "host": smtp_host,
        "port": smtp_port,
        "username": username,
        "from": sender,
        "to": list(to or []),
        "starttls": not no_starttls,
        "validate_certs": not insecure,
        "ca_file": ca_file,
    }
    config, prompt = _channel_config(channel_type, email, url)
    secret = _read_secret(secret_file, secret_env, prompt) if prompt else None

    async def _add(session: AsyncSession, settings: Settings) -> None:
        token = SecretKeys(settings).box().encrypt(secret) if secret else None
        await catalog.add_channel(session, name, channel_type, config, token)

    _with_session(_add)
    console.print(f"channel {escape(name)} added ({channel_type})", highlight=False)


@channel_app.command("list")
def channel_list(as_json: AsJson = False) -> None:
    """List channels and their config; a secret shows only as `set`."""
    views = _with_session(lambda session, _: catalog.list_channels(session))
    if as_json:
        _print_json(views)
        return
    table = Table(Column("name", no_wrap=True), "type", "active", "config", "secret")
    for view in views:
        config = json.dumps(view["config"], ensure_ascii=False)
        table.add_row(view["name"], view["type"], str(view["active"]), config, view["secret"])
    console.print(table)


@channel_app.command("remove")
def channel_remove(name: Annotated[str, typer.Argument(help="Channel name.")]) -> None:
    """Remove a channel (its history stays)."""
    _with_session(lambda session, _: catalog.remove_channel(session, name))
    console.print(f"channel {escape(name)} removed", highlight=False)


@channel_app.command("test")
def channel_test(name: Annotated[str, typer.Argument(help="Channel name.")]) -> None:
    """Send a test message on the channel now."""
    message = Message(
        subject=f"{PREFIX} test message",
        text=f"This is a test of the OPMAS notification channel {name}.",
        body={"type": "test", "channel": name},
    )

    async def _test(session: AsyncSession, settings: Settings) -> None:
        channel = await catalog.get_channel(session, name)
        box = SecretKeys(settings).box()
        async with httpx.AsyncClient(timeout=settings.notifier.send_timeout_s) as http:
            await deliver(channel, message, box=box, http=http, settings=settings.notifier)

    _with_session(_test)
    console.print(f"test message sent on {escape(name)}", highlight=False)


@rule_app.command("add")
def rule_add(
    name: Annotated[str, typer.Argument(help="Unique rule name.")],
    channel: Annotated[list[str], typer.Option("--channel", help="Channel name (repeatable).")],
    min_severity: Annotated[str, typer.Option("--min-severity", help="Lowest.")] = "warning",
    max_severity: Annotated[str, typer.Option("--max-severity", help="Highest.")] = "critical",
    domain: Annotated[
        list[str] | None, typer.Option("--domain", help="Only this domain (repeatable).")
    ] = None,
    category: Annotated[
        list[str] | None,
        typer.Option("--category", help="Only this finding type or rule name (repeatable)."),
    ] = None,
    digest_interval: Annotated[
        int, typer.Option("--digest-interval", min=0, help="Seconds per message; 0: default.")
    ] = 0,
) -> None:
    """Add a rule: findings in the severity range (and domains/categories) go to channels."""

    async def _add(session: AsyncSession, settings: Settings) -> int:
        rule = await catalog.add_rule(
            session,
            name,
            min_severity=min_severity,
            max_severity=max_severity,
            domains=domain or [],
            categories=category or [],
            channels=channel,
            digest_interval_s=digest_interval,
        )
        return await _backfill(session, settings, rule.id)

    queued = _with_session(_add)
    late = f"; {queued} recent findings queued for its channels" if queued else ""
    console.print(f"rule {escape(name)} added{late}", highlight=False)


async def _backfill(session: AsyncSession, settings: Settings, rule_id: int) -> int:
    """Queue the recent findings nothing routed before this rule (see Notifier.backfill)."""
    bound = settings.notifier
    if bound.backfill_s <= 0 or bound.backfill_max <= 0:
        return 0
    routes = [route for route in await queue.load_routes(session) if route.rule_id == rule_id]
    since = datetime.now(UTC) - timedelta(seconds=bound.backfill_s)
    return await queue.backfill(session, routes, since=since, limit=bound.backfill_max)


@rule_app.command("list")
def rule_list(as_json: AsJson = False) -> None:
    """List the notification rules."""
    views = _with_session(lambda session, _: catalog.list_rules(session))
    if as_json:
        _print_json(views)
        return
    table = Table(
        Column("name", no_wrap=True),
        *("enabled", "severity", "domains", "categories", "channels", "digest s"),
    )
    for view in views:
        table.add_row(
            view["name"],
            str(view["enabled"]),
            f"{view['min_severity']}..{view['max_severity']}",
            ", ".join(view["domains"]) or "*",
            ", ".join(view["categories"]) or "*",
            ", ".join(view["channels"]),
            str(view["digest_interval_s"] or "default"),
        )
    console.print(table)


@rule_app.command("remove")
def rule_remove(name: Annotated[str, typer.Argument(help="Rule name.")]) -> None:
    """Remove a notification rule."""
    _with_session(lambda session, _: catalog.remove_rule(session, name))
    console.print(f"rule {escape(name)} removed", highlight=False)


@app.command()
def history(
    status: Annotated[
        str | None, typer.Option("--status", help=f"One of {', '.join(NOTIFICATION_STATUSES)}.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, help="Newest N rows.")] = 50,
    as_json: AsJson = False,
) -> None:
    """What was sent, is pending or failed, newest first."""
    if status is not None and status not in NOTIFICATION_STATUSES:
        raise _fail(f"--status must be one of {', '.join(NOTIFICATION_STATUSES)}")
    views = _with_session(
        lambda session, _: catalog.list_history(session, status=status, limit=limit)
    )
    if as_json:
        _print_json(views)
        return
    table = Table("id", "status", "channel", "type", "attempts", "subject", "sent", "error")
    for view in views:
        table.add_row(
            str(view["id"]),
            view["status"],
            view["channel"],
            view["notification_type"],
            str(view["attempts"]),
            escape(str(view["subject"] or "-")),
            view["sent_at"] or "-",
            escape(view["error_message"] or ""),
        )
    console.print(table)
