"""`opmas keys rotate`: re-encrypt every stored secret under a new secret key, in one
transaction, then put the new key where OPMAS reads it. No key is ever printed.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import Progress
from sqlalchemy.ext.asyncio import AsyncSession

from opmas import keyrotation
from opmas.cli import render
from opmas.cli.context import console, err_console, load_settings
from opmas.crypto import SecretBox, SecretKeys
from opmas.settings import PLACEHOLDER_SECRETS, Settings

app = typer.Typer(help="The secret key that encrypts stored secrets.", no_args_is_help=True)

MIN_KEY_LENGTH = 16


@app.callback()
def keys() -> None:
    """Manage the secret key (a group even with one command: `opmas keys rotate`)."""


def new_key_from(path: Path | None) -> tuple[str, bool]:
    """(new key, whether it was generated): read from `path` if it exists, else generated
    (and written to `path`, 0600, when given). Exit 2 for a key too weak to use."""
    if path is not None and path.exists():
        key = path.read_text().strip()
        if len(key) < MIN_KEY_LENGTH or key.lower() in PLACEHOLDER_SECRETS:
            raise typer.BadParameter(
                f"the key in {path} is too weak (at least {MIN_KEY_LENGTH} characters)",
                param_hint="--new-key-file",
            )
        return key, False
    key = secrets.token_urlsafe(48)
    if path is not None:
        keyrotation.write_private_file(path, key + "\n", exclusive=True)
    return key, True


async def _rotate(settings: Settings, old: SecretBox, new: SecretBox) -> dict[str, int]:
    async def _work(session: AsyncSession) -> dict[str, int]:
        total = await keyrotation.count_secrets(session)
        with Progress(console=err_console, transient=False) as progress:
            task = progress.add_task("re-encrypting stored secrets", total=total)
            return await keyrotation.rotate_secrets(
                session, old, new, advance=lambda: progress.advance(task)
            )

    return await render.in_session(settings, _work)


@app.command()
def rotate(
    new_key_file: Annotated[
        Path | None,
        typer.Option(
            help="File with the new key; generated into it if it does not exist. Required "
            "when the key comes from OPMAS_SECRET_KEY."
        ),
    ] = None,
) -> None:
    """Re-encrypt every stored secret under a new key, all or nothing, then install the key."""
    settings = load_settings()
    keys = SecretKeys(settings)
    if not keys.file_based and new_key_file is None:
        raise typer.BadParameter(
            "the key comes from OPMAS_SECRET_KEY: give --new-key-file to hold the new one",
            param_hint="--new-key-file",
        )
    old = render.run_async(lambda _: _box(keys), settings)
    new_key, generated = new_key_from(new_key_file)
    staged = keyrotation.stage_key_file(keys.path, new_key) if keys.file_based else None
    try:
        counts = render.run_async(lambda s: _rotate(s, old, SecretBox(new_key)), settings)
    except typer.Exit:
        for leftover in (staged, new_key_file if generated else None):
            if leftover is not None:
                leftover.unlink(missing_ok=True)
        raise
    if staged is not None:
        keyrotation.install_key_file(staged, keys.path)
    _report(counts, keys, new_key_file, settings)


async def _box(keys: SecretKeys) -> SecretBox:
    return keys.box()


def _report(
    counts: dict[str, int], keys: SecretKeys, new_key_file: Path | None, settings: Settings
) -> None:
    done = ", ".join(f"{table}: {n}" for table, n in counts.items())
    console.print(f"{sum(counts.values())} secret(s) re-encrypted ({done})")
    if keys.file_based:
        console.print(f"the new key is in {keys.path} (running components follow it)")
        if settings.secret_key is not None:
            console.print("[yellow]OPMAS_SECRET_KEY still holds the old key: unset it[/yellow]")
    else:
        console.print(
            f"[bold]set OPMAS_SECRET_KEY to the content of {new_key_file}[/bold] and restart"
            " OPMAS: stored secrets no longer decrypt with the old key"
        )
