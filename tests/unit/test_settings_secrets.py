"""URLs are secrets: masked in `opmas config show`, reduced to host:port in the banner; NATS
client options need a URL of the user's own."""

from __future__ import annotations

import pytest
from pydantic import SecretStr, ValidationError

from opmas.settings import Settings, masked, url_address


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("nats://opmas:s3cret@nats:4222", "nats://opmas:**********@nats:4222"),
        ("nats://s3cret@nats:4222", "nats://**********@nats:4222"),
        ("tls://nats.example:4222", "tls://nats.example:4222"),
        (
            "nats://a:s3cret@n1:4222,nats://b:s3cret@n2:4222",
            "nats://a:**********@n1:4222,nats://b:**********@n2:4222",
        ),
    ],
)
def test_nats_url_is_masked(url: str, shown: str) -> None:
    assert masked(Settings(nats_url=SecretStr(url)))["nats_url"] == shown


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql://opmas:s3cret@db:5432/opmas", "postgresql://opmas:**********@db:5432/opmas"),
        (
            "postgresql://db/opmas?user=opmas&password=s3cret",
            "postgresql://db/opmas?**********",
        ),
        (
            "postgresql://u:s3cret@db/opmas?sslmode=verify-full",
            "postgresql://u:**********@db/opmas?sslmode=verify-full",
        ),
    ],
)
def test_database_url_is_masked(url: str, shown: str) -> None:
    assert masked(Settings(database_url=SecretStr(url)))["database_url"] == shown


@pytest.mark.parametrize(
    ("url", "address"),
    [
        ("postgresql://opmas:s3cret@127.0.0.1:5432/opmas?sslmode=disable", "127.0.0.1:5432"),
        ("nats://opmas:s3cret@[::1]:4222", "[::1]:4222"),
        ("tls://token@nats.example", "nats.example"),
    ],
)
def test_url_address_is_host_and_port_only(url: str, address: str) -> None:
    assert url_address(url) == address


def test_nats_client_options_without_a_nats_url_are_refused() -> None:
    with pytest.raises(ValidationError, match="OPMAS_NATS_CREDS is for your own NATS server"):
        Settings(nats_creds="/etc/opmas/nats.creds")


def test_a_nats_client_key_needs_its_certificate() -> None:
    with pytest.raises(ValidationError, match="OPMAS_NATS_TLS_KEY needs OPMAS_NATS_TLS_CERT"):
        Settings(nats_url=SecretStr("tls://nats:4222"), nats_tls_key="/k.pem")
