"""The bound on the unread part of logs.raw: the lesser of its two settings, crossed with
hysteresis, and what a process publishes counted before the next measure."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from opmas.ingest.backlog import Backlog, Unread
from opmas.settings import BusSettings, IngestSettings, StreamLimits

MB = 1024 * 1024


def backlog(stream_bytes: int, **ingest: Any) -> Backlog:
    """A Backlog for a bus whose logs.raw holds `stream_bytes` (it only reads the settings)."""
    bus = SimpleNamespace(settings=BusSettings(logs_raw=StreamLimits(max_bytes=stream_bytes)))
    return Backlog(bus, IngestSettings(**ingest))  # type: ignore[arg-type]


def test_the_bound_is_the_lesser_of_the_byte_cap_and_the_streams_share() -> None:
    assert backlog(1024 * MB).max_bytes == 64 * MB  # max_unread_bytes
    assert backlog(100 * MB).max_bytes == 50 * MB  # half the stream
    assert backlog(100 * MB, max_unread_share=0.8).max_bytes == 64 * MB
    assert backlog(100 * MB, max_unread_share=0.2).max_bytes == 20 * MB
    assert backlog(-1, max_unread_bytes=0).max_bytes == float("inf")


def test_full_at_the_bound_and_open_again_below_three_quarters() -> None:
    gate = backlog(100 * MB)
    gate.update(Unread(10, 49 * MB))
    assert not gate.full
    gate.update(Unread(10, 50 * MB))
    assert gate.full
    gate.update(Unread(10, 40 * MB))
    assert gate.full  # above 37.5 MB: still full
    gate.update(Unread(10, 37 * MB))
    assert not gate.full


def test_what_was_published_since_the_measure_counts() -> None:
    gate = backlog(100 * MB)
    gate.update(Unread(3, 45 * MB))
    gate.published(2, 4 * MB)
    assert not gate.full
    gate.published(1, 1 * MB)
    assert gate.full
    assert gate.unread == Unread(6, 50 * MB)
    assert gate.describe() == "pipeline 52.4 MB behind: senders slowed"
