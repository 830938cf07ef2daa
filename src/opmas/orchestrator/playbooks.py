"""Playbooks: which findings or incidents they answer (`trigger_type`, `trigger_conditions`)
and how their steps' `action_config` is filled from the finding that triggered them.

Pure functions, plus `ensure_default_playbooks`, which loads the shipped YAML pack into the
database the first time (and a playbook added by an upgrade on the next start).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.agents.pack import SEVERITY_ORDER
from opmas.errors import ConfigError
from opmas.models import OpmasConfig, Playbook, PlaybookStep

PACK_SEEN_KEY = "playbooks.pack_loaded"  # opmas_config: shipped playbooks loaded once
ACTION_TYPES = ("ssh_command", "webhook", "notify")


class StepSpec(BaseModel):
    """One step of a playbook file."""

    model_config = ConfigDict(extra="forbid")

    action_type: Literal["ssh_command", "webhook", "notify"]
    action_config: dict[str, Any] = Field(default_factory=dict)
    description: str | None = None
    timeout_seconds: int = Field(30, gt=0)
    retry_count: int = Field(0, ge=0, le=10)
    execution_mode: Literal["manual", "auto"] | None = None
    auto_min_trust: Literal["address", "verified"] | None = None  # None: the playbook's


class Conditions(BaseModel):
    """When a playbook applies, besides its trigger type; every given field must hold."""

    model_config = ConfigDict(extra="forbid")

    min_severity: Literal["info", "warning", "error", "critical"] | None = None
    devices: list[str] = Field(default_factory=list)  # hostnames or IPs
    agents: list[str] = Field(default_factory=list)  # WiFiAgent...
    domains: list[str] = Field(default_factory=list)
    details: dict[str, Any] = Field(default_factory=dict)  # field: value or [values]


class PlaybookSpec(BaseModel):
    """One playbook of a file."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    description: str | None = None
    trigger_type: str = Field(min_length=1, max_length=50)
    trigger_conditions: Conditions = Field(default_factory=Conditions)
    execution_mode: Literal["manual", "auto"] = "manual"
    # an auto step runs alone only on evidence this trusted (None: address); else it waits
    auto_min_trust: Literal["address", "verified"] | None = None
    is_active: bool = True
    steps: list[StepSpec] = Field(min_length=1)


class PlaybookFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    playbooks: list[PlaybookSpec]


def load_file(text: str, path: str) -> list[PlaybookSpec]:
    """The playbooks of one YAML file. Raises ConfigError naming the file and field."""
    try:
        data = yaml.safe_load(text)
        return PlaybookFile.model_validate(data).playbooks
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", path=path) from exc
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise ConfigError(f"{where}: {first['msg']}", path=path) from exc


def default_pack() -> list[PlaybookSpec]:
    """The playbooks shipped with OPMAS."""
    folder = resources.files("opmas.orchestrator") / "playbooks"
    specs: list[PlaybookSpec] = []
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".yaml"):
            specs.extend(load_file(entry.read_text(), str(Path("playbooks") / entry.name)))
    return specs


async def save_playbook(session: AsyncSession, spec: PlaybookSpec) -> Playbook:
    """Insert `spec` with its steps (flush only)."""
    playbook = Playbook(
        name=spec.name,
        description=spec.description,
        trigger_type=spec.trigger_type,
        trigger_conditions=spec.trigger_conditions.model_dump(exclude_defaults=True),
        execution_mode=spec.execution_mode,
        auto_min_trust=spec.auto_min_trust,
        is_active=spec.is_active,
    )
    session.add(playbook)
    await session.flush()
    for number, step in enumerate(spec.steps, start=1):
        session.add(PlaybookStep(playbook_id=playbook.id, step_number=number, **step.model_dump()))
    await session.flush()
    return playbook


async def ensure_default_playbooks(session: AsyncSession) -> list[str]:
    """Load shipped playbooks never loaded before; return their names (flush only)."""
    seen_row = await session.scalar(select(OpmasConfig).where(OpmasConfig.key == PACK_SEEN_KEY))
    seen = set(seen_row.value) if seen_row is not None else set()
    existing = set((await session.scalars(select(Playbook.name))).all())
    added: list[str] = []
    for spec in default_pack():
        if spec.name in seen:
            continue
        seen.add(spec.name)
        if spec.name not in existing:
            await save_playbook(session, spec)
            added.append(spec.name)
    await session.execute(
        insert(OpmasConfig)
        .values(key=PACK_SEEN_KEY, value=sorted(seen), description="shipped playbooks loaded")
        .on_conflict_do_update(index_elements=["key"], set_={"value": sorted(seen)})
    )
    return added


def matches(conditions: Mapping[str, Any] | None, context: Mapping[str, Any]) -> bool:
    """True when the finding (as a template context, see `finding_context`) meets them."""
    cond = Conditions.model_validate(conditions or {})
    if cond.min_severity is not None:
        severity = context.get("severity")
        if severity not in SEVERITY_ORDER or SEVERITY_ORDER.index(
            str(severity)
        ) < SEVERITY_ORDER.index(cond.min_severity):
            return False
    if cond.devices and not {context.get("hostname"), context.get("device_ip")} & set(cond.devices):
        return False
    if cond.agents and context.get("agent_name") not in cond.agents:
        return False
    if cond.domains and context.get("domain") not in cond.domains:
        return False
    for name, wanted in cond.details.items():
        allowed = wanted if isinstance(wanted, list) else [wanted]
        if context.get(name) not in allowed:
            return False
    return True


class MissingField(ConfigError):
    """A step names a placeholder the finding does not provide."""


class _Strict(dict[str, Any]):
    def __missing__(self, key: str) -> Any:
        raise MissingField(f"the finding has no {key!r} for this step")


_FORMATTER = string.Formatter()


def render(value: Any, context: Mapping[str, Any]) -> Any:
    """`value` with `{field}` placeholders filled from `context`, recursively.

    A string that is exactly one placeholder takes the field's own value (a number stays a
    number). Raises MissingField when a placeholder has no value.
    """
    if isinstance(value, str):
        fields = [name for _, name, _, _ in _FORMATTER.parse(value) if name is not None]
        if len(fields) == 1 and value == "{" + fields[0] + "}":
            return _Strict(context)[fields[0]]
        return value.format_map(_Strict(context)) if fields else value
    if isinstance(value, Mapping):
        return {key: render(item, context) for key, item in value.items()}
    if isinstance(value, Sequence):
        return [render(item, context) for item in value]
    return value
