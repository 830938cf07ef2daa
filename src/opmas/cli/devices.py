"""`opmas devices`: the routers OPMAS may act on, their SSH login and private key (stored
encrypted with the secret key, never shown) and the pinned host key.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import asyncssh
import typer
from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.cli import render
from opmas.cli.context import console, load_settings
from opmas.cli.findings import AsJson
from opmas.crypto import SecretBox, secret_box
from opmas.errors import OpmasError
from opmas.models import Device, SshKey
from opmas.settings import Settings

app = typer.Typer(help="Routers, their SSH access and keys.", no_args_is_help=True)

Hostname = Annotated[str, typer.Argument(help="Hostname of the device.")]


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
