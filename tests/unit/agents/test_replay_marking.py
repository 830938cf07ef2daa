"""`opmas replay` without --notify: its lines carry the `replay` flag, the findings they open
say `details.replay`, and no notification rule matches them; `--dry-run` sends nothing."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from opmas.agents.engine import FindingBook, RuleSet
from opmas.agents.offline import read_lines
from opmas.agents.pack import load_pack
from opmas.cli.replay import replay
from opmas.messages import Finding, Flag
from opmas.notify.routing import Route, matches

from .factory import T0, make_event

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "openwrt-sample.log"


def _crash(flags: list[str]) -> Finding:
    spec = next(s for s in load_pack() if s.name == "kernel-panic")
    ruleset = RuleSet.build([spec])
    event = make_event(
        ts=T0,
        process_name="kernel",
        message="Kernel panic - not syncing: Fatal exception",
        event="kernel_panic",
        reason="Fatal exception",
    )
    event.log_source_type = "health"
    event.flags = flags
    ((loaded, hit),) = ruleset.evaluate(event)
    finding, new = FindingBook().fold(loaded.spec, hit, event, "health")
    assert new
    return finding


def test_a_finding_opened_by_a_replayed_line_is_marked_and_routed_nowhere() -> None:
    route = Route(1, "info", "critical", (), (), (1,))
    replayed, live = _crash([Flag.REPLAY]), _crash([])
    assert replayed.details["replay"] is True
    assert "replay" not in live.details
    assert not matches(route, replayed)
    assert matches(route, live)


def test_dry_run_prints_what_would_be_found_and_needs_no_running_opmas() -> None:
    app = typer.Typer()
    app.command()(replay)
    result = CliRunner().invoke(app, ["--dry-run", "--json", str(CORPUS)])
    assert result.exit_code == 0, result.output
    findings = [json.loads(line) for line in result.output.splitlines()]
    assert len(findings) == 21  # 4 kinds new in event time (the sample spans years, unsorted)
    assert {f["finding_type"] for f in findings} >= {"WifiFirmwareCrash", "InterfaceDown"}
    result = CliRunner().invoke(app, ["--dry-run", str(CORPUS)])
    assert result.exit_code == 0, result.output
    assert f"dry run: lines {len(read_lines(CORPUS))}" in result.output
    assert "nothing sent" in result.output
