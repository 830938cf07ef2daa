"""`opmas notify` as a user runs it, on a real PostgreSQL and loopback receivers."""

from __future__ import annotations

import asyncio
import json
import os
import pty
import select
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.cli.notify import app
from opmas.db.engine import plain_dsn
from opmas.models import Finding
from opmas.notify.signing import verify
from tests.integration.cli.conftest import run_db
from tests.integration.notify.conftest import SMTP_PASSWORD, SMTP_USER
from tests.integration.notify.peers import HttpReceiver, Mailbox

runner = CliRunner()
pytestmark = pytest.mark.usefixtures("cli_database")
HOOK_SECRET = "cli-hook-secret-5521"


def _stored_channels(database_url: str) -> list[str]:
    async def _fetch() -> list[str]:
        conn = await asyncpg.connect(plain_dsn(database_url))
        try:
            rows = await conn.fetch("SELECT row_to_json(c)::text AS j FROM notification_channels c")
        finally:
            await conn.close()
        return [row["j"] for row in rows]

    return asyncio.run(_fetch())


def _ok(args: list[str]) -> str:
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return result.output


def test_email_channel_added_from_a_secret_file_sends_a_test_message_and_hides_the_password(
    tmp_path: Path,
    database_url: str,
    smtp_port: int,
    tls_files: tuple[Path, Path],
    mailbox: Mailbox,
) -> None:
    secret = tmp_path / "smtp.pass"
    secret.write_text(SMTP_PASSWORD + "\n")
    added = _ok(
        [
            "channel", "add", "ops-mail", "--type", "email",
            "--smtp-host", "127.0.0.1", "--smtp-port", str(smtp_port),
            "--username", SMTP_USER, "--from", "opmas@example.net",
            "--to", "a@example.net", "--to", "b@example.net",
            "--ca-file", str(tls_files[0]), "--secret-file", str(secret),
        ]
    )  # fmt: skip
    listed = _ok(["channel", "list", "--json"])
    tested = _ok(["channel", "test", "ops-mail"])

    (view,) = json.loads(listed)
    assert view["secret"] == "set"
    assert view["config"]["to"] == ["a@example.net", "b@example.net"]
    assert mailbox.envelopes == [("opmas@example.net", ["a@example.net", "b@example.net"], True)]
    assert "test message sent" in tested
    for text in (added, listed, tested, *_stored_channels(database_url)):
        assert SMTP_PASSWORD not in text


def test_webhook_channel_secret_from_env_signs_the_test_message(
    monkeypatch: pytest.MonkeyPatch, database_url: str, http_receiver: HttpReceiver
) -> None:
    monkeypatch.setenv("HOOK_SECRET", HOOK_SECRET)
    url = f"{http_receiver.url}/in"
    _ok(
        ["channel", "add", "hook", "--type", "webhook", "--url", url, "--secret-env", "HOOK_SECRET"]
    )
    table = _ok(["channel", "list"])
    _ok(["channel", "test", "hook"])

    (request,) = http_receiver.on("/in")
    assert request.json()["type"] == "test"
    assert verify(HOOK_SECRET.encode(), request.body, request.headers)
    assert "set" in table
    assert all(HOOK_SECRET not in text for text in (table, *_stored_channels(database_url)))


def test_slack_channel_url_is_read_from_stdin_and_never_taken_from_argv(
    http_receiver: HttpReceiver,
) -> None:
    refused = runner.invoke(app, ["channel", "add", "s", "--type", "slack", "--url", "http://x"])
    slack_url = f"{http_receiver.url}/services/hidden-part"
    piped = runner.invoke(
        app, ["channel", "add", "s", "--type", "slack", "--secret-file", "-"], input=slack_url
    )

    assert refused.exit_code == 2
    assert piped.exit_code == 0, piped.output
    assert "hidden-part" not in piped.output
    _ok(["channel", "test", "s"])
    assert len(http_receiver.on("/services/hidden-part")) == 1


def test_without_a_terminal_or_a_secret_option_add_says_which_option_to_use() -> None:
    result = runner.invoke(
        app, ["channel", "add", "hook", "--type", "webhook", "--url", "http://127.0.0.1:9/x"]
    )

    assert result.exit_code == 2
    assert "Aborted" not in result.output
    (line,) = result.output.strip().splitlines()
    assert "--secret-file" in line
    assert "OPMAS_NOTIFY_SECRET" in line
    assert json.loads(_ok(["channel", "list", "--json"])) == []


