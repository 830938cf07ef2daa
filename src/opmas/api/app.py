"""FastAPI application factory; the lifespan opens or borrows the process's resources."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from opmas import __version__
from opmas.api.routes import logs, system
from opmas.errors import ApiError
from opmas.resources import Resources, open_resources
from opmas.settings import Settings, ensure_secret_key


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
    )
    app.include_router(system.router)
    app.include_router(logs.router)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(
            {"error": type(exc).__name__, "detail": exc.detail}, status_code=exc.status_code
        )

    return app
