"""What every command starts from: the console and the validated settings; a start-up or
configuration error ends as one line (the traceback too with --debug or OPMAS_LOG_LEVEL=debug).
"""

from __future__ import annotations

import contextlib
import os
import traceback
from typing import NoReturn

import typer
from pydantic import ValidationError
from rich.markup import escape

from opmas import environment
from opmas.cli.console import WideWhenPipedConsole
from opmas.errors import ConfigError, OpmasError
from opmas.logs import configure_logging
from opmas.settings import Settings, config_file_path
from opmas.workers import CHILD_ENV, FATAL_MARK

console = WideWhenPipedConsole()  # piped: wide, never cut to 80 columns
err_console = WideWhenPipedConsole(stderr=True)


CONFIG_EXIT = 2
"""Exit status of a configuration or start-up error (bad setting, port in use, data dir)."""


def debugging() -> bool:
    """Whether tracebacks are wanted: `opmas --debug` or OPMAS_LOG_LEVEL=debug."""
    return os.environ.get("OPMAS_LOG_LEVEL", "").strip().lower() == "debug"


def fail_startup(
    message: str, exc: BaseException | None = None, *, label: str = "error", code: int = 1
) -> NoReturn:
    """Exit with `message` as one line on stderr, after the traceback of `exc` when debugging.

    In a child of `opmas up` a configuration error goes to stdout after FATAL_MARK instead,
    so that the parent stops and says it (once) rather than restarting the child.
    """
    if exc is not None and debugging():
        traceback.print_exception(exc)
    if os.environ.get(CHILD_ENV) and (exc is None or isinstance(exc, ConfigError)):
        print(FATAL_MARK + " ".join(message.split()), flush=True)  # noqa: T201 - to the parent
    else:
        err_console.print(f"[red]{label}:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def load_settings() -> Settings:
    """Settings from env and file, or one line naming the variable and exit code 2; warns
    (one line each) about `OPMAS_*` variables that are no setting."""
    try:
        settings = Settings()
    except ValidationError as exc:
        config_file = None
        with contextlib.suppress(ConfigError):
            config_file = config_file_path()
        why = environment.explain(exc, Settings, os.environ, config_file)
        fail_startup(why, exc, label="configuration error", code=CONFIG_EXIT)
    except OpmasError as exc:
        fail_startup(str(exc), exc, label="configuration error", code=CONFIG_EXIT)
    configure_logging(settings.log_level, settings.log_format)
    if not os.environ.get(CHILD_ENV):  # the parent warned already
        for warning in environment.unknown_variables(Settings, os.environ):
            err_console.print(f"[yellow]warning:[/yellow] {escape(warning)}", soft_wrap=True)
    return settings
