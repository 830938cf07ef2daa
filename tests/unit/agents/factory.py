"""Build ParsedEvents for rule tests."""

from __future__ import annotations

import itertools

from opmas.messages import ParsedEvent, iso_utc

T0 = 1_790_000_000.0  # an arbitrary event time, epoch seconds
_ids = itertools.count()


def make_event(
    *,
    ts: float = T0,
    event_id: str | None = None,
    hostname: str | None = "ap1",
    process_name: str | None = "hostapd",
    message: str = "wlan0: STA aa:bb:cc:dd:ee:01 IEEE 802.11: authentication failed",
    event_ts: bool = True,
    fields: dict[str, object] | None = None,
    **structured: object,
) -> ParsedEvent:
    """An event at `ts`; `fields` and other keyword arguments become structured_fields."""
    return ParsedEvent(
        event_id=event_id or f"ev-{next(_ids)}",
        arrival_ts_utc=iso_utc(ts if not event_ts else ts + 5),
        source_ip="192.0.2.1",
        original_ts=None,
        hostname=hostname,
        process_name=process_name,
        pid="1234",
        log_level="INFO",
        facility="daemon",
        event_type="NETWORK",
        message=message,
        parser_name="hostapd",
        log_source_type="wifi",
        structured_fields={**(fields or {}), **structured},
        event_ts=iso_utc(ts) if event_ts else None,
    )
