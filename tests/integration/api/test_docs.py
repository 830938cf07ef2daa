"""/docs and /redoc served by the real API server on loopback: every asset from the package."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from opmas.api.app import create_app
from opmas.settings import Settings

from .conftest import ServeApi

pytestmark = pytest.mark.integration


class _Assets(HTMLParser):
    """Collects the URLs a page makes the browser load: scripts, stylesheets, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.links: list[tuple[str, str]] = []  # (rel, href)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = {name: value or "" for name, value in attrs}
        if tag == "script" and found.get("src"):
            self.scripts.append(found["src"])
        if tag == "link" and found.get("href"):
            self.links.append((found.get("rel", ""), found["href"]))


@pytest.fixture
async def client(serve_api: ServeApi) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_api() as http:
        yield http


async def _page_assets(client: httpx.AsyncClient, path: str) -> _Assets:
    response = await client.get(path)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    assets = _Assets()
    assets.feed(response.text)
    return assets


async def _assert_local(client: httpx.AsyncClient, page: str, url: str, kind: str) -> None:
    """`url` names no other host, and the API serves it as a real `kind` asset."""
    parts = urlsplit(url)
    assert not parts.scheme, url
    assert not parts.netloc, url
    response = await client.get(urljoin(page, url))
    assert response.status_code == 200, url
    assert kind in response.headers["content-type"], (url, response.headers["content-type"])
    assert len(response.content) > 10_000, url


async def test_swagger_ui_loads_its_script_style_and_icon_from_the_api(
    client: httpx.AsyncClient,
) -> None:
    assets = await _page_assets(client, "/docs")
    styles = [href for rel, href in assets.links if rel == "stylesheet"]
    icons = [href for rel, href in assets.links if "icon" in rel]
    assert assets.scripts
    assert styles
    assert icons
    assert len(styles) + len(icons) == len(assets.links), assets.links  # nothing else loaded
    for url in assets.scripts:
        await _assert_local(client, "/docs", url, "javascript")
    for url in styles:
        await _assert_local(client, "/docs", url, "css")
    for url in icons:
        assert not urlsplit(url).netloc, url
        response = await client.get(urljoin("/docs", url))
        assert response.status_code == 200, url
        assert response.headers["content-type"] == "image/png"


async def test_redoc_loads_its_script_from_the_api_and_no_web_fonts(
    client: httpx.AsyncClient,
) -> None:
    assets = await _page_assets(client, "/redoc")
    assert assets.scripts
    for url in assets.scripts:
        await _assert_local(client, "/redoc", url, "javascript")
    for rel, url in assets.links:
        assert not urlsplit(url).netloc, (rel, url)  # no Google Fonts, no CDN


async def test_the_docs_pages_read_the_schema_this_api_serves(client: httpx.AsyncClient) -> None:
    swagger = (await client.get("/docs")).text
    redoc = (await client.get("/redoc")).text
    assert "url: '/openapi.json'" in swagger
    assert 'spec-url="/openapi.json"' in redoc
    schema = await client.get("/openapi.json")
    assert schema.status_code == 200
    assert "/docs" not in schema.json()["paths"]


async def test_behind_a_proxy_prefix_the_pages_name_their_assets_under_it(
    settings: Settings,
) -> None:
    app = create_app(settings)  # the pages need no database: the lifespan is not entered
    transport = httpx.ASGITransport(app=app, root_path="/opmas")
    async with httpx.AsyncClient(transport=transport, base_url="http://opmas") as client:
        swagger = await _page_assets(client, "/docs")
        redoc = await _page_assets(client, "/redoc")
    urls = [*swagger.scripts, *redoc.scripts, *(href for _, href in swagger.links + redoc.links)]
    assert urls
    assert all(url.startswith("/opmas/docs/static/") for url in urls), urls
