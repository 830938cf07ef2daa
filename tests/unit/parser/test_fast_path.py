"""The engine's fast path gives exactly what its general path gives, line by line."""

from __future__ import annotations

import msgspec
import pytest

from opmas.messages import RawLog
from opmas.parser import ParserEngine
from tests.unit.parser.conftest import ARRIVAL, CORPUS, DATA

ENROLLED = {"OpenWrt-Router1": "192.0.2.1", "OpenWrt": "192.0.2.1"}


def corpus_lines() -> list[str]:
    paths = [CORPUS / "openwrt-sample.log", *sorted(DATA.glob("*/input.log"))]
    return [line for path in paths for line in path.read_text(encoding="utf-8").split("\n")]


def variants(line: str, n: int) -> list[RawLog]:
    """The line as several transports and clients would hand it over."""
    return [
        RawLog(f"a{n}", ARRIVAL + n, line, "udp", source_ip="192.0.2.1"),
        RawLog(f"b{n}", ARRIVAL, line + "\r\n", "tcp", hostname="client-host", level="warn"),
        RawLog(f"c{n}", ARRIVAL, line.replace(": ", ":\x00 ", 1), "udp"),
        RawLog(f"d{n}", ARRIVAL, line, "tls", bound_hostname="OpenWrt", timestamp="Nov 21"),
        RawLog(f"e{n}", ARRIVAL + n / 3, f"<30>{line[-60:]}", "udp", source_ip="198.51.100.9"),
    ]


@pytest.mark.parametrize("batch", [1, 500])
def test_fast_path_gives_what_the_general_path_gives(batch: int) -> None:
    raws = [raw for n, line in enumerate(corpus_lines()) for raw in variants(line, n)]
    fast_engine = ParserEngine.from_dirs(enrolled=ENROLLED)
    general = ParserEngine.from_dirs(enrolled=ENROLLED)
    fast = [
        e for i in range(0, len(raws), batch) for e in fast_engine.parse_many(raws[i : i + batch])
    ]
    slow = [general._parse(raw, None) for raw in raws]
    for raw, got, want in zip(raws, fast, slow, strict=True):
        assert msgspec.structs.astuple(got) == msgspec.structs.astuple(want), raw.line


def test_the_fast_path_takes_most_corpus_lines() -> None:
    engine = ParserEngine.from_dirs()
    raws = [RawLog(str(n), ARRIVAL, line, "udp") for n, line in enumerate(corpus_lines())]
    engine.parse_many(raws)  # learns the good hostnames
    taken = sum(engine._fast(raw) is not None for raw in raws)
    assert taken > len(raws) // 2
