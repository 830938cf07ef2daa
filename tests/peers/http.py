"""A webhook receiver for tests: an HTTP server on 127.0.0.1 (a thread of its own) that records
every request and answers with the status codes it is told to, in order, then 200.

    with HttpReceiver.start(statuses=[500, 200]) as receiver:
        ... POST to receiver.url ...
        receiver.requests  # [Request(method, path, headers, body, at), ...]
        receiver.on("/path")  # the requests to one path
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self


@dataclass(frozen=True)
class Request:
    """One request as received."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() on arrival

    def json(self) -> Any:
        return json.loads(self.body)


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        body = self.rfile.read(length)
        status = self.server.receiver.record(
            Request("POST", self.path, dict(self.headers.items()), body, time.monotonic())
        )
        answer = b'{"ok": true}' if status < 300 else b'{"error": "on purpose"}'
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read `requests` instead."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    receiver: HttpReceiver


class HttpReceiver:
    """Records requests; answers each with the next of `statuses`, then `default_status`."""

    def __init__(self, statuses: Iterable[int] = (), default_status: int = 200) -> None:
        self._lock = threading.Lock()
        self._statuses = deque(statuses)
        self.default_status = default_status
        self._requests: list[Request] = []
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.receiver = self
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @classmethod
    def start(cls, statuses: Iterable[int] = (), default_status: int = 200) -> HttpReceiver:
        receiver = cls(statuses, default_status)
        receiver._thread.start()
        return receiver

    @property
    def url(self) -> str:
        """The server's base URL; any path under it is answered."""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def requests(self) -> list[Request]:
        with self._lock:
            return list(self._requests)

    @property
    def statuses(self) -> list[int]:
        with self._lock:
            return list(self._statuses)

    @statuses.setter
    def statuses(self, statuses: Iterable[int]) -> None:
        """The next answers, in order (then `default_status`)."""
        with self._lock:
            self._statuses = deque(statuses)

    def on(self, path: str) -> list[Request]:
        """The requests received on `path`."""
        return [request for request in self.requests if request.path == path]

    def record(self, request: Request) -> int:
        with self._lock:
            self._requests.append(request)
            return self._statuses.popleft() if self._statuses else self.default_status

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
