"""What `opmas devices enrol|merge|pin-host-key` do: an operator confirms a router seen in logs
(`discovered`) as one OPMAS may act on (`enrolled`), folds a discovered duplicate into an
enrolled router, or pins a router's SSH host key explicitly.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncssh
from sqlalchemy import delete, func, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.errors import OpmasError
from opmas.executor.ssh import FIRST_USE_HOST_KEY_ALGS, public_key_text
from opmas.models import ApiToken, Device, Finding, Incident, IntendedAction
from opmas.models.core import DISCOVERED, ENROLLED

# Rows pointing at a device, moved by a merge; `events` has no foreign key (COPY speed) but
# its device_id is moved too, so the router's history stays in one place.
MOVED = (
    ("findings", Finding.device_id),
    ("incidents", Incident.device_id),
    ("actions", IntendedAction.device_id),
    ("tokens", ApiToken.device_id),
)


async def device_named(session: AsyncSession, hostname: str) -> Device:
    """The device called `hostname`; OpmasError if there is none."""
    device = await session.scalar(select(Device).where(Device.hostname == hostname))
    if device is None:
        raise OpmasError(f"no device {hostname}")
    return device


def address_of(value: str) -> str:
    """`value` as a normalised IP address; OpmasError if it is not one."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError as exc:
        raise OpmasError(f"{value!r} is not an IP address") from exc


def host_of(inet: str | None) -> str | None:
    """An inet column's text without a /32 or /128 suffix."""
    return str(inet).split("/")[0] if inet is not None else None


async def ensure_address_free(session: AsyncSession, address: str, hostname: str) -> None:
    """OpmasError naming the other device that holds `address`, if one does."""
    holder = await session.scalar(
        select(Device).where(func.host(Device.ip_address) == address, Device.hostname != hostname)
    )
    if holder is None:
        return
    hint = (
        f"`opmas devices merge {holder.hostname} {hostname}` or `opmas devices remove "
        f"{holder.hostname}` first"
        if holder.enrolment == DISCOVERED
        else "give each router its own address"
    )
    raise OpmasError(
        f"{address} already belongs to {holder.enrolment} device {holder.hostname}: {hint}"
    )


async def enrol(session: AsyncSession, hostname: str, address: str) -> bool:
    """Mark `hostname` enrolled with the operator-given `address` (what SSH connects to);
    False if it already was enrolled at that address. A host key pinned while it was only
    discovered is dropped: nothing vouched for it (flush only)."""
    device = await device_named(session, hostname)
    await ensure_address_free(session, address, hostname)
    if device.enrolment == ENROLLED and host_of(device.ip_address) == address:
        return False
    if device.enrolment != ENROLLED or host_of(device.ip_address) != address:
        device.ssh_host_key, device.ssh_host_key_pinned_at = None, None
    device.ip_address, device.enrolment = address, ENROLLED
    await session.flush()
    return True


async def merge(session: AsyncSession, discovered: str, into: str) -> dict[str, int]:
    """Move everything linked to the discovered device onto the enrolled one, then delete the
    discovered row (its SSH keys go with it). Returns the rows moved, by kind (flush only)."""
    source = await device_named(session, discovered)
    target = await device_named(session, into)
    if source.id == target.id:
        raise OpmasError("a device cannot be merged into itself")
    if source.enrolment != DISCOVERED:
        raise OpmasError(f"{discovered} is {source.enrolment}: only a discovered device is merged")
    if target.enrolment != ENROLLED:
        raise OpmasError(f"{into} is {target.enrolment}: merge into an enrolled device")
    moved: dict[str, int] = {}
    for label, column in MOVED:
        result = await session.execute(
            update(column.class_)
            .where(column == source.id)
            .values({column.key: target.id})
            .execution_options(synchronize_session=False)
        )
        moved[label] = int(result.rowcount)  # type: ignore[attr-defined]  # UPDATE result
    events = await session.execute(
        text("UPDATE events SET device_id = :target WHERE device_id = :source"),
        {"target": target.id, "source": source.id},
    )
    moved["events"] = int(events.rowcount)  # type: ignore[attr-defined]  # UPDATE result
    await session.execute(delete(Device).where(Device.id == source.id))
    await session.flush()
    return moved


@dataclass(frozen=True)
class HostKey:
    """What a router presented: its OpenSSH public key line and SHA256 fingerprint."""

    openssh: str
    fingerprint: str


async def fetch_host_key(address: str, port: int, timeout_s: float) -> HostKey:
    """Connect to `address:port` and return the host key it presents; no login is tried.

    Raises:
        OpmasError: it could not be reached or presented no key.
    """
    try:
        key = await asyncssh.get_server_host_key(
            address,
            port,
            server_host_key_algs=list(FIRST_USE_HOST_KEY_ALGS),
            config=None,
            options=asyncssh.SSHClientConnectionOptions(connect_timeout=timeout_s),
        )
    except (OSError, asyncssh.Error, TimeoutError) as exc:
        raise OpmasError(f"cannot reach {address} port {port}: {exc}") from exc
    if key is None:
        raise OpmasError(f"{address} port {port} presented no host key")
    return HostKey(public_key_text(key), key.get_fingerprint("sha256"))


async def pin(session: AsyncSession, hostname: str, key: HostKey) -> None:
    """Pin `key` as the host key of the enrolled device `hostname` (flush only)."""
    device = await device_named(session, hostname)
    if device.enrolment != ENROLLED:
        raise OpmasError(f"{hostname} is {device.enrolment}: enrol it first (opmas devices enrol)")
    device.ssh_host_key, device.ssh_host_key_pinned_at = key.openssh, datetime.now(UTC)
    await session.flush()
