"""Connect to NATS: `connect_bus()` yields a `Bus` (client, JetStream context, names, settings)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from opmas.bus.subjects import Subjects
from opmas.errors import BusError
from opmas.settings import BusSettings

log = structlog.get_logger(__name__)

DEFAULT_CONNECT_TIMEOUT_S = 10.0
RECONNECT_WAIT_S = 2.0
PING_TIMEOUT_S = 5.0
DRAIN_TIMEOUT_S = 10


@dataclass(frozen=True)
class Bus:
    """A connected NATS client with its JetStream context, subject names and settings."""

    nc: Client
    js: JetStreamContext
    subjects: Subjects
    settings: BusSettings

    async def ping(self, timeout_s: float = PING_TIMEOUT_S) -> float:
        """Round trip to the server in seconds; raises BusError when it does not answer."""
        start = time.monotonic()
        try:
            await self.nc.flush(timeout=max(1, math.ceil(timeout_s)))
        except (TimeoutError, nats.errors.Error) as exc:
            raise BusError(f"NATS did not answer a ping within {timeout_s} s: {exc!r}") from exc
        return time.monotonic() - start


@asynccontextmanager
async def connect_bus(
    url: str,
    settings: BusSettings,
    *,
    name: str = "opmas",
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
) -> AsyncIterator[Bus]:
    """Connect to `url` and yield a Bus; drain and close the connection on exit.

    Raises BusError when no server answers within `connect_timeout_s` or the server has no
    JetStream. Once connected, the client reconnects forever (meanwhile publishes time out
    with PublishTimeout instead of hanging).
    """
    nc = Client()
    shown = redact(url)
    try:
        await asyncio.wait_for(_connect(nc, url, name, connect_timeout_s), connect_timeout_s)
    except (TimeoutError, OSError, nats.errors.Error) as exc:
        cause = nc.last_error or exc
        await _close_quietly(nc)
        raise BusError(
            f"cannot connect to NATS at {shown} within {connect_timeout_s} s: {cause!r}"
        ) from exc
    js = nc.jetstream(timeout=settings.publish_timeout_s)
    await _check_jetstream(nc, js, shown)
    version = nc.connected_server_version
    log.debug("bus connected", url=shown, name=name, server=f"{version.major}.{version.minor}")
    try:
        yield Bus(nc=nc, js=js, subjects=Subjects(settings.namespace), settings=settings)
    finally:
        await _drain(nc)
        log.debug("bus closed", url=shown, name=name)


def redact(url: str) -> str:
    """`url` without its user and password, fit for logs and error messages."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}:{parts.port}" if parts.port else f"***@{host}"
    return urlunsplit(parts._replace(netloc=netloc))


async def _connect(nc: Client, url: str, name: str, timeout_s: float) -> None:
    async def on_error(exc: Exception) -> None:
        log.warning("bus error", error=repr(exc))

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("bus disconnected", name=name)

    async def on_reconnected() -> None:
        server = nc.connected_url
        log.info("bus reconnected", name=name, server=server.netloc if server else None)

    await nc.connect(
        servers=[url],
        name=name,
        connect_timeout=max(1, int(timeout_s)),
        allow_reconnect=True,
        max_reconnect_attempts=-1,
        reconnect_time_wait=int(RECONNECT_WAIT_S),
        drain_timeout=DRAIN_TIMEOUT_S,
        error_cb=on_error,
        disconnected_cb=on_disconnected,
        reconnected_cb=on_reconnected,
    )


async def _check_jetstream(nc: Client, js: JetStreamContext, url: str) -> None:
    try:
        await js.account_info()
    except (TimeoutError, nats.errors.Error) as exc:
        await _close_quietly(nc)
        raise BusError(f"JetStream is not enabled on the NATS server at {url}: {exc!r}") from exc


async def _drain(nc: Client) -> None:
    if nc.is_closed:
        return
    try:
        await nc.drain()
    except (TimeoutError, nats.errors.Error) as exc:
        log.warning("bus drain failed", error=repr(exc))
        await _close_quietly(nc)


async def _close_quietly(nc: Client) -> None:
    try:
        await nc.close()
    except Exception as exc:  # closing a half-open client must not hide the real error
        log.debug("bus close failed", error=repr(exc))
