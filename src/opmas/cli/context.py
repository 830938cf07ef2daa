"""What every command starts from: the console and the validated settings."""

from __future__ import annotations

import typer
from pydantic import ValidationError
from rich.console import Console

from opmas.errors import OpmasError
from opmas.logs import configure_logging
from opmas.settings import Settings

console = Console()
err_console = Console(stderr=True)


def load_settings() -> Settings:
    """Settings from env and file, or a clear message and exit code 2."""
    try:
        settings = Settings()
    except (ValidationError, OpmasError) as exc:
        err_console.print(f"[red]configuration error:[/red] {exc}")
        raise typer.Exit(2) from exc
    configure_logging(settings.log_level, settings.log_format)
    return settings
