"""`opmas devices`: the routers OPMAS may act on, their SSH login and private key (stored
encrypted with the secret key, never shown) and the pinned host key; removing one.

A router seen only in logs is `discovered`; the operator enrols it (`add`, `enrol`), merges it
into an enrolled one or removes it. Only an enrolled router gets SSH actions.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import asyncssh
import typer
from sqlalchemy import delete, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.bus.connect import Bus
from opmas.bus.subjects import ActionState
from opmas.cli import enrolment, render
from opmas.cli.context import console, load_settings
from opmas.cli.findings import AsJson
from opmas.crypto import SecretBox, secret_box
from opmas.errors import ActionError, OpmasError
from opmas.models import ApiToken, Device, Finding, Incident, IntendedAction, SshKey
from opmas.models.core import DISCOVERED, ENROLLED
from opmas.orchestrator.lifecycle import action_messages, publish_action, transition
from opmas.settings import Settings

app = typer.Typer(help="Routers, their SSH access and keys.", no_args_is_help=True)

Hostname = Annotated[str, typer.Argument(help="Hostname of the device.")]
Yes = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
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
def list_devices(
    as_json: AsJson = False,
    discovered: Annotated[
        bool, typer.Option("--discovered", help="Only devices seen in logs, not enrolled.")
    ] = False,
    enrolled: Annotated[
        bool, typer.Option("--enrolled", help="Only devices enrolled by an operator.")
    ] = False,
) -> None:
    """List devices with their enrolment, the address they were seen from, SSH login, active
    key fingerprint and host-key pin."""
    wanted = [e for e, on in ((DISCOVERED, discovered), (ENROLLED, enrolled)) if on]

    async def _fetch(session: AsyncSession) -> list[dict[str, Any]]:
        query = (
            select(Device, SshKey.key_fingerprint)
            .outerjoin(SshKey, (SshKey.device_id == Device.id) & SshKey.is_active)
            .order_by(Device.hostname)
        )
        if wanted:
            query = query.where(Device.enrolment.in_(wanted))
        return [
            {**render.row_dict(d, exclude=("config",)), "key_fingerprint": fp}
            for d, fp in (await session.execute(query)).all()
        ]

    rows = render.with_session(_fetch)
    if as_json:
        render.print_json(rows)
        return
    render.print_table(
        (
            "hostname",
            "enrolment",
            "ip",
            "seen from",
            "ssh",
            "status",
            "key",
            "host key pinned",
            "last seen",
        ),
        (
            (
                r["hostname"],
                r["enrolment"],
                r["ip_address"],
                r["seen_from"] or "-",
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
    """Add a device, or update the address and SSH login of an existing one; either way it is
    enrolled: OPMAS may act on it over SSH at this address."""
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
        elif device.enrolment != ENROLLED or enrolment.host_of(device.ip_address) != address:
            # a key pinned while it was only discovered, or at another address, vouches for nothing
            device.ssh_host_key, device.ssh_host_key_pinned_at = None, None
        device.ip_address, device.ssh_user, device.ssh_port = address, ssh_user, ssh_port
        device.enrolment = ENROLLED
        return created

    created = render.with_session(_work)
    verb = "added" if created else "updated"
    console.print(f"device {hostname} {verb}: {ssh_user}@{address}:{ssh_port}")


async def store_key(session: AsyncSession, hostname: str, key: PrivateKey, box: SecretBox) -> str:
    """Store `key` encrypted as the active key of `hostname`; older keys become inactive.
    Returns the device's enrolment."""
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
    return device.enrolment


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

    async def _work(settings: Settings) -> str:
        box = secret_box(settings)

        async def _store(session: AsyncSession) -> str:
            return await store_key(session, hostname, key, box)

        return await render.in_session(settings, _store)

    state = render.run_async(_work, load_settings())
    console.print(f"key {key.fingerprint} ({key.key_type}) stored for {hostname}")
    if state != ENROLLED:
        console.print(
            f"{hostname} is {state} (seen in logs only): OPMAS will not log in to it until you "
            f"`opmas devices enrol {hostname} --ip ADDRESS`",
            highlight=False,
        )


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


def _confirm_or_fail(question: str, yes: bool, hint: str) -> None:
    """Go on with --yes, or after a yes on a terminal; without a terminal exit 2 with `hint`."""
    if yes:
        return
    if not sys.stdin.isatty():
        render.fail(f"not confirmed: {hint}", code=2)
    typer.confirm(question, abort=True)


