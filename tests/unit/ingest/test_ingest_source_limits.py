"""Per-source token buckets and per-source counters: bounded however many addresses appear."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from opmas.ingest.metrics import SourceCounts
from opmas.ingest.syslog_udp import SourceRates


def test_a_source_gets_its_burst_then_its_rate() -> None:
    rates = SourceRates(rate=10, burst=5, max_sources=100)
    assert [rates.allow("10.0.0.1", 100.0) for _ in range(6)] == [True] * 5 + [False]
    assert rates.allow("10.0.0.2", 100.0)  # another source has its own bucket
    assert rates.allow("10.0.0.1", 100.15)  # 0.15 s: one more token (and a half)
    assert not rates.allow("10.0.0.1", 100.15)
    assert rates.take_drops() == [("10.0.0.1", 2)]
    assert rates.take_drops() == []


def test_sources_beyond_the_table_share_one_bucket_and_full_buckets_are_pruned() -> None:
    rates = SourceRates(rate=1, burst=2, max_sources=3)
    for n in range(3):
        assert rates.allow(f"10.0.0.{n}", 0.0)
    assert rates.allow("10.0.1.1", 0.0)
    assert rates.allow("10.0.1.2", 0.0)  # the shared bucket's second token
    assert not rates.allow("10.0.1.3", 0.0)
    assert len(rates) == 4
    assert rates.take_drops() == [("", 1)]
    rates.prune(10.0)
    assert len(rates) == 0


def test_source_counters_keep_at_most_n_series_and_fold_the_rest_into_other() -> None:
    registry = CollectorRegistry()
    metric = Counter("t_dropped_total", "test", ["transport", "source"], registry=registry)
    counts = SourceCounts(metric, max_sources=3)

    def value(source: str) -> float:
        got = registry.get_sample_value("t_dropped_total", {"transport": "udp", "source": source})
        return got or 0.0

    for n in range(3):
        counts.add("udp", f"10.0.0.{n}", 10)
    counts.add("udp", "10.0.0.9", 5)  # a fourth source while three wait: other
    counts.fold()
    assert [value(f"10.0.0.{n}") for n in range(3)] == [10, 10, 10]
    assert value("other") == 5
    for n in range(100, 200):  # an attacker's spoofed addresses, one fold each
        counts.add("udp", f"10.0.0.{n}", 1)
        counts.fold()
    sources = {
        s.labels["source"]
        for m in registry.collect()
        for s in m.samples
        if s.name.endswith("total")
    }
    assert len(sources) <= 4
    assert "other" in sources
    total = sum(value(s) for s in sources)
    assert total == 3 * 10 + 5 + 100  # nothing lost when a series is folded away
