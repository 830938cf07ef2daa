"""The rule pack: YAML rule files (schema, loader with file and line errors) and the builder.

A pack file holds the rules of one agent:

    agent: SecurityAgent        # WiFiAgent | SecurityAgent | HealthAgent | WanAgent
    domain: security            # the logs.parsed.<domain> its rules read by default
    rules:
      - name: ssh-brute-force-fast
        type: THRESHOLD
        ...

Every problem in every file is collected with its file and line, then raised at once as a
`RulePackError` (a ConfigError), so `opmas rules test` reports them all in one run.
"""

from __future__ import annotations

import importlib
import re
import string
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import msgspec
import yaml

from opmas.agents.rules import PatternRule, ThresholdRule
from opmas.agents.rules.conditions import compile_condition, field_getter
from opmas.agents.rules.types import Rule
from opmas.errors import ConfigError
from opmas.yaml_lines import Where, error_path, node_line

SHIPPED_DIR = Path(__file__).parent / "pack"
AGENT_DOMAINS = {
    "WiFiAgent": "wifi",
    "SecurityAgent": "security",
    "HealthAgent": "health",
    "WanAgent": "wan",
}
DOMAINS = ("wifi", "security", "health", "wan", "other")
RuleType = Literal[
    "PATTERN", "THRESHOLD", "CORRELATION", "STATISTICAL", "MACHINE_LEARNING", "FLEET"
]
SEVERITY_ORDER = ("info", "warning", "error", "critical")
_SEVERITY_ALIASES = {
    "info": "info",
    "low": "warning",
    "medium": "warning",
    "warning": "warning",
    "high": "error",
    "error": "error",
    "critical": "critical",
}
_LAZY = {  # rule type -> (module, class) of the engines built elsewhere
    "CORRELATION": ("opmas.agents.rules.correlation", "CorrelationRule"),
    "STATISTICAL": ("opmas.agents.rules.statistical", "StatisticalRule"),
    "MACHINE_LEARNING": ("opmas.agents.rules.novelty", "NoveltyRule"),
}
DEFAULT_MAX_KEYS = 100_000
DEFAULT_LEARNING_S = 3600.0  # a MACHINE_LEARNING rule learns each program silently this long
GROUP_S = 3600.0  # a MACHINE_LEARNING rule's findings: one per router and program this long
_NAME = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")
_FINDING_TYPE = re.compile(r"^[A-Z][A-Za-z0-9]*$")


class StepSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One step of a CORRELATION rule: `min_count` events matching `conditions`."""

    name: str | None = None  # for docs only
    conditions: list[dict[str, Any]] = []
    min_count: int = 1
    join_on: list[str] | None = None  # this step's join fields, if not the rule's


class PrecededSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A PATTERN rule's excuse: an event matching these conditions, same key, shortly before."""

    conditions: list[dict[str, Any]]
    within_s: float