def _on_a_terminal(args: list[str], answer: str, timeout_s: float = 60.0) -> tuple[int, str]:
    """Run `opmas ARGS` on a new pseudo-terminal, type `answer` at the secret prompt; return the
    exit status and everything the terminal showed."""
    opmas = str(Path(sys.executable).with_name("opmas"))
    pid, fd = pty.fork()
    if pid == 0:  # the child: the terminal is its stdin, stdout and controlling tty
        try:
            os.execv(opmas, [opmas, *args])  # noqa: S606 - our own entry point, fixed arguments
        finally:
            os._exit(127)
    shown, answered = b"", False
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([fd], [], [], 0.5)
            if not ready:
                continue
            try:
                chunk = os.read(fd, 4096)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            shown += chunk
            # click echoes "…secret:", then getpass turns echo off (flushing typed input) and
            # writes the last " ": answer only after it, or the answer is flushed away
            if not answered and b"secret: " in shown:
                os.write(fd, answer.encode() + b"\n")
                answered = True
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_on_a_terminal_the_secret_is_asked_hidden(
    database_url: str, http_receiver: HttpReceiver
) -> None:
    url = f"{http_receiver.url}/in"
    code, shown = _on_a_terminal(
        ["notify", "channel", "add", "hook", "--type", "webhook", "--url", url], HOOK_SECRET
    )
    assert code == 0, shown
    assert "webhook signing secret" in shown
    assert HOOK_SECRET not in shown
    _ok(["channel", "test", "hook"])
    (request,) = http_receiver.on("/in")
    assert verify(HOOK_SECRET.encode(), request.body, request.headers)


def test_webhook_secret_from_opmas_notify_secret_signs_the_test_message(
    monkeypatch: pytest.MonkeyPatch, database_url: str, http_receiver: HttpReceiver
) -> None:
    monkeypatch.setenv("OPMAS_NOTIFY_SECRET", HOOK_SECRET)
    added = _ok(["channel", "add", "hook", "--type", "webhook", "--url", f"{http_receiver.url}/in"])
    _ok(["channel", "test", "hook"])

    (request,) = http_receiver.on("/in")
    assert verify(HOOK_SECRET.encode(), request.body, request.headers)
    assert all(HOOK_SECRET not in text for text in (added, *_stored_channels(database_url)))


def test_a_rule_added_late_queues_the_recent_findings_nothing_routed(
    tmp_path: Path, database_url: str
) -> None:
    now = datetime.now(UTC)
    recent, stale = _stored_finding(now), _stored_finding(now - timedelta(days=30))
    run_db(database_url, lambda session: _add_all(session, [recent, stale]))
    secret = tmp_path / "s"
    secret.write_text("k")
    _ok(["channel", "add", "hook", "--type", "webhook", "--url", "http://127.0.0.1:9/x",
         "--secret-file", str(secret)])  # fmt: skip

    added = _ok(["rule", "add", "late", "--channel", "hook", "--min-severity", "error"])

    assert "1 recent findings queued" in added
    (row,) = json.loads(_ok(["history", "--json"]))
    assert (row["status"], row["channel"]) == ("pending", "hook")
    assert row["finding_uuid"] == str(recent.finding_uuid)


def _stored_finding(opened: datetime) -> Finding:
    return Finding(
        created_at=opened,
        finding_uuid=uuid.uuid4(),
        domain="security",
        agent_name="SecurityAgent",
        rule_name="ssh-brute-force-fast",
        device_hostname="gw",
        finding_type="SshBruteForce",
        severity="critical",
        description="12 failures from 203.0.113.7",
    )


async def _add_all(session: AsyncSession, rows: list[Finding]) -> None:
    session.add_all(rows)


def test_rule_is_saved_with_its_filters_and_refused_for_unknown_channels(tmp_path: Path) -> None:
    secret = tmp_path / "s"
    secret.write_text("k")
    _ok(["channel", "add", "hook", "--type", "webhook", "--url", "http://127.0.0.1:9/x",
         "--secret-file", str(secret)])  # fmt: skip
    _ok(
        [
            "rule", "add", "sec-critical", "--channel", "hook", "--min-severity", "error",
            "--domain", "security", "--category", "SshBruteForce", "--digest-interval", "120",
        ]
    )  # fmt: skip
    missing = runner.invoke(app, ["rule", "add", "bad", "--channel", "nope"])
    backwards = runner.invoke(
        app, ["rule", "add", "bad", "--channel", "hook", "--min-severity", "critical",
              "--max-severity", "info"]
    )  # fmt: skip

    (rule,) = json.loads(_ok(["rule", "list", "--json"]))
    assert rule == {
        "name": "sec-critical",
        "enabled": True,
        "min_severity": "error",
        "max_severity": "critical",
        "domains": ["security"],
        "categories": ["SshBruteForce"],
        "channels": ["hook"],
        "digest_interval_s": 120,
    }
    assert missing.exit_code == 1
    assert "no channel named nope" in missing.output
    assert backwards.exit_code == 1
    assert "sec-critical" in _ok(["rule", "list"])
    _ok(["rule", "remove", "sec-critical"])
    _ok(["channel", "remove", "hook"])
    assert json.loads(_ok(["rule", "list", "--json"])) == []
    assert json.loads(_ok(["channel", "list", "--json"])) == []
    assert json.loads(_ok(["history", "--json"])) == []
