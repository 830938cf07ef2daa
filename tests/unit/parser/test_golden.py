"""Golden cases: tests/data/parser/<case>/input.log parses to expected.jsonl, line by line.

Each case gets its own engine (so the dropbear PID join sees only its own lines); the
expected events are ParsedEvents without event_id and arrival_ts_utc. Set
OPMAS_REGEN_GOLDEN=1 to rewrite the expected files after a deliberate change.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import msgspec
import pytest

from opmas.messages import RawLog
from opmas.parser import ParserEngine
from tests.unit.parser.conftest import ARRIVAL, DATA

CASES = sorted(p for p in DATA.iterdir() if (p / "input.log").is_file())


def parse_case(case: Path) -> list[dict[str, object]]:
    engine = ParserEngine.from_dirs()
    lines = (case / "input.log").read_text(encoding="utf-8").split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    events = engine.parse_many(
        [
            RawLog(f"{case.name}-{n}", ARRIVAL, line, "udp", source_ip="192.0.2.1")
            for n, line in enumerate(lines)
        ]
    )
    out = []
    for event in events:
        data = msgspec.to_builtins(event)
        del data["event_id"], data["arrival_ts_utc"]
        out.append(data)
    return out


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_golden_case_parses_to_expected_events(case: Path) -> None:
    got = parse_case(case)
    expected_file = case / "expected.jsonl"
    if os.environ.get("OPMAS_REGEN_GOLDEN") == "1":
        text = "".join(json.dumps(event, ensure_ascii=False) + "\n" for event in got)
        expected_file.write_text(text, encoding="utf-8")
    expected = [json.loads(line) for line in expected_file.read_text(encoding="utf-8").splitlines()]
    assert len(got) == len(expected)
    for number, (event, want) in enumerate(zip(got, expected, strict=True)):
        assert event == want, f"{case.name} line {number + 1}"
