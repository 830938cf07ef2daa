"""Every default rule against realistic OpenWRT lines: one finding, and near misses giving none.

Each rule has `tests/data/rules/<rule>/`: `input.log` (the lines of one incident among
unrelated ones), `expected.jsonl` (its finding, checked by hand; `test_golden_case` in
test_offline.py compares it whole) and `near-miss-<what>.log` files (one short of the
threshold, a gap longer than the window, another key, a look-alike line) that give nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from opmas.agents.offline import parse_lines, read_lines, run_file
from opmas.agents.pack import RuleSpec, load_pack
from opmas.agents.rules.conditions import compile_conditions
from opmas.messages import ParsedEvent
from opmas.parser.engine import ParserEngine

DATA = Path(__file__).resolve().parents[2] / "data" / "rules"
PACK = {rule.name: rule for rule in load_pack()}
ENGINE = ParserEngine.from_dirs([])
# owned elsewhere: their cases are written with the changes being made to them
NOT_COVERED_HERE: frozenset[str] = frozenset()
CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir() and p.name not in NOT_COVERED_HERE)
NEAR_MISSES = [
    (p.parent.name, p.name) for rule in CASES for p in (DATA / rule).glob("near-miss-*.log")
]


def _of_rule(findings: list[dict[str, Any]], rule: str) -> list[dict[str, Any]]:
    return [f for f in findings if f["rule_name"] == rule]


def _matches_rule(spec: RuleSpec, event: ParsedEvent) -> bool:
    """Whether the event satisfies the rule's conditions (any step's, for a CORRELATION)."""
    condition_lists = [step.conditions for step in spec.steps] if spec.steps else [spec.conditions]
    return any(compile_conditions(c, rule=spec.name)(event) for c in condition_lists)


def test_every_default_rule_has_a_case_with_near_misses() -> None:
    missing = {
        name
        for name in PACK
        if name not in NOT_COVERED_HERE
        and not (
            (DATA / name / "input.log").is_file()
            and (DATA / name / "expected.jsonl").is_file()
            and any((DATA / name).glob("near-miss-*.log"))
        )
    }
    assert not missing, f"rules without a case and a near miss under {DATA}: {sorted(missing)}"
    assert set(CASES) <= set(PACK), f"cases of unknown rules: {sorted(set(CASES) - set(PACK))}"


@pytest.mark.parametrize("rule", CASES)
def test_input_gives_exactly_one_finding_of_its_rule(rule: str) -> None:
    spec = PACK[rule]
    case = DATA / rule
    (expected,) = [json.loads(line) for line in (case / "expected.jsonl").read_text().splitlines()]
    (finding,) = _of_rule(run_file(case / "input.log", list(PACK.values()), engine=ENGINE), rule)
    assert finding["finding_type"] == spec.finding_type == expected["finding_type"]
    assert finding["severity"] == spec.severity == expected["severity"]
    assert finding["agent_name"] == spec.agent
    assert finding["details"]["key"] == expected["details"]["key"]
    assert "?" not in finding["description"], finding["description"]
    evidence = finding["evidence_lines"]
    assert evidence, "a finding must point at the lines that made it"
    assert evidence == expected["evidence_lines"]
    events = parse_lines(read_lines(case / "input.log"), ENGINE)
    for number in evidence:
        event = events[number - 1]
        assert _matches_rule(spec, event), f"evidence line {number} does not match: {event.message}"


@pytest.mark.parametrize(("rule", "near_miss"), NEAR_MISSES)
def test_near_miss_gives_no_finding(rule: str, near_miss: str) -> None:
    path = DATA / rule / near_miss
    assert read_lines(path), f"{path} is empty"
    findings = run_file(path, list(PACK.values()), rule_name=rule, engine=ENGINE)
    assert findings == [], [(f["details"]["key"], f["evidence_lines"]) for f in findings]


@pytest.mark.parametrize(("rule", "near_miss"), NEAR_MISSES)
def test_near_miss_lines_all_parse(rule: str, near_miss: str) -> None:
    """A near miss must fail on what the rule checks, not because its lines are unreadable."""
    path = DATA / rule / near_miss
    unparsed = [
        e.message for e in parse_lines(read_lines(path), ENGINE) if e.parser_name == "unparsed"
    ]
    allowed = {"flash-full"}  # its look-alikes come from programs without a parser (mount_root)
    assert not unparsed or rule in allowed, unparsed