class RuleSpec(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """One rule as written in a pack file; `agent`/`domain` default to the file's."""

    name: str
    type: RuleType
    severity: str
    finding_type: str
    description: str
    agent: str | None = None
    domain: str | None = None
    domains: list[str] | None = None  # the domains whose events it reads (default: domain)
    enabled: bool = True
    conditions: list[dict[str, Any]] = []
    group_by: list[str] | None = None
    # THRESHOLD and FLEET (cooldown_s also PATTERN, CORRELATION, STATISTICAL)
    threshold: int | None = None
    window_s: float | None = None
    unless_preceded_by: PrecededSpec | None = None  # PATTERN
    distinct: str | None = None
    cooldown_s: float | None = None
    # FLEET: the threshold must be reached on at least this many distinct routers
    min_routers: int | None = None
    # CORRELATION
    steps: list[StepSpec] | None = None
    join_on: list[str] | None = None
    # STATISTICAL
    bucket_s: float | None = None
    z_threshold: float | None = None
    warmup_buckets: int | None = None
    min_count: int | None = None
    # MACHINE_LEARNING
    learning_s: float | None = None
    learning_events: int | None = None  # per program (key novelty: per rule), with learning_s
    group_s: float | None = None  # new templates of one router and program within it: 1 finding
    novelty: Literal["template", "key"] | None = None
    hold_s: float | None = None  # MACHINE_LEARNING: how long a new kind waits for an earlier one
    examples: list[str] = []
    # set by the loader
    path: str | None = None
    line: int | None = None

    @property
    def reads(self) -> tuple[str, ...]:
        """The event domains this rule consumes."""
        return tuple(self.domains) if self.domains else (self.domain or "other",)

    def to_dict(self) -> dict[str, Any]:
        """The rule as plain data (for `rules show --json` and `agent_rules`)."""
        data: dict[str, Any] = msgspec.to_builtins(self)
        return {k: v for k, v in data.items() if v is not None and k not in ("path", "line")}


class PackFile(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    agent: str | None = None
    domain: str | None = None
    rules: list[RuleSpec] = []


class RulePackError(ConfigError):
    """Rule files are wrong; `errors` holds each problem with its file and line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        listing = "\n".join(str(error) for error in errors)
        super().__init__(f"{len(errors)} error(s) in rule files:\n{listing}")
        self.errors = errors


@dataclass
class _Checker:
    path: Path
    node: yaml.Node | None  # None: the rule is not from a file, errors carry no line
    errors: list[ConfigError] = field(default_factory=list)

    def fail(self, message: str, where: Where) -> None:
        line = node_line(self.node, where) if self.node is not None else None
        self.errors.append(ConfigError(message, path=str(self.path), line=line))


def load_pack(dirs: Sequence[Path] = (), *, shipped: bool = True) -> list[RuleSpec]:
    """The rules of the shipped pack (if `shipped`) and of the YAML files in `dirs`.

    A user rule with the name of a shipped one replaces it.

    Raises:
        RulePackError: a file is unreadable, invalid YAML, off-schema, or a rule is wrong.
    """
    rules, errors = _load(dirs, shipped)
    if errors:
        raise RulePackError(errors)
    return rules


def check_pack(dirs: Sequence[Path] = (), *, shipped: bool = True) -> list[ConfigError]:
    """Every problem in the rule files, each with file and line; empty when all is well."""
    return _load(dirs, shipped)[1]


def load_file(path: Path) -> tuple[list[RuleSpec], list[ConfigError]]:
    """The rules of one file and the problems found in it."""
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        return [], [ConfigError(f"cannot read rule file: {exc}", path=str(path))]
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        return [], [ConfigError(f"invalid YAML: {exc}", path=str(path), line=line)]
    if node is None:
        return [], [ConfigError("rule file is empty", path=str(path), line=1)]
    checker = _Checker(path, node)
    rules: list[RuleSpec] = []
    raw_rules = data.get("rules") if isinstance(data, dict) else None
    header = {k: v for k, v in data.items() if k != "rules"} if isinstance(data, dict) else data
    try:
        pack = msgspec.convert(header, PackFile)
    except msgspec.ValidationError as exc:
        checker.fail(str(exc), error_path(str(exc)))
        return [], checker.errors
    if pack.agent is not None and pack.agent not in AGENT_DOMAINS:
        checker.fail(
            f"unknown agent {pack.agent!r}; expected one of {list(AGENT_DOMAINS)}", ["agent"]
        )
    if not isinstance(raw_rules, list):
        checker.fail("`rules` must be a list of rules", ["rules"])
        return [], checker.errors
    for index, raw in enumerate(raw_rules):  # one rule at a time: every bad rule is reported
        where: Where = ["rules", index]
        try:
            spec = msgspec.convert(raw, RuleSpec)
        except msgspec.ValidationError as exc:
            checker.fail(f"rule {index + 1}: {exc}", where + error_path(str(exc)))
            continue
        if isinstance(raw, dict) and ({"path", "line"} & set(raw)):
            checker.fail(f"rule {index + 1}: unknown field `path` or `line`", where)
            continue
        spec.agent = spec.agent or pack.agent
        spec.domain = spec.domain or pack.domain or AGENT_DOMAINS.get(spec.agent or "")
        spec.path, spec.line = str(path), node_line(node, where)
        if _check_rule(spec, checker, where):
            rules.append(spec)
    return rules, checker.errors


def check_rule_data(data: Mapping[str, Any], *, source: str = "agent_rules") -> RuleSpec:
    """A rule given as plain data (a row of `agent_rules`, a request body), checked exactly
    as the loader checks a file, its engine built once so that a rule that cannot run is
    refused when it is saved.

    Raises:
        RulePackError: every problem found, each naming the field.
    """
    try:
        spec = msgspec.convert(dict(data), RuleSpec)
    except msgspec.ValidationError as exc:
        raise RulePackError([ConfigError(f"rule: {exc}", path=source)]) from None
    if {"path", "line"} & set(data):
        raise RulePackError([ConfigError("rule: unknown field `path` or `line`", path=source)])
    spec.domain = spec.domain or AGENT_DOMAINS.get(spec.agent or "")
    checker = _Checker(Path(source), None)
    if not _check_rule(spec, checker, [], need_examples=False):
        raise RulePackError(checker.errors)
    if spec.type == "FLEET":  # no per-router engine; its parts were compiled by the check
        return spec
    try:
        build_rule(spec, max_keys=1)
    except ConfigError as exc:
        raise RulePackError([ConfigError(f"rule {spec.name!r}: {exc}", path=source)]) from None
    return spec


def _load(dirs: Sequence[Path], shipped: bool) -> tuple[list[RuleSpec], list[ConfigError]]:
    errors: list[ConfigError] = []
    files: list[Path] = []
    for directory in ([SHIPPED_DIR] if shipped else []) + list(dirs):
        if not directory.is_dir():
            errors.append(ConfigError("rule directory not found", path=str(directory)))
            continue
        files.extend(sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")))
    by_name: dict[str, RuleSpec] = {}
    for path in files:
        rules, problems = load_file(path)
        errors.extend(problems)
        seen: set[str] = set()
        for rule in rules:
            if rule.name in seen:
                errors.append(
                    ConfigError(
                        f"duplicate rule name {rule.name!r}", path=rule.path, line=rule.line
                    )
                )
            seen.add(rule.name)
            by_name[rule.name] = rule
    return list(by_name.values()), errors


def normalize_severity(value: str) -> str | None:
    """info/warning/error/critical, from those or seed 003's names (any case); None if unknown."""
    return _SEVERITY_ALIASES.get(value.strip().lower())


def _check_rule(
    spec: RuleSpec, checker: _Checker, where: Where, *, need_examples: bool = True
) -> bool:
    before = len(checker.errors)

    def fail(message: str, *at: str | int) -> None:
        checker.fail(f"rule {spec.name!r}: {message}", where + list(at))

    if not _NAME.match(spec.name):
        fail("name must be kebab-case (a-z, 0-9 and -)", "name")
    if spec.agent not in AGENT_DOMAINS:
        fail(
            f"unknown or missing agent {spec.agent!r}; expected one of {list(AGENT_DOMAINS)}",
            "agent",
        )
    for domain in (spec.domain, *(spec.domains or ())):
        if domain not in DOMAINS:
            fail(f"unknown domain {domain!r}; expected one of {list(DOMAINS)}", "domain")
    severity = normalize_severity(spec.severity)
    if severity is None:
        fail(
            f"unknown severity {spec.severity!r}; expected one of {list(SEVERITY_ORDER)}",
            "severity",
        )
    else:
        spec.severity = severity
    if not _FINDING_TYPE.match(spec.finding_type):
        fail("finding_type must be CamelCase (HighAuthFailureRate)", "finding_type")
    try:
        list(string.Formatter().parse(spec.description))
    except ValueError as exc:
        fail(f"description: {exc}", "description")
    for index, condition in enumerate(spec.conditions):
        _check_condition(condition, lambda m, i=index: fail(m, "conditions", i))
    for name in (
        *(spec.group_by or ()),
        *(spec.join_on or ()),
        *([spec.distinct] if spec.distinct else []),
    ):
        try:
            field_getter(name)
        except ConfigError as exc:
            fail(str(exc), "group_by")
    _check_type_fields(spec, fail)
    if need_examples and not spec.examples:
        fail("needs at least one example line", "examples")
    return len(checker.errors) == before


def _check_condition(condition: dict[str, Any], fail: Any) -> None:
    try:
        compile_condition(condition, where="condition")
    except ConfigError as exc:
        fail(str(exc))


_NEEDS: dict[str, tuple[str, ...]] = {
    "PATTERN": (),
    "THRESHOLD": ("threshold", "window_s", "group_by"),
    "CORRELATION": ("steps", "join_on", "window_s"),
    "STATISTICAL": ("group_by", "bucket_s", "z_threshold", "warmup_buckets", "min_count"),
    "MACHINE_LEARNING": ("group_by",),
    "FLEET": ("threshold", "window_s", "group_by", "min_routers"),
}
_ONLY: dict[str, tuple[str, ...]] = {
    "threshold": ("THRESHOLD", "FLEET"),
    "distinct": ("THRESHOLD",),
    "window_s": ("THRESHOLD", "CORRELATION", "FLEET"),
    "cooldown_s": ("PATTERN", "THRESHOLD", "CORRELATION", "STATISTICAL", "FLEET"),
    "min_routers": ("FLEET",),
    "steps": ("CORRELATION",),
    "join_on": ("CORRELATION",),
    "bucket_s": ("STATISTICAL",),
    "z_threshold": ("STATISTICAL",),
    "warmup_buckets": ("STATISTICAL",),
    "min_count": ("STATISTICAL",),
    "learning_s": ("MACHINE_LEARNING",),
    "learning_events": ("MACHINE_LEARNING",),
    "group_s": ("MACHINE_LEARNING",),
    "unless_preceded_by": ("PATTERN",),
    "novelty": ("MACHINE_LEARNING",),
    "hold_s": ("MACHINE_LEARNING",),
}


def _check_type_fields(spec: RuleSpec, fail: Any) -> None:
    for key in _NEEDS[spec.type]:
        if getattr(spec, key) is None:
            fail(f"a {spec.type} rule needs {key!r}", key)
    for key, types in _ONLY.items():
        if getattr(spec, key) is not None and spec.type not in types:
            fail(f"{key!r} does not apply to a {spec.type} rule", key)
    positive = (
        "threshold",
        "window_s",
        "bucket_s",
        "z_threshold",
        "warmup_buckets",
        "min_count",
        "min_routers",
    )
    for key in (*positive, "group_s"):
        value = getattr(spec, key)
        if value is not None and not value > 0:
            fail(f"{key!r} must be positive", key)
    for key in ("cooldown_s", "learning_s", "learning_events", "hold_s"):
        if getattr(spec, key) is not None and getattr(spec, key) < 0:
            fail(f"{key!r} must not be negative", key)
    if spec.unless_preceded_by is not None:
        excuse = spec.unless_preceded_by
        if not excuse.within_s > 0:
            fail("unless_preceded_by.within_s must be positive", "unless_preceded_by")
        for number, condition in enumerate(excuse.conditions):
            _check_condition(
                condition, lambda m, n=number: fail(m, "unless_preceded_by", "conditions", n)
            )
    for index, step in enumerate(spec.steps or ()):
        if step.min_count < 1:
            fail("a step's min_count must be at least 1", "steps", index)
        for number, condition in enumerate(step.conditions):
            _check_condition(
                condition, lambda m, i=index, n=number: fail(m, "steps", i, "conditions", n)
            )


def build_rule(spec: RuleSpec, *, max_keys: int = DEFAULT_MAX_KEYS) -> Rule:
    """The compiled rule of a spec, keeping at most `max_keys` keys.

    Raises:
        ConfigError: the rule is wrong, its type's engine is not available, or it is a FLEET
            rule (those run in the fleet stage: `opmas.agents.fleet`).
    """
    if spec.type == "FLEET":
        raise ConfigError(f"rule {spec.name!r}: a FLEET rule runs in the fleet stage")
    group_by = spec.group_by or ["hostname"]
    excuse = spec.unless_preceded_by
    if spec.type == "PATTERN":
        return PatternRule(
            spec.name,
            spec.conditions,
            group_by=group_by,
            cooldown_s=spec.cooldown_s or 0.0,
            unless_preceded_by=excuse.conditions if excuse else None,
            within_s=excuse.within_s if excuse else 0.0,
            max_keys=max_keys,
        )
    if spec.type == "THRESHOLD":
        return ThresholdRule(
            spec.name,
            spec.conditions,
            threshold=spec.threshold or 0,  # None is refused on load
            window_s=spec.window_s or 0.0,
            group_by=group_by,
            distinct=spec.distinct,
            cooldown_s=spec.cooldown_s,
            max_keys=max_keys,
        )
    engine: Callable[..., Rule] = rule_class(spec.type)
    if spec.type == "CORRELATION":
        steps = [_step(step) for step in spec.steps or ()]
        return engine(
            spec.name,
            steps,
            join_on=spec.join_on,
            window_s=spec.window_s,
            cooldown_s=spec.cooldown_s,
            max_keys=max_keys,
        )
    if spec.type == "STATISTICAL":
        return engine(
            spec.name,
            spec.conditions,
            group_by=group_by,
            bucket_s=spec.bucket_s,
            z_threshold=spec.z_threshold,
            warmup_buckets=spec.warmup_buckets,
            min_count=spec.min_count,
            cooldown_s=spec.cooldown_s,
            max_keys=max_keys,
        )
    learning_s = DEFAULT_LEARNING_S if spec.learning_s is None else spec.learning_s
    return engine(
        spec.name,
        spec.conditions,
        group_by=group_by,
        learning_s=learning_s,
        novelty=spec.novelty or "template",
        max_templates=max(max_keys, 1000),
        learning_events=spec.learning_events or 0,
        group_s=spec.group_s or GROUP_S,
        hold_s=spec.hold_s or 0.0,
    )


def _step(step: StepSpec) -> dict[str, Any]:
    data: dict[str, Any] = {"conditions": step.conditions, "min_count": step.min_count}
    if step.join_on is not None:
        data["join_on"] = step.join_on
    return data


def rule_class(rule_type: str) -> Any:  # a Rule subclass, typed Any: it takes its own kwargs
    """The engine class of CORRELATION, STATISTICAL or MACHINE_LEARNING, imported on demand.

    Raises:
        ConfigError: that engine is not installed yet.
    """
    module_name, class_name = _LAZY[rule_type]
    try:
        module = importlib.import_module(module_name)
        return getattr(module, class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"rule type {rule_type} not available ({exc})") from exc
