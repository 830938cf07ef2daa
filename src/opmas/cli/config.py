"""`opmas config show`: the effective configuration, secrets masked."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
import yaml
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from opmas.cli.context import load_settings
from opmas.settings import Settings, masked

app = typer.Typer(help="Inspect the configuration.", no_args_is_help=True)


def _flatten(
    data: dict[str, Any], prefix: str = "", model: Any = Settings
) -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in data.items():
        name = f"{prefix}{key}"
        field = model.model_fields.get(key)
        nested = getattr(field, "annotation", None)
        if isinstance(value, dict) and isinstance(nested, type) and issubclass(nested, BaseModel):
            rows += _flatten(value, f"{name}__", nested)
        else:  # a setting whose value is a map (OPMAS_SYSLOG_TLS_PEERS) is one variable
            rows.append((name, json.dumps(value) if isinstance(value, dict) else value))
    return rows


@app.command()
def show(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    as_yaml: Annotated[bool, typer.Option("--yaml", help="Print YAML (a config file).")] = False,
) -> None:
    """Print the effective configuration (env > file > defaults), secrets masked."""
    settings = load_settings()
    data = masked(settings)
    if as_json:
        typer.echo(json.dumps(data, indent=2))
        return
    if as_yaml:
        typer.echo(yaml.safe_dump(data, sort_keys=False))
        return
    table = Table("variable", "value", "description")
    for name, value in _flatten(data):
        table.add_row(f"OPMAS_{name.upper()}", str(value), _description(name))
    Console().print(table)


def _description(dotted: str) -> str:
    model: Any = Settings
    field = None
    for part in dotted.split("__"):
        field = model.model_fields.get(part)
        if field is None:
            return ""
        model = field.annotation
    return (field.description or "") if field else ""
