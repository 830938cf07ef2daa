"""The error tree every OPMAS component raises from.

OpmasError
├── ConfigError    bad settings, rule or playbook file (carries path and line); fatal: the
│   │              supervisor stops the process instead of restarting the component
│   ├── BindError  a listener cannot bind its port (in use, not permitted)
│   └── DataDirError  no data dir or no running OPMAS there, or another `opmas up` holds it
├── ParseError     a line we cannot parse (carries the raw line and the reason)
├── BusError       NATS or JetStream failed
│   ├── PublishTimeout
│   └── StreamMissing
├── StoreError     PostgreSQL failed or refused a write
├── EmbeddedError  an embedded PostgreSQL or nats-server would not start or stop
├── SecretError    a stored secret does not decrypt under the secret key
├── ActionError    an action cannot run (bad argument, allowlisted target, host key changed)
└── ApiError       carries status_code
    ├── NotFound   (404)
    ├── Conflict   (409)
    └── Forbidden  (403)
"""

from __future__ import annotations

import errno


class OpmasError(Exception):
    """Root of every error OPMAS raises on purpose."""


class ConfigError(OpmasError):
    """A settings, rule or playbook file is wrong."""

    def __init__(self, message: str, *, path: str | None = None, line: int | None = None) -> None:
        where = f"{path}:{line}: " if path and line else (f"{path}: " if path else "")
        super().__init__(f"{where}{message}")
        self.path = path
        self.line = line


class BindError(ConfigError):
    """A listener cannot bind its address; the message names the port and the variable."""

    @classmethod
    def from_os_error(
        cls, exc: OSError, *, what: str, host: str, port: int, variable: str, host_variable: str
    ) -> BindError:
        """The one-line error for `exc` raised binding `what` to host:port; `variable` and
        `host_variable` name the settings of the port and of the host."""
        if exc.errno == errno.EADDRNOTAVAIL:
            return cls(f"{what} host {host} is no address of this machine: set {host_variable}")
        if exc.errno == errno.EADDRINUSE:
            problem, fix = "is in use", "stop what listens there, or set"
        elif exc.errno == errno.EACCES:
            problem, fix = "is not permitted (below 1024?)", "run with the right, or set"
        else:
            problem, fix = f"cannot be opened ({exc.strerror or exc})", "set"
        return cls(f"{what} port {port} on {host} {problem}: {fix} {variable}")


class DataDirError(ConfigError):
    """No data dir or no running OPMAS in it, or another `opmas up` already holds it."""


class ParseError(OpmasError):
    """A line could not be parsed."""

    def __init__(self, reason: str, *, raw: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.raw = raw


class BusError(OpmasError):
    """NATS or JetStream failed."""


class PublishTimeout(BusError):
    """JetStream did not acknowledge a publish in time."""


class Backlogged(BusError):
    """The pipeline is too far behind: ingest holds new lines back (`opmas.ingest.backlog`)."""


class StreamMissing(BusError):
    """A stream that should exist does not."""


class StoreError(OpmasError):
    """PostgreSQL failed or refused a write."""


class EmbeddedError(OpmasError):
    """An embedded PostgreSQL or nats-server would not start or stop."""


class SecretError(OpmasError):
    """A stored secret does not decrypt under the configured secret key (wrong or rotated)."""


class ActionError(OpmasError):
    """An action cannot run as configured: bad argument, allowlisted target, changed host key."""


class ApiError(OpmasError):
    """An error the API renders as `{"error": <class name>, "detail": ...}`."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class NotFound(ApiError):
    status_code = 404


class Conflict(ApiError):
    status_code = 409


class Forbidden(ApiError):
    status_code = 403
