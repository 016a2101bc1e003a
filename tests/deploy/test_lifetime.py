"""`deploy.lifetime`: a child dies with its parent, a stale engine is stopped, a live owner's is not.

Real processes: a parent that starts a child with `dying_with_parent` and is then SIGKILLed; an
"engine" (a process in its own session that leaves a detached grandchild, as `ray start` does)
recorded in an owner file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from deploy.lifetime import (
    EngineRecord,
    dying_with_parent,
    process_start_time,
    session_processes,
    stop_session,
    stop_stale,
)

CHECKOUT = Path(__file__).resolve().parents[2]


def _poll(condition: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def _gone(pid: int) -> bool:
    return process_start_time(pid) is None  # absent, or a zombie nobody reaped yet


PARENT = """
import subprocess, sys, time
from deploy.lifetime import dying_with_parent
child = subprocess.Popen(dying_with_parent([sys.executable, "-c", "import time; time.sleep(120)"]))
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_child_dies_when_its_parent_is_killed() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True, cwd=CHECKOUT)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert not _gone(child)
        parent.kill()
        parent.wait()
        assert _poll(lambda: _gone(child), 30), "the child outlived its SIGKILLed parent"
    finally:
        if parent.poll() is None:
            parent.kill()


# the parent dies at once, most likely before the child's prctl runs: the race a plain
# `setpriv --pdeathsig` leaves open (the child then runs on with no parent to die with)
HASTY_PARENT = """
import os, subprocess, sys
from deploy.lifetime import dying_with_parent
child = subprocess.Popen(dying_with_parent([sys.executable, "-c", "import time; time.sleep(120)"]))
print(child.pid, flush=True)
os._exit(0)
"""


def test_a_child_dies_when_its_parent_dies_before_the_child_is_set_up() -> None:
    parent = subprocess.run([sys.executable, "-c", HASTY_PARENT], capture_output=True, text=True, cwd=CHECKOUT, check=True)
    child = int(parent.stdout)
    try:
        assert _poll(lambda: _gone(child), 30), "the child outlived a parent that died as it started"
    finally:
        if not _gone(child):
            os.kill(child, signal.SIGKILL)


def test_an_unknown_signal_name_is_refused() -> None:
    with pytest.raises(ValueError, match="no signal SIGTREM"):
        dying_with_parent(["true"], sig="TREM")


# an engine like `ray start`: its leader leaves a daemon running in the session and exits
ENGINE = "import subprocess, sys; subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(120)']); print('up', flush=True)"


def _start_engine() -> int:
    leader = subprocess.Popen([sys.executable, "-c", ENGINE], stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert leader.stdout is not None and leader.stdout.readline().strip() == "up"
    leader.wait()
    assert session_processes(leader.pid), "the engine's daemon should run on in its session"
    return leader.pid


def test_a_stale_engine_is_stopped_and_a_live_owners_is_left_alone(tmp_path: Path) -> None:
    session = _start_engine()
    try:
        record = tmp_path / "engines" / "test.json"
        EngineRecord.of_this_process("test engine", session, None).save(record)
        assert stop_stale(record) is None  # its owner (this process) runs: left alone
        assert session_processes(session) and record.exists()

        owner = subprocess.Popen([sys.executable, "-c", "pass"])
        owner.wait()  # an owner that has exited
        dead = EngineRecord("test engine", session, None, owner.pid, 1)
        dead.save(record)
        message = stop_stale(record)
        assert message is not None and "stopped a stale test engine" in message and f"launcher pid {owner.pid}" in message
        assert _poll(lambda: not session_processes(session), 30)
        assert not record.exists()
        assert stop_stale(record) is None  # nothing left to do
    finally:
        stop_session(session)


def test_the_watchdog_stops_the_engine_when_its_launcher_is_killed(tmp_path: Path) -> None:
    """A launcher (a real process) records an engine and starts the watchdog, then is SIGKILLed."""
    session = _start_engine()
    record = tmp_path / "test.json"
    launcher_code = f"""
import time
from pathlib import Path
from deploy.lifetime import OwnedEngine
owner = OwnedEngine(Path({str(record)!r}), "test engine")
owner.record({session}, None)
print("recorded", flush=True)
time.sleep(120)
"""
    launcher = subprocess.Popen([sys.executable, "-c", launcher_code], stdout=subprocess.PIPE, text=True, cwd=CHECKOUT)
    try:
        assert launcher.stdout is not None and launcher.stdout.readline().strip() == "recorded"
        loaded = EngineRecord.load(record)
        assert loaded is not None and loaded.owner_pid == launcher.pid and loaded.owner_alive()
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()
        assert _poll(lambda: not session_processes(session), 30), "the watchdog did not stop the engine"
        assert _poll(lambda: not record.exists(), 30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
        stop_session(session)
