"""`opmas dlq list|show|replay|drop` against a real nats-server: a message dead-lettered by a
real consumer is seen, replayed where it came from (once, however often replayed) and dropped."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from nats.aio.msg import Msg
from typer.testing import CliRunner

from opmas.bus.connect import connect_bus
from opmas.bus.consume import DlqHeader, PermanentError, PullConsumer
from opmas.bus.publish import publish
from opmas.cli.main import app
from opmas.settings import BusSettings

runner = CliRunner()
pytestmark = pytest.mark.integration


def _ok(*args: str, stdin: str | None = None) -> str:
    result = runner.invoke(app, ["dlq", *args], input=stdin)
    assert result.exit_code == 0, result.output
    return result.output


def _dead_letter(nats_url: str, settings: BusSettings, payloads: list[bytes]) -> None:
    """Publish `payloads` on logs.raw; a consumer that finds them bad dead-letters them."""

    async def _run() -> None:
        async with connect_bus(nats_url, settings) as bus:
            for payload in payloads:
                await publish(bus, bus.subjects.logs_raw, payload, headers={"Opmas-Schema": "1"})

            async def refuse(msgs: list[Msg]) -> None:
                raise PermanentError("batch version 9 not understood")

            async with PullConsumer(bus, bus.subjects.logs_raw_stream, "parser") as consumer:
                done = 0
                while done < len(payloads):
                    result = await consumer.process(await consumer.fetch(), refuse)
                    done += result.dead_lettered

    asyncio.run(_run())


def _raw_messages(nats_url: str, settings: BusSettings) -> list[tuple[int, bytes, dict[str, str]]]:
    async def _run() -> list[tuple[int, bytes, dict[str, str]]]:
        async with connect_bus(nats_url, settings) as bus:
            stream = bus.subjects.logs_raw_stream.name
            info = await bus.js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                msg = await bus.js.get_msg(stream, seq)
                out.append((seq, msg.data or b"", dict(msg.headers or {})))
            return out

    return asyncio.run(_run())


def _letters() -> list[dict[str, Any]]:
    listed: list[dict[str, Any]] = json.loads(_ok("list", "--json"))
    return listed


def test_list_show_replay_drop_round_trip(cli_bus: BusSettings, nats_url: str) -> None:
    _dead_letter(nats_url, cli_bus, [b'{"v": 9, "items": []}', b"second"])
    first, second = _letters()
    assert first["stream"].endswith("_LOGS_RAW")
    assert first["subject"].endswith(".logs.raw")
    assert (first["kind"], first["error_type"], first["deliveries"]) == (
        "permanent",
        "PermanentError",
        1,
    )
    assert first["error"] == "PermanentError: batch version 9 not understood"
    table = _ok("list", "--stream", "LOGS_RAW")
    assert "batch version 9 not understood" in table
    assert _ok("list", "--stream", "FINDINGS") == "no dead letters\n"

    shown = json.loads(_ok("show", str(first["seq"]), "--json"))
    assert shown["payload"] == '{"v": 9, "items": []}'
    assert shown["headers"]["Opmas-Schema"] == "1"
    assert shown["headers"][DlqHeader.CONSUMER] == "parser"
    assert "batch version 9" in _ok("show", str(first["seq"]))

    replayed = json.loads(_ok("replay", str(first["seq"]), "--json"))
    assert [r["duplicate"] for r in replayed] == [False]
    assert [letter["seq"] for letter in _letters()] == [second["seq"]]
    again = runner.invoke(app, ["dlq", "replay", str(first["seq"])])
    assert again.exit_code == 1
    assert f"no dead letter {first['seq']}" in again.output

    raw = _raw_messages(nats_url, cli_bus)
    copies = [(data, headers) for _, data, headers in raw if data == b'{"v": 9, "items": []}']
    assert len(copies) == 2  # the original and one replay
    _, headers = copies[-1]
    assert headers["Opmas-Schema"] == "1"  # its own headers, not the DLQ's
    assert not any(key.startswith("Opmas-Dlq-") for key in headers)

    assert "dropped 1" in _ok("drop", str(second["seq"]), "--yes")
    assert _letters() == []
    assert runner.invoke(app, ["dlq", "drop", str(second["seq"]), "--yes"]).exit_code == 1


def test_the_same_letter_twice_is_replayed_once(cli_bus: BusSettings, nats_url: str) -> None:
    """Two dead letters of one original (dead-lettered again after a failed replay, or by
    two consumers): the second replay is a duplicate JetStream does not store."""

    async def _twice() -> None:
        async with connect_bus(nats_url, cli_bus) as bus:
            headers: dict[str, str] = {
                DlqHeader.ERROR: "ValueError: bad",
                DlqHeader.ERROR_TYPE: "ValueError",
                DlqHeader.KIND: "permanent",
                DlqHeader.SUBJECT: bus.subjects.logs_raw,
                DlqHeader.STREAM: bus.subjects.logs_raw_stream.name,
                DlqHeader.SEQUENCE: "41",
            }
            for _ in range(2):
                await bus.js.publish(
                    bus.subjects.dlq(bus.subjects.logs_raw_stream.name), b"one", headers=headers
                )

    asyncio.run(_twice())
    seqs = [str(letter["seq"]) for letter in _letters()]
    replayed = json.loads(_ok("replay", *seqs, "--json"))

    assert [r["duplicate"] for r in replayed] == [False, True]
    assert [data for _, data, _ in _raw_messages(nats_url, cli_bus)] == [b"one"]
    assert _letters() == []


def test_unknown_stream_and_missing_letter_fail_with_one_line(cli_bus: BusSettings) -> None:
    bad = runner.invoke(app, ["dlq", "list", "--stream", "NOPE"])
    assert bad.exit_code == 1
    assert "no stream 'NOPE'" in bad.output
    missing = runner.invoke(app, ["dlq", "show", "999"])
    assert missing.exit_code == 1
    assert "no dead letter 999" in missing.output
