"""`opmas rules list|show|test`: the detection rules, offline (no server needed);
`opmas rules apply`: save checked rules into the database the agents read."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from opmas.agents import offline
from opmas.agents.pack import RulePackError, RuleSpec, check_rule_data, load_file, load_pack
from opmas.agents.registry import save_rules
from opmas.cli.context import console, err_console, load_settings
from opmas.db.engine import create_engine
from opmas.embedded import embedded_services
from opmas.errors import ConfigError, OpmasError

app = typer.Typer(help="Detection rules: list, show, and test them on a log file offline.")

RulesDir = Annotated[
    list[Path] | None,
    typer.Option("--rules-dir", help="Extra rule YAML directory (repeatable); same name replaces."),
]


def _rules(dirs: list[Path] | None) -> list[RuleSpec]:
    try:
        return load_pack(dirs or [])
    except ConfigError as exc:
        err_console.print(f"[red]rule files:[/red] {escape(str(exc))}")
        raise typer.Exit(2) from exc


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, ensure_ascii=False) + "\n")


@app.command("list")
def list_rules(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of rules.")] = False,
    rules_dir: RulesDir = None,
) -> None:
    """List every rule: name, agent, type, severity, finding type."""
    rules = _rules(rules_dir)
    if as_json:
        _print_json([rule.to_dict() for rule in rules])
        return
    table = Table("name", "agent", "type", "severity", "finding type", "enabled")
    for rule in rules:
        table.add_row(
            rule.name, rule.agent, rule.type, rule.severity, rule.finding_type, str(rule.enabled)
        )
    console.print(table)


@app.command()
def show(
    name: Annotated[str, typer.Argument(help="The rule name, e.g. ssh-brute-force-fast.")],
    as_json: Annotated[bool, typer.Option("--json", help="The rule as JSON.")] = False,
    rules_dir: RulesDir = None,
) -> None:
    """Show one rule in full."""
    found = next((r for r in _rules(rules_dir) if r.name == name), None)
    if found is None:
        err_console.print(f"[red]no rule named[/red] {escape(name)}")
        raise typer.Exit(1)
    data = found.to_dict()
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        console.print(f"[bold]{key}[/bold]: {escape(str(text))}", soft_wrap=True)


@app.command("test")
def run_test(
    file: Annotated[Path, typer.Argument(help="A log file (logread/syslog lines).")],
    rule: Annotated[str | None, typer.Option("--rule", help="Run only this rule.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One finding per line (JSON lines), then no summary.")
    ] = False,
    rules_dir: RulesDir = None,
) -> None:
    """Run the rules over FILE and print the findings they would produce, like fail2ban-regex."""
    rules = _rules(rules_dir)
    try:
        report = offline.run_lines(offline.read_lines(file), rules, rule_name=rule)
    except OSError as exc:
        err_console.print(f"[red]cannot read[/red] {escape(str(file))}: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    except ConfigError as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        for finding in report.findings:
            _print_json(finding)
        return
    for finding in report.findings:
        details = finding["details"]
        console.print(
            f"[bold]{finding['finding_ts_utc']}[/bold] {finding['severity']:<8} "
            f"{finding['rule_name']} ({finding['finding_type']}) key={escape(str(details['key']))} "
            f"count={details['count']} lines={finding['evidence_lines'][:10]}",
            highlight=False,
            soft_wrap=True,
        )
        console.print(f"    {escape(finding['description'])}", highlight=False, soft_wrap=True)
    console.print(
        f"\nLines: {report.lines}, parsed events: {report.events}, "
        f"findings: {len(report.findings)}",
        highlight=False,
    )
    for name, hits in sorted(report.matches.items()):
        console.print(f"  {name}: {hits} hit(s)", highlight=False)
    for name, why in sorted(report.skipped.items()):
        console.print(f"  {name}: skipped ({escape(why)})", highlight=False)


@app.command()
def apply(
    files: Annotated[list[Path], typer.Argument(help="Rule YAML files (the pack's format).")],
) -> None:
    """Check rule files and save their rules into `agent_rules`, replacing rules of the same
    agent and name; running agents use them within seconds. Nothing is saved if any rule
    is wrong."""
    specs: list[RuleSpec] = []
    problems: list[ConfigError] = []
    for path in files:
        rules, errors = load_file(path)
        problems.extend(errors)
        for spec in rules:
            try:
                specs.append(check_rule_data(spec.to_dict(), source=str(path)))
            except RulePackError as exc:
                problems.extend(exc.errors)
    if problems:
        for problem in problems:
            err_console.print(f"[red]{escape(str(problem))}[/red]", soft_wrap=True)
        err_console.print(f"nothing saved: {len(problems)} error(s)")
        raise typer.Exit(2)
    settings = load_settings()

    async def _save() -> int:
        async with embedded_services(settings, with_nats=False) as endpoints:
            engine = create_engine(endpoints.database_url)
            try:
                return await save_rules(engine, specs)
            finally:
                await engine.dispose()

    try:
        saved = asyncio.run(_save())
    except OpmasError as exc:
        err_console.print(f"[red]error:[/red] {escape(str(exc))}")
        raise typer.Exit(1) from exc
    for spec in specs:
        console.print(f"saved  {spec.name}  ({spec.agent}, {spec.type})", highlight=False)
    console.print(f"{saved} rule(s) saved", highlight=False)
