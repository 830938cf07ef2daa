"""/metrics with child processes answering over real NATS, checked by Prometheus's promtool."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics_latest

from opmas.bus.connect import Bus
from opmas.ingest.metrics import PUBLISHED
from opmas.metrics import MetricsResponder, child_metrics, merged_exposition

from .conftest import ServeApi

pytestmark = pytest.mark.integration

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: run scripts/install-system-deps"
)


def promtool_check(exposition: str) -> None:
    """Fails unless promtool parses the scrape (exit 1 otherwise) and finds no lint (exit 3)."""
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, text=True
    )
    assert (done.returncode, done.stdout, done.stderr) == (0, "", "")


def helps(exposition: str) -> list[str]:
    return re.findall(r"^# HELP (\S+) ", exposition, re.M)


@pytest.fixture
async def scrape(serve_api: ServeApi, bus: Bus) -> AsyncIterator[httpx.AsyncClient]:
    """The API expecting two children; two responders in this process play them (same code,
    so the same families as the parent's: what used to be written twice)."""
    parent = os.getpid()
    async with (
        MetricsResponder(bus, parent_pid=parent, component="parser"),
        MetricsResponder(bus, parent_pid=parent, component="agent-wifi+agent-wan"),
        serve_api(children=2) as client,
    ):
        yield client


@needs_promtool
async def test_a_scrape_merging_children_writes_each_family_once(
    scrape: httpx.AsyncClient,
) -> None:
    PUBLISHED.inc()  # a counter with a `_created` sample, in parent and children alike
    response = await scrape.get("/metrics")
    assert response.status_code == 200
    exposition = response.text
    promtool_check(exposition)
    assert len(helps(exposition)) == len(set(helps(exposition)))
    for process in ("parser", "agent-wifi+agent-wan"):
        assert f'opmas_ingest_published_total{{process="{process}"}}' in exposition
        assert f'opmas_ingest_published_created{{process="{process}"}}' in exposition
    assert re.search(r"^opmas_ingest_published_total [0-9.e+]+$", exposition, re.M)


@needs_promtool
def test_families_only_a_child_has_are_written_with_their_help_and_type() -> None:
    child = CollectorRegistry()
    Counter("opmas_child_only_lines_total", "Lines only a child counts.", registry=child).inc(2)
    Histogram("opmas_child_only_seconds", "Time only a child spends.", registry=child).observe(1)
    text = openmetrics_latest(child).decode()  # type: ignore[no-untyped-call]  # untyped module
    exposition = merged_exposition([("store", text), ("parser", text)]).decode()
    promtool_check(exposition)
    assert exposition.count("# TYPE opmas_child_only_lines_total counter") == 1
    assert exposition.count("# TYPE opmas_child_only_seconds histogram") == 1
    assert 'opmas_child_only_lines_total{process="store"} 2.0' in exposition
    assert 'opmas_child_only_seconds_count{process="parser"} 1.0' in exposition


def test_an_unreadable_child_is_left_out_and_the_rest_still_scraped() -> None:
    exposition = merged_exposition([("store", "not { metrics")]).decode()
    assert 'process="store"' not in exposition
    assert "# HELP opmas_ingest_published_total " in exposition


async def test_an_empty_or_foreign_reply_on_the_metrics_subject_is_left_out(bus: Bus) -> None:
    async def _answer(msg: Any) -> None:
        await msg.respond(b"")  # e.g. a process of another version, or anything on the bus

    async def _foreign(msg: Any) -> None:
        await msg.respond(b'{"unexpected": true}')

    subs = [
        await bus.nc.subscribe(bus.subjects.metrics_request, cb=cb) for cb in (_answer, _foreign)
    ]
    try:
        async with MetricsResponder(bus, component="pipeline", parent_pid=os.getpid()):
            found = await child_metrics(bus, parent_pid=os.getpid(), expected=3, wait_s=2.0)
    finally:
        for sub in subs:
            await sub.unsubscribe()
    assert [component for component, _ in found] == ["pipeline"]
