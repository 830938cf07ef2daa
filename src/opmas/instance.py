"""The OPMAS instance of a data dir: one `opmas up` at a time, and where CLI commands find it.

The process that runs on a data dir holds `DATA_DIR/opmas.lock` (flock, for its whole life;
the file names its pid and start time) and records its servers and API in
`DATA_DIR/instance.json` (mode 0600: URLs may carry passwords), removed when it stops. A lock
nobody holds means nobody runs there, whatever files a crash left behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opmas.errors import DataDirError

LOCK_FILE = "opmas.lock"
INSTANCE_FILE = "instance.json"
_HELD: dict[Path, int] = {}  # data dirs this process holds -> lock file descriptor


@dataclass(frozen=True)
class Endpoints:
    """Where the database and the bus answer, embedded or not."""

    database_url: str
    nats_url: str
    embedded_postgres: bool
    embedded_nats: bool


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@contextlib.contextmanager
def claim(root: Path) -> Iterator[bool]:
    """Hold `root`'s lock for the block unless another process holds it; yield whether this
    process holds it (from an enclosing `claim` or now). Leaving the outermost claim removes
    the instance file and releases the lock."""
    root = root.resolve()
    if root in _HELD:
        yield True
        return
    try:
        root.mkdir(parents=True, exist_ok=True)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise DataDirError(
            f"cannot use {root} as data dir ({exc.strerror or exc}): set OPMAS_DATA_DIR"
        ) from exc
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps({"pid": os.getpid(), "started_at": _now()}).encode())
        _HELD[root] = fd
        try:
            yield True
        finally:
            del _HELD[root]
            (root / INSTANCE_FILE).unlink(missing_ok=True)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def hold(root: Path) -> Iterator[None]:
    """Hold `root` for `opmas up`.

    Raises:
        DataDirError: another process holds it; the message says which and what to do.
    """
    with claim(root) as mine:
        if not mine:
            raise DataDirError(
                f"another OPMAS ({holder(root)}) already runs on {root.resolve()}: stop it"
                " first, or give this one its own OPMAS_DATA_DIR"
            )
        yield


def holder(root: Path) -> str:
    """Who holds `root`, as `pid N, started T, API U` (what is known of it)."""
    info: dict[str, Any] = {}
    for name in (LOCK_FILE, INSTANCE_FILE):
        with contextlib.suppress(OSError, ValueError):
            info.update(json.loads((root / name).read_text()))
    parts = [f"pid {info.get('pid', '?')}", f"started {info.get('started_at', '?')}"]
    if info.get("api_url"):
        parts.append(f"API {info['api_url']}")
    return ", ".join(parts)


def record(root: Path, endpoints: Endpoints, *, api_url: str | None = None) -> None:
    """Write what CLI commands need to reach this process (mode 0600); only while held."""
    root = root.resolve()
    if root not in _HELD:
        return
    data = {"pid": os.getpid(), "started_at": _started_at(root), **asdict(endpoints)}
    data["api_url"] = api_url
    path = root / INSTANCE_FILE
    staged = path.with_suffix(".tmp")
    staged.unlink(missing_ok=True)
    fd = os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(json.dumps(data))
    staged.replace(path)


def _started_at(root: Path) -> str:
    with contextlib.suppress(OSError, ValueError):
        return str(json.loads((root / LOCK_FILE).read_text())["started_at"])
    return _now()


def is_held(root: Path) -> bool:
    """Whether some process (this one included) holds `root`'s lock; never creates a file."""
    root = root.resolve()
    if root in _HELD:
        return True
    try:
        fd = os.open(root / LOCK_FILE, os.O_RDONLY)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing releases a shared lock we may have taken
    return False


def running(root: Path) -> Endpoints | None:
    """The endpoints of the process running on `root` right now, if it recorded them."""
    root = root.resolve()
    if not is_held(root):
        return None  # nobody holds it: whatever instance file is there is stale
    return _read(root)


def _read(root: Path) -> Endpoints | None:
    try:
        data = json.loads((root / INSTANCE_FILE).read_text())
        return Endpoints(
            data["database_url"], data["nats_url"], data["embedded_postgres"], data["embedded_nats"]
        )
    except (OSError, ValueError, KeyError):
        return None


async def find(root: Path, *, wait_s: float = 30.0) -> Endpoints:
    """The endpoints of the OPMAS running on `root`, for CLI commands; creates nothing.

    Waits up to `wait_s` for a holder that is still starting to record them.

    Raises:
        DataDirError: no data dir there, or no OPMAS runs on it.
    """
    deadline = time.monotonic() + wait_s
    while (found := _lookup(root)) is None:
        if time.monotonic() > deadline:
            raise DataDirError(f"the OPMAS running on {root} has not recorded its servers yet")
        await asyncio.sleep(0.1)
    return found


def _lookup(root: Path) -> Endpoints | None:
    """The recorded endpoints; None while the holder has not recorded them yet."""
    root = root.resolve()
    if not root.is_dir():
        raise DataDirError(
            f"no OPMAS data dir at {root}: run 'opmas up' first, or set OPMAS_DATA_DIR"
        )
    if not is_held(root):
        raise DataDirError(
            f"no OPMAS is running on {root}: run 'opmas up' first, or set OPMAS_DATA_DIR"
            " (or OPMAS_DATABASE_URL and OPMAS_NATS_URL)"
        )
    return _read(root)
