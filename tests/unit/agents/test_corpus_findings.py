"""The shared corpus sample (221 real OpenWRT lines from ~35 bug reports) through the offline
rule evaluation (`opmas rules test`): novelty stays a handful of grouped info findings, and no
year-less line is dated after its arrival."""

from __future__ import annotations

import time
from collections import Counter
from datetime import datetime
from pathlib import Path

from opmas.agents.offline import read_lines, run_lines
from opmas.agents.pack import load_pack
from opmas.parser.engine import ParserEngine

CORPUS = Path(__file__).resolve().parents[2] / "data" / "corpus" / "openwrt-sample.log"
NOVELTY = ("NeverSeenLogTemplate", "NewDevice")


def test_the_corpus_sample_gives_at_most_ten_novelty_findings_all_info() -> None:
    lines = read_lines(CORPUS)
    assert len(lines) == 221
    report = run_lines(lines, load_pack(), engine=ParserEngine.from_dirs([]))
    novelty = [f for f in report.findings if f["finding_type"] in NOVELTY]
    by_type = Counter(f["finding_type"] for f in report.findings)
    assert len(novelty) <= 10, by_type
    assert {f["severity"] for f in novelty} <= {"info"}
    for finding in novelty:
        listed = finding["details"].get("templates") or finding["details"].get("keys")
        assert listed, finding
        assert len(listed) <= finding["details"]["count"]
    # every problem the sample's reports are about is still found
    assert by_type["WifiFirmwareCrash"] >= 1
    assert by_type["InterfaceDown"] >= 1
    assert by_type["PppoeAuthFailure"] >= 1


def test_no_corpus_finding_is_dated_more_than_a_day_after_now() -> None:
    report = run_lines(read_lines(CORPUS), load_pack(), engine=ParserEngine.from_dirs([]))
    limit = time.time() + 86_400
    for finding in report.findings:
        stamp = datetime.fromisoformat(finding["finding_ts_utc"].replace("Z", "+00:00"))
        assert stamp.timestamp() <= limit, finding
