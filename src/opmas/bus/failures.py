"""Whether a consumer's failure may pass (PostgreSQL or NATS down) or never will (a bad
payload): the one place that decides, and the state consumers report while it lasts.

Failure
├── TRANSIENT  a server the message needs failed, not the message: connection refused or
│              reset, timeouts, a server starting, stopping or out of resources (SQLSTATE
│              classes 08, 53, 57P, 58, read-only 25006, serialization/deadlock 40001/40P01),
│              NATS disconnected, no responders, JetStream unavailable. Held and retried
│              without limit; never dead-lettered.
├── PERMANENT  the message can never succeed: it does not decode, or the database refuses
│              its data (SQLSTATE classes 22, 23). Dead-lettered at once.
└── FAILED     anything else (a bug): retried `max_deliver` times, then dead-lettered.
"""

from __future__ import annotations

import errno
import re
import time
from collections.abc import Iterator
from enum import StrEnum

import asyncpg
import nats.errors
import nats.js.errors
import sqlalchemy.exc
import structlog
from prometheus_client import Counter, Gauge

from opmas.errors import BusError, OpmasError, PublishTimeout, StoreError, StreamMissing

__all__ = [
    "ConsumerHealth",
    "Failure",
    "PermanentError",
    "TransientError",
    "classify",
    "describe",
    "was_transient",
]

log = structlog.get_logger(__name__)

TRANSIENT_FAILING = Gauge(
    "opmas_consumer_transient_failing",
    "1 while a consumer holds messages through a transient failure (PostgreSQL or NATS down).",
    ["durable"],
)
TRANSIENT_RETRIES = Counter(
    "opmas_consumer_transient_retries_total",
    "Retries of held messages after a transient failure.",
    ["durable"],
)
STALLED = Gauge(
    "opmas_consumer_stalled",
    "1 while a consumer has messages pending but acknowledged none for `stall_after_s`.",
    ["durable"],
)

MAX_CHAIN = 8  # causes followed from the raised exception (StoreError -> asyncpg -> OSError)
TRANSIENT_SQLSTATE_CLASSES = ("08", "53", "57P", "58")
TRANSIENT_SQLSTATES = frozenset({"25006", "40001", "40P01", "55P03"})
PERMANENT_SQLSTATE_CLASSES = ("22", "23")
TRANSIENT_ERRNOS = frozenset(
    {
        errno.ECONNREFUSED,
        errno.ECONNRESET,
        errno.ECONNABORTED,
        errno.EPIPE,
        errno.ETIMEDOUT,
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        errno.ENETDOWN,
        errno.EADDRNOTAVAIL,
        errno.ENOSPC,
        errno.EIO,
        errno.EROFS,
        errno.EDQUOT,
    }
)
_NATS_TRANSIENT: tuple[type[BaseException], ...] = (
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.NoServersError,
    nats.errors.NoRespondersError,
    nats.errors.StaleConnectionError,
    nats.errors.OutboundBufferLimitError,
    nats.errors.AuthorizationError,  # not the message's fault: held until it is granted
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.TooManyStalledMsgsError,
    PublishTimeout,
    StreamMissing,
)
_SQLALCHEMY_TRANSIENT: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.DisconnectionError,
    sqlalchemy.exc.TimeoutError,  # no pooled connection came free
)
# What the dead letters of versions before this module recorded for outages (error type, and
# the text of a StoreError or BusError wrapping one): replayed once on upgrade.
_TRANSIENT_TYPES = frozenset(
    {
        "ConnectionRefusedError",
        "ConnectionResetError",
        "ConnectionAbortedError",
        "BrokenPipeError",
        "TimeoutError",
        "PublishTimeout",
        "StreamMissing",
        "ConnectionDoesNotExistError",
        "ConnectionFailureError",
        "CannotConnectNowError",
        "AdminShutdownError",
        "CrashShutdownError",
        "TooManyConnectionsError",
        "DiskFullError",
        "ReadOnlySQLTransactionError",
        "NoRespondersError",
        "ConnectionClosedError",
        "NoServersError",
        "TransientError",
    }
)
_WRAPPER_TYPES = frozenset({"StoreError", "BusError", "OSError", "InterfaceError"})
_TRANSIENT_TEXT = re.compile(
    r"connection refused|connect call failed|connection reset|connection was closed"
    r"|connection is closed|connection ?closed|timed? ?out|timeout|broken pipe"
    r"|the database system is (?:starting up|shutting down|in recovery)"
    r"|terminating connection|too many (?:clients|connections)|no space left"
    r"|read-only|no ?responders|no ?servers|event store closed|\[errno (?:104|110|111|113)\]",
    re.IGNORECASE,
)


