"""Executor instance ids: a process on this machine can tell whether another one is gone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from opmas.executor.liveness import instance_id, node_id, pid_of, process_gone, start_ticks


def _id_of(pid: int, ticks: str, node: str | None) -> str:
    return f"host/{pid}/{ticks}/{node or '-'}/abc"


def test_an_instance_id_names_this_process_and_is_new_each_time() -> None:
    first, second = instance_id(), instance_id()
    assert first != second
    assert pid_of(first).endswith(f":{os.getpid()}")
    assert not process_gone(first, node_id())


def test_a_process_that_exited_is_gone() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ticks = start_ticks(child.pid)
    child.wait()
    assert ticks is not None
    assert start_ticks(child.pid) is None
    assert process_gone(_id_of(child.pid, ticks, node_id()), node_id())


def test_a_pid_used_by_another_process_since_is_gone() -> None:
    ticks = start_ticks(os.getpid())
    assert ticks is not None
    other_start = str(int(ticks) + 1)
    assert process_gone(_id_of(os.getpid(), other_start, node_id()), node_id())


def test_an_executor_of_another_machine_or_an_unknown_id_is_never_taken_for_gone() -> None:
    gone_pid = 2**22 + 7  # above any pid_max: no such process here
    assert not process_gone(_id_of(gone_pid, "1", "other-boot.1"), node_id())
    assert not process_gone(_id_of(gone_pid, "1", node_id()), None)
    assert not process_gone("executor", node_id())
    assert pid_of("executor") == "executor"


def test_a_command_name_with_spaces_and_parentheses_does_not_shift_the_fields(
    tmp_path: Path,
) -> None:
    proc = tmp_path
    (proc / "42").mkdir()
    fields = " ".join(["S", *[str(n) for n in range(4, 22)], "987654", "0"])
    (proc / "42" / "stat").write_text(f"42 (odd) name (x)) {fields}\n")
    assert start_ticks(42, proc) == "987654"
