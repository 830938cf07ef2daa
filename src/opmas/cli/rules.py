"""`opmas rules list|show|enable|disable|export`: the rules the agents run (`agent_rules`),
marked where they differ from the shipped pack; `opmas rules apply`: save checked rules into
that table; `opmas rules test` (and `--pack`): the rule files, offline (no server needed)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.agents import offline
from opmas.agents.pack import RulePackError, RuleSpec, check_rule_data, load_file, load_pack
from opmas.agents.registry import save_rules
from opmas.cli import render, rules_stored
from opmas.cli.context import console, err_console, load_settings
from opmas.db.engine import create_engine
from opmas.embedded import embedded_services
from opmas.errors import ConfigError, OpmasError
from opmas.parser.engine import ParserEngine

app = typer.Typer(
    help="Detection rules: what the agents run, enable, disable, export, apply; test offline."
)

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


Pack = Annotated[
    bool, typer.Option("--pack", help="The shipped rule files (and --rules-dir), offline.")
]
AgentOption = Annotated[
    str | None, typer.Option("--agent", help="The agent, when several have a rule of that name.")
]
NameArg = Annotated[str, typer.Argument(help="The rule name, e.g. ssh-brute-force-fast.")]


def _stored() -> list[rules_stored.StoredRule]:
    return render.with_session(rules_stored.stored_rules)


@app.command("list")
def list_rules(
    as_json: Annotated[bool, typer.Option("--json", help="One JSON array of rules.")] = False,
    pack: Pack = False,
    rules_dir: RulesDir = None,
) -> None:
    """List the rules the agents run (from the database): name, agent, type, severity,
    finding type, enabled, and how each differs from the shipped pack."""
    if pack or rules_dir:
        _list_pack(_rules(rules_dir), as_json)
        return
    rules = _stored()
    if as_json:
        _print_json([rule.to_dict() for rule in rules])
        return
    table = Table("name", "agent", "type", "severity", "finding type", "enabled", "vs pack")
    for rule in rules:
        data = rule.data
        enabled = ("yes" if rule.enabled else "no") if rule.in_db else "-"
        table.add_row(
            *(
                escape(str(v))
                for v in (
                    rule.name,
                    rule.agent,
                    data.get("type"),
                    data.get("severity"),
                    data.get("finding_type"),
                    enabled,
                    rule.marker,
                )
            )
        )
    console.print(table)


def _list_pack(rules: list[RuleSpec], as_json: bool) -> None:
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
    name: NameArg,
    as_json: Annotated[bool, typer.Option("--json", help="The rule as JSON.")] = False,
    agent: AgentOption = None,
    pack: Pack = False,
    rules_dir: RulesDir = None,
) -> None:
    """Show one rule in full as the agents run it, and what differs from the shipped pack."""
    if pack or rules_dir:
        found = next((r for r in _rules(rules_dir) if r.name == name), None)
        if found is None:
            err_console.print(f"[red]no rule named[/red] {escape(name)}")
            raise typer.Exit(1)
        data = found.to_dict()
    else:
        try:
            rule = rules_stored.pick(_stored(), name, agent)
        except OpmasError as exc:
            render.fail(str(exc))
        data = rule.to_dict()
    if as_json:
        _print_json(data)
        return
    for key, value in data.items():
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        console.print(f"[bold]{key}[/bold]: {escape(str(text))}", soft_wrap=True)


def _set_enabled(name: str, agent: str | None, enabled: bool) -> None:
    settings = load_settings()

    async def _work(session: AsyncSession) -> str:
        rule = rules_stored.pick(await rules_stored.stored_rules(session), name, agent)
        if rule.in_db:
            changed = await rules_stored.set_enabled(session, rule, enabled)
            return "" if changed else "already "
        assert rule.spec is not None  # noqa: S101 - a shipped rule always has its spec
        engine = session.bind
        assert isinstance(engine, AsyncEngine)  # noqa: S101 - sessions are bound to an engine
        rule.spec.enabled = enabled
        await save_rules(engine, [rule.spec])
        return "loaded from the pack, "

    how = render.run_async(lambda s: render.in_session(s, _work), settings)
    state = "enabled" if enabled else "disabled"
    console.print(
        f"rule {name} {how}{state}; running agents apply it within "
        f"{settings.agents.rule_poll_s:g} s",
        highlight=False,
    )


@app.command()
def enable(name: NameArg, agent: AgentOption = None) -> None:
    """Enable a rule in `agent_rules`; running agents pick it up within rule_poll_s."""
    _set_enabled(name, agent, True)


@app.command()
def disable(name: NameArg, agent: AgentOption = None) -> None:
    """Disable a rule in `agent_rules`; running agents drop it within rule_poll_s."""
    _set_enabled(name, agent, False)


@app.command()
def export(
    names: Annotated[
        list[str] | None, typer.Argument(help="Rule names (default: every stored rule).")
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to this file, not stdout.")
    ] = None,
) -> None:
    """Write stored rules as YAML in the format `rules apply` reads (export, edit, apply)."""
    stored = [r for r in _stored() if r.in_db]
    if names:
        missing = sorted(set(names) - {r.name for r in stored})
        if missing:
            render.fail(f"no stored rule named {', '.join(missing)}")
        stored = [r for r in stored if r.name in set(names)]
    for rule in stored:
        if rule.spec is None:
            err_console.print(f"skipped {escape(rule.name)}: not a valid rule ({rule.error})")
        elif not rule.spec.examples:
            err_console.print(
                f"{escape(rule.name)} has no example lines: `rules apply` needs at least one"
            )
    text = rules_stored.export_yaml([r.spec for r in stored if r.spec is not None])
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    console.print(f"{len(stored)} rule(s) written to {escape(str(output))}", highlight=False)


@app.command("test")
def run_test(
    file: Annotated[Path, typer.Argument(help="A log file (logread/syslog lines); `-`: stdin.")],
    rule: Annotated[str | None, typer.Option("--rule", help="Run only this rule.")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One finding per line (JSON lines), then no summary.")
    ] = False,
    rules_dir: RulesDir = None,
) -> None:
    """Run the rules over FILE and print the findings they would produce, like fail2ban-regex.

    The file is read as a stream; each finding is printed once complete, in the order the
    findings opened."""
    rules = _rules(rules_dir)
    source = sys.stdin.buffer if str(file) == "-" else file
    emit = _print_json if as_json else _print_finding
    engine = ParserEngine.from_dirs([])
    try:
        with offline.batch_gc():
            lines = offline.iter_lines(source)
            report = offline.run_lines(lines, rules, rule_name=rule, emit=emit, engine=engine)
    except OSError as exc:
        err_console.print(f"[red]cannot read[/red] {escape(str(file))}: {escape(str(exc))}")
        raise typer.Exit(2) from exc
    except ConfigError as exc:
        err_console.print(f"[red]{escape(str(exc))}[/red]")
        raise typer.Exit(1) from exc
    if as_json:
        return
    console.print(
        f"\nLines: {report.lines}, parsed events: {report.events}, findings: {report.found}",
        highlight=False,
    )
    for name, hits in sorted(report.matches.items()):
        console.print(f"  {name}: {hits} hit(s)", highlight=False)
    for name, why in sorted(report.skipped.items()):
        console.print(f"  {name}: skipped ({escape(why)})", highlight=False)


def _print_finding(finding: dict[str, Any]) -> None:
    details = finding["details"]
    console.print(
        f"[bold]{finding['finding_ts_utc']}[/bold] {finding['severity']:<8} "
        f"{finding['rule_name']} ({finding['finding_type']}) key={escape(str(details['key']))} "
        f"count={details['count']} lines={finding['evidence_lines'][:10]}",
        highlight=False,
        soft_wrap=True,
    )
    console.print(f"    {escape(finding['description'])}", highlight=False, soft_wrap=True)


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