class Failure(StrEnum):
    """What a consumer does after its handler raised; see the module docstring."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"
    FAILED = "failed"


class TransientError(OpmasError):
    """A failure that will pass (a server down, a timeout): held and retried, never
    dead-lettered."""


class PermanentError(OpmasError):
    """A message that can never be handled (bad payload): dead-lettered without a retry."""


def classify(exc: BaseException, permanent: tuple[type[BaseException], ...] = ()) -> Failure:
    """The Failure `exc` stands for: the first exception of its cause chain with a verdict
    decides (StoreError -> UniqueViolationError is PERMANENT, StoreError -> ConnectionRefused
    is TRANSIENT). `permanent` adds types that mean "bad payload" (e.g. a decode error)."""
    for each in _chain(exc):
        verdict = _verdict(each, permanent)
        if verdict is not None:
            return verdict
    return Failure.FAILED


def describe(exc: BaseException) -> str:
    """Which server `exc` is about, for a log line or a status: PostgreSQL, NATS or a server."""
    for each in _chain(exc):
        module = type(each).__module__
        if isinstance(each, StoreError) or module.startswith(("asyncpg", "sqlalchemy")):
            return "PostgreSQL"
        if isinstance(each, BusError) or module.startswith("nats"):
            return "NATS"
    return "a server"


def was_transient(error_type: str, error: str) -> bool:
    """Whether a dead letter recorded as `error_type` / `error` was an outage (dead-lettered
    by a version that did not tell them apart), going by the recorded names and text."""
    if error_type in _TRANSIENT_TYPES:
        return True
    return error_type in _WRAPPER_TYPES and _TRANSIENT_TEXT.search(error) is not None


def _chain(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < MAX_CHAIN:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)  # SQLAlchemy's wrapped DBAPI error
        if isinstance(orig, BaseException) and orig is not current.__cause__:
            yield orig
        current = current.__cause__ or current.__context__


def _verdict(exc: BaseException, permanent: tuple[type[BaseException], ...]) -> Failure | None:
    if isinstance(exc, TransientError):
        return Failure.TRANSIENT
    if isinstance(exc, PermanentError):
        return Failure.PERMANENT
    sqlstate = getattr(exc, "sqlstate", None)
    if isinstance(sqlstate, str) and len(sqlstate) == 5:
        return _sqlstate_verdict(sqlstate)
    if isinstance(exc, _SQLALCHEMY_TRANSIENT + _NATS_TRANSIENT):
        return Failure.TRANSIENT
    if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.connection_invalidated:
        return Failure.TRANSIENT
    if isinstance(exc, sqlalchemy.exc.IntegrityError | sqlalchemy.exc.DataError):
        return Failure.PERMANENT
    if isinstance(exc, nats.js.errors.APIError) and (exc.code or 0) >= 500:
        return Failure.TRANSIENT
    if isinstance(exc, asyncpg.exceptions.DataError | nats.errors.MaxPayloadError):
        return Failure.PERMANENT  # a value asyncpg cannot encode; larger than NATS takes
    if isinstance(exc, asyncpg.InterfaceError) and "closed" in str(exc):
        return Failure.TRANSIENT  # "connection is closed": the server went away under it
    if _transient_os_error(exc):
        return Failure.TRANSIENT
    if isinstance(exc, permanent):
        return Failure.PERMANENT
    return None


def _sqlstate_verdict(sqlstate: str) -> Failure:
    if sqlstate in TRANSIENT_SQLSTATES or sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES):
        return Failure.TRANSIENT
    if sqlstate.startswith(PERMANENT_SQLSTATE_CLASSES):
        return Failure.PERMANENT
    return Failure.FAILED  # a database error we cannot place (42P01: schema not migrated...)


def _transient_os_error(exc: BaseException) -> bool:
    """Sockets and disks failing: connection errors, timeouts (asyncio's and nats-py's are
    TimeoutError), and a plain OSError (a connect to several addresses has no errno) unless
    its errno says otherwise. FileNotFoundError, PermissionError...: a bug or a setting."""
    if isinstance(exc, ConnectionError | TimeoutError):
        return True
    if type(exc) is OSError:
        return exc.errno is None or exc.errno in TRANSIENT_ERRNOS
    return False


class ConsumerHealth:
    """Outage and stall state of one consumer, or of a group that shares it (a pipeline
    worker's partitions): one log line when either begins and one when it ends, however many
    members are in it, the gauges and retry counter under `name`, and `reason()` for status."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._holding: dict[str, int] = {}  # member -> batches held through a transient failure
        self._outage_since: float | None = None
        self._outage_error = ""
        self._outage_server = ""
        self._retries = 0
        self._stalled: dict[str, tuple[float, int]] = {}  # member -> (no ack since, pending)
        TRANSIENT_FAILING.labels(name).set(0)
        STALLED.labels(name).set(0)

    def outage_began(self, member: str, exc: BaseException) -> None:
        """`member` holds a batch after a transient failure `exc`."""
        self._holding[member] = self._holding.get(member, 0) + 1
        self._outage_error = _error_text(exc)
        if self._outage_since is not None:
            return
        self._outage_since, self._retries = time.monotonic(), 0
        self._outage_server = describe(exc)
        TRANSIENT_FAILING.labels(self.name).set(1)
        log.warning(
            "consumer outage began: holding messages",
            consumer=self.name,
            server=self._outage_server,
            error=self._outage_error,
        )

    def retried(self, exc: BaseException) -> None:
        """A held batch was tried again and failed transiently again."""
        self._retries += 1
        self._outage_error = _error_text(exc)
        TRANSIENT_RETRIES.labels(self.name).inc()

    def outage_ended(self, member: str) -> None:
        """`member` no longer holds one of its batches (handled, or given back at stop)."""
        left = self._holding.get(member, 0) - 1
        if left > 0:
            self._holding[member] = left
            return
        self._holding.pop(member, None)
        if self._holding or self._outage_since is None:
            return
        seconds = time.monotonic() - self._outage_since
        self._outage_since = None
        TRANSIENT_FAILING.labels(self.name).set(0)
        log.info(
            "consumer outage over",
            consumer=self.name,
            server=self._outage_server,
            seconds=round(seconds, 1),
            retries=self._retries,
        )

    @property
    def in_outage(self) -> bool:
        return self._outage_since is not None

    def stalled(self, member: str, since: float, pending: int) -> None:
        """`member` has `pending` messages and acknowledged none since `since` (monotonic)."""
        first = not self._stalled
        known = member in self._stalled
        self._stalled[member] = (since, pending)
        if known or not first:
            return
        STALLED.labels(self.name).set(1)
        log.warning(
            "consumer stalled: messages pending, none acknowledged",
            consumer=self.name,
            durable=member,
            pending=pending,
            seconds=round(time.monotonic() - since, 1),
        )

    def progressing(self, member: str) -> None:
        """`member` acknowledged a message, or has nothing pending."""
        since = self._stalled.pop(member, None)
        if since is None or self._stalled:
            return
        STALLED.labels(self.name).set(0)
        log.info(
            "consumer progressing again",
            consumer=self.name,
            durable=member,
            stalled_s=round(time.monotonic() - since[0], 1),
        )

    def reason(self) -> str | None:
        """None while healthy; else a short reason for `opmas status` (degraded)."""
        now = time.monotonic()
        if self._outage_since is not None:
            return (
                f"{self._outage_server} failing for {now - self._outage_since:.0f} s,"
                f" {self._retries} retries, messages held: {self._outage_error[:200]}"
            )
        if self._stalled:
            since = min(s for s, _ in self._stalled.values())
            pending = sum(p for _, p in self._stalled.values())
            members = ",".join(sorted(self._stalled))
            return (
                f"stalled: {pending} messages pending, none acked for {now - since:.0f} s"
                f" ({members})"
            )
        return None


def _error_text(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:1000]
