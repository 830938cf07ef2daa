"""A listener whose port is taken fails with a BindError naming the port and its variable."""

from __future__ import annotations

import re
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from opmas.api.server import bind
from opmas.errors import BindError, ConfigError

from .conftest import Pki, StartIngest


@contextmanager
def taken(kind: socket.SocketKind) -> Iterator[int]:
    """A port of 127.0.0.1 someone else listens on."""
    with socket.socket(socket.AF_INET, kind) as sock:
        sock.bind(("127.0.0.1", 0))
        if kind is socket.SOCK_STREAM:
            sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.parametrize(
    ("transport", "kind"),
    [("UDP", socket.SOCK_DGRAM), ("TCP", socket.SOCK_STREAM), ("TLS", socket.SOCK_STREAM)],
)
async def test_a_syslog_port_in_use_names_the_port_and_its_variable(
    start_ingest: StartIngest, pki: Pki, transport: str, kind: socket.SocketKind
) -> None:
    with taken(kind) as port:
        overrides: dict[str, object] = {f"{transport.lower()}_port": port}
        if transport == "TLS":
            overrides.update(tls_cert=pki.server_cert, tls_key=pki.server_key)
        with pytest.raises(BindError) as failed:
            async with start_ingest(**overrides):
                pass
    assert isinstance(failed.value, ConfigError)  # fatal: the supervisor does not restart it
    assert str(failed.value) == (
        f"syslog {transport} port {port} on 127.0.0.1 is in use: stop what listens there,"
        f" or set OPMAS_SYSLOG_{transport}_PORT (-1: off)"
    )


def test_the_http_port_in_use_names_the_port_and_opmas_http_port() -> None:
    with (
        taken(socket.SOCK_STREAM) as port,
        pytest.raises(BindError, match=re.escape(f"HTTP port {port} on 127.0.0.1 is in use")),
    ):
        bind("127.0.0.1", port)


def test_an_address_of_another_machine_is_named_too() -> None:
    with pytest.raises(BindError, match=r"host 192\.0\.2\.1 is no address .*: set OPMAS_HTTP_HOST"):
        bind("192.0.2.1", 0)  # TEST-NET-1: never an address of this machine
