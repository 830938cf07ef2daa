"""Coverage-guided fuzzing (atheris, libFuzzer) of the edges that read attacker-controlled bytes.

Usage: .venv/bin/python bench/fuzz.py [--runs N] [--targets a,b] [--out DIR] [--json]
       .venv/bin/python bench/fuzz.py --target NAME [--runs N] [--out DIR]   (one, in-process)

Needs the `fuzz` extra: `.venv/bin/pip install -c constraints.txt -e '.[test,fuzz]'`.

Entry points (each in a process of its own, one after the other, `--runs` inputs each,
default 1,000,000), and what counts as a crash besides any exception:

- header: parse_header, hostname_of and parse_sd of the bytes decoded as ingest decodes
  them; the message must be part of the line, a PRI within 0..191, and hostname_of (which
  picks a line's partition) must name the host the parser reads.
- framing: a Framer of a drawn size fed the bytes whole and cut at drawn places; every split
  must give the same frames and error count, held bytes stay within the bound, no frame is
  over the size.
- timestamps: TimeResolver.resolve of a drawn kind and arrival; None or ISO 8601 UTC, and a
  year-less time never more than a day after its arrival.
- http_body: parse_body with a drawn Content-Type and limits, or gunzip; nothing raised but
  its own ApiError (413, 415, 422).
- parse: ParserEngine.parse of one line (and explain of some); the engine's catch-all must
  never fire (no parse_error flag), and the event time must be one the store can read.

A crash leaves its input in OUT/crashes/<target>-crash-<sha1> (or -timeout-, -oom-) and its
traceback in OUT/<target>.log; the summary lists them. Turn each into a regression test
(tests/unit/fuzz/test_fuzz_regressions.py). The corpus grown by a run is kept in
OUT/corpus/<target> and reused by the next run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TARGETS = ("header", "framing", "timestamps", "http_body", "parse")
MAX_LEN = {"header": 4096, "framing": 4096, "timestamps": 256, "http_body": 16384, "parse": 4096}
DEFAULT_OUT = Path.home() / ".cache" / "opmas-bench" / "fuzz"
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def seeds(target: str) -> list[bytes]:
    """Starting inputs: the golden parser cases' lines, and a few of each framing."""
    lines = [
        line.encode()
        for path in sorted((ROOT / "tests" / "data" / "parser").glob("*/input.log"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ][:400]
    if target in ("header", "parse"):
        return lines
    if target == "framing":
        octet = [str(len(line)).encode() + b" " + line for line in lines[:50]]
        return [
            b"\x10" + b"\n".join(lines[:20]),
            b"\x40" + b"".join(octet),
            b"\x08\x00".join(lines[:20]),
        ]
    if target == "timestamps":
        return [b"\x00Nov 21 10:00:01", b"\x01Wed Oct 25 23:33:39 2017", b"\x00Feb 29 12:00:00",
                b"\x022026-11-21T10:00:01.5+01:00", b"\x0312 dic 2025, 20:46:05 CET"]  # fmt: skip
    entry = b'[{"message":"x","hostname":"h","timestamp":1795300000.5,"level":"warn"}]'
    return [b"\x00" + json.dumps([line.decode() for line in lines[:20]]).encode(),
            b"\x01" + b"\n".join(lines[:20]), b"\x00" + entry]  # fmt: skip


def _provider_ints(data: bytes, count: int) -> tuple[list[int], bytes]:
    """The first `count` bytes as small numbers, and the rest."""
    head = list(data[:count]) + [0] * max(0, count - len(data))
    return head, data[count:]


def entry_point(target: str) -> Callable[[bytes], None]:
    """The function libFuzzer calls with each input (imports instrumented by the caller)."""
    return {"header": _header, "framing": _framing, "timestamps": _timestamps,
            "http_body": _http_body, "parse": _parse}[target]()  # fmt: skip


def _header() -> Callable[[bytes], None]:
    from opmas.ingest.framing import decode_line
    from opmas.parser.header import hostname_of, parse_header, parse_sd

    def header(data: bytes) -> None:
        line = decode_line(data)[0]
        found = parse_header(line)
        if found.message not in line:
            raise AssertionError("message not from the line")
        if found.pri is not None and not 0 <= found.pri <= 191:
            raise AssertionError("PRI out of range")
        cleaned = line.rstrip("\r\n").removeprefix("\ufeff")  # as the engine cleans it
        if hostname_of(line) != parse_header(cleaned).hostname:
            raise AssertionError("hostname_of disagrees with the parser")
        parse_sd(line)

    return header


def _framing() -> Callable[[bytes], None]:
    from opmas.ingest.framing import MAX_COUNT_DIGITS, Framer

    def framing(data: bytes) -> None:
        (size, *cuts), stream = _provider_ints(data, 5)
        size += 1
        whole = Framer(size)
        frames = whole.feed(stream) + whole.close()
        split = Framer(size)
        points = sorted({cut * len(stream) // 256 for cut in cuts})
        pieces = [stream[a:b] for a, b in zip([0, *points], [*points, len(stream)], strict=True)]
        got = []
        for piece in pieces:
            got += split.feed(piece)
            if split.buffered > size + MAX_COUNT_DIGITS + 1:
                raise AssertionError("held bytes past the bound")
        got += split.close()
        if got != frames or split.framing_errors != whole.framing_errors:
            raise AssertionError("a split changed the frames")
        if any(len(frame) > size for frame, _ in frames):
            raise AssertionError("frame over the maximum size")

    return framing


def _timestamps() -> Callable[[bytes], None]:
    from opmas.parser.timestamps import FUTURE_LIMIT_S, TimeResolver

    resolver = TimeResolver(cache_size=64)
    kinds = ("bsd", "ctime", "iso", "luci")

    def timestamps(data: bytes) -> None:
        (kind, a, b, c, d), rest = _provider_ints(data, 5)
        arrival = ((a << 24 | b << 16 | c << 8 | d) % 253402300800) + 0.25
        text = rest.decode(errors="replace")
        name = kinds[kind % len(kinds)]
        result = resolver.resolve(name, text, arrival)
        if result is not None and ISO_UTC.fullmatch(result) is None:
            raise AssertionError("not ISO 8601 UTC")
        parts = resolver.parts(name, text)
        if result is not None and parts is not None and parts[0] is None:
            resolved = datetime.fromisoformat(result.replace("Z", "+00:00")).timestamp()
            if resolved > arrival + FUTURE_LIMIT_S + 0.001:
                raise AssertionError("a year-less time dated more than a day after its arrival")

    return timestamps


def _http_body() -> Callable[[bytes], None]:
    from opmas.errors import ApiError
    from opmas.ingest.http_body import gunzip, parse_body

    media = ("application/json", "text/plain", "application/x+json", "text/html", "")

    def http_body(data: bytes) -> None:
        (choice, limit), body = _provider_ints(data, 2)
        try:
            if choice >= 250:
                gunzip(body, 1 + limit * 64)
            else:
                parse_body(body, media[choice % len(media)], 1 + limit * 4, 1 + choice % 50)
        except ApiError:
            pass

    return http_body


def _parse() -> Callable[[bytes], None]:
    from opmas.ingest.framing import decode_line
    from opmas.messages import Flag, RawLog
    from opmas.parser.engine import ParserEngine

    engine = ParserEngine.from_dirs()

    def parse(data: bytes) -> None:
        line = decode_line(data)[0]
        event = engine.parse(RawLog("fuzz", 1795300000.0, line, "tcp"))
        if Flag.PARSE_ERROR in event.flags:
            engine._parse(RawLog("fuzz", 1795300000.0, line, "tcp"), None)  # raise it here
            raise AssertionError("the engine's catch-all fired")
        if event.event_ts is not None:
            datetime.fromisoformat(event.event_ts)  # as the store reads it
        if data[:1] == b"<" and len(data) % 7 == 0:
            engine.explain(line, 1795300000.0).render()

    return parse


def run_one(target: str, runs: int, out: Path) -> None:
    """Fuzz one target in this process (libFuzzer exits the process when done)."""
    import atheris  # type: ignore[import-untyped,import-not-found,unused-ignore]  # no stubs; optional (the `fuzz` extra)

    corpus = out / "corpus" / target
    crashes = out / "crashes"
    corpus.mkdir(parents=True, exist_ok=True)
    crashes.mkdir(parents=True, exist_ok=True)
    if not any(corpus.iterdir()):
        for index, seed in enumerate(seeds(target)):
            (corpus / f"seed-{index:04d}").write_bytes(seed)
    if target != "http_body":  # atheris 3.0's regex hook fails on bytes patterns
        atheris.enabled_hooks.add("RegEx")
    atheris.enabled_hooks.add("str")
    with atheris.instrument_imports(include=["opmas"]):
        function = entry_point(target)
    args = [
        sys.argv[0],
        f"-runs={runs}",
        f"-max_len={MAX_LEN[target]}",
        "-timeout=10",  # seconds for one input: a hang is a crash
        "-rss_limit_mb=2048",
        f"-artifact_prefix={crashes}/{target}-",
        "-print_final_stats=1",
        str(corpus),
    ]
    atheris.Setup(args, function)
    atheris.Fuzz()


def run_all(targets: list[str], runs: int, out: Path) -> list[dict[str, Any]]:
    """Each target in a child process, one after the other; their counts and crashes."""
    results = []
    for target in targets:
        log = out / f"{target}.log"
        out.mkdir(parents=True, exist_ok=True)
        before = set((out / "crashes").glob(f"{target}-*")) if (out / "crashes").is_dir() else set()
        start = time.monotonic()
        with log.open("wb") as sink:
            command = [sys.executable, __file__, "--target", target, "--runs", str(runs)]
            code = subprocess.call(
                [*command, "--out", str(out)],
                stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, "PYTHONHASHSEED": "0"},
            )  # fmt: skip
        text = log.read_text(errors="replace")
        done = re.findall(r"Done (\d+) runs in (\d+) second", text)
        cov = re.findall(r"cov: (\d+) ft: (\d+)", text)
        after = set((out / "crashes").glob(f"{target}-*"))
        results.append({
            "target": target,
            "runs": int(done[-1][0]) if done else None,
            "seconds": round(time.monotonic() - start, 1),
            "coverage_edges": int(cov[-1][0]) if cov else None,
            "features": int(cov[-1][1]) if cov else None,
            "exit_code": code,
            "crashes": sorted(str(path) for path in after - before),
            "log": str(log),
        })  # fmt: skip
        print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=1_000_000, help="inputs per entry point")
    parser.add_argument("--targets", default=",".join(TARGETS), help="comma-separated")
    parser.add_argument("--target", choices=TARGETS, help="fuzz one target in this process")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="corpus, crashes, logs")
    parser.add_argument("--json", action="store_true", help="one JSON object on stdout")
    args = parser.parse_args()
    if args.target:
        run_one(args.target, args.runs, args.out)
        return
    targets = [name for name in args.targets.split(",") if name]
    unknown = set(targets) - set(TARGETS)
    if unknown:
        parser.error(f"unknown targets: {', '.join(sorted(unknown))}")
    results = run_all(targets, args.runs, args.out)
    if args.json:
        print(json.dumps({"runs_per_target": args.runs, "results": results}))
        return
    print(f"{'target':<12}{'runs':>12}{'seconds':>10}{'edges':>8}  crashes")
    for row in results:
        runs = "-" if row["runs"] is None else f"{row['runs']:,}"
        print(f"{row['target']:<12}{runs:>12}{row['seconds']:>10}{row['coverage_edges'] or '-':>8}"
              f"  {len(row['crashes'])} {' '.join(row['crashes'])}")  # fmt: skip
    sys.exit(1 if any(row["crashes"] or row["exit_code"] for row in results) else 0)


if __name__ == "__main__":
    main()
