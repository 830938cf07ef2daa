"""`opmas dlq`: the dead letters (messages that can never succeed) - list, show, replay, drop."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from opmas.cli import render
from opmas.cli.context import console
from opmas.errors import OpmasError
from opmas.settings import Settings, secret_value

app = typer.Typer(
    help=(
        "Dead letters: messages that can never succeed (bad payload, data the database "
        "refuses, an error repeated max_deliver times). Outages never put messages here."
    ),
    no_args_is_help=True,
)

T = TypeVar("T")

AsJson = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
Seqs = Annotated[list[int], typer.Argument(help="Sequence numbers in the DLQ (see `list`).")]
PREVIEW_BYTES = 4096


def _with_bus(work: Callable[[Any], Awaitable[T]]) -> T:
    """Run `work(bus)` on the configured NATS, or that of the `opmas up` on the data dir."""
    from opmas.bus.connect import NatsAuth, connect_bus
    from opmas.embedded import running_endpoints

    async def _run(settings: Settings) -> T:
        url = secret_value(settings.nats_url)
        if url is None:
            running = running_endpoints(settings.data_dir)
            if running is None:
                raise OpmasError(
                    f"no NATS: set OPMAS_NATS_URL, or start `opmas up` on {settings.data_dir}"
                )
            url = running.nats_url
        auth = NatsAuth.from_settings(settings)
        async with connect_bus(url, settings.bus, name="opmas-dlq", auth=auth) as bus:
            return await work(bus)

    return render.run_async(_run)


@app.command("list")
def list_(
    stream: Annotated[
        str | None, typer.Option(help="Only letters of this stream (LOGS_RAW, FINDINGS...).")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=100_000, help="At most this many.")] = 100,
    as_json: AsJson = False,
) -> None:
    """List dead letters, oldest first, with where they came from and why."""
    from opmas.bus import dlq

    letters = _with_bus(lambda bus: dlq.dead_letters(bus, stream=stream, limit=limit))
    if as_json:
        render.print_json([letter.summary() for letter in letters])
        return
    render.print_table(
        ("seq", "time", "stream", "subject", "kind", "deliveries", "consumer", "error"),
        (
            (
                letter.seq,
                render.when(letter.time),
                letter.stream,
                letter.subject,
                letter.kind or "(older version)",
                letter.deliveries,
                letter.consumer,
                letter.error[:120],
            )
            for letter in letters
        ),
        empty="no dead letters",
    )


@app.command()
def show(
    seq: Annotated[int, typer.Argument(help="Sequence number in the DLQ (see `list`).")],
    as_json: AsJson = False,
) -> None:
    """Show one dead letter: its headers and (the start of) its payload."""
    from opmas.bus import dlq

    letter = _with_bus(lambda bus: dlq.dead_letter(bus, seq))
    payload = letter.data[:PREVIEW_BYTES].decode("utf-8", errors="replace")
    if as_json:
        render.print_json({**letter.summary(), "headers": letter.headers, "payload": payload})
        return
    render.print_fields(f"dead letter {letter.seq}", {**letter.summary(), **letter.headers})
    cut = f" (first {PREVIEW_BYTES} of {letter.size} bytes)" if letter.size > PREVIEW_BYTES else ""
    console.print(f"[bold]payload{cut}[/bold]")
    console.print(payload, markup=False, highlight=False, soft_wrap=True)


@app.command()
def replay(seqs: Seqs, as_json: AsJson = False) -> None:
    """Publish dead letters again where they came from, then remove them from the DLQ.

    Safe to repeat: a replay has a de-duplication id and the consumers store idempotently.
    """
    from opmas.bus import dlq

    async def _replay(bus: Any) -> list[dict[str, Any]]:
        done = []
        for seq in seqs:
            ack = await dlq.replay(bus, seq)
            done.append(
                {
                    "seq": seq,
                    "stream": ack.stream,
                    "stream_seq": ack.seq,
                    "duplicate": bool(ack.duplicate),
                }
            )
        return done

    done = _with_bus(_replay)
    if as_json:
        render.print_json(done)
        return
    for each in done:
        again = " (a duplicate: already there)" if each["duplicate"] else ""
        console.print(f"replayed {each['seq']} to {each['stream']} #{each['stream_seq']}{again}")


@app.command()
def drop(
    seqs: Seqs,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete dead letters for good."""
    from opmas.bus import dlq

    if not yes:
        typer.confirm(f"Delete {len(seqs)} dead letter(s) for good?", abort=True)

    async def _drop(bus: Any) -> None:
        for seq in seqs:
            await dlq.drop(bus, seq)

    _with_bus(_drop)
    console.print(f"dropped {len(seqs)} dead letter(s)")
