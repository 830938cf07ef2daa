"""Real relays between the routers and OPMAS: rsyslog and syslog-ng, run unprivileged on
loopback with configs of their own, take a router's RFC 3164 line over TCP and forward it to
the ingest in the formats relays use; the line must parse as if the router had sent it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pwd
import re
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from opmas.messages import Transport
from opmas.parser import ParserEngine

from .conftest import RawReader, StartIngest

pytestmark = pytest.mark.integration

ROUTER_LINES = [
    "<38>Nov 21 10:00:01 OpenWrt-R1 dropbear[1234]: "
    "Bad password attempt for 'root' from 198.51.100.7:52114",
    "<86>Nov 21 10:00:02 ap-2.lan dropbear[77]: "
    "Bad password attempt for 'admin' from 198.51.100.8:40000",
]
EXPECTED = [  # hostname, pid, user, ip, port, event time without the year
    ("OpenWrt-R1", "1234", "root", "198.51.100.7", "52114", "-11-21T10:00:01.000Z"),
    ("ap-2.lan", "77", "admin", "198.51.100.8", "40000", "-11-21T10:00:02.000Z"),
]

RSYSLOG = """\
global(workDirectory="{work}")
module(load="imtcp")
input(type="imtcp" address="127.0.0.1" port="{listen}" ruleset="relay")
ruleset(name="relay") {{
  action(type="omfwd" target="127.0.0.1" port="{opmas}" protocol="tcp"
         template="{template}" TCP_Framing="{framing}")
}}
"""
SYSLOG_NG = """\
@version: 3.38
options {{ keep-hostname(yes); chain-hostnames(no); use-dns(no); stats-freq(0); }};
source s_routers {{ network(ip("127.0.0.1") port({listen}) transport("tcp")); }};
destination d_opmas {{ {driver}("127.0.0.1" port({opmas}) transport("tcp")); }};
log {{ source(s_routers); destination(d_opmas); }};
"""


@dataclass(frozen=True)
class Relay:
    """A relay set-up: daemon, its config, and the header format OPMAS should see."""

    daemon: str  # rsyslogd or syslog-ng
    config: str
    header_format: str
    line_start: str  # a regex the forwarded line of ROUTER_LINES[0] starts with


RELAYS = {
    "rsyslog-rfc5424-octet": Relay(
        "rsyslogd",
        RSYSLOG.replace("{template}", "RSYSLOG_SyslogProtocol23Format").replace(
            "{framing}", "octet-counted"
        ),
        "rfc5424",
        r"<38>1 \d{4}-11-21T10:00:01\+00:00 OpenWrt-R1 dropbear 1234 - -  Bad password",
    ),
    "rsyslog-rfc5424-lf": Relay(
        "rsyslogd",
        RSYSLOG.replace("{template}", "RSYSLOG_SyslogProtocol23Format").replace(
            "{framing}", "traditional"
        ),
        "rfc5424",
        r"<38>1 \d{4}-11-21T10:00:01\+00:00 OpenWrt-R1 dropbear 1234 - -  Bad password",
    ),
    "rsyslog-rfc3164-forward": Relay(
        "rsyslogd",
        RSYSLOG.replace("{template}", "RSYSLOG_ForwardFormat").replace("{framing}", "traditional"),
        "rfc3164_iso",
        r"<38>\d{4}-11-21T10:00:01\+00:00 OpenWrt-R1 dropbear\[1234\]: Bad password",
    ),
    "rsyslog-rfc3164-traditional": Relay(
        "rsyslogd",
        RSYSLOG.replace("{template}", "RSYSLOG_TraditionalForwardFormat").replace(
            "{framing}", "traditional"
        ),
        "rfc3164",
        r"<38>Nov 21 10:00:01 OpenWrt-R1 dropbear\[1234\]: Bad password",
    ),
    "syslog-ng-syslog-driver": Relay(
        "syslog-ng",
        SYSLOG_NG.replace("{driver}", "syslog"),
        "rfc5424",
        r"<38>1 \d{4}-11-21T10:00:01\+00:00 OpenWrt-R1 dropbear 1234 - - Bad password",
    ),
    "syslog-ng-network-driver": Relay(
        "syslog-ng",
        SYSLOG_NG.replace("{driver}", "network"),
        "rfc3164",
        r"<38>Nov 21 10:00:01 OpenWrt-R1 dropbear\[1234\]: Bad password",
    ),
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unprivileged() -> tuple[list[str], Callable[[Path], None]]:
    """The command prefix that runs a daemon as `nobody` when the tests run as root (the
    relays need no privilege: high ports on 127.0.0.1, files in their own directory), and how
    to hand that directory over to it."""
    if os.geteuid() != 0:
        return [], lambda _: None
    setpriv = shutil.which("setpriv")
    assert setpriv is not None, "setpriv (util-linux) is missing"
    nobody = pwd.getpwnam("nobody")

    def hand_over(path: Path) -> None:
        for item in (path, *path.iterdir()):
            os.chown(item, nobody.pw_uid, nobody.pw_gid)

    command = [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]
    return command, hand_over


def _command(daemon: str, work: Path) -> list[str]:
    binary = shutil.which(daemon) or shutil.which(daemon, path="/usr/sbin:/usr/local/bin")
    assert binary is not None, f"{daemon} is missing: run scripts/install-system-deps"
    conf = str(work / "relay.conf")
    if daemon == "rsyslogd":
        return [binary, "-n", "-f", conf, "-i", str(work / "rsyslogd.pid")]
    return [binary, "-F", "-e", "-f", conf, "--no-caps", "-R", str(work / "persist"),
            "-p", str(work / "syslog-ng.pid"), "-c", str(work / "syslog-ng.ctl")]  # fmt: skip


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


async def _wait_listening(port: int, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if proc.returncode is not None or time.monotonic() > deadline:
                raise AssertionError(f"relay not listening:\n{_tail(log)}") from None
            await asyncio.sleep(0.05)
            continue
        writer.close()
        await writer.wait_closed()
        return


@contextlib.asynccontextmanager
async def running_relay(relay: Relay, opmas_port: int) -> AsyncIterator[int]:
    """The relay, started and listening; yields the TCP port routers send to."""
    listen = _free_port()
    prefix, hand_over = _unprivileged()
    with tempfile.TemporaryDirectory(prefix="opmas-relay-") as tmp:
        work = Path(tmp)
        text = relay.config.format(work=work, listen=listen, opmas=opmas_port)
        (work / "relay.conf").write_text(text)
        log = work / "relay.log"
        log.touch()
        hand_over(work)
        with log.open("wb") as sink:
            proc = await asyncio.create_subprocess_exec(
                *prefix, *_command(relay.daemon, work), stdout=sink, stderr=sink,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "TZ": "UTC"},
            )  # fmt: skip
        try:
            await _wait_listening(listen, proc, log)
            yield listen
        finally:
            if proc.returncode is None:
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()


async def _send_as_router(port: int, lines: list[str]) -> None:
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write("".join(line + "\n" for line in lines).encode())
    await writer.drain()
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize("name", list(RELAYS))
async def test_a_relayed_brute_force_line_parses_with_its_ip_and_router_hostname(
    start_ingest: StartIngest, reader: RawReader, name: str
) -> None:
    relay = RELAYS[name]
    async with start_ingest() as service, running_relay(relay, service.ports["tcp"]) as port:
        await _send_as_router(port, ROUTER_LINES)
        items = await reader.wait_for(len(ROUTER_LINES), timeout_s=20)

    assert len(items) == len(ROUTER_LINES)
    assert re.match(relay.line_start, items[0].line), items[0].line
    assert {(item.transport, item.source_ip, tuple(item.flags)) for item in items} == {
        (Transport.TCP, "127.0.0.1", ())
    }
    engine = ParserEngine.from_dirs()
    for item, (host, pid, user, ip, port_, event_ts) in zip(items, EXPECTED, strict=True):
        relayed = engine.parse(item)
        explained = engine.explain(item.line, item.arrival_ts)
        assert explained.header_format == relay.header_format
        assert (relayed.hostname, relayed.process_name, relayed.pid) == (host, "dropbear", pid)
        assert relayed.parser_name == "dropbear_parser_v1"
        assert relayed.structured_fields["event"] == "ssh_bad_password"
        assert (relayed.structured_fields["user"], relayed.structured_fields["ip"]) == (user, ip)
        assert relayed.structured_fields["port"] == port_
        assert relayed.event_ts is not None
        assert relayed.event_ts[4:] == event_ts
        assert relayed.message == f"Bad password attempt for '{user}' from {ip}:{port_}"
