"""A fake OpenWRT router for tests: Debian's dropbear on 127.0.0.1 with fake `nft`, `wifi`,
`ubus`, `ifup` and `reboot` that record their argv, so a test asserts exactly what ran.

As root, the login user is a dedicated `opmas-router` account (created with useradd if
missing, home /var/lib/opmas-router); /root/.ssh is never touched. Not as root, dropbear can
only log in as the current user, whose ~/.ssh/authorized_keys then gets our line (removed at
stop). Either way the line carries a forced command (dropbear resets PATH for the session, and
has no option for another authorized_keys file): a wrapper that puts the fake binaries first
on PATH and runs the client's command with /bin/sh. Each server has its own key line, so
several servers (and tests running at the same time) share the account safely.

    with Dropbear.start(tmp_path, client_public_key) as router:
        ... connect to 127.0.0.1:router.port as router.user ...
        router.calls()  # [["wifi", "reload"], ...]
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Self

from tests.peers.ports import free_port

ROUTER_USER = "opmas-router"
ROUTER_HOME = Path("/var/lib/opmas-router")
FAKE_COMMANDS = ("nft", "wifi", "ubus", "ifup", "reboot")
SEP = "\x1f"
HOSTAPD_OBJECTS = ("hostapd.phy0-ap0", "hostapd.phy1-ap0")

# One script for every fake command; $0 names it. Records argv, then behaves:
# - <base>/fail.<name> exists: prints it to stderr, exits 3
# - wifi with <base>/hang present: waits until the file is gone (at most 120 s)
# - ubus list: prints the hostapd objects; nft list set: fails until `nft add set` made it
_FAKE = r"""#!/bin/sh
name=$(basename "$0")
base=@BASE@
{ printf '%s\037' "$name" "$@"; printf '\n'; } >> "$base/calls.log"
if [ -e "$base/fail.$name" ]; then cat "$base/fail.$name" >&2; exit 3; fi
case "$name $1" in
  "wifi "*) n=0; while [ -e "$base/hang" ] && [ $n -lt 1200 ]; do sleep 0.1; n=$((n+1)); done ;;
  "ubus list") printf '%s\n' @HOSTAPD@; exit 0 ;;
  "nft list") [ -e "$base/nft-sets/$5" ] || { echo "No such file or directory" >&2; exit 1; } ;;
  "nft add") [ "$2" = set ] && touch "$base/nft-sets/$5" ;;
