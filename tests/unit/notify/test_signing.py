"""Webhook signatures: what a receiver checks."""

from __future__ import annotations

from opmas.notify.signing import SIGNATURE_HEADER, signed_headers, verify

SECRET = b"hook-secret"
BODY = b'{"type": "finding"}'


def test_a_fresh_signature_of_the_same_body_verifies() -> None:
    assert verify(SECRET, BODY, signed_headers(SECRET, BODY))


def test_another_secret_or_a_changed_body_does_not_verify() -> None:
    headers = signed_headers(SECRET, BODY)
    assert not verify(b"other", BODY, headers)
    assert not verify(SECRET, BODY + b" ", headers)


def test_a_replay_after_five_minutes_is_refused() -> None:
    headers = signed_headers(SECRET, BODY, now=1_000_000)
    assert verify(SECRET, BODY, headers, now=1_000_000 + 299)
    assert not verify(SECRET, BODY, headers, now=1_000_000 + 301)


def test_a_missing_signature_is_refused() -> None:
    headers = signed_headers(SECRET, BODY)
    del headers[SIGNATURE_HEADER]
    assert not verify(SECRET, BODY, headers)
