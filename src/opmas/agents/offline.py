"""Run rules over a log file offline, like `fail2ban-regex`: event time comes from the lines.

Each line is parsed, each event goes in order to every rule reading its domain; a NEW hit
opens a finding and the UPDATE hits of the same burst fold into it (count and evidence), as
in a running agent (same RuleSet and FindingBook). The file is read as a stream.
"""

from __future__ import annotations

import gc
import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

from opmas.agents.engine import FindingBook, LoadedRule, RuleSet
from opmas.agents.fleet import FleetEvaluator
from opmas.agents.pack import RuleSpec
from opmas.agents.rules.types import RuleHit
from opmas.errors import ConfigError
from opmas.messages import Finding, ParsedEvent, RawLog
from opmas.parser.engine import ParserEngine

_LINE_NAMESPACE = uuid.UUID("0b6c4f0e-2d8a-5c3b-9e1f-7a6d5c4b3a29")
_LINE_SEED = hashlib.sha1(_LINE_NAMESPACE.bytes, usedforsecurity=False)
_VARIANT = {d: "89ab"[int(d, 16) & 3] for d in "0123456789abcdef"}  # RFC 4122 variant bits
LIVE_ONLY = ("domain", "count", "last_seen_utc", "v")  # Finding fields a report leaves out
DEFAULT_HOSTNAME = "local"  # logread lines carry no hostname; device-keyed rules need one
CHUNK_BYTES = 1 << 20  # read this much of a file at a time
BATCH_LINES = 1000  # lines parsed together (the parser's PID join looks within a batch)
MAX_OPEN_FINDINGS = 20_000  # findings held open; past that the least recently hit is written


@dataclass
class RunReport:
    """What a run saw: findings in order, plus counts for the summary."""

    findings: list[dict[str, Any]] = field(default_factory=list)  # unless given to `emit`
    found: int = 0  # findings given out
    lines: int = 0
    events: int = 0
    matches: Counter[str] = field(default_factory=Counter)  # hits per rule
    skipped: dict[str, str] = field(default_factory=dict)  # rule -> why it did not run


@contextmanager
def batch_gc() -> Iterator[None]:
    """The garbage collector set for a long offline run, then as it was (a CLI command enters
    it once parsers and rules are loaded): what is loaded so far is not scanned again, and a
    collection runs per 20,000 new objects, not 700. Collections cost 10-20 % of a run and free
    nothing: events and rule state hold no reference cycles."""
    thresholds = gc.get_threshold()
    gc.freeze()
    gc.set_threshold(20_000, 20, 10)
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()


def read_lines(path: Path) -> list[str]:
    """The non-empty lines of a file that are not `#` comments."""
    return list(iter_lines(path))


def iter_lines(source: Path | BinaryIO, *, chunk_bytes: int = CHUNK_BYTES) -> Iterator[str]:
    """The lines `read_lines` gives, read a chunk at a time (memory bounded by the chunk).

    Chunks are cut after a newline, so no character and no line is split between two, and
    `splitlines` sees every other line break (CR, CRLF, ...) as it would in the whole text.
    """
    with source.open("rb") if isinstance(source, Path) else nullcontext(source) as file:
        rest = b""
        while chunk := file.read(chunk_bytes):
            cut = chunk.rfind(b"\n") + 1
            if not cut:
                rest += chunk
                continue
            yield from _kept(rest + chunk[:cut])
            rest = chunk[cut:]
        yield from _kept(rest)


def _kept(data: bytes) -> list[str]:
    text = data.decode("utf-8", errors="replace")
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


def line_id(key: str) -> str:
    """The repeatable event id a report gives the line of run key `key` (`n\\x1fline`, see
    `_parsed`): the uuid5 of that key, spelled out (uuid.uuid5 costs three times as much)."""
    digest = _LINE_SEED.copy()
    digest.update(key.encode())
    h = digest.hexdigest()
    return f"{h[:8]}-{h[8:12]}-5{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:32]}"


def _line_number(key: str) -> int | None:
    number, sep, _ = key.partition("\x1f")
    return int(number) if sep and number.isdigit() else None


def parse_lines(
    lines: Sequence[str], engine: ParserEngine | None = None, *, arrival_ts: float | None = None
) -> list[ParsedEvent]:
    """Parsed events of `lines`, with ids derived from line number and text (repeatable)."""
    engine = engine or ParserEngine.from_dirs([])
    arrival = time.time() if arrival_ts is None else arrival_ts
    events = _parsed(engine, list(enumerate(lines, 1)), arrival)
    for event in events:
        event.event_id = line_id(event.event_id)
    return events


def _parsed(
    engine: ParserEngine, numbered: list[tuple[int, str]], arrival: float
) -> list[ParsedEvent]:
    """Parse numbered lines; an event's id is its run key `n\\x1fline` while the rules run:
    unique, free to make, and it holds what the report needs (line number and `line_id`)
    for the few events a finding keeps as evidence."""
    return engine.parse_many(
        [RawLog(f"{n}\x1f{line}", arrival, line, "file") for n, line in numbered]
    )


