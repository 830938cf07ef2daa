"""Fixtures of the parser unit tests: one engine with the shipped parsers per test module."""

from __future__ import annotations

from pathlib import Path

import pytest

from opmas.messages import RawLog
from opmas.parser import ParserEngine

ARRIVAL = 1795300000.0  # 2026-11-22T... UTC: fixed, so missing years resolve the same way
DATA = Path(__file__).resolve().parents[2] / "data" / "parser"
CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus"  # copy of shared/corpus


@pytest.fixture(scope="module")
def engine() -> ParserEngine:
    """A fresh engine (fresh PID-join state) for each test module."""
    return ParserEngine.from_dirs()


def raw(line: str, arrival: float = ARRIVAL, **extra: object) -> RawLog:
    """A RawLog as the UDP listener would hand it over."""
    return RawLog("test-id", arrival, line, "udp", **extra)  # type: ignore[arg-type]  # tests pass only valid RawLog fields
