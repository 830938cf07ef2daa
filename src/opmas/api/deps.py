"""What routes depend on: the process's resources and one database session per request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from opmas.db.engine import session_factory
from opmas.resources import Resources


def app_resources(request: Request) -> Resources:
    """The resources the lifespan opened (or borrowed)."""
    resources: Resources = request.app.state.resources
    return resources


def _sessions(request: Request) -> async_sessionmaker[AsyncSession]:
    state = request.app.state
    factory: async_sessionmaker[AsyncSession] | None = getattr(state, "sessions", None)
    if factory is None:
        factory = session_factory(app_resources(request).engine)
        state.sessions = factory
    return factory


async def db_session(request: Request) -> AsyncIterator[AsyncSession]:
    """A session for this request; the route (the boundary) commits what it wants kept."""
    async with _sessions(request)() as session:
        yield session


AppResources = Annotated[Resources, Depends(app_resources)]
DbSession = Annotated[AsyncSession, Depends(db_session)]
