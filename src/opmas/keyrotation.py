"""Secret-key rotation (`opmas keys rotate`): every value of every encrypted column decrypted
with the old key and encrypted with the new one, and the data_dir key file replaced.

The caller owns the transaction: `rotate_secrets` decrypts everything before it writes
anything, so a value that does not decrypt leaves the database untouched.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from opmas.crypto import ENCRYPTED_COLUMNS, SecretBox
from opmas.errors import SecretError

# (table, column) come from ENCRYPTED_COLUMNS, a constant of the code, never from input.
_SELECT = "SELECT id, {column} FROM {table} WHERE {column} IS NOT NULL ORDER BY id FOR UPDATE"
_COUNT = "SELECT count(*) FROM {table} WHERE {column} IS NOT NULL"
_UPDATE = "UPDATE {table} SET {column} = :token WHERE id = :id"


async def count_secrets(session: AsyncSession) -> int:
    """How many encrypted values are stored, over every encrypted column."""
    total = 0
    for table, column in ENCRYPTED_COLUMNS:
        total += await session.scalar(text(_COUNT.format(table=table, column=column))) or 0
    return total


async def rotate_secrets(
    session: AsyncSession,
    old: SecretBox,
    new: SecretBox,
    *,
    advance: Callable[[], None] | None = None,
) -> dict[str, int]:
    """Re-encrypt every stored secret from `old` to `new`; return the count per table.

    Rows are locked (FOR UPDATE) so no writer slips a value under the old key in between.
    `advance` is called once per value re-encrypted. Flushes, does not commit.

    Raises:
        SecretError: a value does not decrypt with `old` (names table, column and row);
            nothing has been written then.
    """
    planned: dict[tuple[str, str], list[dict[str, object]]] = {}
    for table, column in ENCRYPTED_COLUMNS:
        rows = await session.execute(text(_SELECT.format(table=table, column=column)))
        updates = planned.setdefault((table, column), [])
        for row_id, token in rows.all():
            try:
                plain = old.decrypt_bytes(token)
            except SecretError as exc:
                raise SecretError(
                    f"{table}.{column} of row id={row_id} does not decrypt with the current"
                    " secret key; nothing was changed"
                ) from exc
            updates.append({"id": row_id, "token": new.encrypt(plain)})
            if advance is not None:
                advance()
    counts: dict[str, int] = {}
    for (table, column), updates in planned.items():
        if updates:
            await session.execute(text(_UPDATE.format(table=table, column=column)), updates)
        counts[table] = counts.get(table, 0) + len(updates)
    return counts


def write_private_file(path: Path, content: str, *, exclusive: bool = False) -> None:
    """Write `content` to `path`, readable by the owner only (0600), and fsync it."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_EXCL if exclusive else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(content)
        handle.flush()
        os.fsync(handle.fileno())
    path.chmod(0o600)


def stage_key_file(path: Path, key: str) -> Path:
    """Write `key` beside `path` (as `<name>.new`, 0600) and return that file."""
    staged = path.with_name(path.name + ".new")
    write_private_file(staged, key)
    return staged


def install_key_file(staged: Path, path: Path) -> None:
    """Replace `path` by `staged` atomically (a rename in the same directory)."""
    os.replace(staged, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
