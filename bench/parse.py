"""Parse-only throughput of the parser engine on one core (target: >= 200,000 lines/s).

Usage: .venv/bin/python bench/parse.py [--lines N] [--runs R] [--batch B] [--profile]
                                       [--corpus FILE]

The stream is built from the real OpenWRT sample corpus (tests/data/corpus/openwrt-sample.log,
or the golden inputs when it is absent): 60% re-rendered as OpenWRT logd remote syslog
(`<PRI>Mmm dd HH:MM:SS host prog[pid]: msg`), 40% kept in `logread` form (with the
stream's own clock), with MAC addresses, IPs and PIDs varied and the clock advancing one
second every 200 lines (a
fleet at 100,000 lines/s has far more lines per second; 200 is pessimistic for the caches).

With --corpus FILE the stream is that file's lines instead (for instance the 1 M-line corpus
that the peer benchmarks' gen_corpus.py writes), each a RawLog as the TCP listener makes it,
arriving over one day from 2026-11-21 00:00 UTC; --lines then caps the count (0: every line).
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import random
import re
import time
from datetime import UTC, datetime
from pathlib import Path

from opmas.messages import RawLog
from opmas.parser import ParserEngine
from opmas.parser.header import FACILITIES, SEVERITIES, parse_header

ROOT = Path(__file__).resolve().parent.parent
CORPORA = [
    ROOT / "tests" / "data" / "corpus" / "openwrt-sample.log",
    *sorted((ROOT / "tests" / "data" / "parser").glob("*/input.log")),
]
MAC = re.compile(r"\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b")
IPV4 = re.compile(r"\b\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3}\b")
PID = re.compile(r"\[(\d+)\]:")
CTIME = re.compile(r"^[A-Z][a-z]{2} [A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d \d{4}")


def corpus_lines() -> list[str]:
    """Non-comment lines of the first corpus found."""
    for path in CORPORA:
        if path.is_file():
            text = path.read_text(encoding="utf-8")
            return [ln for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    raise SystemExit("no corpus found")


def vary(line: str, rng: random.Random) -> str:
    """The same line with other MACs and IPs, and one of a few PIDs per daemon."""
    line = MAC.sub(lambda _: ":".join(f"{rng.randrange(256):02x}" for _ in range(6)), line)
    line = IPV4.sub(
        lambda _: f"10.{rng.randrange(256)}.{rng.randrange(256)}.{rng.randrange(1, 255)}", line
    )
    return PID.sub(lambda m: f"[{int(m.group(1)) + 1000 * rng.randrange(4)}]:", line)


def as_remote(line: str, when: datetime, host: str) -> str:
    """Re-render a parsed line as logd's remote syslog form."""
    header = parse_header(line)
    if header.program is None:
        return line
    facility = FACILITIES.index(header.facility) if header.facility else 3
    severity = SEVERITIES.index(header.severity) if header.severity else 6
    tag = header.program + (f"[{header.pid}]" if header.pid else "")
    stamp = f"{when:%b} {when.day:2d} {when:%H:%M:%S}"
    return f"<{facility * 8 + severity}>{stamp} {host} {tag}: {header.message}"


def build_stream(count: int, seed: int = 7) -> list[RawLog]:
    """`count` RawLogs from the corpus, mixed formats, clock advancing every 200 lines."""
    rng = random.Random(seed)
    lines = corpus_lines()
    start = datetime(2026, 11, 21, 10, 0, 0, tzinfo=UTC).timestamp()
    raws = []
    for i in range(count):
        now = start + i // 200
        line = vary(lines[rng.randrange(len(lines))], rng)
        when = datetime.fromtimestamp(now, UTC)
        if rng.random() < 0.6:
            line = as_remote(line, when, f"ap-{rng.randrange(50)}")
        else:
            stamp = f"{when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}"
            line = CTIME.sub(stamp, line, count=1)
        raws.append(RawLog(f"id-{i}", now + 0.25, line, "udp", source_ip="192.0.2.1"))
    return raws


def file_stream(path: Path, limit: int) -> list[RawLog]:
    """The lines of `path` (at most `limit`, 0 for all) as RawLogs spread over one day."""
    with path.open(encoding="utf-8", errors="replace", newline="\n") as source:
        lines = [line.rstrip("\n") for line in source]
    if limit:
        lines = lines[:limit]
    start = datetime(2026, 11, 21, 0, 0, 0, tzinfo=UTC).timestamp()
    step = 86_400 / max(len(lines), 1)
    return [
        RawLog(f"id-{i}", start + i * step, line, "tcp", source_ip="192.0.2.1")
        for i, line in enumerate(lines)
    ]


def main() -> None:
    """Print lines/s of ParserEngine.parse_many over service-sized batches, best of runs."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=None, help="default 200,000 (corpus: all)")
    parser.add_argument("--corpus", type=Path, help="parse this file's lines instead")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=500, help="lines per parse_many call")
    parser.add_argument("--profile", action="store_true", help="print the top functions")
    args = parser.parse_args()
    engine = ParserEngine.from_dirs()
    if args.corpus is not None:
        raws = file_stream(args.corpus, args.lines or 0)
    else:
        raws = build_stream(200_000 if args.lines is None else args.lines)
    batches = [raws[i : i + args.batch] for i in range(0, len(raws), args.batch)]
    best = best_cpu = 0.0
    for _ in range(args.runs):
        began, began_cpu = time.perf_counter(), time.process_time()
        unparsed = run(engine, batches)
        best = max(best, len(raws) / (time.perf_counter() - began))
        best_cpu = max(best_cpu, len(raws) / (time.process_time() - began_cpu))
    print(f"parse-only: {best:,.0f} lines/s wall, {best_cpu:,.0f} lines/s CPU (best of "
          f"{args.runs}, {len(raws):,} lines in batches of {args.batch}, "
          f"{unparsed / len(raws):.1%} unparsed)")  # fmt: skip
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run, engine, batches)
        pstats.Stats(profile).sort_stats("tottime").print_stats(14)


def run(engine: ParserEngine, batches: list[list[RawLog]]) -> int:
    """Parse every batch as the parser service would; the count of unparsed lines."""
    unparsed = 0
    for batch in batches:
        for event in engine.parse_many(batch):
            if event.parser_name == "unparsed":
                unparsed += 1
    return unparsed


if __name__ == "__main__":
    main()
