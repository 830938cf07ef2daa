"""POST /api/v1/logs within bounds: a gzip bomb, multi-member gzip, the item cap and the
parse slots, against uvicorn serving the API on 127.0.0.1 in this test's event loop."""

from __future__ import annotations

import asyncio
import gzip
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import psutil
import pytest

from .conftest import RawReader, ServeApi

pytestmark = pytest.mark.integration

URL = "/api/v1/logs"
TEXT = {"Content-Type": "text/plain"}
GZIP_TEXT = TEXT | {"Content-Encoding": "gzip"}
MB = 1024 * 1024


class PeakRss:
    """The highest RSS of this process, sampled every few milliseconds in a thread."""

    def __init__(self) -> None:
        self._process = psutil.Process()
        self.start = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.end = self._process.memory_info().rss


async def test_a_gzip_bomb_of_five_million_lines_is_413_in_little_memory_and_time(
    serve_api: ServeApi,
) -> None:
    bomb = gzip.compress(b"a\n" * 5_000_000, compresslevel=9)
    assert len(bomb) < 20_000
    async with serve_api() as client:
        warm = await client.post(URL, content=b"warm up\n", headers=TEXT)
        assert warm.status_code == 202, warm.text
        with PeakRss() as rss:
            started = time.monotonic()
            response = await client.post(URL, content=bomb, headers=GZIP_TEXT)
            elapsed = time.monotonic() - started
    assert response.status_code == 413, response.text
    assert "10000 lines" in response.json()["detail"]
    assert "OPMAS_INGEST__HTTP_MAX_ITEMS" in response.json()["detail"]
    assert rss.peak - rss.start < 50 * MB, f"peak RSS grew {(rss.peak - rss.start) / MB:.0f} MB"
    assert rss.end - rss.start < 50 * MB
    assert elapsed < 5.0


async def test_a_body_that_unzips_past_the_byte_cap_is_413_while_inflating(
    serve_api: ServeApi,
) -> None:
    bomb = gzip.compress(b"\0" * (64 * MB), compresslevel=9)  # 64 KB sent
    async with serve_api(http_max_body=MB) as client:
        with PeakRss() as rss:
            response = await client.post(URL, content=bomb, headers=GZIP_TEXT)
    assert response.status_code == 413, response.text
    assert "once unzipped" in response.json()["detail"]
    assert rss.peak - rss.start < 20 * MB


async def test_every_member_of_a_multi_member_gzip_body_is_kept(
    serve_api: ServeApi, reader: RawReader
) -> None:
    body = gzip.compress(b"<13>one\n<13>two\n") + gzip.compress(b"<13>three\n")
    body += gzip.compress(b"<13>four")
    async with serve_api() as client:
        response = await client.post(URL, content=body, headers=GZIP_TEXT)
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == 4
    items = await reader.wait_for(4)
    assert [i.line for i in items] == ["<13>one", "<13>two", "<13>three", "<13>four"]


async def test_a_gzip_body_cut_inside_its_second_member_is_422(serve_api: ServeApi) -> None:
    body = gzip.compress(b"<13>one\n") + gzip.compress(b"<13>two\n")[:-4]
    async with serve_api() as client:
        response = await client.post(URL, content=body, headers=GZIP_TEXT)
    assert response.status_code == 422, response.text
    assert "cut short" in response.json()["detail"]


@pytest.mark.parametrize("kind", ["json", "text"])
async def test_more_lines_than_the_cap_is_413_naming_it(
    serve_api: ServeApi, reader: RawReader, kind: str
) -> None:
    def body(count: int) -> dict[str, Any]:
        lines = [f"<13>line {n}, with a comma" for n in range(count)]
        if kind == "json":
            return {"content": orjson.dumps(lines), "headers": {"Content-Type": "application/json"}}
        return {"content": "\n".join(lines).encode(), "headers": TEXT}

    async with serve_api(http_max_items=5) as client:
        over = await client.post(URL, **body(6))
        at = await client.post(URL, **body(5))
    assert over.status_code == 413, over.text
    assert over.json() == {
        "error": "TooManyItems",
        "detail": "more than 5 lines in one body (the limit, OPMAS_INGEST__HTTP_MAX_ITEMS)",
    }
    assert at.status_code == 202, at.text
    assert len(await reader.wait_for(5)) == 5


async def test_bodies_beyond_the_parse_slots_get_503_with_retry_after(
    serve_api: ServeApi, reader: RawReader
) -> None:
    release = asyncio.Event()

    async def slow_body() -> AsyncIterator[bytes]:
        yield b"<13>slow one\n"
        await release.wait()
        yield b"<13>slow two\n"

    async with serve_api(http_max_parses=1) as client:
        slow = asyncio.create_task(client.post(URL, content=slow_body(), headers=TEXT))
        deadline = time.monotonic() + 10
        while True:
            busy = await client.post(URL, content=b"<13>quick\n", headers=TEXT)
            if busy.status_code != 202 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.01)
        assert busy.status_code == 503, busy.text
        assert busy.headers["Retry-After"] == "1"
        assert "OPMAS_INGEST__HTTP_MAX_PARSES" in busy.json()["detail"]
        release.set()
        assert (await slow).status_code == 202
        after = await client.post(URL, content=b"<13>after\n", headers=TEXT)
    assert after.status_code == 202, after.text
    lines = {i.line for i in await reader.wait_for(3)}
    assert {"<13>slow one", "<13>slow two", "<13>after"} <= lines
