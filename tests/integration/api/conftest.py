"""The API component served over real HTTP on 127.0.0.1, on this test's database and bus."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest

from opmas.api.server import ApiServer
from opmas.bus.connect import Bus
from opmas.resources import open_resources
from opmas.settings import Settings

ServeApi = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def serve_api(settings: Settings, bus: Bus) -> ServeApi:
    """`async with serve_api(children=N) as client`: the API on a free port of 127.0.0.1 (its
    own connections to this test's database and bus namespace, as `opmas run api` opens)."""
    own = settings.model_copy(update={"http_host": "127.0.0.1", "http_port": 0})

    @asynccontextmanager
    async def serve(children: int = 0) -> AsyncIterator[httpx.AsyncClient]:
        async with (
            open_resources(own, name="opmas-test-api") as resources,
            ApiServer(resources, children=children) as server,
        ):
            base = server.describe()
            assert base is not None
            async with httpx.AsyncClient(base_url=base, trust_env=False) as client:
                yield client

    return serve
