"""What one attempt of each action type does: `ssh_command`, `webhook`, `notify`.

`Runners.prepare` reads what an action needs once (device, key row, channel, body) and
returns the attempt to make; secrets are decrypted inside each attempt, kept only in memory.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opmas.crypto import SecretBox
from opmas.errors import ActionError
from opmas.executor import commands, notifications, webhook
from opmas.executor.attempts import Attempt, AttemptFailed
from opmas.executor.ssh import SshTarget, run_command
from opmas.messages import Action
from opmas.models import Device, IntendedAction, SshKey
from opmas.models.core import ENROLLED
from opmas.settings import ExecutorSettings

log = structlog.get_logger(__name__)

ACTION_TYPES = ("ssh_command", "webhook", "notify")


class Runners:
    """Builds the attempt of an action from its row; one instance per executor."""

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        box: Callable[[], SecretBox],
        settings: ExecutorSettings,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._settings = settings

    async def prepare(self, session: AsyncSession, row: IntendedAction, message: Action) -> Attempt:
        """The attempt to make for `row`.

        Raises:
            ActionError: unknown type, bad arguments, or something it needs is missing.
        """
        if row.action_type == "ssh_command":
            return await self._ssh(session, row)
        if row.action_type == "webhook":
            return await self._webhook(session, row, message)
        if row.action_type == "notify":
            return await self._notify(session, message)
        raise ActionError(f"unknown action type {row.action_type!r} (known: {ACTION_TYPES})")

    async def _ssh(self, session: AsyncSession, row: IntendedAction) -> Attempt:
        command = commands.build_command(row.action_config)
        device = await session.get(Device, row.device_id) if row.device_id is not None else None
        if device is None:
            raise ActionError("an ssh_command action needs a device")
        if device.enrolment != ENROLLED:
            # its address and name come from log lines anyone can send: never log in to it
            raise ActionError(
                f"device {device.hostname} is {device.enrolment}, not enrolled: OPMAS runs "
                f"nothing on it until an operator confirms it (opmas devices enrol)"
            )
        token = await session.scalar(
            select(SshKey.encrypted_key)
            .where(SshKey.device_id == device.id, SshKey.is_active.is_(True))
            .order_by(SshKey.id.desc())
            .limit(1)
        )
        if token is None:
            raise ActionError(f"device {device.hostname} has no active SSH key")
        target = SshTarget(
            hostname=device.hostname,
            address=str(device.ip_address).split("/")[0],
            port=device.ssh_port,
            user=device.ssh_user,
            host_key=device.ssh_host_key,
        )
        device_id = device.id

        async def pin(host_key: str) -> None:
            await self._pin(device_id, target.hostname, host_key)

        async def attempt() -> dict[str, Any]:
            result = await run_command(
                target,
                self._box().decrypt(token),
                command,
                connect_timeout_s=self._settings.connect_timeout_s,
                pin=pin,
            )
            if result["exit_status"] != 0:
                raise AttemptFailed(f"command exited with {result['exit_status']}", result)
            return result

        return attempt

    async def _pin(self, device_id: int, hostname: str, host_key: str) -> None:
        """Record the first host key seen for an enrolled device; a key pinned meanwhile is
        kept, and a device no longer enrolled gets none."""
        async with self._sessions() as session:
            pinned = await session.execute(
                update(Device)
                .where(
                    Device.id == device_id,
                    Device.ssh_host_key.is_(None),
                    Device.enrolment == ENROLLED,
                )
                .values(ssh_host_key=host_key, ssh_host_key_pinned_at=datetime.now(UTC))
            )
            await session.commit()
        if pinned.rowcount:  # type: ignore[attr-defined]  # CursorResult of an UPDATE
            log.info("host key pinned", device=hostname, key=host_key)

    async def _webhook(
        self, session: AsyncSession, row: IntendedAction, message: Action
    ) -> Attempt:
        channel = await webhook.webhook_channel(session, row.action_config)
        url: str = channel.config["url"]
        token = channel.encrypted_secret
        assert token is not None  # noqa: S101 - webhook_channel checked it
        body = webhook.webhook_body(message, await webhook.finding_of(session, row))

        async def attempt() -> dict[str, Any]:
            secret = self._box().decrypt_bytes(token)
            return await webhook.post_signed(
                url, secret, body, connect_timeout_s=self._settings.connect_timeout_s
            )

        return attempt

    async def _notify(self, session: AsyncSession, message: Action) -> Attempt:
        await notifications.channels_of(session, message.action_config)  # fail early

        async def attempt() -> dict[str, Any]:
            async with self._sessions() as own:
                channels = await notifications.channels_of(own, message.action_config)
                queued = await notifications.queue_notifications(own, message, channels)
                await own.commit()
            return {"queued": queued}

        return attempt
