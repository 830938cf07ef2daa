"""Who runs an action: an executor instance id written on the action it claims, so that another
executor can tell an owner that is gone (kill -9, crash) from one that is alive.

The id is `host/pid/start/node/random`. `node` names this boot of this machine and its pid
namespace: a process with the same node sees the same pids, so it can check at once whether
the owner's process still exists (same pid, same start time). From anywhere else, only the
owner's heartbeat on the row tells (see `claims`).
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

PROC = Path("/proc")
SEP = "/"
FIELDS = 5


def node_id(proc: Path = PROC) -> str | None:
    """This boot of this machine and this pid namespace, or None where /proc cannot say."""
    try:
        boot = (proc / "sys/kernel/random/boot_id").read_text().strip()
        namespace = (proc / "self/ns/pid").stat().st_ino
    except OSError:
        return None
    return f"{boot}.{namespace}" if boot else None


def start_ticks(pid: int, proc: Path = PROC) -> str | None:
    """When process `pid` started (clock ticks since boot), or None if there is no such process."""
    try:
        stat = (proc / str(pid) / "stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces and parentheses: count after the last ')'
    fields = stat.rsplit(")", 1)[-1].split()
    return fields[19] if len(fields) > 19 else None  # field 22, starttime


def instance_id(proc: Path = PROC) -> str:
    """A new id for this executor instance: unique even for two in one process."""
    pid = os.getpid()
    host = socket.gethostname().replace(SEP, "_")[:64] or "-"
    parts = (host, str(pid), start_ticks(pid, proc) or "-", node_id(proc) or "-")
    return SEP.join((*parts, uuid.uuid4().hex[:12]))


def pid_of(executor_id: str) -> str:
    """`host:pid` of an instance id, for people; the id itself when it is not one of ours."""
    parts = executor_id.split(SEP)
    return f"{parts[0]}:{parts[1]}" if len(parts) == FIELDS else executor_id


def process_gone(executor_id: str, here: str | None, proc: Path = PROC) -> bool:
    """True when `executor_id` names a process of node `here` that no longer runs (or whose
    pid now belongs to another process); False when it runs, or when this node cannot tell."""
    parts = executor_id.split(SEP)
    if here is None or len(parts) != FIELDS or parts[3] != here or not parts[1].isdigit():
        return False
    return start_ticks(int(parts[1]), proc) != parts[2]
