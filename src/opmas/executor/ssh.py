"""SSH to a router (asyncssh): the executor's `ssh_command` transport, with host key pinning.

The first connection to a router accepts its host key and pins it (trust on first use); every
later connection accepts only the pinned key and refuses to authenticate, let alone run
anything, when the router presents another one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import asyncssh
import structlog

from opmas.errors import ActionError

log = structlog.get_logger(__name__)

MAX_OUTPUT_CHARS = 64 * 1024
Pin = Callable[[str], Awaitable[None]]
# Before a key is pinned: which host key to ask for first. Dropbear (OpenWRT) may advertise
# RSA without an RSA key; asyncssh would otherwise ask for RSA first. Pinned: the pinned type.
FIRST_USE_HOST_KEY_ALGS = (
    "ssh-ed25519",
    "ecdsa-sha2-nistp256",
    "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521",
    "rsa-sha2-512",
    "rsa-sha2-256",
)


@dataclass(frozen=True)
class SshTarget:
    """Where and as whom to connect; `host_key` is the pinned OpenSSH public key, if any."""

    hostname: str
    address: str
    port: int
    user: str
    host_key: str | None


def truncate(text: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was cut."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}\n[truncated {len(text) - limit} characters]"


def public_key_text(key: asyncssh.SSHKey) -> str:
    """The OpenSSH public key line of `key` (`ssh-ed25519 AAAA...`), comment removed."""
    return " ".join(key.export_public_key("openssh").decode().split()[:2])


def _known_hosts(pinned: str | None) -> Any:
    """asyncssh's known_hosts argument: only the pinned key, or no check before pinning."""
    if pinned is None:
        return None
    try:
        key = asyncssh.import_public_key(pinned)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ActionError(f"the pinned host key is not an OpenSSH public key: {exc}") from exc
    return ([key], [], [])


async def run_command(
    target: SshTarget,
    private_key: str,
    command: str,
    *,
    connect_timeout_s: float,
    pin: Pin,
) -> dict[str, Any]:
    """Run `command` on `target` as its user, authenticated by `private_key` (OpenSSH text).

    Without a pinned host key, `pin` is awaited with the key the router presented, before
    the command runs. Returns {command, exit_status, exit_signal, stdout, stderr, duration_s}.
    The caller bounds the whole call with its own timeout.

    Raises:
        ActionError: the router presented a host key other than the pinned one, or the
            private key cannot be read. Nothing ran.
        asyncssh.Error, OSError: connecting or authenticating failed (worth a retry).
    """
    try:
        client_key = asyncssh.import_private_key(private_key)
    except (asyncssh.KeyImportError, ValueError) as exc:
        raise ActionError(f"the SSH key of {target.hostname} cannot be read") from exc
    started = time.monotonic()
    try:
        async with asyncssh.connect(
            target.address,
            target.port,
            **_options(target, client_key, connect_timeout_s),
        ) as conn:
            if target.host_key is None:
                presented = conn.get_server_host_key()
                if presented is None:
                    raise ActionError(f"{target.hostname} presented no host key")
                await pin(public_key_text(presented))
            completed = await conn.run(command, check=False)
    except asyncssh.HostKeyNotVerifiable as exc:
        log.warning("host key changed", device=target.hostname, address=target.address)
        raise ActionError(
            f"host key of {target.hostname} changed: it is not the key pinned for it; "
            "nothing was run (if the router was reinstalled, clear its pinned host key)"
        ) from exc
    return {
        "command": command,
        "exit_status": completed.exit_status,
        "exit_signal": completed.exit_signal[0] if completed.exit_signal else None,
        "stdout": truncate(_text(completed.stdout)),
        "stderr": truncate(_text(completed.stderr)),
        "duration_s": round(time.monotonic() - started, 3),
    }


def _options(
    target: SshTarget, client_key: asyncssh.SSHKey, connect_timeout_s: float
) -> dict[str, Any]:
    """asyncssh.connect options: only our key, no agent, no ~/.ssh/config, no passwords."""
    return {
        "username": target.user,
        "client_keys": [client_key],
        "known_hosts": _known_hosts(target.host_key),
        "server_host_key_algs": () if target.host_key else list(FIRST_USE_HOST_KEY_ALGS),
        "agent_path": None,
        "config": None,
        "password": None,
        "kbdint_auth": False,
        "connect_timeout": connect_timeout_s,
    }


def _text(output: object) -> str:
    if output is None:
        return ""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return str(output)
