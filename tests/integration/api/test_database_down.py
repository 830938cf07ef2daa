"""The API while PostgreSQL is down: 503 with Retry-After, never a 500."""

from __future__ import annotations

import socket

import httpx
import pytest
from pydantic import SecretStr

from opmas.api.server import ApiServer
from opmas.resources import open_resources
from opmas.settings import Settings

pytestmark = pytest.mark.integration


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])  # nothing listens once the socket is closed


async def test_a_token_checked_while_the_database_is_down_gets_503_and_retry_after(
    settings: Settings,
) -> None:
    down = f"postgresql://opmas:x@127.0.0.1:{_closed_port()}/opmas"
    own = settings.model_copy(
        update={
            "http_host": "127.0.0.1",
            "http_port": 0,
            "ingest_auth": True,
            "database_url": SecretStr(down),
        }
    )
    async with (
        open_resources(own, name="opmas-test-api") as resources,
        ApiServer(resources) as server,
    ):
        base = server.describe()
        assert base is not None
        async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
            answer = await client.post(
                "/api/v1/logs",
                content=b"<38>Nov 21 10:00:01 r1 dropbear[1]: Bad password attempt",
                headers={
                    "Authorization": "Bearer opm_not-a-stored-token",
                    "Content-Type": "text/plain",
                },
            )
    assert answer.status_code == 503, answer.text
    assert answer.headers["Retry-After"] == "1"
    assert answer.json()["error"] == "ServiceUnavailable"
    assert answer.json()["detail"].endswith("unavailable: retry")
