"""Who is calling: ingest clients authenticate with `Authorization: Bearer <token>`.

Tokens live in `api_tokens` (see `opmas.ingest.tokens`); `OPMAS_INGEST_AUTH=off` lets anyone
post logs (a lab). `last_used_at` is written at most once a minute per token.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from opmas.api.deps import AppResources, DbSession
from opmas.errors import ApiError, Forbidden
from opmas.ingest import tokens

TOUCH_INTERVAL_S = 60.0


class Unauthorized(ApiError):
    status_code = 401


@dataclass(frozen=True)
class IngestClient:
    """The sender of a batch: a token (its id keys Idempotency-Keys) or anyone (auth off)."""

    key: str  # "token:<id>" or "anonymous"
    name: str
    device: str | None = None


ANONYMOUS = IngestClient(key="anonymous", name="anonymous")


def bearer_token(request: Request) -> str | None:
    """The token of an `Authorization: Bearer` header, if there is one."""
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


async def ingest_client(
    request: Request, resources: AppResources, session: DbSession
) -> IngestClient:
    """The authenticated sender; Unauthorized without a valid token, Forbidden without scope."""
    if not resources.settings.ingest_auth:
        return ANONYMOUS
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("missing Authorization: Bearer <token>")
    holder = await tokens.authenticate(session, token)
    if holder is None:
        raise Unauthorized("unknown, revoked or expired token")
    if not holder.may_ingest():
        raise Forbidden(f"token {holder.name!r} may not send logs")
    if _touch_due(request, holder.token_id):
        await tokens.touch(session, holder.token_id)
        await session.commit()
    return IngestClient(key=f"token:{holder.token_id}", name=holder.name, device=holder.device)


def _touch_due(request: Request, token_id: int) -> bool:
    """True at most once per TOUCH_INTERVAL_S for a token (per API process)."""
    touched: dict[int, float] | None = getattr(request.app.state, "token_touched", None)
    if touched is None:
        touched = request.app.state.token_touched = {}
    now = time.monotonic()
    if now - touched.get(token_id, -TOUCH_INTERVAL_S) < TOUCH_INTERVAL_S:
        return False
    touched[token_id] = now
    return True


CurrentIngestClient = Annotated[IngestClient, Depends(ingest_client)]
