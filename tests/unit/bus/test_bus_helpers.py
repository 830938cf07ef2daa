"""Pure helpers of the bus package: retry delays, dead-letter headers, subject roots."""

from __future__ import annotations

import pytest
from nats.aio.msg import Msg

from opmas.bus.connect import redact
from opmas.bus.consume import MAX_NAK_DELAY_S, DlqHeader, dlq_headers, nak_delay
from opmas.bus.publish import _headers
from opmas.bus.subjects import Subjects


@pytest.mark.parametrize(
    ("base", "attempt", "expected"),
    [(1.0, 1, 1.0), (1.0, 2, 2.0), (1.0, 4, 8.0), (0.5, 3, 2.0), (1.0, 30, MAX_NAK_DELAY_S)],
)
def test_nak_delay_doubles_and_is_capped(base: float, attempt: int, expected: float) -> None:
    assert nak_delay(base, attempt) == expected


def test_nak_delay_zero_base_means_no_delay() -> None:
    assert nak_delay(0.0, 5) == 0.0


def _js_msg(headers: dict[str, str] | None) -> Msg:
    # $JS.ACK.<stream>.<consumer>.<delivered>.<stream seq>.<consumer seq>.<ts>.<pending>
    reply = "$JS.ACK.LOGS_RAW.parser.3.42.7.1700000000000000000.5"
    return Msg(_client=None, subject="logs.raw", reply=reply, data=b"x", headers=headers)  # type: ignore[arg-type]


def test_dlq_headers_carry_origin_and_one_line_error() -> None:
    msg = _js_msg({"Nats-Msg-Id": "b1", "Opmas-Schema": "2"})

    headers = dlq_headers(msg, "boom\r\n  at line 3\n" + "x" * 5000, "ValueError", "parser")

    assert "Nats-Msg-Id" not in headers
    assert headers["Opmas-Schema"] == "2"
    assert headers[DlqHeader.ERROR].startswith("boom at line 3 xxx")
    assert len(headers[DlqHeader.ERROR]) == 1000
    assert headers[DlqHeader.SUBJECT] == "logs.raw"
    assert headers[DlqHeader.STREAM] == "LOGS_RAW"
    assert headers[DlqHeader.SEQUENCE] == "42"
    assert headers[DlqHeader.DELIVERIES] == "3"
    assert headers[DlqHeader.CONSUMER] == "parser"


def test_msg_id_becomes_the_dedup_header_without_touching_the_callers_dict() -> None:
    mine = {"A": "1"}

    assert _headers("id-1", mine) == {"A": "1", "Nats-Msg-Id": "id-1"}
    assert mine == {"A": "1"}
    assert _headers(None, None) is None


@pytest.mark.parametrize(
    ("namespace", "subject", "root"),
    [
        ("", "logs.raw", "logs.raw"),
        ("", "logs.parsed.wifi", "logs.parsed"),
        ("t1", "t1.findings.wifi", "findings.wifi"),
        ("t1", "t1.dlq.T1_LOGS_RAW", "dlq.T1_LOGS_RAW"),
    ],
)
def test_subject_root_drops_the_namespace(namespace: str, subject: str, root: str) -> None:
    assert Subjects(namespace).root(subject) == root


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ("nats://user:s3cret@nats.example:4222", "nats://***@nats.example:4222"),
        ("tls://token@nats.example", "tls://***@nats.example"),
    ],
)
def test_redact_hides_credentials(url: str, shown: str) -> None:
    assert redact(url) == shown
