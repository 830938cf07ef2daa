"""POST /api/v1/logs: a batch of log lines from an HTTP client, answered 202 once on the bus.

Beyond its bounds (bodies being parsed, bytes waiting for the bus, the pipeline too far
behind: `opmas.ingest.backlog`) or while the bus is disconnected or does not store, a
request gets 503 with Retry-After at once: nothing is held for it. The NATS client
reconnects by itself, and the next request is accepted again.
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Header, Request
from fastapi.responses import JSONResponse

from opmas.api.auth import CurrentIngestClient
from opmas.api.deps import AppResources
from opmas.errors import Backlogged, BusError
from opmas.ingest.http_body import Unprocessable, parse_body, read_body
from opmas.ingest.http_publish import HttpIngest
from opmas.messages import RawLog
from opmas.settings import Settings

router = APIRouter(tags=["logs"])

MAX_IDEMPOTENCY_KEY = 255
PARSE_IN_THREAD_BYTES = 256 * 1024
RETRY_AFTER_S = 1

_ERROR = {"content": {"application/json": {"example": {"error": "...", "detail": "..."}}}}
_BODY = {
    "required": True,
    "content": {
        "application/json": {
            "schema": {
                "type": "array",
                "items": {
                    "oneOf": [
                        {"type": "string"},
                        {
                            "type": "object",
                            "required": ["message"],
                            "properties": {
                                name: {"type": "string"}
                                for name in ("message", "hostname", "timestamp", "program", "level")
                            },
                        },
                    ]
                },
            },
            "example": ["<30>Apr 18 15:02:17 OpenWRT-Router1 hostapd: wlan0: STA up"],
        },
        "text/plain": {"schema": {"type": "string"}, "example": "line one\nline two\n"},
    },
}


def _parse_slots(request: Request, resources: AppResources) -> asyncio.Semaphore:
    """Bodies read and parsed at once (`ingest.http_max_parses`): each may hold the whole
    unzipped limit in memory, so beyond them a client is told to come back."""
    slots: asyncio.Semaphore | None = getattr(request.app.state, "parse_slots", None)
    if slots is None:
        slots = request.app.state.parse_slots = asyncio.Semaphore(
            resources.settings.ingest.http_max_parses
        )
    return slots


class PendingBytes:
    """Bytes of bodies parsed and waiting for JetStream's PubAcks, bounded by
    `ingest.http_max_pending_bytes` (one body alone is always let through)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.held = 0

    def take(self, nbytes: int) -> bool:
        if self.held and self.held + nbytes > self.limit:
            return False
        self.held += nbytes
        return True

    def give_back(self, nbytes: int) -> None:
        self.held -= nbytes


def _pending_bytes(request: Request, resources: AppResources) -> PendingBytes:
    pending: PendingBytes | None = getattr(request.app.state, "pending_bytes", None)
    if pending is None:
        pending = request.app.state.pending_bytes = PendingBytes(
            resources.settings.ingest.http_max_pending_bytes
        )
    return pending


def _unavailable(detail: str) -> JSONResponse:
    return JSONResponse(
        {"error": "ServiceUnavailable", "detail": detail},
        status_code=503,
        headers={"Retry-After": str(RETRY_AFTER_S)},
    )


def _busy(slots: int) -> JSONResponse:
    return _unavailable(
        f"{slots} bodies are being read (OPMAS_INGEST__HTTP_MAX_PARSES); retry shortly"
    )


def _http_ingest(request: Request, resources: AppResources) -> HttpIngest:
    ingest: HttpIngest | None = getattr(request.app.state, "http_ingest", None)
    if ingest is None:
        ingest = request.app.state.http_ingest = HttpIngest(
            resources.bus,
            resources.settings.ingest,
            partitions=resources.settings.pipeline.partitions,
        )
    return ingest


@router.post(
    "/api/v1/logs",
    status_code=202,
    summary="Send a batch of log lines (JSON array or text/plain); 202 once on the bus",
    openapi_extra={"requestBody": _BODY},
    responses={
        202: {"content": {"application/json": {"example": {"accepted": 2, "batch_id": "..."}}}},
        401: _ERROR | {"description": "No or bad token"},
        409: _ERROR | {"description": "Idempotency-Key reused with another body"},
        413: _ERROR | {"description": "Body too large (sent or unzipped), or too many lines"},
        415: _ERROR | {"description": "Content-Type or Content-Encoding not supported"},
        422: _ERROR | {"description": "Invalid body; detail names each wrong place"},
        503: _ERROR | {"description": "Bus unavailable or too busy; retry (same Idempotency-Key)"},
    },
)
async def post_logs(
    request: Request,
    resources: AppResources,
    client: CurrentIngestClient,
    idempotency_key: Annotated[
        str | None, Header(description="Makes a retried batch a no-op (kept 24 h).")
    ] = None,
) -> JSONResponse:
    """Accept the batch once JetStream has stored it; a retry with the same Idempotency-Key
    publishes nothing more and gets the same answer."""
    settings = resources.settings
    if idempotency_key is not None and not 0 < len(idempotency_key) <= MAX_IDEMPOTENCY_KEY:
        raise Unprocessable(f"Idempotency-Key: 1 to {MAX_IDEMPOTENCY_KEY} characters")
    if not resources.bus.nc.is_connected:
        return _unavailable("the bus is unreachable (reconnecting); retry shortly")
    slots = _parse_slots(request, resources)
    if slots.locked():
        return _busy(settings.ingest.http_max_parses)
    ingest = _http_ingest(request, resources)
    async with slots:
        body = await read_body(
            request.stream(),
            content_length=request.headers.get("content-length"),
            encoding=request.headers.get("content-encoding"),
            limit=settings.ingest.http_max_body,
        )
        items = await _parse(body, request.headers.get("content-type"), settings, ingest)
    if client.device is not None:  # a device-bound token speaks for that router only
        for item in items:
            item.bound_hostname = client.device
    pending = _pending_bytes(request, resources)
    if not pending.take(len(body)):
        return _unavailable(
            "too many bytes wait for the bus (OPMAS_INGEST__HTTP_MAX_PENDING_BYTES); retry shortly"
        )
    try:
        accepted = await ingest.accept(
            items,
            client=client.key,
            source_ip=request.client.host if request.client else None,
            body=body,
            idempotency_key=idempotency_key,
        )
    except Backlogged as exc:
        return _unavailable(f"{exc} (OPMAS_INGEST__MAX_UNREAD_BYTES); retry later")
    except BusError as exc:
        return _unavailable(f"the bus did not store the batch; retry ({exc})")
    finally:
        pending.give_back(len(body))
    headers = {"Idempotent-Replayed": "true"} if accepted.replayed else None
    return JSONResponse(
        {"accepted": accepted.accepted, "batch_id": accepted.batch_id},
        status_code=202,
        headers=headers,
    )


async def _parse(
    body: bytes, content_type: str | None, settings: Settings, ingest: HttpIngest
) -> list[RawLog]:
    max_message = min(settings.syslog_max_message, ingest.max_line_bytes)
    max_items = settings.ingest.http_max_items
    if len(body) > PARSE_IN_THREAD_BYTES:  # keep the loop (and the syslog listeners) responsive
        return await asyncio.to_thread(parse_body, body, content_type, max_message, max_items)
    return parse_body(body, content_type, max_message, max_items)
