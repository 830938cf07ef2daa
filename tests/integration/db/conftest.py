"""An ORM session on each storage test's own database (the root conftest provides it)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from opmas.db.engine import session_factory


@pytest.fixture
async def session(engine: AsyncEngine) -> AsyncIterator[AsyncSession]:
    """A session whose commits stay in the test's database until the database is dropped."""
    async with session_factory(engine)() as db:
        yield db