@app.command()
def enrol(
    hostname: Hostname,
    ip: Annotated[
        str | None,
        typer.Option("--ip", help="Address OPMAS connects to (default: the one it was seen at)."),
    ] = None,
    yes: Yes = False,
) -> None:
    """Confirm a discovered device: OPMAS may then act on it over SSH at its address.

    Without --ip it shows where the device was seen from and asks (or takes --yes); the
    address is then the one it was first registered with."""

    async def _show(session: AsyncSession) -> tuple[str, str | None, str | None, str]:
        device = await enrolment.device_named(session, hostname)
        return (
            str(enrolment.host_of(device.ip_address)),
            enrolment.host_of(device.first_seen_from),
            enrolment.host_of(device.seen_from),
            device.enrolment,
        )

    if ip is not None:
        address = enrolment.address_of(ip) if _is_ip(ip) else _bad_ip(ip)
    else:
        address, first, last, state = render.with_session(_show)
        console.print(
            f"{hostname} is {state}: address {address}, first seen from {first or '-'}, "
            f"last seen from {last or '-'}",
            highlight=False,
        )
        if last is not None and last != address:
            console.print(
                f"warning: it was last seen from {last}, not {address}; check which is the "
                "router's before you enrol it (--ip)",
                highlight=False,
            )
        _confirm_or_fail(
            f"Enrol {hostname} at {address}?",
            yes,
            f"pass --yes or --ip ADDRESS to enrol {hostname}",
        )

    changed = render.with_session(lambda session: enrolment.enrol(session, hostname, address))
    if changed:
        console.print(f"device {hostname} enrolled at {address}", highlight=False)
    else:
        console.print(f"device {hostname} was already enrolled at {address}", highlight=False)


def _is_ip(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def _bad_ip(value: str) -> str:
    raise typer.BadParameter(f"{value!r} is not an IP address", param_hint="--ip")


@app.command()
def merge(
    discovered: Annotated[str, typer.Argument(help="The discovered device, deleted after.")],
    into: Annotated[str, typer.Argument(help="The enrolled device that takes its history.")],
) -> None:
    """Fold a discovered device into an enrolled one: its events, findings, incidents,
    actions and ingest tokens move over, then the discovered row is deleted."""
    moved = render.with_session(lambda session: enrolment.merge(session, discovered, into))
    counts = ", ".join(f"{n} {label}" for label, n in moved.items())
    console.print(f"device {discovered} merged into {into}: moved {counts}", highlight=False)


@app.command("pin-host-key")
def pin_host_key(
    hostname: Hostname,
    fingerprint: Annotated[
        str | None,
        typer.Option(help="Pin only if the router presents this key (SHA256:...)."),
    ] = None,
    yes: Yes = False,
) -> None:
    """Connect to an enrolled device, print its SSH host key fingerprint and pin that key when
    it matches --fingerprint (or after a yes on a terminal, or with --yes)."""
    settings = load_settings()

    async def _target(session: AsyncSession) -> tuple[str, int, str, str | None]:
        device = await enrolment.device_named(session, hostname)
        if device.enrolment != ENROLLED:
            raise OpmasError(f"{hostname} is {device.enrolment}: enrol it first")
        return (
            str(enrolment.host_of(device.ip_address)),
            device.ssh_port,
            device.enrolment,
            device.ssh_host_key,
        )

    address, port, _, pinned = render.with_session(_target)

    async def _fetch(_: Settings) -> enrolment.HostKey:
        return await enrolment.fetch_host_key(address, port, settings.executor.connect_timeout_s)

    key = render.run_async(_fetch, settings)
    console.print(f"{hostname} ({address} port {port}) presents {key.fingerprint}", highlight=False)
    if pinned == key.openssh:
        console.print("this key is already pinned")
        return
    if pinned is not None:
        console.print("warning: another host key is pinned now; pinning replaces it")
    if fingerprint is not None:
        if fingerprint.strip() != key.fingerprint:
            render.fail(f"fingerprint mismatch: expected {fingerprint}, got {key.fingerprint}")
    else:
        _confirm_or_fail(
            f"Pin {key.fingerprint} for {hostname}?",
            yes,
            "pass --fingerprint SHA256:... (checked against the key) or --yes",
        )
    render.with_session(lambda session: enrolment.pin(session, hostname, key))
    console.print(f"host key {key.fingerprint} pinned for {hostname}", highlight=False)
