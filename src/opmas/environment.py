"""How settings are read from `OPMAS_*` variables: lists also comma-separated, unknown names
warned about with the closest known one, and a refused value explained in one line that names
its variable (or its key in the bootstrap file).
"""

from __future__ import annotations

import difflib
import json
import types
import typing
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import EnvSettingsSource

from opmas.errors import ConfigError

PREFIX = "OPMAS_"
NESTED = "__"
OTHER_VARIABLES = frozenset(
    {
        "OPMAS_CHILD_OF",  # set by `opmas up` for its child processes (workers.CHILD_ENV)
        "OPMAS_NOTIFY_SECRET",  # `opmas notify channel add`
        "OPMAS_REGEN_GOLDEN",  # tests: rewrite the golden parser files
    }
)
OTHER_PREFIXES = ("OPMAS_TEST_", "OPMAS_CI_")  # test and CI selectors
SECRET_FIELDS = frozenset({"secret_key", "database_url", "nats_url"})


class OpmasEnvSource(EnvSettingsSource):
    """The environment source of `Settings`: a list setting takes JSON (`["a","b"]`) or plain
    comma-separated text (`a,b`, or `a` alone); any other undecodable value is a ConfigError
    naming its variable, instead of pydantic-settings' traceback."""

    def decode_complex_value(self, field_name: str, field: FieldInfo | None, value: Any) -> Any:
        try:
            # pydantic-settings itself passes None for a field inside a dict or raw type
            return super().decode_complex_value(field_name, field, value)  # type: ignore[arg-type]
        except ValueError as exc:
            text = str(value).strip()
            if field is not None and _is_list(field.annotation) and not text.startswith("["):
                return [item.strip() for item in text.split(",") if item.strip()]
            name = self._variable(field_name, value)
            if field is not None and _is_list(field.annotation):
                hint = "give a JSON list or comma-separated values"
            else:
                hint = f"give a JSON object, or set single fields as {name}{NESTED}FIELD"
            raise ConfigError(f"{name} is not valid JSON ({exc}): {hint}") from None

    def _variable(self, field_name: str, value: Any) -> str:
        """The variable that held `value` for `field_name` (a nested one ends in __NAME)."""
        top = f"{self.env_prefix}{field_name}".lower()
        for name, held in self.env_vars.items():
            low = name.lower()
            if held == value and (low == top or low.endswith(f"{NESTED}{field_name.lower()}")):
                return name.upper()
        return top.upper()


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(arg) for arg in typing.get_args(annotation))
    return origin in (list, tuple, set, frozenset)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    return (
        annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
    )


def known_variables(model: type[BaseModel], prefix: str = PREFIX) -> Iterator[str]:
    """Every variable `model` reads: `OPMAS_<FIELD>`, and `OPMAS_<GROUP>__<FIELD>` for groups."""
    for name, field in model.model_fields.items():
        variable = f"{prefix}{name.upper()}"
        yield variable
        sub = _model_of(field.annotation)
        if sub is not None:
            yield from known_variables(sub, f"{variable}{NESTED}")


def unknown_variables(model: type[BaseModel], environ: Mapping[str, str]) -> list[str]:
    """One warning per `OPMAS_*` variable nothing reads, with the closest known name."""
    known = set(known_variables(model))
    warnings = []
    for name in sorted(environ):
        upper = name.upper()
        if not upper.startswith(PREFIX) or upper in known or upper in OTHER_VARIABLES:
            continue
        if upper.startswith(OTHER_PREFIXES):
            continue
        close = _closest(upper, known)
        hint = f"did you mean {close}?" if close else "`opmas config show` lists the settings"
        warnings.append(f"{name} is not an OPMAS setting and is ignored ({hint})")
    return warnings


def explain(
    exc: ValidationError,
    model: type[BaseModel],
    environ: Mapping[str, str],
    config_file: Path | None,
) -> str:
    """`exc` as one line naming each refused variable (or file key) and why."""
    env = {name.upper() for name in environ}
    known = set(known_variables(model))
    return "; ".join(_explain_one(error, env, known, config_file) for error in exc.errors())


def _explain_one(error: Any, env: set[str], known: set[str], config_file: Path | None) -> str:
    message = str(error["msg"]).removeprefix("Value error, ")
    path = [part for part in error["loc"] if isinstance(part, str)]
    if not path:
        return message
    where = _where(path, env, config_file)
    if error["type"] == "extra_forbidden":
        close = _closest(PREFIX + NESTED.join(p.upper() for p in path), known)
        key = close.removeprefix(PREFIX).lower().replace(NESTED, ".") if close else None
        return f"{where} is not a setting" + (f" (did you mean {key}?)" if key else "")
    shown = error.get("input")
    if path[0] in SECRET_FIELDS or isinstance(shown, dict | list) or shown is None:
        return f"{where}: {message}"
    name, _, place = where.partition(" in ")
    value = json.dumps(shown if isinstance(shown, int | float) else str(shown))[:80]
    return f"{name}={value}{' in ' if place else ''}{place}: {message}"


def _where(path: list[str], env: set[str], config_file: Path | None) -> str:
    """The variable that set `path` or, when none did, its key in the bootstrap file."""
    names = [PREFIX + NESTED.join(p.upper() for p in path[: i + 1]) for i in range(len(path))]
    if any(name in env for name in names) or config_file is None:
        return names[-1]
    return f"{'.'.join(path)} in {config_file}"


def _closest(variable: str, known: set[str]) -> str | None:
    """The known name most like `variable`, compared without the common `OPMAS_`."""
    bare = {name.removeprefix(PREFIX): name for name in known}
    close = difflib.get_close_matches(variable.removeprefix(PREFIX), bare, n=1, cutoff=0.6)
    return bare[close[0]] if close else None
