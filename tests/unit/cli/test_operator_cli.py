"""Pure pieces of the operator commands: status moves, severity floors, allowlist kinds,
private-key import, JSON conversion."""

from __future__ import annotations

import importlib
import ipaddress
import uuid
from datetime import UTC, datetime, timedelta, timezone

import asyncssh
import pytest
import typer
from typer.testing import CliRunner

from opmas.cli.allowlist import entry_of
from opmas.cli.devices import load_private_key
from opmas.cli.findings import needs_move, severities_from
from opmas.cli.render import jsonable
from opmas.errors import OpmasError


@pytest.mark.parametrize(
    ("current", "target", "moves"),
    [
        ("new", "acknowledged", True),
        ("new", "resolved", True),
        ("acknowledged", "false_positive", True),
        ("acknowledged", "acknowledged", False),
        ("resolved", "resolved", False),
    ],
)
def test_allowed_status_moves(current: str, target: str, moves: bool) -> None:
    assert needs_move("finding 1", current, target) is moves


@pytest.mark.parametrize(
    ("current", "target"),
    [
        ("resolved", "acknowledged"),
        ("false_positive", "resolved"),
        ("acknowledged", "new"),
    ],
)
def test_closed_or_backward_moves_are_refused(current: str, target: str) -> None:
    with pytest.raises(OpmasError, match=f"finding 1 is {current}; it cannot become {target}"):
        needs_move("finding 1", current, target)


def test_a_severity_floor_includes_everything_above() -> None:
    assert severities_from("error") == ("error", "critical")
    assert severities_from("info")[-1] == "critical"


@pytest.mark.parametrize(
    ("value", "entry"),
    [
        ("192.0.2.1", ("ip", "192.0.2.1")),
        ("2001:db8::1", ("ip", "2001:db8::1")),
        ("192.0.2.7/24", ("network", "192.0.2.0/24")),
        ("AA-BB-CC-00-11-22", ("mac", "aa:bb:cc:00:11:22")),
        ("core-router", ("device", "core-router")),
    ],
)
def test_allowlist_kind_is_detected(value: str, entry: tuple[str, str]) -> None:
    assert entry_of(value) == entry


def test_an_allowlist_value_with_spaces_is_a_bad_parameter() -> None:
    with pytest.raises(typer.BadParameter):
        entry_of("two words")


def test_a_private_key_is_reexported_in_openssh_format_with_its_fingerprint() -> None:
    key = asyncssh.generate_private_key("ecdsa-sha2-nistp256")
    loaded = load_private_key(key.export_private_key("pkcs8-pem", passphrase="pw"), "pw")
    assert loaded.openssh.startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    assert loaded.key_type == "ecdsa-sha2-nistp256"
    assert loaded.fingerprint == key.get_fingerprint("sha256")


def test_a_wrong_passphrase_or_garbage_is_refused() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519").export_private_key("pkcs8-pem", "pw")
    with pytest.raises(OpmasError, match="not a usable private key"):
        load_private_key(key, "wrong")
    with pytest.raises(OpmasError, match="not a usable private key"):
        load_private_key(b"hello", None)


def test_jsonable_turns_times_uuids_and_addresses_into_strings() -> None:
    at = datetime(2026, 11, 22, 6, 0, tzinfo=timezone(timedelta(hours=1)))
    ident = uuid.UUID(int=1)
    data = {"at": at, "ids": [ident], "ip": ipaddress.ip_address("192.0.2.1"), "n": 1}
    assert jsonable(data) == {
        "at": "2026-11-22T05:00:00Z",
        "ids": [str(ident)],
        "ip": "192.0.2.1",
        "n": 1,
    }
    assert jsonable(datetime(2026, 1, 1, tzinfo=UTC)) == "2026-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("module", "commands"),
    [
        ("findings", ["list", "show", "ack", "resolve"]),
        ("incidents", ["list", "show", "ack", "resolve", "assign", "comment"]),
        ("actions", ["list", "show", "approve", "reject", "retry"]),
        ("decisions", ["list", "delete"]),
        ("devices", ["list", "add", "set-key", "forget-host-key", "remove"]),
        ("playbooks", ["list", "show", "enable", "disable", "mode"]),
        ("rules", ["list", "show", "enable", "disable", "export", "apply", "test"]),
        ("allowlist", ["list", "add", "remove"]),
        ("keys", ["rotate"]),
    ],
)
def test_every_operator_command_has_help(module: str, commands: list[str]) -> None:
    app = importlib.import_module(f"opmas.cli.{module}").app
    for command in commands:
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage" in result.output
