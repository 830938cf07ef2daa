"""Source trust end to end on real PostgreSQL and NATS: syslog or HTTP in, parser (with the
enrolled devices directory), event store; the stored row says how far its origin is verified."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import socket
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from opmas.bus.connect import Bus
from opmas.cli.events import fetch_events
from opmas.enrolled import EnrolledDevices
from opmas.messages import Flag
from opmas.parser.engine import ParserEngine
from opmas.parser.service import ParserService
from opmas.settings import Settings
from opmas.store.service import EventStore
from tests.integration.store.test_store import event

from . import test_ingest_http
from .conftest import Pki, StartIngest
from .test_ingest_connections import s_client
from .test_ingest_http import URL, Api, bearer, new_token

pytestmark = pytest.mark.integration
http_api = test_ingest_http.api  # the app on this test's resources, as fixture `http_api`


async def add_device(engine: AsyncEngine, hostname: str, ip: str, enrolment: str) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO devices (hostname, ip_address, enrolment) VALUES (:h, :ip, :e)"),
            {"h": hostname, "ip": ip, "e": enrolment},
        )


@contextlib.asynccontextmanager
async def pipeline(engine: AsyncEngine, bus: Bus, database_url: str) -> AsyncIterator[None]:
    """The parser (its directory reloaded every 0.1 s) and the store, consuming the bus."""
    stop = asyncio.Event()
    parser = ParserService(
        bus, ParserEngine.from_dirs(), enrolled=EnrolledDevices(engine, refresh_s=0.1)
    )
    async with parser, EventStore(database_url, bus) as store:
        tasks = [asyncio.create_task(parser.run(stop)), asyncio.create_task(store.run(stop))]
        try:
            yield
        finally:
            stop.set()
            await asyncio.wait_for(asyncio.gather(*tasks), 30)


async def stored(engine: AsyncEngine, count: int, timeout_s: float = 20.0) -> list[Any]:
    """The events rows (message order) once there are `count`."""
    deadline = time.monotonic() + timeout_s
    while True:
        async with engine.connect() as conn:
            rows = (
                await conn.execute(
                    text(
                        "SELECT message, hostname, trust, flags, structured_fields"
                        " FROM events ORDER BY message"
                    )
                )
            ).all()
        if len(rows) >= count:
            return list(rows)
        if time.monotonic() > deadline:
            raise AssertionError(f"{len(rows)} of {count} events stored in {timeout_s} s")
        await asyncio.sleep(0.05)


def send_udp_from(source: str, port: int, line: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        sock.sendto(line.encode(), ("127.0.0.1", port))


async def test_a_device_token_line_naming_another_router_is_stored_as_the_token_device(
    http_api: Api, engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    await add_device(engine, "router-A", "192.0.2.1", "enrolled")
    await add_device(engine, "router-B", "192.0.2.2", "enrolled")
    token = await new_token(engine, device="router-A")
    body = [
        "<11>Dec  7 10:00:00 router-B kernel: a claim for router-B",
        "<11>Dec  7 10:00:01 router-A kernel: its own name",
        {"message": "a JSON claim", "hostname": "router-B"},
    ]
    async with pipeline(engine, bus, database_url), http_api() as client:
        assert (await client.post(URL, json=body, headers=bearer(token))).status_code == 202
        rows = await stored(engine, 3)
    by_message = {row.message: row for row in rows}
    claim, own, json_claim = (
        by_message["a claim for router-B"],
        by_message["its own name"],
        by_message["a JSON claim"],
    )
    assert {row.hostname for row in rows} == {"router-A"}
    assert {row.trust for row in rows} == {"verified"}
    assert Flag.HOSTNAME_MISMATCH in claim.flags
    assert claim.structured_fields["claimed_hostname"] == "router-B"
    assert Flag.HOSTNAME_MISMATCH in json_claim.flags
    assert Flag.HOSTNAME_MISMATCH not in own.flags
    assert "claimed_hostname" not in own.structured_fields
    async with engine.connect() as conn:
        linked = await conn.scalar(
            text(
                "SELECT count(*) FROM events e JOIN devices d ON d.id = e.device_id"
                " WHERE d.hostname = 'router-B'"
            )
        )
    assert linked == 0


async def test_udp_lines_are_trusted_by_address_only_from_the_enrolled_registered_ip(
    start_ingest: StartIngest, engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    await add_device(engine, "router-A", "127.0.0.1", "enrolled")
    await add_device(engine, "router-D", "127.0.0.3", "discovered")
    async with pipeline(engine, bus, database_url), start_ingest() as service:
        port = service.ports["udp"]
        send_udp_from("127.0.0.1", port, "<14>Dec  7 10:00:00 router-A kernel: 1 from its IP")
        send_udp_from("127.0.0.2", port, "<14>Dec  7 10:00:00 router-A kernel: 2 from elsewhere")
        send_udp_from("127.0.0.3", port, "<14>Dec  7 10:00:00 router-D kernel: 3 discovered")
        send_udp_from("127.0.0.1", port, "<14>Dec  7 10:00:00 kernel: 4 names no host")
        rows = await stored(engine, 4)
    assert [(row.message, row.trust) for row in rows] == [
        ("1 from its IP", "address"),
        ("2 from elsewhere", "untrusted"),
        ("3 discovered", "untrusted"),
        ("4 names no host", "untrusted"),
    ]


async def test_an_enrolment_is_seen_by_the_parser_within_its_refresh_interval(
    start_ingest: StartIngest, engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    await add_device(engine, "router-A", "127.0.0.1", "discovered")
    async with pipeline(engine, bus, database_url), start_ingest() as service:
        port = service.ports["udp"]
        send_udp_from("127.0.0.1", port, "<14>Dec  7 10:00:00 router-A kernel: 1 before")
        await stored(engine, 1)
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE devices SET enrolment = 'enrolled'"))
        await asyncio.sleep(0.5)  # five reloads of the directory
        send_udp_from("127.0.0.1", port, "<14>Dec  7 10:00:00 router-A kernel: 2 after")
        rows = await stored(engine, 2)
    assert [row.trust for row in rows] == ["untrusted", "address"]


async def test_a_mapped_client_certificate_forces_its_device_and_is_verified(
    start_ingest: StartIngest,
    engine: AsyncEngine,
    bus: Bus,
    database_url: str,
    pki: Pki,
) -> None:
    # the client certificate's CN is `router1`: enrolled under another IP than loopback
    await add_device(engine, "router1", "192.0.2.10", "enrolled")
    mtls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_ca": pki.ca}
    lines = b"<14>Dec  7 10:00:00 router-B kernel: cert claim\n"
    async with (
        EnrolledDevices(engine, refresh_s=0.1) as enrolled,
        pipeline(engine, bus, database_url),
        start_ingest(enrolled=enrolled, **mtls) as service,
    ):
        code, out = await s_client(
            service.ports["tls"], pki, lines, pki.client_cert, pki.client_key
        )
        [row] = await stored(engine, 1)
    assert code == 0, out
    assert (row.hostname, row.trust) == ("router1", "verified")
    assert Flag.HOSTNAME_MISMATCH in row.flags
    assert row.structured_fields["claimed_hostname"] == "router-B"


async def test_a_certificate_of_no_enrolled_device_is_graded_like_plain_tcp(
    start_ingest: StartIngest,
    engine: AsyncEngine,
    bus: Bus,
    database_url: str,
    pki: Pki,
) -> None:
    await add_device(engine, "router1", "192.0.2.10", "discovered")
    mtls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_ca": pki.ca}
    async with (
        EnrolledDevices(engine, refresh_s=0.1) as enrolled,
        pipeline(engine, bus, database_url),
        start_ingest(enrolled=enrolled, **mtls) as service,
    ):
        line = b"<14>Dec  7 10:00:00 router-B kernel: unmapped\n"
        code, out = await s_client(service.ports["tls"], pki, line, pki.client_cert, pki.client_key)
        [row] = await stored(engine, 1)
    assert code == 0, out
    assert (row.hostname, row.trust, row.flags) == ("router-B", "untrusted", [])


async def test_a_certificate_listed_by_fingerprint_speaks_for_its_device(
    start_ingest: StartIngest,
    engine: AsyncEngine,
    bus: Bus,
    database_url: str,
    pki: Pki,
) -> None:
    der = ssl.PEM_cert_to_DER_cert(pki.client_cert.read_text())
    digest = hashlib.sha256(der).hexdigest()
    colons = ":".join(digest[i : i + 2] for i in range(0, 64, 2)).upper()
    peers = Settings(syslog_tls_peers={colons: "router-Z"}).syslog_tls_peers
    mtls = {"tls_cert": pki.server_cert, "tls_key": pki.server_key, "tls_ca": pki.ca}
    async with pipeline(engine, bus, database_url), start_ingest(tls_peers=peers, **mtls) as svc:
        line = b"<14>Dec  7 10:00:00 router1 kernel: pinned\n"
        code, out = await s_client(svc.ports["tls"], pki, line, pki.client_cert, pki.client_key)
        [row] = await stored(engine, 1)
    assert code == 0, out
    assert (row.hostname, row.trust) == ("router-Z", "verified")
    assert row.structured_fields["claimed_hostname"] == "router1"


async def test_events_list_shows_the_trust_and_an_event_from_before_trust_as_untrusted(
    engine: AsyncEngine, bus: Bus, database_url: str
) -> None:
    old = msgspec.structs.replace(event("stored before trust existed"), trust=None)
    verified = msgspec.structs.replace(event("over a bound token"), trust="verified")
    async with EventStore(database_url, bus) as store:
        await store.store([old, verified])
    listed = await fetch_events(database_url, domain=None, device=None, since=None, limit=10)
    assert sorted((e["message"], e["trust"]) for e in listed) == [
        ("over a bound token", "verified"),
        ("stored before trust existed", "untrusted"),
    ]
    async with engine.connect() as conn:
        nulls = await conn.scalar(text("SELECT count(*) FROM events WHERE trust IS NULL"))
    assert nulls == 1  # stored as it came: NULL means before trust, read as untrusted
