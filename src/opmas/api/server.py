"""The `api` component: uvicorn serving the FastAPI app on a socket bound before start."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Self

import uvicorn

from opmas.api.app import create_app
from opmas.errors import BindError
from opmas.resources import Resources
from opmas.runtime import Supervisor


class _Server(uvicorn.Server):
    """uvicorn without its own signal handlers: OPMAS's runtime owns SIGINT and SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket; port 0 picks a free one.

    Raises:
        BindError: the port is in use or not permitted; the message names OPMAS_HTTP_PORT.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise BindError.from_os_error(
            exc,
            what="HTTP",
            host=host,
            port=port,
            variable="OPMAS_HTTP_PORT",
            host_variable="OPMAS_HTTP_HOST",
        ) from exc
    sock.listen(2048)
    sock.setblocking(False)
    return sock


class ApiServer:
    """Serve the REST API until stopped; in-flight requests finish before it returns."""

    name = "api"

    def __init__(
        self,
        resources: Resources,
        *,
        sock: socket.socket | None = None,
        supervisor: Supervisor | None = None,
        children: int = 0,
    ) -> None:
        self._resources = resources
        self._given_sock = sock
        self._supervisor = supervisor
        self._children = children
        self._sock: socket.socket | None = None
        self._server: _Server | None = None
        self._serving: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Self:
        """Bind (unless given a socket) and start serving; ACTIVE means requests are answered."""
        settings = self._resources.settings
        self._sock = self._given_sock or bind(settings.http_host, settings.http_port)
        app = create_app(settings, resources=self._resources)
        app.state.supervisor = self._supervisor
        app.state.child_processes = self._children
        config = uvicorn.Config(
            app,
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=int(settings.runtime.shutdown_grace_s),
            limit_concurrency=settings.http_max_concurrency,  # beyond it uvicorn answers 503
            lifespan="on",
        )
        self._server = _Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[self._sock]))
        while not self._server.started:
            if self._serving.done():
                await self._serving  # raises what stopped uvicorn
                raise RuntimeError("uvicorn stopped before it started")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        """Finish in-flight requests (up to the grace period), then release the socket."""
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving
        if self._sock is not None and self._sock is not self._given_sock:
            self._sock.close()

    def describe(self) -> str | None:
        if self._sock is None:
            return None
        host, port = self._sock.getsockname()[:2]
        return f"http://{host}:{port}"

    async def run(self, stop: asyncio.Event) -> None:
        assert self._serving is not None  # noqa: S101 - set by __aenter__
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({self._serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        if self._serving.done() and not stop.is_set():
            await self._serving
            raise RuntimeError("uvicorn stopped on its own")
