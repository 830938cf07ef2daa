"""PostgreSQL storage: the async engine, schema migrations and partition upkeep."""

from opmas.db.engine import async_url, create_engine, session_factory

__all__ = ["async_url", "create_engine", "session_factory"]
