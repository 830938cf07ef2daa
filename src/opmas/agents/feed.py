"""Findings as read back from the FINDINGS stream (until the orchestrator stores them)."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import nats.errors

from opmas.bus.connect import Bus
from opmas.bus.consume import replay
from opmas.errors import BusError
from opmas.messages import Finding, finding_decoder

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


async def read_findings(bus: Bus, *, since: datetime | None = None) -> list[Finding]:
    """Every finding published since `since` (by publication time), each in its latest
    version (largest count), newest first; unreadable messages are skipped.

    Raises:
        BusError: NATS failed or the stream does not exist.
    """
    stream = bus.subjects.findings_stream
    try:
        info = await bus.js.stream_info(stream.name)
    except (TimeoutError, nats.errors.Error) as exc:
        raise BusError(f"cannot read stream {stream.name}: {exc!r}") from exc
    last_seq = info.state.last_seq
    latest: dict[str, Finding] = {}
    if not last_seq:
        return []
    async for msgs in replay(
        bus,
        stream,
        filter_subjects=[bus.subjects.findings_all],
        start_time=since or EPOCH,
        last_seq=last_seq,
    ):
        for msg in msgs:
            try:
                finding = finding_decoder.decode(msg.data)
            except msgspec.DecodeError:
                continue
            known = latest.get(finding.finding_id)
            if known is None or finding.count >= known.count:
                latest[finding.finding_id] = finding
    return sorted(latest.values(), key=lambda f: (f.finding_ts_utc, f.finding_id), reverse=True)
