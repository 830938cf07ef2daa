"""The failure classifier: outages of PostgreSQL and NATS are transient, bad data permanent,
the rest a bug; the upgrade's reading of old dead letters; the health state's log lines."""

from __future__ import annotations

import errno

import asyncpg
import msgspec
import nats.errors
import nats.js.errors
import pytest
import sqlalchemy.exc
from tests.logrecorder import LogRecorder

from opmas.bus import failures
from opmas.bus.failures import (
    ConsumerHealth,
    Failure,
    PermanentError,
    TransientError,
    classify,
    describe,
    was_transient,
)
from opmas.errors import BusError, PublishTimeout, StoreError, StreamMissing


def wrapped(outer: BaseException, cause: BaseException) -> BaseException:
    """`outer` as if raised `from cause`, as the store and the bus wrap foreign errors."""
    outer.__cause__ = cause
    return outer


def pg_error(cls: type[asyncpg.PostgresError], message: str = "server says no") -> BaseException:
    error: BaseException = cls(message)  # asyncpg is untyped
    return error


@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed ('127.0.0.1', 5432)"),
        ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"),
        OSError("Multiple exceptions: [Errno 111] Connect call failed"),  # several addresses
        OSError(errno.ENOSPC, "No space left on device"),
        TimeoutError(),
        pg_error(asyncpg.exceptions.ConnectionDoesNotExistError),  # 08003
        pg_error(asyncpg.exceptions.TooManyConnectionsError),  # 53300
        pg_error(asyncpg.exceptions.DiskFullError),  # 53100
        pg_error(asyncpg.exceptions.AdminShutdownError),  # 57P01
        pg_error(asyncpg.exceptions.CannotConnectNowError),  # 57P03: starting up
        pg_error(asyncpg.exceptions.ReadOnlySQLTransactionError),  # 25006
        pg_error(asyncpg.exceptions.DeadlockDetectedError),  # 40P01
        asyncpg.InterfaceError("connection is closed"),
        nats.errors.NoRespondersError(),
        nats.errors.ConnectionClosedError(),
        nats.errors.TimeoutError(),
        nats.js.errors.ServiceUnavailableError(),
        PublishTimeout("no PubAck"),
        StreamMissing("no stream"),
        TransientError("said so"),
        sqlalchemy.exc.TimeoutError("QueuePool limit reached"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_outages_are_transient(error: BaseException) -> None:
    assert classify(error) is Failure.TRANSIENT


@pytest.mark.parametrize(
    "cause",
    [
        ConnectionRefusedError(errno.ECONNREFUSED, "refused"),
        pg_error(asyncpg.exceptions.AdminShutdownError),
    ],
    ids=lambda e: type(e).__name__,
)
def test_a_store_error_is_judged_by_its_cause(cause: BaseException) -> None:
    assert classify(wrapped(StoreError("writing 5 events failed"), cause)) is Failure.TRANSIENT
    unique = pg_error(asyncpg.exceptions.UniqueViolationError)
    assert classify(wrapped(StoreError("writing 5 events failed"), unique)) is Failure.PERMANENT


def test_sqlalchemy_errors_are_judged_by_the_driver_error_they_carry() -> None:
    dbapi = pg_error(asyncpg.exceptions.CannotConnectNowError)
    operational = sqlalchemy.exc.OperationalError("SELECT 1", {}, dbapi)
    integrity = sqlalchemy.exc.IntegrityError(
        "INSERT", {}, pg_error(asyncpg.exceptions.ForeignKeyViolationError)
    )
    assert classify(operational) is Failure.TRANSIENT
    assert classify(integrity) is Failure.PERMANENT


@pytest.mark.parametrize(
    "error",
    [
        pg_error(asyncpg.exceptions.UniqueViolationError),  # 23505
        pg_error(asyncpg.exceptions.CheckViolationError),  # 23514
        pg_error(asyncpg.exceptions.CharacterNotInRepertoireError),  # 22021: NUL in text
        pg_error(asyncpg.exceptions.InvalidTextRepresentationError),  # 22P02
        asyncpg.exceptions.DataError("invalid input for query argument"),
        nats.errors.MaxPayloadError(),
        PermanentError("bad"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_bad_data_is_permanent(error: BaseException) -> None:
    assert classify(error) is Failure.PERMANENT


def test_a_decode_error_is_permanent_when_the_consumer_says_so() -> None:
    error = msgspec.DecodeError("JSON is malformed")
    assert classify(error) is Failure.FAILED
    assert classify(error, (msgspec.DecodeError,)) is Failure.PERMANENT


def test_an_outage_found_under_a_permanent_looking_type_still_wins() -> None:
    """ValueError is a "bad payload" type, but a StoreError over a refused connection is not."""
    outage = wrapped(StoreError("x"), ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    assert classify(outage, (ValueError, StoreError)) is Failure.PERMANENT  # outer decides
    assert classify(outage, (ValueError,)) is Failure.TRANSIENT


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("a bug"),
        FileNotFoundError(errno.ENOENT, "no such file"),
        pg_error(asyncpg.exceptions.UndefinedTableError),  # 42P01: schema not migrated
        nats.js.errors.BadRequestError(),
        StoreError("no cause"),
        BusError("no cause"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_anything_else_is_a_failure_retried_a_few_times(error: BaseException) -> None:
    assert classify(error) is Failure.FAILED


def test_describe_names_the_server() -> None:
    refused = ConnectionRefusedError(errno.ECONNREFUSED, "refused")
    assert describe(wrapped(StoreError("x"), refused)) == "PostgreSQL"
    assert describe(pg_error(asyncpg.exceptions.AdminShutdownError)) == "PostgreSQL"
    assert describe(nats.errors.NoRespondersError()) == "NATS"
    assert describe(PublishTimeout("x")) == "NATS"
    assert describe(refused) == "a server"


@pytest.mark.parametrize(
    ("error_type", "error", "expected"),
    [
        (
            "StoreError",
            "StoreError: writing 500 events failed: [Errno 111] Connect call failed"
            " ('127.0.0.1', 5432)",
            True,
        ),
        ("StoreError", "StoreError: writing 3 events failed: connection was closed", True),
        ("StoreError", "StoreError: the database system is shutting down", True),
        ("ConnectionRefusedError", "ConnectionRefusedError: [Errno 111] refused", True),
        ("PublishTimeout", "PublishTimeout: no PubAck for findings.wifi within 5.0 s", True),
        ("BusError", "BusError: publish to findings.wifi failed: NoRespondersError()", True),
        ("StoreError", "StoreError: duplicate key value violates unique constraint", False),
        ("DecodeError", "DecodeError: JSON is malformed", False),
        ("ValueError", "ValueError: connection refused in the payload text", False),
        ("MaxDeliverExceeded", "delivered 6 times without an ack", False),
    ],
)
def test_old_dead_letters_of_outages_are_recognised(
    error_type: str, error: str, expected: bool
) -> None:
    assert was_transient(error_type, error) is expected


def test_health_logs_once_per_change_for_a_whole_group(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = LogRecorder()
    monkeypatch.setattr(failures, "log", recorder)
    health = ConsumerHealth("pipeline-*")
    refused = wrapped(StoreError("x"), ConnectionRefusedError(errno.ECONNREFUSED, "refused"))
    health.outage_began("pipeline-0", refused)
    health.outage_began("pipeline-1", refused)
    health.retried(refused)
    assert health.reason() is not None
    assert "PostgreSQL failing for" in (health.reason() or "")
    health.outage_ended("pipeline-0")
    assert health.in_outage  # pipeline-1 still holds its batch
    health.outage_ended("pipeline-1")
    health.stalled("pipeline-3", since=0.0, pending=7)
    health.stalled("pipeline-4", since=0.0, pending=2)
    assert "stalled: 9 messages pending" in (health.reason() or "")
    health.progressing("pipeline-3")
    health.progressing("pipeline-4")
    logs = recorder.entries
    assert recorder.events == [
        "consumer outage began: holding messages",
        "consumer outage over",
        "consumer stalled: messages pending, none acknowledged",
        "consumer progressing again",
    ]
    assert logs[1]["retries"] == 1
    assert logs[0]["server"] == "PostgreSQL"
    assert health.reason() is None
