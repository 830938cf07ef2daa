"""Rules run offline over log files (`opmas rules test`), and the golden cases."""

from __future__ import annotations

import gc
import io
import json
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from opmas.agents import offline
from opmas.agents.offline import iter_lines, line_id, parse_lines, run_file, run_lines
from opmas.agents.pack import RuleSpec, load_pack
from opmas.cli.rules import app
from opmas.parser.engine import ParserEngine

DATA = Path(__file__).resolve().parents[2] / "data" / "rules"
PACK = load_pack()
ENGINE = ParserEngine.from_dirs([])
FIELDS = {
    "finding_id", "agent_name", "finding_ts_utc", "device_hostname", "device_ip", "severity",
    "finding_type", "rule_name", "description", "details", "evidence_event_ids",
}  # fmt: skip


def _bad_passwords(n: int, *, ip: str = "203.0.113.7", step_s: int = 2) -> list[str]:
    return [
        f"Sat Nov 21 10:{i * step_s // 60:02d}:{i * step_s % 60:02d} 2026 authpriv.warn "
        f"dropbear[3327]: Bad password attempt for 'root' from {ip}:{50000 + i}"
        for i in range(n)
    ]


def _fast(findings: list[dict[str, object]]) -> list[dict[str, object]]:
    return [f for f in findings if f["rule_name"] == "ssh-brute-force-fast"]


