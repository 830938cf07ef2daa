"""Liveness, readiness, Prometheus metrics and component status."""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from opmas.health import check_readiness
from opmas.metrics import child_metrics, merged_exposition

router = APIRouter(tags=["system"])


@router.get("/health", summary="Liveness: the process answers")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/ready",
    summary="Readiness: PostgreSQL and NATS answer and the schema is at head",
    responses={503: {"description": "Not ready; the body says which check failed"}},
)
async def ready(request: Request) -> JSONResponse:
    resources = request.app.state.resources
    readiness = await check_readiness(resources.engine, resources.bus)
    return JSONResponse(readiness.as_dict(), status_code=200 if readiness.ready else 503)


@router.get("/metrics", summary="Prometheus metrics in the text format")
async def metrics(request: Request) -> Response:
    """This process's metrics, and those of its child processes under `opmas up`."""
    children = getattr(request.app.state, "child_processes", 0)
    if not children:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
    bus = request.app.state.resources.bus
    texts = await child_metrics(bus, parent_pid=os.getpid(), expected=children)
    return Response(merged_exposition(texts), media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/status", summary="State of each component of this process")
async def status(request: Request) -> dict[str, object]:
    supervisor = getattr(request.app.state, "supervisor", None)
    states = supervisor.states.values() if supervisor is not None else []
    return {"components": [state.as_dict() for state in states]}
