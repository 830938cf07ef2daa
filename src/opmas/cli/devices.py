"""`opmas devices`: the routers OPMAS may act on, their SSH login and private key (stored
encrypted with the secret key, never shown) and the pinned host key; removing one.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import asyncssh
import typer
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.subjects import ActionState
from opmas.cli import render
from opmas.cli.context import console, load_settings
from opmas.cli.findings import AsJson
from opmas.crypto import SecretBox, secret_box
from opmas.errors import ActionError, OpmasError
from opmas.models import ApiToken, Device, Finding, Incident, IntendedAction, SshKey
from opmas.orchestrator.lifecycle import action_messages, publish_action, transition
from opmas.settings import Settings

app = typer.Typer(help="Routers, their SSH access and keys.", no_args_is_help=True)

Hostname = Annotated[str, typer.Argument(help="Hostname of the device.")]
OPEN_ACTION_STATES = ("pending", "approved")  # rejected when their device is removed


@dataclass(frozen=True)
class PrivateKey:
    """A private key ready to store: OpenSSH text, algorithm and SHA256 fingerprint."""

    openssh: bytes
    key_type: str
    fingerprint: str


def load_private_key(data: bytes, passphrase: str | None) -> PrivateKey:
    """Parse a private key (OpenSSH, PEM or PKCS#8, maybe encrypted) and re-export it.

    Raises:
        OpmasError: not a private key, or a wrong or missing passphrase.
    """
    try:
        key = asyncssh.import_private_key(data, passphrase)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise OpmasError(f"not a usable private key: {exc}") from exc
    return PrivateKey(
        openssh=key.export_private_key("openssh"),
        key_type=key.get_algorithm(),
        fingerprint=key.get_fingerprint("sha256"),
    )


async def get_device(session: AsyncSession, hostname: str) -> Device:
    """The device called `hostname`; OpmasError if there is none."""
    device = await session.scalar(select(Device).where(Device.hostname == hostname))
    if device is None:
        raise OpmasError(f"no device {hostname}")
    return device


@app.command("list")
def list_devices(as_json: AsJson = False) -> None:
    """List devices with their SSH login, active key fingerprint and host-key pin."""

    async def _fetch(session: AsyncSession) -> list[dict[str, Any]]:
        query = (
            select(Device, SshKey.key_fingerprint)
            .outerjoin(SshKey, (SshKey.device_id == Device.id) & SshKey.is_active)
            .order_by(Device.hostname)
        )
        return [
            {**render.row_dict(d, exclude=("config",)), "key_fingerprint": fp}
            for d, fp in (await session.execute(query)).all()
        ]

    rows = render.with_session(_fetch)
    if as_json:
        render.print_json(rows)
        return
    render.print_table(
        ("hostname", "ip", "ssh", "status", "key", "host key pinned", "last seen"),
        (
            (
                r["hostname"],
                r["ip_address"],
                f"{r['ssh_user']}, port {r['ssh_port']}",
                r["status"],
                r["key_fingerprint"],
                (r["ssh_host_key_pinned_at"] or "-")[:19].replace("T", " "),
                (r["last_seen_at"] or "-")[:19].replace("T", " "),
            )
            for r in rows
        ),
        empty="no devices",
    )


@app.command()
def add(
    hostname: Hostname,
    ip: Annotated[str, typer.Option("--ip", help="Address OPMAS connects to.")],
    ssh_user: Annotated[str, typer.Option(help="SSH login.")] = "root",
    ssh_port: Annotated[int, typer.Option(min=1, max=65535, help="SSH port.")] = 22,
) -> None:
    """Add a device, or update the address and SSH login of an existing one."""
    try:
        address = str(ipaddress.ip_address(ip))
    except ValueError as exc:
        raise typer.BadParameter(f"{ip!r} is not an IP address", param_hint="--ip") from exc

    async def _work(session: AsyncSession) -> bool:
        taken = await session.scalar(
            select(Device.hostname).where(
                func.host(Device.ip_address) == address, Device.hostname != hostname
            )
        )
        if taken:
            raise OpmasError(f"{address} already belongs to device {taken}")
        device = await session.scalar(select(Device).where(Device.hostname == hostname))
        created = device is None
        if device is None:
            device = Device(hostname=hostname)
            session.add(device)
        device.ip_address, device.ssh_user, device.ssh_port = address, ssh_user, ssh_port
        return created

    created = render.with_session(_work)
    verb = "added" if created else "updated"
    console.print(f"device {hostname} {verb}: {ssh_user}@{address}:{ssh_port}")


async def store_key(session: AsyncSession, hostname: str, key: PrivateKey, box: SecretBox) -> None:
    """Store `key` encrypted as the active key of `hostname`; older keys become inactive."""
    device = await get_device(session, hostname)
    await session.execute(
        update(SshKey).where(SshKey.device_id == device.id).values(is_active=False)
    )
    session.add(
        SshKey(
            device_id=device.id,
            key_type=key.key_type[:20],
            encrypted_key=box.encrypt(key.openssh),
            key_fingerprint=key.fingerprint,
            is_active=True,
        )
    )


def _read_key(keyfile: Path, passphrase_env: str | None) -> PrivateKey:
    passphrase = None
    if passphrase_env:
        passphrase = os.environ.get(passphrase_env)
        if passphrase is None:
            raise typer.BadParameter(f"{passphrase_env} is not set", param_hint="--passphrase-env")
    try:
        return load_private_key(keyfile.read_bytes(), passphrase)
    except OSError as exc:
        raise typer.BadParameter(f"cannot read {keyfile}: {exc.strerror}") from exc
    except OpmasError as exc:
        raise typer.BadParameter(str(exc), param_hint="KEYFILE") from exc


@app.command("set-key")
def set_key(
    hostname: Hostname,
    keyfile: Annotated[Path, typer.Argument(help="Private key file (OpenSSH or PEM).")],
    passphrase_env: Annotated[
        str | None,
        typer.Option(help="Name of the environment variable holding the key's passphrase."),
    ] = None,
) -> None:
    """Store the SSH private key OPMAS logs in with, encrypted; print its fingerprint only."""
    key = _read_key(keyfile, passphrase_env)

    async def _work(settings: Settings) -> None:
        box = secret_box(settings)

        async def _store(session: AsyncSession) -> None:
            await store_key(session, hostname, key, box)

        await render.in_session(settings, _store)

    render.run_async(_work, load_settings())
    console.print(f"key {key.fingerprint} ({key.key_type}) stored for {hostname}")


@app.command("forget-host-key")
def forget_host_key(hostname: Hostname) -> None:
    """Unpin the host key: the next connection accepts (and pins) the key the device shows."""

    async def _work(session: AsyncSession) -> bool:
        device = await get_device(session, hostname)
        was_pinned = device.ssh_host_key is not None
        device.ssh_host_key, device.ssh_host_key_pinned_at = None, None
        return was_pinned

    if render.with_session(_work):
        console.print(f"host key of {hostname} forgotten; the next connection pins anew")
    else:
        console.print(f"no host key was pinned for {hostname}")


async def removal_impact(session: AsyncSession, hostname: str) -> dict[str, int]:
    """What removing `hostname` touches: rows linked to it, by kind, and its open actions."""
    device = await get_device(session, hostname)
    counts: dict[str, int] = {}
    for label, column in (
        ("ssh_keys", SshKey.device_id),
        ("findings", Finding.device_id),
        ("incidents", Incident.device_id),
        ("actions", IntendedAction.device_id),
        ("tokens", ApiToken.device_id),
    ):
        counts[label] = int(
            await session.scalar(select(func.count()).where(column == device.id)) or 0
        )
    counts["open_actions"] = int(
        await session.scalar(
            select(func.count()).where(
                IntendedAction.device_id == device.id,
                IntendedAction.status.in_(OPEN_ACTION_STATES),
            )
        )
        or 0
    )
    return counts


def _impact_text(hostname: str, impact: dict[str, int]) -> list[str]:
    lines = [
        f"Removing {hostname} deletes it and its {impact['ssh_keys']} SSH key(s).",
        f"Kept, without the link to it: {impact['findings']} finding(s), "
        f"{impact['incidents']} incident(s), {impact['actions']} action(s).",
    ]
    if impact["open_actions"]:
        lines.append(f"Its {impact['open_actions']} pending or approved action(s) are rejected.")
    if impact["tokens"]:
        lines.append(
            f"Its {impact['tokens']} ingest token(s) stay valid: `opmas tokens revoke` them."
        )
    lines.append("If it keeps sending logs, it is registered again (without SSH access).")
    return lines


@app.command()
def remove(
    hostname: Hostname,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    by: Annotated[str | None, typer.Option("--by", help="Who (default: your user name).")] = None,
) -> None:
    """Remove a device: its SSH keys go; its findings, incidents and actions stay (history);
    its pending and approved actions are rejected."""
    impact = render.with_session(lambda session: removal_impact(session, hostname))
    for line in _impact_text(hostname, impact):
        console.print(line, highlight=False)
    if not yes:
        typer.confirm(f"Remove device {hostname}?", abort=True)
    who = by or render.current_user()

    async def _remove(session: AsyncSession) -> list[int]:
        device = await get_device(session, hostname)
        ids = list(
            await session.scalars(
                select(IntendedAction.id).where(
                    IntendedAction.device_id == device.id,
                    IntendedAction.status.in_(OPEN_ACTION_STATES),
                )
            )
        )
        rejected = []
        for action_id in ids:
            with contextlib.suppress(ActionError):  # claimed by the executor meanwhile
                await transition(
                    session, action_id, ActionState.REJECTED, by=who, note="device removed"
                )
                rejected.append(action_id)
        await session.execute(delete(Device).where(Device.id == device.id))
        await session.commit()
        return rejected

    if impact["open_actions"]:

        async def _with_bus(session: AsyncSession, bus: Bus) -> list[int]:
            rejected = await _remove(session)
            for action in await action_messages(session, rejected):
                await publish_action(bus, action)
            return rejected

        rejected = render.with_session_and_bus(_with_bus)
    else:
        rejected = render.with_session(_remove)
    suffix = f"; rejected action(s) {', '.join(map(str, rejected))}" if rejected else ""
    console.print(f"device {hostname} removed{suffix}", highlight=False)
