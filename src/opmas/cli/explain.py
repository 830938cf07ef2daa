"""`opmas explain`: how a line is parsed, offline, like `cscli explain` or `wazuh-logtest`."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import msgspec
import typer
from rich.markup import escape

from opmas.agents.engine import RuleExplainer
from opmas.agents.offline import batch_gc, iter_lines
from opmas.agents.pack import load_pack
from opmas.cli.context import console, err_console, load_settings
from opmas.errors import ConfigError
from opmas.messages import encode
from opmas.parser.engine import ParserEngine


def _lines(line: str | None, file: Path | None) -> Iterator[str]:
    """The LINE, or the lines of the file read as a stream (comments and blanks skipped)."""
    if line is not None and file is not None:
        raise typer.BadParameter("give a LINE or --file, not both")
    if line is not None:
        return iter([line])
    if file is None:
        raise typer.BadParameter("give a LINE, or --file F (`-` reads standard input)")
    return iter_lines(sys.stdin.buffer if str(file) == "-" else file)


def _enrolled(pairs: list[str]) -> dict[str, str]:
    """`HOST=IP` options as the enrolled devices' hostname -> registered IP."""
    enrolled: dict[str, str] = {}
    for pair in pairs:
        host, sep, ip = pair.partition("=")
        if not sep or not host or not ip:
            raise typer.BadParameter(f"{pair!r}: expected HOST=IP", param_hint="--enrolled")
        enrolled[host] = ip
    return enrolled


def explain(
    line: Annotated[str | None, typer.Argument(help="One log line, quoted.")] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="A log file; `-` for standard input.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One parsed event per line (JSON lines), in order.")
    ] = False,
    source_ip: Annotated[
        str | None, typer.Option("--source-ip", help="As if the line came from this address.")
    ] = None,
    enrolled: Annotated[
        list[str] | None,
        typer.Option(
            "--enrolled",
            metavar="HOST=IP",
            help="Suppose HOST is an enrolled device registered at IP (repeatable).",
        ),
    ] = None,
    token_device: Annotated[
        str | None,
        typer.Option(
            "--token-device",
            help="As if sent with an ingest token (or TLS certificate) bound to this device.",
        ),
    ] = None,
) -> None:
    """Show the header fields, the parser chosen and why, the fields and the domain of each
    line, its trust, and the rules it matches or counts towards. Works offline: no server
    needed, so a line is `untrusted` unless --token-device, or --source-ip with --enrolled."""
    settings = load_settings()
    lines = _lines(line, file)
    try:
        engine = ParserEngine.from_dirs(settings.parser_dirs)
    except ConfigError as exc:
        err_console.print(f"[red]parser files:[/red] {exc}")
        raise typer.Exit(2) from exc
    engine.enrolled = _enrolled(enrolled or [])
    try:
        rules = load_pack()
    except ConfigError as exc:
        err_console.print(f"[red]rule files:[/red] {exc}")
        raise typer.Exit(2) from exc
    explainer = RuleExplainer(rules)
    with batch_gc():
        _explain_each(lines, engine, explainer, as_json, source_ip, token_device)


def _explain_each(
    lines: Iterator[str],
    engine: ParserEngine,
    explainer: RuleExplainer,
    as_json: bool,
    source_ip: str | None,
    token_device: str | None,
) -> None:
    """Explain each line in turn: as JSON lines, or as a report per line."""
    out = sys.stdout.buffer
    for index, text in enumerate(lines):
        explanation = engine.explain(text, source_ip=source_ip, bound_hostname=token_device)
        matches = explainer.explain(explanation.event)
        if as_json:
            data = msgspec.to_builtins(explanation.event)
            data["trust_reason"] = explanation.trust_reason
            data["rules"] = [msgspec.to_builtins(m) for m in matches]
            out.write(encode(data) + b"\n")
            continue
        if index:
            console.rule()
        console.print(escape(explanation.render()), highlight=False, soft_wrap=True)
        console.print("rules:", highlight=False)
        for match in matches:
            console.print(f"  {escape(match.render())}", highlight=False, soft_wrap=True)
        if not matches:
            console.print("  none of the rules uses this event", highlight=False)
