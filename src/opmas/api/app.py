"""FastAPI application factory; the lifespan opens or borrows the process's resources."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import structlog
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.exc import SQLAlchemyError

from opmas import __version__
from opmas.api.routes import logs, system
from opmas.bus.failures import Failure, classify, describe
from opmas.errors import ApiError
from opmas.resources import Resources, open_resources
from opmas.settings import Settings, ensure_secret_key

# Swagger UI and ReDoc, vendored (static/README.md says from where): the docs work offline.
STATIC_DIR = Path(__file__).parent / "static"
STATIC_URL = "/docs/static"
RETRY_AFTER_S = 1  # what a client is told to wait while PostgreSQL is down

log = structlog.get_logger(__name__)


def create_app(settings: Settings | None = None, resources: Resources | None = None) -> FastAPI:
    """Build the API. With `resources`, borrow them (inside `opmas up`); else open its own."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if resources is not None:
            app.state.resources = resources
            yield
            return
        own = ensure_secret_key(settings or Settings())
        async with open_resources(own, name="opmas-api") as opened:
            app.state.resources = opened
            yield

    app = FastAPI(
        title="OPMAS",
        version=__version__,
        description="OpenWRT Proactive Monitoring Agentic System",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    _add_docs(app)
    app.include_router(system.router)
    app.include_router(logs.router)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": type(exc).__name__, "detail": exc.detail}, status_code=exc.status_code
        )

    @app.exception_handler(SQLAlchemyError)
    @app.exception_handler(OSError)
    async def _server_down(request: Request, exc: Exception) -> JSONResponse:
        """PostgreSQL down (a transient failure): 503 and when to retry, not a 500."""
        if classify(exc) is not Failure.TRANSIENT:
            log.error("request failed", path=request.url.path, error=repr(exc))
            return JSONResponse({"error": "InternalError", "detail": "internal error"}, 500)
        return JSONResponse(
            {"error": "ServiceUnavailable", "detail": f"{describe(exc)} unavailable: retry"},
            status_code=503,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    return app


def _add_docs(app: FastAPI) -> None:
    """Serve `/docs` (Swagger UI) and `/redoc` from the package's files, never from a CDN.

    URLs start with the ASGI root_path, as FastAPI's own pages do, so they work behind a proxy
    that serves the API under a prefix."""
    app.mount(STATIC_URL, StaticFiles(directory=STATIC_DIR), name="docs-static")
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect_url = "/docs/oauth2-redirect"

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_swagger_ui_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=root + oauth2_redirect_url,
            swagger_js_url=f"{root}{STATIC_URL}/swagger-ui/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{STATIC_URL}/swagger-ui/swagger-ui.css",
            swagger_favicon_url=f"{root}{STATIC_URL}/swagger-ui/favicon-32x32.png",
        )

    @app.get(oauth2_redirect_url, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "").rstrip("/")
        return get_redoc_html(
            openapi_url=root + openapi_url,
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{STATIC_URL}/redoc/redoc.standalone.js",
            redoc_favicon_url=f"{root}{STATIC_URL}/swagger-ui/favicon-32x32.png",
            with_google_fonts=False,
        )
