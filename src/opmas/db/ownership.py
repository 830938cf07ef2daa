"""The least-privilege role OPMAS connects as: created, and made owner of its database, by the
embedded PostgreSQL's bootstrap (the superuser is used at start-up only, never by the app).

Every step is idempotent: a data dir whose database the superuser created (OPMAS before the
role existed) is upgraded on its next start by handing every object over to the role.
"""

from __future__ import annotations

from typing import Any

# Objects of schema `public` not owned by the role, extension members left out. Partitions of
# `events` and `findings` are tables of their own here (ALTER TABLE does not recurse to them).
_RELATIONS = """
SELECT c.oid::regclass::text AS name, c.relkind::text AS kind
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relowner <> $1::regrole AND c.relkind::text = ANY($2::text[])
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
ORDER BY c.oid
"""
_ROUTINES = """
SELECT p.oid::regprocedure::text AS name, p.prokind::text AS kind
FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = 'public' AND p.proowner <> $1::regrole
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_proc'::regclass
                  AND d.objid = p.oid AND d.deptype = 'e')
"""
_TYPES = """
SELECT t.oid::regtype::text AS name
FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
WHERE n.nspname = 'public' AND t.typowner <> $1::regrole AND t.typtype IN ('e', 'd', 'r')
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_type'::regclass
                  AND d.objid = t.oid AND d.deptype = 'e')
"""
# Tables first: their owned sequences (serial, identity) follow them and may not be moved alone.
_RELATION_STEPS = (
    ("TABLE", ("r", "p")),
    ("FOREIGN TABLE", ("f",)),
    ("VIEW", ("v",)),
    ("MATERIALIZED VIEW", ("m",)),
    ("SEQUENCE", ("S",)),
)
_ROUTINE_KINDS = {"f": "FUNCTION", "w": "FUNCTION", "p": "PROCEDURE", "a": "AGGREGATE"}


async def ensure_role(conn: Any, role: str, password: str) -> None:
    """Create `role` (LOGIN, no superuser, no CREATEDB/CREATEROLE) or reset it to that, with
    `password`. `conn` is an asyncpg connection of a superuser."""
    exists = await conn.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", role)
    verb = "ALTER" if exists else "CREATE"
    attributes = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS"
    statement = await conn.fetchval(
        f"SELECT format('{verb} ROLE %I {attributes} PASSWORD %L', $1::text, $2::text)",
        role,
        password,
    )
    await conn.execute(statement)


async def ensure_database(conn: Any, database: str, owner: str) -> bool:
    """Create `database` owned by `owner`, or make `owner` its owner; whether it existed."""
    current = await conn.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = $1", database
    )
    if current is None:
        await conn.execute(await _format(conn, "CREATE DATABASE %I OWNER %I", database, owner))
        return False
    if current != owner:
        await conn.execute(await _format(conn, "ALTER DATABASE %I OWNER TO %I", database, owner))
    return True


async def hand_over_schema(conn: Any, owner: str) -> int:
    """Make `owner` own schema public and every table, partition, view, sequence, type and
    routine in it; `conn` is a superuser's connection to the database. Returns how many
    objects in the schema changed owner (0 once done)."""
    moved = 0
    if await conn.fetchval(  # a new database's public schema: pg_database_owner (not counted)
        "SELECT nspowner <> $1::regrole FROM pg_namespace WHERE nspname = 'public'", owner
    ):
        await conn.execute(await _format(conn, "ALTER SCHEMA public OWNER TO %I", owner))
    async with conn.transaction():
        for keyword, kinds in _RELATION_STEPS:
            for row in await conn.fetch(_RELATIONS, owner, list(kinds)):
                await conn.execute(f"ALTER {keyword} {row['name']} OWNER TO {_ident(owner)}")
                moved += 1
        for row in await conn.fetch(_ROUTINES, owner):
            keyword = _ROUTINE_KINDS.get(row["kind"], "ROUTINE")
            await conn.execute(f"ALTER {keyword} {row['name']} OWNER TO {_ident(owner)}")
            moved += 1
        for row in await conn.fetch(_TYPES, owner):
            await conn.execute(f"ALTER TYPE {row['name']} OWNER TO {_ident(owner)}")
            moved += 1
    return moved


async def _format(conn: Any, template: str, *names: str) -> str:
    """`template` with its %I and %L filled in by PostgreSQL's own quoting."""
    args = ", ".join(f"${i}::text" for i in range(1, len(names) + 1))
    return str(await conn.fetchval(f"SELECT format('{template}', {args})", *names))


def _ident(name: str) -> str:
    """A role name as a quoted SQL identifier."""
    return '"' + name.replace('"', '""') + '"'
