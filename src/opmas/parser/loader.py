"""Loads program parser files: the shipped programs/*.yaml, then each user directory.

A user file with the same file name or parser name as a shipped one replaces it; a user
parser claiming a shipped parser's program takes that program over. Every problem is
collected with its file and line (`check_parser_dirs`), so one run reports them all.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import msgspec
import re2  # type: ignore[import-untyped]  # google-re2 ships no type hints
import yaml

from opmas.errors import ConfigError
from opmas.parser.compiled import CompiledParser, CompiledPattern
from opmas.parser.regexes import Matcher, compile_regex, literals
from opmas.parser.spec import ParserSpec, PatternSpec
from opmas.yaml_lines import Where, error_path, node_line

SHIPPED_DIR = Path(__file__).parent / "programs"
_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")


class ParserFilesError(ConfigError):
    """Parser files are wrong; `errors` holds each problem with its file and line."""

    def __init__(self, errors: list[ConfigError]) -> None:
        listing = "\n".join(str(error) for error in errors)
        super().__init__(f"{len(errors)} error(s) in parser files:\n{listing}")
        self.errors = errors


def load_parsers(dirs: Sequence[Path] = (), *, shipped: bool = True) -> list[CompiledParser]:
    """The active parsers: shipped ones (if `shipped`) overridden by those in `dirs`.

    Raises:
        ParserFilesError: any file is unreadable, invalid YAML, off-schema, or has a bad regex.
    """
    parsers, errors = _load(dirs, shipped)
    if errors:
        raise ParserFilesError(errors)
    return parsers


def check_parser_dirs(dirs: Sequence[Path] = (), *, shipped: bool = True) -> list[ConfigError]:
    """Every problem in the parser files, each with its file and line; empty when all is well."""
    return _load(dirs, shipped)[1]


def _load(dirs: Sequence[Path], shipped: bool) -> tuple[list[CompiledParser], list[ConfigError]]:
    errors: list[ConfigError] = []
    files: list[tuple[Path, bool]] = []
    if shipped:
        files.extend((path, True) for path in _yaml_files(SHIPPED_DIR, errors))
    for directory in dirs:
        files.extend((path, False) for path in _yaml_files(directory, errors))
    loaded: list[tuple[CompiledParser, yaml.Node]] = []
    for path, is_shipped in files:
        parser, node = _read(path, is_shipped, errors)
        if parser is not None and node is not None:
            loaded.append((parser, node))
    active = _select(loaded, errors)
    _link(active, errors)
    return [parser for parser, _ in active], errors


def _yaml_files(directory: Path, errors: list[ConfigError]) -> list[Path]:
    if not directory.is_dir():
        errors.append(
            ConfigError(
                "parser directory not found (set by OPMAS_PARSER_DIRS)", path=str(directory)
            )
        )
        return []
    return sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def _read(
    path: Path, shipped: bool, errors: list[ConfigError]
) -> tuple[CompiledParser | None, yaml.Node | None]:
    try:
        text = path.read_text(encoding="utf-8")
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except (OSError, UnicodeDecodeError) as exc:
        errors.append(ConfigError(f"cannot read parser file: {exc}", path=str(path)))
        return None, None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        errors.append(ConfigError(f"invalid YAML: {exc}", path=str(path), line=line))
        return None, None
    if node is None:
        errors.append(ConfigError("parser file is empty", path=str(path), line=1))
        return None, None
    try:
        spec = msgspec.convert(data, ParserSpec)
    except msgspec.ValidationError as exc:
        message = str(exc)
        errors.append(
            ConfigError(message, path=str(path), line=node_line(node, error_path(message)))
        )
        return None, None
    return _compile(spec, path, shipped, node, errors), node  # checked further even if bad


def _compile(
    spec: ParserSpec, path: Path, shipped: bool, node: yaml.Node, errors: list[ConfigError]
) -> CompiledParser:
    def fail(message: str, where: Where) -> None:
        errors.append(ConfigError(message, path=str(path), line=node_line(node, where)))

    if not _NAME.match(spec.name):
        fail("name must be lower-case letters, digits and _", ["name"])
    if spec.version < 1:
        fail("version must be 1 or more", ["version"])
    if not spec.programs:
        fail("programs must name at least one program", ["programs"])
    prefix = _regex(spec.prefix, shipped, ["prefix"], fail) if spec.prefix else None
    parser = CompiledParser(spec, path, shipped, prefix)
    for index, pattern in enumerate(spec.patterns):
        compiled = _pattern(index, pattern, shipped, fail)
        if compiled is not None:
            parser.patterns.append(compiled)
    parser.index()
    return parser


def _pattern(index: int, spec: PatternSpec, shipped: bool, fail: Any) -> CompiledPattern | None:
    where: Where = ["patterns", index]
    matcher = _regex(spec.regex, shipped, [*where, "regex"], fail)
    if matcher is None:
        return None
    groups = set(matcher.groupindex)
    if "event" in groups:
        fail("group name 'event' is reserved", [*where, "regex"])
    for placeholder in _PLACEHOLDER.findall(spec.event):
        if placeholder not in groups and placeholder != "program":
            fail(f"event uses {{{placeholder}}} but the regex has no such group", [*where, "event"])
    for key, group in (("kv", spec.kv), ("delegate", spec.delegate and spec.delegate.group)):
        if group is not None and group not in groups:
            fail(f"{key} names group {group!r} but the regex has no such group", [*where, key])
    rules: list[tuple[str, Matcher, str]] = []
    for number, rule in enumerate(spec.domain_rules):
        rule_matcher = _regex(rule.match, shipped, [*where, "domain_rules", number, "match"], fail)
        if rule_matcher is not None:
            rules.append((rule.field, rule_matcher, rule.domain))
    lead, required = literals(spec.regex)
    return CompiledPattern(index, spec, matcher, lead, required, rules, "{" in spec.event)


def _regex(pattern: str, shipped: bool, where: Where, fail: Any) -> Matcher | None:
    try:
        return compile_regex(pattern, shipped=shipped)
    except re.error as exc:
        fail(f"invalid regex: {exc}", where)
    except re2.error as exc:
        fail(f"regex is not RE2-compatible (user patterns run on RE2): {exc}", where)
    return None


def _select(
    loaded: list[tuple[CompiledParser, yaml.Node]], errors: list[ConfigError]
) -> list[tuple[CompiledParser, yaml.Node]]:
    """Later files replace earlier ones of the same file name or parser name."""
    chosen: dict[str, tuple[CompiledParser, yaml.Node]] = {}
    for parser, node in loaded:
        for key in list(chosen):
            other = chosen[key][0]
            if other.path.stem == parser.path.stem or other.spec.name == parser.spec.name:
                if other.path.parent == parser.path.parent:
                    errors.append(_clash(parser, node, f"parser name also used by {other.path}"))
                del chosen[key]
        chosen[str(parser.path)] = (parser, node)
    active = list(chosen.values())
    _check_programs(active, errors)
    return active


def _check_programs(
    active: Iterable[tuple[CompiledParser, yaml.Node]], errors: list[ConfigError]
) -> None:
    owners: dict[str, CompiledParser] = {}
    for parser, node in active:
        for program in parser.spec.programs:
            other = owners.get(program)
            if other is not None and other.shipped == parser.shipped:
                errors.append(_clash(parser, node, f"program {program!r} also in {other.path}"))
            owners[program] = parser if other is None or other.shipped else other


def _clash(parser: CompiledParser, node: yaml.Node, message: str) -> ConfigError:
    return ConfigError(message, path=str(parser.path), line=node_line(node, ["name"]))


def _link(active: list[tuple[CompiledParser, yaml.Node]], errors: list[ConfigError]) -> None:
    by_name = {parser.spec.name: parser for parser, _ in active}
    for parser, node in active:
        for pattern in parser.patterns:
            if pattern.spec.delegate is None:
                continue
            target = by_name.get(pattern.spec.delegate.parser)
            if target is None or target is parser:
                where: Where = ["patterns", pattern.index, "delegate", "parser"]
                message = f"delegate parser {pattern.spec.delegate.parser!r} not found"
                errors.append(
                    ConfigError(message, path=str(parser.path), line=node_line(node, where))
                )
            pattern.delegate = target