def test_thirty_bad_passwords_in_a_minute_give_one_fast_brute_force(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_text("\n".join(_bad_passwords(30)) + "\n")
    findings = run_file(path, PACK, engine=ENGINE)
    (finding,) = _fast(findings)
    assert set(finding) >= FIELDS
    assert finding["agent_name"] == "SecurityAgent"
    assert finding["severity"] == "error"
    assert finding["finding_type"] == "SshBruteForce"
    details = finding["details"]
    assert isinstance(details, dict)
    assert details["key"] == "local|203.0.113.7"
    assert details["count"] == 30
    assert details["window_s"] == 60
    assert finding["evidence_lines"] == list(range(1, 21))  # the first 20 event ids
    assert finding["description"] == "SSH brute force from 203.0.113.7 (30 failed logins in 60 s)"
    only = run_file(path, PACK, rule_name="ssh-brute-force-fast", engine=ENGINE)
    assert [f["finding_id"] for f in only] == [finding["finding_id"]]


@pytest.mark.parametrize(
    "lines",
    [
        _bad_passwords(4),  # one short of the threshold
        _bad_passwords(5, step_s=16),  # five, but spread over 64 s
        [line for n in range(5) for line in _bad_passwords(1, ip=f"203.0.113.{n}")],  # 5 keys
    ],
    ids=["one-short", "gap-longer-than-window", "other-keys"],
)
def test_near_misses_give_no_fast_brute_force(lines: list[str]) -> None:
    report = run_lines(lines, PACK, rule_name="ssh-brute-force-fast", engine=ENGINE)
    assert report.findings == []
    assert report.lines == report.events == len(lines)


def test_replay_gives_the_same_findings(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_text("\n".join(_bad_passwords(12)) + "\n")
    assert run_file(path, PACK, engine=ENGINE) == run_file(path, PACK, engine=ENGINE)


def test_unknown_rule_name_is_an_error() -> None:
    with pytest.raises(Exception, match="no enabled rule named 'nope'"):
        run_lines(["x"], PACK, rule_name="nope", engine=ENGINE)


def test_rules_of_an_unavailable_type_are_skipped_with_a_note(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "opmas.agents.rules.correlation", None)
    report = run_lines(_bad_passwords(6), PACK, engine=ENGINE)
    assert "not available" in report.skipped["ssh-login-after-failures"]
    assert len(_fast(report.findings)) == 1


CASES = sorted(p.name for p in DATA.iterdir() if p.is_dir())


@pytest.mark.parametrize("rule", CASES)
def test_golden_case(rule: str) -> None:
    case = DATA / rule
    expected = [json.loads(line) for line in (case / "expected.jsonl").read_text().splitlines()]
    assert expected, f"{case}/expected.jsonl is empty"
    assert run_file(case / "input.log", PACK, rule_name=rule, engine=ENGINE) == expected


def test_cli_test_prints_findings_and_a_summary(tmp_path: Path) -> None:
    path = tmp_path / "auth.log"
    path.write_text("\n".join(_bad_passwords(30)) + "\n")
    runner = CliRunner()
    result = runner.invoke(app, ["test", str(path), "--rule", "ssh-brute-force-fast", "--json"])
    assert result.exit_code == 0, result.output
    (finding,) = [json.loads(line) for line in result.output.splitlines()]
    assert finding["details"]["count"] == 30
    result = runner.invoke(app, ["test", str(path)])
    assert result.exit_code == 0, result.output
    assert "Lines: 30, parsed events: 30" in result.output
    assert "ssh-brute-force-fast: 26 hit(s)" in result.output


def test_cli_list_and_show() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["list", "--pack", "--json"])
    assert result.exit_code == 0, result.output
    names = {rule["name"] for rule in json.loads(result.output)}
    assert names == {rule.name for rule in PACK}
    result = runner.invoke(app, ["show", "wifi-auth-failure-rate", "--pack", "--json"])
    assert json.loads(result.output)["threshold"] == 25
    assert runner.invoke(app, ["show", "nope", "--pack"]).exit_code == 1
    assert runner.invoke(app, ["list", "--pack"]).exit_code == 0
    shown = runner.invoke(app, ["show", "ssh-brute-force-fast", "--pack"]).output
    assert "ssh-brute-force-fast" in shown


@pytest.mark.parametrize(
    "rule",
    [r for r in PACK if r.type in ("PATTERN", "THRESHOLD") and not r.distinct],
    ids=lambda rule: rule.name,
)
def test_examples_trigger_their_rule_once(rule: RuleSpec) -> None:
    lines = rule.examples[:1] * (rule.threshold or 1)
    report = run_lines(lines, [rule], engine=ENGINE)
    assert len(report.findings) == 1, report.findings
    (finding,) = report.findings
    assert finding["rule_name"] == rule.name
    assert finding["severity"] == rule.severity
    assert finding["finding_type"] == rule.finding_type
    assert "?" not in str(finding["description"]), finding["description"]
    if rule.threshold:
        short = run_lines(lines[:-1], [rule], engine=ENGINE)
        assert short.findings == []


@pytest.mark.parametrize("chunk_bytes", [1, 3, 7, 64, 1 << 20])
def test_a_file_read_in_chunks_gives_the_lines_of_the_whole_text(chunk_bytes: int) -> None:
    data = "a\r\nb\rc\n\n# comment\n  \nd\u2028e\n\u00e9t\u00e9\nlast".encode() + b"\xff\xfe\n"
    whole = data.decode("utf-8", errors="replace")
    expected = [x for x in whole.splitlines() if x.strip() and not x.startswith("#")]
    assert list(iter_lines(io.BytesIO(data), chunk_bytes=chunk_bytes)) == expected


def test_offline_event_ids_are_the_uuid5_of_line_number_and_text() -> None:
    namespace = uuid.UUID("0b6c4f0e-2d8a-5c3b-9e1f-7a6d5c4b3a29")
    for n, text in [(1, "abc"), (42, "h\u00e9llo \x00"), (999_999, "x" * 300)]:
        assert line_id(f"{n}\x1f{text}") == str(uuid.uuid5(namespace, f"{n}\x1f{text}"))
    (event,) = parse_lines(["some line"], ENGINE)
    assert event.event_id == str(uuid.uuid5(namespace, "1\x1fsome line"))


def test_findings_past_max_open_are_given_out_early_and_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(offline, "BATCH_LINES", 1)
    lines = [  # five PPPoE failures an hour apart: five bursts, five findings
        f"Sat Nov 21 1{i}:00:00 2026 daemon.err pppd[1]: PAP authentication failed"
        for i in range(5)
    ]
    given: list[tuple[int, dict[str, object]]] = []
    read = 0

    def counted() -> Iterator[str]:
        nonlocal read
        for line in lines:
            read += 1
            yield line

    bounded = run_lines(
        counted(),
        PACK,
        rule_name="pppoe-auth-failure",
        engine=ENGINE,
        emit=lambda finding: given.append((read, finding)),
        max_open=2,
    )
    whole = run_lines(lines, PACK, rule_name="pppoe-auth-failure", engine=ENGINE)
    assert bounded.findings == []  # all went to `emit`
    assert len(whole.findings) == 5
    assert [finding for _, finding in given] == whole.findings  # same order, same content
    assert bounded.found == 5
    assert given[0][0] == 3  # the third finding opened: the first one, least recent, goes out


def test_the_batch_collector_settings_are_undone_after_the_run() -> None:
    saved = gc.get_threshold()
    gc.set_threshold(700, 10, 10)  # Python's default; an earlier test may have tuned it
    try:
        before, frozen = gc.get_threshold(), gc.get_freeze_count()
        with offline.batch_gc():
            assert gc.get_threshold()[0] > before[0]
            assert gc.get_freeze_count() > frozen
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() == 0
    finally:
        gc.set_threshold(*saved)
