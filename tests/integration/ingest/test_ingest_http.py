"""POST /api/v1/logs through httpx against the app with a real bus and database."""

from __future__ import annotations

import gzip
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from nats.js.api import DiscardPolicy
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.api.app import create_app
from opmas.bus.connect import Bus
from opmas.db.engine import session_factory
from opmas.embedded import Endpoints
from opmas.ingest import tokens
from opmas.messages import Flag, Transport
from opmas.models.auth import ApiToken
from opmas.models.core import Device
from opmas.resources import Resources
from opmas.settings import BusSettings, Settings

from .conftest import RawReader

pytestmark = pytest.mark.integration

URL = "/api/v1/logs"
Api = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def bus_settings(bus_settings: BusSettings) -> BusSettings:
    """A short PubAck timeout, so that a refused publish turns into a 503 quickly."""
    return bus_settings.model_copy(update={"publish_timeout_s": 1.0})


@pytest.fixture
def api(settings: Settings, engine: AsyncEngine, bus: Bus, database_url: str, nats_url: str) -> Api:
    """`async with api(**settings_overrides) as client`: the app on real resources."""

    @asynccontextmanager
    async def start(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        ingest = settings.ingest.model_copy(update=overrides.pop("ingest", {}))
        own = settings.model_copy(update={"ingest": ingest, **overrides})
        resources = Resources(own, Endpoints(database_url, nats_url, False, False), engine, bus)
        app = create_app(own, resources=resources)
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://opmas") as client:
                yield client

    return start


async def new_token(engine: AsyncEngine, name: str = "router1", **kwargs: Any) -> str:
    async with session_factory(engine)() as session:
        token, _ = await tokens.create_token(session, name, **kwargs)
        await session.commit()
    return token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_json_strings_are_accepted_after_the_bus_stored_them(
    api: Api, engine: AsyncEngine, reader: RawReader
) -> None:
    token = await new_token(engine)
    async with api() as client:
        response = await client.post(URL, json=["<13>first", "<13>second"], headers=bearer(token))
    assert response.status_code == 202, response.text
    answer = response.json()
    assert answer["accepted"] == 2
    await reader.poll()
    [batch] = reader.batches
    assert batch.batch_id == answer["batch_id"] == reader.msg_ids[0]
    assert [i.line for i in batch.items] == ["<13>first", "<13>second"]
    assert {(i.transport, i.source_ip) for i in batch.items} == {(Transport.HTTP, "127.0.0.1")}
    assert all(uuid.UUID(i.event_id).version == 7 for i in batch.items)


async def test_json_objects_fill_the_optional_fields(
    api: Api, engine: AsyncEngine, reader: RawReader
) -> None:
    body = [
        {"message": "link up", "hostname": "r1", "program": "netifd", "level": "info",
         "timestamp": "2025-04-18T22:02:18Z"},
        {"message": "epoch time", "timestamp": 1745013738.5},
        "plain string",
    ]  # fmt: skip
    async with api() as client:
        response = await client.post(URL, json=body, headers=bearer(await new_token(engine)))
    assert response.status_code == 202, response.text
    items = await reader.wait_for(3)
    assert (items[0].hostname, items[0].program, items[0].level, items[0].timestamp) == (
        "r1", "netifd", "info", "2025-04-18T22:02:18Z",
    )  # fmt: skip
    assert items[1].timestamp == "2025-04-18T22:02:18.500Z"
    assert (items[2].line, items[2].hostname) == ("plain string", None)


async def test_text_plain_one_line_per_line(
    api: Api, engine: AsyncEngine, reader: RawReader
) -> None:
    body = b"<13>one\r\n\n<13>two \xff\n<13>three"
    headers = bearer(await new_token(engine)) | {"Content-Type": "text/plain; charset=utf-8"}
    async with api() as client:
        response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 202, response.text
    items = await reader.wait_for(3)
    assert [i.line for i in items] == ["<13>one", "<13>two \ufffd", "<13>three"]
    assert items[1].flags == [Flag.INVALID_UTF8]


async def test_gzip_body(api: Api, engine: AsyncEngine, reader: RawReader) -> None:
    headers = bearer(await new_token(engine)) | {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with api() as client:
        response = await client.post(URL, content=gzip.compress(b'["<13>zipped"]'), headers=headers)
    assert response.status_code == 202, response.text
    assert [i.line for i in await reader.wait_for(1)] == ["<13>zipped"]


async def test_a_device_token_binds_every_line_to_its_device(
    api: Api, engine: AsyncEngine, reader: RawReader
) -> None:
    async with session_factory(engine)() as session:
        session.add(Device(hostname="OpenWRT-Router1", ip_address="192.168.1.1"))
        await session.commit()
    token = await new_token(engine, device="OpenWRT-Router1")
    async with api() as client:
        body = ["no host", {"message": "own host", "hostname": "other"}]
        assert (await client.post(URL, json=body, headers=bearer(token))).status_code == 202
    items = await reader.wait_for(2)
    assert [i.bound_hostname for i in items] == ["OpenWRT-Router1", "OpenWRT-Router1"]
    assert [i.hostname for i in items] == [None, "other"]  # the claim, kept for the parser


@pytest.mark.parametrize(
    "header", [None, "Bearer opm_not-a-real-token", "Basic dXNlcjpwdw==", "Bearer"]
)
async def test_missing_or_unknown_token_is_401(api: Api, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    async with api() as client:
        response = await client.post(URL, json=["x"], headers=headers)
    assert response.status_code == 401
    assert response.json()["error"] == "Unauthorized"


async def test_revoked_and_expired_tokens_are_401(api: Api, engine: AsyncEngine) -> None:
    revoked, expired = await new_token(engine, "revoked"), await new_token(engine, "expired")
    async with session_factory(engine)() as session:
        await tokens.revoke_token(session, "revoked")
        past = datetime.now(UTC) - timedelta(seconds=1)
        await session.execute(
            update(ApiToken).where(ApiToken.name == "expired").values(expires_at=past)
        )
        await session.commit()
    async with api() as client:
        for token in (revoked, expired):
            assert (await client.post(URL, json=["x"], headers=bearer(token))).status_code == 401


async def test_a_token_without_the_ingest_scope_is_403(api: Api, engine: AsyncEngine) -> None:
    token = await new_token(engine, "reader", scopes=("read",))
    async with api() as client:
        assert (await client.post(URL, json=["x"], headers=bearer(token))).status_code == 403


async def test_last_used_is_written_once_a_minute(api: Api, engine: AsyncEngine) -> None:
    token = await new_token(engine)
    async with api() as client:
        await client.post(URL, json=["a"], headers=bearer(token))
        async with session_factory(engine)() as session:
            first = await session.scalar(select(ApiToken.last_used_at))
        await client.post(URL, json=["b"], headers=bearer(token))
        async with session_factory(engine)() as session:
            second = await session.scalar(select(ApiToken.last_used_at))
    assert first is not None
    assert second == first


async def test_auth_off_takes_anonymous_batches(api: Api, reader: RawReader) -> None:
    async with api(ingest_auth=False) as client:
        assert (await client.post(URL, json=["lab"])).status_code == 202
    assert [i.line for i in await reader.wait_for(1)] == ["lab"]


async def test_body_over_the_limit_is_413_sent_or_unzipped(api: Api, engine: AsyncEngine) -> None:
    headers = bearer(await new_token(engine)) | {"Content-Type": "application/json"}
    big = orjson.dumps(["x" * 100] * 20)
    async with api(ingest={"http_max_body": 1000}) as client:
        sent = await client.post(URL, content=big, headers=headers)
        bomb = await client.post(
            URL, content=gzip.compress(big), headers=headers | {"Content-Encoding": "gzip"}
        )
    assert (sent.status_code, bomb.status_code) == (413, 413)
    assert "unzipped" in bomb.json()["detail"]


@pytest.mark.parametrize(
    "headers",
    [
        {"Content-Type": "application/xml"},
        {},
        {"Content-Type": "application/json", "Content-Encoding": "br"},
    ],
)
async def test_unsupported_media_is_415(
    api: Api, engine: AsyncEngine, headers: dict[str, str]
) -> None:
    async with api() as client:
        response = await client.post(
            URL, content=b'["x"]', headers=bearer(await new_token(engine)) | headers
        )
    assert response.status_code == 415, response.text


@pytest.mark.parametrize(
    ("body", "detail"),
    [
        (b'["a", "b", "c", {"hostname": "r1"}]', "body[3].message: field required"),
        (b'[{"message": 5}]', "body[0].message: must be a string"),
        (b'[{"message": "m", "program": ["x"]}]', "body[0].program: must be a string"),
        (b"[1]", "body[0]: expected a string or an object"),
        (b'{"message": "m"}', "body: expected a JSON array"),
        (b"[", "body: not valid JSON"),
        (b"[]", "body: no lines"),
    ],
)
async def test_invalid_body_is_422_naming_the_field(
    api: Api, engine: AsyncEngine, reader: RawReader, body: bytes, detail: str
) -> None:
    headers = bearer(await new_token(engine)) | {"Content-Type": "application/json"}
    async with api() as client:
        response = await client.post(URL, content=body, headers=headers)
    assert response.status_code == 422
    assert detail in response.json()["detail"]
    assert await reader.stored() == 0


async def test_a_big_batch_is_split_into_bus_messages(
    api: Api, engine: AsyncEngine, reader: RawReader
) -> None:
    async with api(ingest={"batch_size": 500}) as client:
        response = await client.post(
            URL, json=[f"line {i}" for i in range(1200)], headers=bearer(await new_token(engine))
        )
    batch_id = response.json()["batch_id"]
    items = await reader.wait_for(1200)
    assert [i.line for i in items] == [f"line {i}" for i in range(1200)]
    assert reader.msg_ids == [f"{batch_id}:{n}" for n in range(3)]
    assert [b.batch_id for b in reader.batches] == reader.msg_ids
    assert [len(b.items) for b in reader.batches] == [500, 500, 200]


async def test_an_idempotent_retry_publishes_nothing(
    api: Api, engine: AsyncEngine, reader: RawReader
) -> None:
    headers = bearer(await new_token(engine)) | {"Idempotency-Key": "batch-42"}
    async with api() as client:
        first = await client.post(URL, json=["a", "b"], headers=headers)
        again = await client.post(URL, json=["a", "b"], headers=headers)
        other = await client.post(URL, json=["c"], headers=headers)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert other.status_code == 409
    await reader.poll()
    assert len(reader.batches) == 1


async def _refuse_after(bus: Bus, max_msgs: int) -> None:
    name = bus.subjects.logs_raw_stream.name
    info = await bus.js.stream_info(name)
    discard = DiscardPolicy.NEW if max_msgs >= 0 else DiscardPolicy.OLD
    await bus.js.update_stream(info.config.evolve(max_msgs=max_msgs, discard=discard))


async def test_bus_failure_is_503_and_a_retry_republishes_the_same_ids(
    api: Api, engine: AsyncEngine, reader: RawReader, bus: Bus
) -> None:
    headers = bearer(await new_token(engine)) | {"Idempotency-Key": "retry-me"}
    lines = [f"l{i}" for i in range(6)]
    await _refuse_after(bus, 1)  # the first of three chunks is stored, then JetStream refuses
    async with api(ingest={"batch_size": 2}) as client:
        failed = await client.post(URL, json=lines, headers=headers)
        await _refuse_after(bus, -1)
        retried = await client.post(URL, json=lines, headers=headers)
    assert failed.status_code == 503, failed.text
    assert retried.status_code == 202, retried.text
    items = await reader.wait_for(6)
    assert [i.line for i in items] == lines  # the first chunk was not stored twice
    assert len({i.event_id for i in items}) == 6
    assert len({i.arrival_ts for i in items}) == 1
    assert reader.msg_ids == [f"{retried.json()['batch_id']}:{n}" for n in range(3)]


async def test_a_large_gzipped_body_of_twenty_thousand_lines(
    api: Api, engine: AsyncEngine, reader: RawReader
) -> None:
    lines = [
        f"<30>Apr 18 15:02:17 r1 hostapd: wlan0: STA {i:06d} authenticated" for i in range(20_000)
    ]
    headers = bearer(await new_token(engine)) | {
        "Content-Type": "application/json",
        "Content-Encoding": "gzip",
    }
    async with api(ingest={"http_max_items": 20_000}) as client:  # above the default cap
        response = await client.post(
            URL, content=gzip.compress(orjson.dumps(lines)), headers=headers
        )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 20_000
    items = await reader.wait_for(20_000)
    assert [i.line for i in items] == lines
    assert len(reader.batches) == 20  # batch_size lines (1,000) each
