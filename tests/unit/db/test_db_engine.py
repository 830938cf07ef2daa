"""URL handling of the engine and the packaging of the migrations; no database needed."""

from __future__ import annotations

import ast

import pytest
from alembic.script import ScriptDirectory

from opmas.db import migrate
from opmas.db.engine import async_url, create_engine, session_factory
from opmas.errors import ConfigError
from opmas.settings import DatabaseSettings


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u:p@db:5432/opmas", "postgresql+asyncpg://u:p@db:5432/opmas"),
        ("postgres://u@db/opmas", "postgresql+asyncpg://u@db/opmas"),
        ("postgresql+asyncpg://db/opmas", "postgresql+asyncpg://db/opmas"),
        ("postgresql://u:p%40ss@db/opmas", "postgresql+asyncpg://u:p%40ss@db/opmas"),
        ("postgresql://db/opmas?sslmode=require", "postgresql+asyncpg://db/opmas?ssl=require"),
    ],
)
def test_async_url_selects_asyncpg(url: str, expected: str) -> None:
    assert async_url(url) == expected


@pytest.mark.parametrize("url", ["mysql://db/opmas", "postgresql+psycopg://db/x", "not a url"])
def test_async_url_refuses_other_databases(url: str) -> None:
    with pytest.raises(ConfigError):
        async_url(url)


async def test_engine_takes_pool_size_from_settings_without_connecting() -> None:
    engine = create_engine("postgres://nobody@127.0.0.1:1/none", DatabaseSettings(pool_size=3))
    try:
        assert engine.url.drivername == "postgresql+asyncpg"
        assert engine.pool.size() == 3  # type: ignore[attr-defined]  # QueuePool API
        assert session_factory(engine).kw["expire_on_commit"] is False
    finally:
        await engine.dispose()


def test_migration_history_is_linear_with_one_head() -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config())

    assert script.get_heads() == [migrate.head_revision()]
    assert [rev.down_revision for rev in script.walk_revisions()][-1] is None


def test_migrations_ship_in_the_package_and_import_no_models() -> None:
    scripts = sorted((migrate.MIGRATIONS_DIR / "versions").glob("*.py"))
    assert (migrate.MIGRATIONS_DIR / "env.py").is_file()
    assert (migrate.MIGRATIONS_DIR / "script.py.mako").is_file()
    assert scripts
    for script in [migrate.MIGRATIONS_DIR / "env.py", *scripts]:
        tree = ast.parse(script.read_text())
        imported = {
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        } | {
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.Import)
            for alias in node.names
        }
        assert not any(name.startswith("opmas.models") for name in imported), script.name
