"""Offline rule throughput: `opmas rules test` and `opmas explain --file` over a log file, and
the rule stage alone (targets: rules test >= 150,000 lines/s in <= 300 MB, explain >= 50,000).

Usage: .venv/bin/python bench/rules.py FILE [--only rules-test|explain|stage] [--lines N]
                                        [--stage-lines N] [--profile]

FILE is a log file such as the 1 M-line OpenWRT corpus (`corpus_rfc3164.log`: 50 routers, a
day of traffic). `rules-test` and `explain` run the real commands (`--json` to /dev/null) as
child processes and report wall time, CPU time (user + system) and peak RSS of the child.
`stage` parses the first `--stage-lines` lines once, then times only RuleSet.evaluate and
FindingBook.fold over the events (CPU time of this process), so the rule stage is measured
apart from the parser; `--profile` prints the top of its cProfile.
"""

from __future__ import annotations

import argparse
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from opmas.agents import offline
from opmas.agents.engine import FindingBook, RuleSet
from opmas.agents.pack import load_pack
from opmas.parser.engine import ParserEngine

OPMAS = Path(sys.executable).with_name("opmas")


@dataclass
class Run:
    """One child process: wall and CPU seconds, peak RSS in MB."""

    wall_s: float
    cpu_s: float
    rss_mb: float

    def line(self, name: str, lines: int) -> str:
        return (
            f"{name:<11} {lines:>9,} lines  wall {self.wall_s:6.1f} s "
            f"({lines / self.wall_s:>9,.0f} lines/s)  cpu {self.cpu_s:6.1f} s "
            f"({lines / self.cpu_s:>9,.0f} lines/s)  peak RSS {self.rss_mb:6.0f} MB"
        )


def run_child(args: list[str]) -> Run:
    """Run a command with stdout to /dev/null; its own rusage, not this process's."""
    start = time.perf_counter()
    with open(os.devnull, "wb") as sink:
        proc = subprocess.Popen(args, stdout=sink)  # our own CLI, fixed args
        _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{args} exited with {proc.returncode}")
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024)


def stage(path: Path, lines: int, profile: bool) -> None:
    """Parse once, then time the rule stage alone over the events."""
    engine = ParserEngine.from_dirs([])
    numbered = list(islice(enumerate(offline.iter_lines(path), 1), lines))
    start = time.process_time()
    events = offline._parsed(engine, numbered, time.time())  # the ids `rules test` gives
    parse_s = time.process_time() - start
    specs = [s for s in load_pack() if s.enabled]

    def evaluate() -> None:
        ruleset = RuleSet.build(specs)
        book = FindingBook(max_open=offline.MAX_OPEN_FINDINGS)
        fold = book.fold
        for event in events:
            if event.hostname is None:
                event.hostname = offline.DEFAULT_HOSTNAME
            for loaded, hit in ruleset.evaluate(event):
                fold(loaded.spec, hit, event, loaded.spec.domain or "other")

    with offline.batch_gc():  # as `rules test` runs; the events parsed above are not scanned
        start = time.process_time()
        evaluate()
        eval_s = time.process_time() - start
    n = len(events)
    print(f"parse+ids   {n:>9,} lines  {parse_s / n * 1e6:6.2f} us/line ({n / parse_s:>9,.0f}/s)")
    print(f"rule stage  {n:>9,} lines  {eval_s / n * 1e6:6.2f} us/line ({n / eval_s:>9,.0f}/s)")
    if profile:
        profiler = cProfile.Profile()
        profiler.runcall(evaluate)
        pstats.Stats(profiler).sort_stats("tottime").print_stats(25)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("file", type=Path)
    parser.add_argument("--only", choices=["rules-test", "explain", "stage"])
    parser.add_argument("--lines", type=int, default=0, help="Use the first N lines (0: all).")
    parser.add_argument("--stage-lines", type=int, default=200_000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    path: Path = args.file
    with tempfile.TemporaryDirectory(prefix="opmas-bench-rules-") as tmp:
        if args.lines:
            cut = Path(tmp) / "lines.log"
            cut.write_text(
                "".join(f"{line}\n" for line in islice(offline.iter_lines(path), args.lines))
            )
            path = cut
        lines = sum(1 for _ in offline.iter_lines(path))
        # children first: a child forked from a process holding the stage's events would
        # count that memory in its peak RSS until it execs
        if args.only in (None, "rules-test"):
            run = run_child([str(OPMAS), "rules", "test", str(path), "--json"])
            print(run.line("rules test", lines))
        if args.only in (None, "explain"):
            run = run_child([str(OPMAS), "explain", "--file", str(path), "--json"])
            print(run.line("explain", lines))
        if args.only in (None, "stage"):
            stage(path, min(args.stage_lines, lines), args.profile)


if __name__ == "__main__":
    main()
