"""`opmas explain`: how a line is parsed, offline, like `cscli explain` or `wazuh-logtest`."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.markup import escape

from opmas.agents.engine import explain_rules
from opmas.agents.pack import load_pack
from opmas.cli.context import console, err_console, load_settings
from opmas.errors import ConfigError
from opmas.messages import encode
from opmas.parser.engine import ParserEngine


def _lines(line: str | None, file: Path | None) -> list[str]:
    if line is not None and file is not None:
        raise typer.BadParameter("give a LINE or --file, not both")
    if line is not None:
        return [line]
    if file is None:
        raise typer.BadParameter("give a LINE, or --file F (`-` reads standard input)")
    raw = sys.stdin.buffer.read() if str(file) == "-" else file.read_bytes()
    text = raw.decode("utf-8", errors="replace")
    return [each for each in text.splitlines() if each.strip() and not each.startswith("#")]


def explain(
    line: Annotated[str | None, typer.Argument(help="One log line, quoted.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A log file; `-` for standard input.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One parsed event per line (JSON lines), in order.")
    ] = False,
) -> None:
    """Show the header fields, the parser chosen and why, the fields and the domain of each
    line, and the rules it matches or counts towards. Works offline: no server needed."""
    settings = load_settings()
    lines = _lines(line, file)
    try:
        engine = ParserEngine.from_dirs(settings.parser_dirs)
    except ConfigError as exc:
        err_console.print(f"[red]parser files:[/red] {exc}")
        raise typer.Exit(2) from exc
    try:
        rules = load_pack()
    except ConfigError as exc:
        err_console.print(f"[red]rule files:[/red] {exc}")
        raise typer.Exit(2) from exc
    for index, text in enumerate(lines):
        explanation = engine.explain(text)
        matches = explain_rules(explanation.event, rules)
        if as_json:
            data = msgspec.to_builtins(explanation.event)
            data["rules"] = [msgspec.to_builtins(m) for m in matches]
            sys.stdout.buffer.write(encode(data) + b"\n")
            continue
        if index:
            console.rule()
        console.print(escape(explanation.render()), highlight=False, soft_wrap=True)
        console.print("rules:", highlight=False)
        for match in matches:
            console.print(f"  {escape(match.render())}", highlight=False, soft_wrap=True)
        if not matches:
            console.print("  none of the rules uses this event", highlight=False)
