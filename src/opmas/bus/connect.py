"""Connect to NATS: `connect_bus()` yields a `Bus` (client, JetStream context, names, settings)."""

from __future__ import annotations

import asyncio
import math
import ssl
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import nats
import nats.errors
import structlog
from nats.aio.client import Client
from nats.js import JetStreamContext

from opmas.bus.subjects import Subjects
from opmas.errors import BusError, ConfigError
from opmas.settings import BusSettings, Settings

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


@dataclass(frozen=True)
class NatsAuth:
    """How to prove who we are to a NATS server of the user's own, besides the URL's user and
    password: a .creds file (JWT + nkey seed) and TLS (CA, client certificate and key)."""

    creds: Path | None = None
    tls_ca: Path | None = None
    tls_cert: Path | None = None
    tls_key: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> NatsAuth:
        return cls(
            settings.nats_creds, settings.nats_tls_ca, settings.nats_tls_cert, settings.nats_tls_key
        )

    def connect_options(self) -> dict[str, Any]:
        """Keyword arguments of nats-py's `connect`.

        Raises:
            ConfigError: a file is missing or not a certificate or key.
        """
        options: dict[str, Any] = {}
        if self.creds is not None:
            if not self.creds.is_file():
                raise ConfigError(f"OPMAS_NATS_CREDS names {self.creds}, which is not a file")
            options["user_credentials"] = str(self.creds)
        if self.tls_ca is not None or self.tls_cert is not None:
            options["tls"] = self._ssl_context()
        return options

    def _ssl_context(self) -> ssl.SSLContext:
        try:
            context = ssl.create_default_context(
                cafile=str(self.tls_ca) if self.tls_ca is not None else None
            )
            if self.tls_cert is not None:
                context.load_cert_chain(
                    self.tls_cert, self.tls_key if self.tls_key is not None else None
                )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(f"OPMAS_NATS_TLS_*: cannot load the TLS files: {exc}") from exc
        return context


@asynccontextmanager
async def connect_bus(
    url: str,
    settings: BusSettings,
    *,
    name: str = "opmas",
    connect_timeout_s: float = DEFAULT_CONNECT_TIMEOUT_S,
    auth: NatsAuth | None = None,
) -> AsyncIterator[Bus]:
    """Connect to `url` (its user and password, and `auth`'s creds and TLS) and yield a Bus;
    drain and close the connection on exit.

    Raises BusError when no server answers within `connect_timeout_s`, refuses the
    credentials, or has no JetStream. Once connected, the client reconnects forever
    (meanwhile publishes time out with PublishTimeout instead of hanging).
    """
    nc = Client()
    shown = redact(url)
    options = (auth or NatsAuth()).connect_options()
    try:
        await asyncio.wait_for(
            _connect(nc, url, name, connect_timeout_s, options), connect_timeout_s
        )
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


async def _connect(
    nc: Client, url: str, name: str, timeout_s: float, options: dict[str, Any]
) -> None:
    async def on_error(exc: Exception) -> None:
        log.warning("bus error", error=repr(exc))

    async def on_disconnected() -> None:
        if not (nc.is_closed or nc.is_draining):
            log.warning("bus disconnected", name=name)

    async def on_reconnected() -> None:
        server = nc.connected_url  # host and port only: the URL's netloc holds the password
        where = f"{server.hostname}:{server.port}" if server else None
        log.info("bus reconnected", name=name, server=where)

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
        **options,
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
