"""`opmas allowlist` (kind detected from the value) and `opmas playbooks`."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from opmas.cli import allowlist, playbooks
from tests.integration.cli.conftest import Seeded

runner = CliRunner()


def test_allowlist_add_detects_the_kind_and_remove_deletes(cli_database: str) -> None:
    for value in ("192.0.2.10", "10.1.2.3/8", "AA-BB-CC-DD-EE-FF", "gw"):
        result = runner.invoke(allowlist.app, ["add", value, "--reason", "core"])
        assert result.exit_code == 0, result.output
    listed = runner.invoke(allowlist.app, ["list", "--json"])
    entries = {(e["kind"], e["value"]) for e in json.loads(listed.output)}
    assert entries == {
        ("ip", "192.0.2.10"),
        ("network", "10.0.0.0/8"),
        ("mac", "aa:bb:cc:dd:ee:ff"),
        ("device", "gw"),
    }
    removed = runner.invoke(allowlist.app, ["remove", "aa:bb:cc:dd:ee:ff"])
    assert removed.exit_code == 0, removed.output
    assert len(json.loads(runner.invoke(allowlist.app, ["list", "--json"]).output)) == 3
    missing = runner.invoke(allowlist.app, ["remove", "192.0.2.99"])
    assert missing.exit_code == 1
    assert "not on the allowlist" in missing.output


def test_playbooks_list_show_disable_enable(seeded: Seeded) -> None:
    listed = json.loads(runner.invoke(playbooks.app, ["list", "--json"]).output)
    assert [(p["name"], p["is_active"], p["step_count"]) for p in listed] == [
        (seeded.playbook, True, 1)
    ]
    shown = runner.invoke(playbooks.app, ["show", seeded.playbook])
    assert shown.exit_code == 0, shown.output
    assert "nft_block_ip" in shown.output
    assert "SshBruteForce" in shown.output
    assert runner.invoke(playbooks.app, ["disable", seeded.playbook]).exit_code == 0
    data = json.loads(runner.invoke(playbooks.app, ["show", seeded.playbook, "--json"]).output)
    assert data["is_active"] is False
    assert runner.invoke(playbooks.app, ["enable", seeded.playbook]).exit_code == 0
    assert runner.invoke(playbooks.app, ["enable", "nope"]).exit_code == 1
