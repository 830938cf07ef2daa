"""Fixtures of the executor tests: a dropbear "router", a device row holding its encrypted
client key, approved actions written straight to the database, a running Executor, and the
CLI run in a thread (it has its own event loop) against the test's database and bus."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import asyncssh
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession
from typer.testing import CliRunner, Result

from opmas.bus.connect import Bus
from opmas.cli.main import app
from opmas.crypto import SecretBox
from opmas.executor.service import Executor
from opmas.models import Device, Finding, IntendedAction, SshKey
from opmas.settings import BusSettings, ExecutorSettings, Settings
from tests.peers.dropbear import Dropbear


@dataclass(frozen=True)
class ClientKey:
    private: str  # OpenSSH private key text: must never leave the executor's memory
    public: str


@pytest.fixture
def client_key() -> ClientKey:
    key = asyncssh.generate_private_key("ssh-ed25519")
    return ClientKey(
        private=key.export_private_key("openssh").decode(),
        public=key.export_public_key("openssh").decode().strip(),
    )


@pytest.fixture
def router(client_key: ClientKey) -> Iterator[Dropbear]:
    with Dropbear.start(client_key.public) as server:
        yield server


@pytest.fixture
def exec_settings(settings: Settings) -> Settings:
    """Quick retries and polls."""
    return settings.model_copy(
        update={
            "executor": ExecutorSettings(
                poll_s=0.2, concurrency=4, connect_timeout_s=5.0, retry_backoff_s=0.05
            )
        }
    )


@pytest.fixture
def box(exec_settings: Settings) -> SecretBox:
    assert exec_settings.secret_key is not None
    return SecretBox(exec_settings.secret_key.get_secret_value())


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    async with AsyncSession(engine, expire_on_commit=False) as db:
        yield db


@pytest.fixture
async def device(
    session: AsyncSession, router: Dropbear, client_key: ClientKey, box: SecretBox
) -> Device:
    """The router's row, its host key not pinned yet, with its active encrypted client key."""
    row = Device(
        hostname="r1",
        ip_address=router.host,
        ssh_port=router.port,
        ssh_user=router.user,
        enrolment="enrolled",
    )
    session.add(row)
    await session.flush()
    session.add(
        SshKey(
            device_id=row.id,
            key_type="ed25519",
            encrypted_key=box.encrypt(client_key.private),
            key_fingerprint="SHA256:test",
        )
    )
    await session.commit()
    return row


@pytest.fixture
async def executor(
    engine: AsyncEngine, bus: Bus, exec_settings: Settings
) -> AsyncIterator[Executor]:
    async with Executor(engine, bus, exec_settings) as running:
        yield running


async def add_action(
    session: AsyncSession,
    action_type: str,
    config: dict[str, Any],
    *,
    device: Device | None = None,
    status: str = "approved",
    **columns: Any,
) -> IntendedAction:
    """An action row in `status` (approved by default), committed."""
    row = IntendedAction(
        action_type=action_type,
        action_config=config,
        device_id=device.id if device is not None else None,
        status=status,
        **columns,
    )
    session.add(row)
    await session.commit()
    return row


async def add_finding(session: AsyncSession) -> Finding:
    row = Finding(
        finding_uuid=uuid.uuid4(),
        finding_type="HighAuthFailureRate",
        severity="warning",
        device_hostname="r1",
        details={"count": 12},
    )
    session.add(row)
    await session.commit()
    return row


async def reload(session: AsyncSession, row: IntendedAction) -> IntendedAction:
    await session.refresh(row)
    return row


@pytest.fixture
def cli(
    cli_database: str, nats_url: str, bus_settings: BusSettings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI pointed at the test's database and bus namespace (streams made by `bus`)."""
    monkeypatch.setenv("OPMAS_NATS_URL", nats_url)
    monkeypatch.setenv("OPMAS_BUS__NAMESPACE", bus_settings.namespace)


async def opmas(*args: str) -> Result:
    runner = CliRunner()
    return await asyncio.to_thread(lambda: runner.invoke(app, list(args)))


async def opmas_json(*args: str) -> Any:
    result = await opmas(*args, "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


@contextlib.asynccontextmanager
async def running(executor: Executor) -> AsyncIterator[None]:
    """`executor` dispatching in the background until the block ends."""
    stop = asyncio.Event()
    task = asyncio.create_task(executor.run(stop))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