esac
echo "$name done"
"""
_SHELL = """#!/bin/sh
PATH=@BASE@/bin:/usr/sbin:/usr/bin:/sbin:/bin
export PATH
exec /bin/sh -c "$SSH_ORIGINAL_COMMAND"
"""


def login_account() -> pwd.struct_passwd:
    """The account the router logs in: opmas-router as root (created if missing), else us."""
    if os.geteuid() != 0:
        return pwd.getpwuid(os.geteuid())
    try:
        return pwd.getpwnam(ROUTER_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--create-home", "--home-dir", str(ROUTER_HOME),
             "--shell", "/bin/sh", ROUTER_USER],
            check=True,
        )  # fmt: skip
        return pwd.getpwnam(ROUTER_USER)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with (path.parent / ".opmas-lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _edit_authorized_keys(account: pwd.struct_passwd, add: str | None, remove: str) -> None:
    ssh_dir = Path(account.pw_dir) / ".ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    os.chown(ssh_dir, account.pw_uid, account.pw_gid)
    path = ssh_dir / "authorized_keys"
    with _locked(path):
        lines = path.read_text().splitlines() if path.exists() else []
        kept = [line for line in lines if remove not in line]
        path.write_text("".join(f"{line}\n" for line in [*kept, *([add] if add else [])]))
        path.chmod(0o600)
        os.chown(path, account.pw_uid, account.pw_gid)


class Dropbear:
    """One dropbear server playing a router; `start` it, use it as a context manager."""

    def __init__(self, client_public_key: str) -> None:
        self.account = login_account()
        self.user = self.account.pw_name
        self.host = "127.0.0.1"
        self.port = free_port()
        # a directory of our own outside pytest's private tmp dirs: the login user must reach it
        self.base = Path(tempfile.mkdtemp(prefix="opmas-router-"))
        self._marker = f"opmas-test-{self.base.name}"
        self._client_public_key = " ".join(client_public_key.split()[:2])
        self._process: subprocess.Popen[bytes] | None = None
        self.host_key_file = self.base / "host_key"
        self.stderr_file = self.base / "dropbear.err"

    @classmethod
    def start(cls, client_public_key: str) -> Dropbear:
        router = cls(client_public_key)
        try:
            router._install()
            router._new_host_key()
            router._launch()
        except BaseException:
            router.stop()
            raise
        return router

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _install(self) -> None:
        bin_dir = self.base / "bin"
        bin_dir.mkdir()
        (self.base / "nft-sets").mkdir()
        fake = _FAKE.replace("@BASE@", str(self.base)).replace(
            "@HOSTAPD@", " ".join(HOSTAPD_OBJECTS)
        )
        for name in FAKE_COMMANDS:
            (bin_dir / name).write_text(fake)
            (bin_dir / name).chmod(0o755)
        shell = self.base / "router-shell"
        shell.write_text(_SHELL.replace("@BASE@", str(self.base)))
        shell.chmod(0o755)
        (self.base / "calls.log").touch()
        for path in (self.base, self.base / "nft-sets", self.base / "calls.log"):
            os.chown(path, self.account.pw_uid, self.account.pw_gid)
        self.base.chmod(0o755)
        line = f'command="{shell}",no-port-forwarding,no-agent-forwarding,no-X11-forwarding'
        _edit_authorized_keys(
            self.account, f"{line} {self._client_public_key} {self._marker}", self._marker
        )

    def _new_host_key(self) -> None:
        self.host_key_file.unlink(missing_ok=True)
        subprocess.run(
            ["dropbearkey", "-t", "ed25519", "-f", str(self.host_key_file)],
            check=True,
            capture_output=True,
        )

    @property
    def host_public_key(self) -> str:
        """The server's host key as an OpenSSH public key line (`ssh-ed25519 AAAA...`)."""
        out = subprocess.run(
            ["dropbearkey", "-y", "-f", str(self.host_key_file)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        line = next(line for line in out.splitlines() if line.startswith("ssh-"))
        return " ".join(line.split()[:2])

    def _launch(self) -> None:
        dropbear = shutil.which("dropbear") or "/usr/sbin/dropbear"
        args = [dropbear, "-F", "-E", "-s", "-j", "-k", "-p", f"{self.host}:{self.port}"]
        args += ["-r", str(self.host_key_file), "-P", str(self.base / "dropbear.pid")]
        with self.stderr_file.open("ab") as err:
            self._process = subprocess.Popen(args, stderr=err, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"dropbear exited: {self.stderr_file.read_text()}")
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), 0.2),
            ):
                return
            time.sleep(0.05)
        raise RuntimeError("dropbear did not listen within 10 s")

    def _terminate(self) -> None:
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def restart_with_new_host_key(self) -> None:
        """Stop, generate another host key, start again on the same port (a reinstalled router,
        or a man in the middle)."""
        self._terminate()
        self._new_host_key()
        self._launch()

    def stop(self) -> None:
        """Stop the server, remove our authorized_keys line and our directory."""
        self.unhang()
        self._terminate()
        with contextlib.suppress(OSError):
            _edit_authorized_keys(self.account, None, self._marker)
        shutil.rmtree(self.base, ignore_errors=True)

    def calls(self) -> list[list[str]]:
        """The argv of every fake command run so far, in order (`["wifi", "reload"]`)."""
        lines = (self.base / "calls.log").read_text().splitlines()
        return [line.split(SEP)[:-1] for line in lines if line]

    def hang(self) -> None:
        """Make `wifi` wait until `unhang` (at most 120 s)."""
        (self.base / "hang").touch()

    def unhang(self) -> None:
        (self.base / "hang").unlink(missing_ok=True)

    def fail(self, command: str, stderr: str = "failed on purpose") -> None:
        """Make the fake `command` print `stderr` and exit with status 3."""
        path = self.base / f"fail.{command}"
        path.write_text(f"{stderr}\n")
        path.chmod(0o644)
