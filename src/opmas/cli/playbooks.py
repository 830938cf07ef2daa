"""`opmas playbooks`: the remedies the orchestrator turns findings into actions with; list,
show, enable and disable, set auto or manual.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from opmas.cli import render
from opmas.cli.context import console
from opmas.cli.findings import AsJson, check_choice
from opmas.errors import OpmasError
from opmas.models import Playbook, PlaybookStep
from opmas.models.actions import EXECUTION_MODES

app = typer.Typer(help="Playbooks: which finding leads to which actions.", no_args_is_help=True)

Name = Annotated[str, typer.Argument(help="Name of the playbook.")]


async def get_playbook(session: AsyncSession, name: str, *, steps: bool = False) -> Playbook:
    """The playbook called `name` (with its steps loaded if asked); OpmasError if none."""
    query = select(Playbook).where(Playbook.name == name)
    if steps:
        query = query.options(selectinload(Playbook.steps))
    playbook = await session.scalar(query)
    if playbook is None:
        raise OpmasError(f"no playbook {name}")
    return playbook


@app.command("list")
def list_playbooks(as_json: AsJson = False) -> None:
    """List playbooks: trigger, mode, active or not, number of steps."""

    async def _fetch(session: AsyncSession) -> list[dict[str, Any]]:
        query = (
            select(Playbook, func.count(PlaybookStep.id))
            .outerjoin(PlaybookStep, PlaybookStep.playbook_id == Playbook.id)
            .group_by(Playbook.id)
            .order_by(Playbook.name)
        )
        rows = (await session.execute(query)).all()
        return [{**render.row_dict(p), "step_count": n} for p, n in rows]

    rows = render.with_session(_fetch)
    if as_json:
        render.print_json(rows)
        return
    render.print_table(
        ("name", "trigger", "mode", "active", "steps", "description"),
        (
            (
                r["name"],
                r["trigger_type"],
                r["execution_mode"],
                "yes" if r["is_active"] else "no",
                r["step_count"],
                r["description"],
            )
            for r in rows
        ),
        empty="no playbooks",
    )


@app.command()
def show(name: Name, as_json: AsJson = False) -> None:
    """Show a playbook: trigger, conditions, mode and each step with its config."""

    async def _view(session: AsyncSession) -> dict[str, Any]:
        playbook = await get_playbook(session, name, steps=True)
        return {
            **render.row_dict(playbook),
            "steps": [render.row_dict(s, exclude=("playbook_id",)) for s in playbook.steps],
        }

    view = render.with_session(_view)
    if as_json:
        render.print_json(view)
        return
    steps = view.pop("steps")
    render.print_fields(f"playbook {view['name']}", view)
    for step in steps:
        number = step.pop("step_number")
        if step["execution_mode"] is None:
            step["execution_mode"] = f"{view['execution_mode']} (the playbook's)"
        render.print_fields(f"step {number}", step)


def _set_active(name: str, active: bool) -> None:
    async def _work(session: AsyncSession) -> bool:
        playbook = await get_playbook(session, name)
        changed = playbook.is_active != active
        playbook.is_active = active
        return changed

    changed = render.with_session(_work)
    state = "enabled" if active else "disabled"
    console.print(f"playbook {name} {state}" if changed else f"playbook {name} was {state}")


@app.command()
def enable(name: Name) -> None:
    """Enable a playbook: matching findings propose its actions again."""
    _set_active(name, True)


@app.command()
def disable(name: Name) -> None:
    """Disable a playbook: matching findings propose nothing."""
    _set_active(name, False)


@app.command()
def mode(
    name: Name,
    execution_mode: Annotated[
        str, typer.Argument(metavar="auto|manual", help="auto: run at once; manual: approve.")
    ],
) -> None:
    """Set a playbook's execution mode: `auto` steps run at once, `manual` ones wait for
    `opmas actions approve`. Applies to actions proposed from now on; a step with a mode of
    its own keeps it."""
    check_choice(execution_mode, EXECUTION_MODES, "MODE")

    async def _work(session: AsyncSession) -> tuple[str, list[tuple[int, str]]]:
        playbook = await get_playbook(session, name, steps=True)
        before = playbook.execution_mode
        playbook.execution_mode = execution_mode
        own = [
            (s.step_number, s.execution_mode)
            for s in playbook.steps
            if s.execution_mode is not None and s.execution_mode != execution_mode
        ]
        return before, own

    before, own = render.with_session(_work)
    if before == execution_mode:
        console.print(f"playbook {name} was {execution_mode}")
    else:
        console.print(f"playbook {name}: {before} -> {execution_mode}")
    for number, step_mode in own:
        console.print(f"  step {number} keeps its own mode: {step_mode}")