def run_file(
    path: Path,
    rules: Sequence[RuleSpec],
    *,
    rule_name: str | None = None,
    engine: ParserEngine | None = None,
) -> list[dict[str, Any]]:
    """The findings the rules (or the one named) would produce over the file."""
    return run_lines(iter_lines(path), rules, rule_name=rule_name, engine=engine).findings


def run_lines(
    lines: Iterable[str],
    rules: Sequence[RuleSpec],
    *,
    rule_name: str | None = None,
    engine: ParserEngine | None = None,
    default_hostname: str = DEFAULT_HOSTNAME,
    emit: Callable[[dict[str, Any]], None] | None = None,
    max_open: int = MAX_OPEN_FINDINGS,
) -> RunReport:
    """Parse `lines` and run the rules over them; see RunReport.

    Lines are parsed and evaluated a batch at a time, so memory is the rules' state and the
    open findings, not the input. Findings are given to `emit` (default: appended to the
    report) in the order they opened, once complete: at the end, or earlier when more than
    `max_open` are open (the least recently hit is then complete as far as this run goes; a
    later hit of its burst starts a new record with the same finding id, as in a live agent).
    """
    selected = [r for r in rules if r.enabled and (rule_name is None or r.name == rule_name)]
    if rule_name is not None and not selected:
        raise ConfigError(f"no enabled rule named {rule_name!r}")
    report = RunReport()
    ruleset = RuleSet.build(selected)
    report.skipped.update(ruleset.skipped)
    engine = engine or ParserEngine.from_dirs([])
    arrival = time.time()
    out = _Output(report.findings.append if emit is None else emit)
    book = FindingBook(max_open=max_open, on_evict=out.complete)
    fleet = FleetEvaluator(selected)  # FLEET rules: signals per router, folded fleet-wide
    numbered = enumerate(lines, 1)
    while batch := list(islice(numbered, BATCH_LINES)):
        report.lines += len(batch)
        events = _parsed(engine, batch, arrival)
        report.events += _evaluate(
            events, ruleset, book, fleet, out, report.matches, default_hostname
        )
        _release(ruleset.due(time.monotonic()), book, out)
    _release(ruleset.due(time.monotonic(), flush=True), book, out)
    for finding in fleet.finish():
        out.opened(finding)
    report.matches.update(fleet.matches)
    out.flush()
    report.found = out.given
    return report


def _evaluate(
    events: list[ParsedEvent],
    ruleset: RuleSet,
    book: FindingBook,
    fleet: FleetEvaluator,
    out: _Output,
    matches: Counter[str],
    default_hostname: str,
) -> int:
    """Run the rules over parsed events in order; returns how many were parsed (not unparsed)."""
    evaluate, fold, opened = ruleset.evaluate, book.fold, out.opened
    observe = fleet.observe if fleet.collector.rules else None
    parsed = 0
    for event in events:
        if event.parser_name != "unparsed":
            parsed += 1
        if event.hostname is None:
            event.hostname = default_hostname
        for loaded, hit in evaluate(event):
            spec = loaded.spec
            matches[spec.name] += 1
            finding, new = fold(spec, hit, event, spec.domain or "other")
            if new:
                opened(finding)
        if observe is not None:
            for finding in observe(event):
                opened(finding)
    return parsed


def _release(
    held: list[tuple[LoadedRule, RuleHit, ParsedEvent]], book: FindingBook, out: _Output
) -> None:
    """Fold the hits rules held back (novelty's `hold_s`) like those of `_evaluate`."""
    for loaded, hit, event in held:
        spec = loaded.spec
        finding, new = book.fold(spec, hit, event, spec.domain or "other")
        if new:
            out.opened(finding)


class _Output:
    """Findings in the order they opened, each given out once it is complete."""

    def __init__(self, emit: Callable[[dict[str, Any]], None]) -> None:
        self._emit = emit
        self._open: dict[str, Finding] = {}  # finding id -> finding, in the order opened
        self.given = 0

    def opened(self, finding: Finding) -> None:
        self._open.setdefault(finding.finding_id, finding)

    def complete(self, finding: Finding) -> None:
        if self._open.pop(finding.finding_id, None) is not None:
            self._give(finding)

    def flush(self) -> None:
        for finding in self._open.values():
            self._give(finding)
        self._open.clear()

    def _give(self, finding: Finding) -> None:
        self.given += 1
        self._emit(_report_form(finding))


def _report_form(finding: Finding) -> dict[str, Any]:
    data: dict[str, Any] = msgspec.to_builtins(finding)
    for name in LIVE_ONLY:
        data.pop(name, None)
    keys = finding.evidence_event_ids
    numbers = [_line_number(key) for key in keys]
    data["evidence_event_ids"] = [
        key if n is None else line_id(key) for key, n in zip(keys, numbers, strict=True)
    ]
    data["evidence_lines"] = [n for n in numbers if n is not None]
    return data
