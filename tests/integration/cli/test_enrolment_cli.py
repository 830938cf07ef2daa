"""`opmas devices enrol|merge|pin-host-key` and the enrolment shown by `devices list`."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import asyncssh
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncSession
from typer.testing import CliRunner

from opmas.cli.devices import app
from opmas.models import Device, Finding, IntendedAction
from tests.integration.cli.conftest import run_db
from tests.peers.dropbear import Dropbear

pytestmark = pytest.mark.integration

runner = CliRunner()


def _discover(url: str, hostname: str, address: str, seen_from: str | None = None) -> None:
    async def _add(session: AsyncSession) -> None:
        session.add(
            Device(
                hostname=hostname,
                ip_address=address,
                first_seen_from=address,
                seen_from=seen_from or address,
            )
        )
        await session.commit()

    run_db(url, _add)


def _listed(*flags: str) -> list[dict[str, object]]:
    result = runner.invoke(app, ["list", "--json", *flags])
    assert result.exit_code == 0, result.output
    rows: list[dict[str, object]] = json.loads(result.output)
    return rows


def test_enrol_shows_where_the_device_was_seen_and_needs_a_yes(cli_database: str) -> None:
    _discover(cli_database, "router-A", "203.0.113.66", seen_from="192.168.1.1")
    assert [r["hostname"] for r in _listed("--discovered")] == ["router-A"]

    refused = runner.invoke(app, ["enrol", "router-A"], input="")
    assert refused.exit_code != 0
    assert "last seen from 192.168.1.1" in refused.output
    assert _listed("--enrolled") == []

    done = runner.invoke(app, ["enrol", "router-A", "--ip", "192.168.1.1"])
    assert done.exit_code == 0, done.output
    [row] = _listed("--enrolled")
    assert (row["enrolment"], row["ip_address"]) == ("enrolled", "192.168.1.1")
    assert _listed("--discovered") == []


def test_enrol_with_yes_keeps_the_registered_address(cli_database: str) -> None:
    _discover(cli_database, "ap1", "192.0.2.7")
    done = runner.invoke(app, ["enrol", "ap1", "--yes"])
    assert done.exit_code == 0, done.output
    [row] = _listed()
    assert (row["enrolment"], row["ip_address"]) == ("enrolled", "192.0.2.7")


def test_add_makes_a_discovered_device_enrolled(cli_database: str) -> None:
    _discover(cli_database, "router-A", "203.0.113.66")
    assert runner.invoke(app, ["add", "router-A", "--ip", "192.168.1.1"]).exit_code == 0
    [row] = _listed()
    assert (row["enrolment"], row["ip_address"]) == ("enrolled", "192.168.1.1")


def test_merge_moves_the_history_onto_the_enrolled_device(cli_database: str) -> None:
    assert runner.invoke(app, ["add", "gw1", "--ip", "192.168.1.1"]).exit_code == 0
    _discover(cli_database, "OpenWrt", "192.168.1.2")

    async def _link(session: AsyncSession) -> None:
        discovered = await session.scalar(select(Device).where(Device.hostname == "OpenWrt"))
        assert discovered is not None
        finding = Finding(
            finding_uuid=uuid.uuid4(),
            finding_type="HostapdCrash",
            severity="error",
            device_id=discovered.id,
        )
        session.add(finding)
        await session.flush()
        session.add(
            IntendedAction(
                action_type="notify",
                action_config={},
                device_id=discovered.id,
                finding_id=finding.id,
                finding_created_at=finding.created_at,
            )
        )
        await session.execute(
            text(
                "INSERT INTO events (event_id, message, device_id)"
                " VALUES (gen_random_uuid(), 'x', :d)"
            ),
            {"d": discovered.id},
        )
        await session.commit()

    run_db(cli_database, _link)
    refused = runner.invoke(app, ["merge", "gw1", "OpenWrt"])
    assert refused.exit_code == 1
    assert "only a discovered device" in refused.output

    merged = runner.invoke(app, ["merge", "OpenWrt", "gw1"])
    assert merged.exit_code == 0, merged.output
    assert "1 findings" in merged.output
    assert "1 events" in merged.output

    async def _owners(session: AsyncSession) -> set[object]:
        gw1 = await session.scalar(select(Device.id).where(Device.hostname == "gw1"))
        owners = {
            *(await session.scalars(select(Finding.device_id))),
            *(await session.scalars(select(IntendedAction.device_id))),
            *(await session.execute(text("SELECT device_id FROM events"))).scalars(),
        }
        return {o == gw1 for o in owners}

    assert run_db(cli_database, _owners) == {True}
    assert [r["hostname"] for r in _listed()] == ["gw1"]


@pytest.fixture
def router() -> Iterator[Dropbear]:
    key = asyncssh.generate_private_key("ssh-ed25519")
    with Dropbear.start(key.export_public_key("openssh").decode().strip()) as server:
        yield server


def test_pin_host_key_pins_only_the_fingerprint_given(cli_database: str, router: Dropbear) -> None:
    added = runner.invoke(app, ["add", "gw", "--ip", router.host, "--ssh-port", str(router.port)])
    assert added.exit_code == 0, added.output
    real = asyncssh.import_public_key(router.host_public_key).get_fingerprint("sha256")

    wrong = runner.invoke(app, ["pin-host-key", "gw", "--fingerprint", "SHA256:not-it"])
    assert wrong.exit_code == 1
    assert real in wrong.output
    assert _listed()[0]["ssh_host_key"] is None

    right = runner.invoke(app, ["pin-host-key", "gw", "--fingerprint", real])
    assert right.exit_code == 0, right.output
    assert _listed()[0]["ssh_host_key"] == router.host_public_key


def test_pin_host_key_refuses_a_discovered_device(cli_database: str) -> None:
    _discover(cli_database, "stranger", "192.0.2.99")
    refused = runner.invoke(app, ["pin-host-key", "stranger", "--yes"])
    assert refused.exit_code == 1
    assert "enrol it first" in refused.output
