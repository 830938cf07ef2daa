"""Create or update the JetStream streams idempotently, and report their state and lag."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import nats.errors
import nats.js.errors
import structlog
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig

from opmas.bus.connect import Bus
from opmas.bus.subjects import StreamSpec
from opmas.errors import BusError, StreamMissing
from opmas.settings import StreamLimits

log = structlog.get_logger(__name__)

_NATS_ERRORS = (nats.errors.Error, asyncio.TimeoutError)


class ConsumerReport(NamedTuple):
    """One durable consumer of a stream and how far behind it is."""

    durable: str
    num_pending: int  # lag: messages not yet delivered to it
    num_ack_pending: int  # delivered, not yet acknowledged
    num_redelivered: int


@dataclass(frozen=True)
class StreamReport:
    """One stream's size and its consumers, for `opmas status`; `exists` False if missing."""

    stream: str
    messages: int
    bytes: int
    consumers: list[ConsumerReport] = field(default_factory=list)
    exists: bool = True


def stream_config(bus: Bus, spec: StreamSpec) -> StreamConfig:
    """The configuration OPMAS wants for `spec`: file storage, limits from the bus settings."""
    limits: StreamLimits = getattr(bus.settings, spec.limits_key)
    return StreamConfig(
        name=spec.name,
        subjects=list(spec.subjects),
        retention=RetentionPolicy.LIMITS,
        storage=StorageType.FILE,
        discard=DiscardPolicy.OLD,
        max_age=float(limits.max_age_s),
        max_bytes=limits.max_bytes,
        duplicate_window=float(bus.settings.duplicate_window_s),
    )


async def ensure_streams(bus: Bus) -> list[str]:
    """Create missing streams and apply changed limits; return the names created or updated.

    Idempotent: a second call with the same settings changes nothing and returns `[]`.
    Raises BusError when the server refuses a stream (e.g. storage type changed, overlap).
    """
    changed: list[str] = []
    for spec in bus.subjects.streams():
        if await ensure_stream(bus, spec):
            changed.append(spec.name)
    return changed


async def ensure_stream(bus: Bus, spec: StreamSpec) -> bool:
    """Create or update one stream; True when something changed on the server."""
    wanted = stream_config(bus, spec)
    try:
        try:
            info = await bus.js.stream_info(spec.name)
        except nats.js.errors.NotFoundError:
            await bus.js.add_stream(wanted)
            log.debug("stream created", stream=spec.name, subjects=wanted.subjects)
            return True
        differences = _differences(info.config, wanted)
        if not differences:
            return False
        await bus.js.update_stream(_merged(info.config, wanted))
    except _NATS_ERRORS as exc:
        raise BusError(f"cannot create or update stream {spec.name}: {exc!r}") from exc
    log.info("stream updated", stream=spec.name, changed=differences)
    return True


_COMPARED = ("subjects", "retention", "storage", "discard", "max_age", "max_bytes")


def _differences(current: StreamConfig, wanted: StreamConfig) -> dict[str, Any]:
    """Fields whose server value differs from the wanted one: {name: (current, wanted)}."""
    diff: dict[str, Any] = {}
    for name in (*_COMPARED, "duplicate_window"):
        have, want = getattr(current, name), getattr(wanted, name)
        if name == "subjects":
            have, want = sorted(have or []), sorted(want or [])
        if isinstance(want, float):
            same = math.isclose(float(have or 0), want, abs_tol=1e-3)
        else:
            same = have == want
        if not same:
            diff[name] = (have, want)
    return diff


def _merged(current: StreamConfig, wanted: StreamConfig) -> StreamConfig:
    """The server's config with our fields applied, so that fields we don't manage are kept."""
    updates = {name: getattr(wanted, name) for name in (*_COMPARED, "duplicate_window")}
    merged: StreamConfig = current.evolve(**updates)
    return merged


async def delete_streams(bus: Bus) -> list[str]:
    """Delete every stream of the bus namespace (tests, `opmas reset`); return those deleted."""
    deleted: list[str] = []
    for spec in bus.subjects.streams():
        try:
            await bus.js.delete_stream(spec.name)
        except nats.js.errors.NotFoundError:
            continue
        except _NATS_ERRORS as exc:
            raise BusError(f"cannot delete stream {spec.name}: {exc!r}") from exc
        deleted.append(spec.name)
    return deleted


async def stream_report(bus: Bus) -> list[StreamReport]:
    """Messages, bytes and consumer lag of every OPMAS stream; raises BusError if NATS fails."""
    return [await _report(bus, spec) for spec in bus.subjects.streams()]


async def _report(bus: Bus, spec: StreamSpec) -> StreamReport:
    try:
        info = await bus.js.stream_info(spec.name)
        consumers = await bus.js.consumers_info(spec.name)
    except nats.js.errors.NotFoundError:
        return StreamReport(stream=spec.name, messages=0, bytes=0, exists=False)
    except _NATS_ERRORS as exc:
        raise BusError(f"cannot read stream {spec.name}: {exc!r}") from exc
    return StreamReport(
        stream=spec.name,
        messages=info.state.messages,
        bytes=info.state.bytes,
        consumers=sorted(
            (
                ConsumerReport(
                    durable=c.name,
                    num_pending=c.num_pending or 0,
                    num_ack_pending=c.num_ack_pending or 0,
                    num_redelivered=c.num_redelivered or 0,
                )
                for c in consumers
            ),
            key=lambda c: c.durable,
        ),
    )


async def require_stream(bus: Bus, spec: StreamSpec) -> None:
    """Raise StreamMissing unless `spec` exists on the server."""
    try:
        await bus.js.stream_info(spec.name)
    except nats.js.errors.NotFoundError as exc:
        raise StreamMissing(f"stream {spec.name} does not exist; run ensure_streams") from exc
    except _NATS_ERRORS as exc:
        raise BusError(f"cannot read stream {spec.name}: {exc!r}") from exc
