"""Nothing outlives the launcher: its children die with it, and an engine it started is stopped.

`facet up` starts three kinds of processes, and each is tied to the launcher's life:

- direct children (services, default-model builds, a local tritonserver) get
  `PR_SET_PDEATHSIG` (`dying_with_parent`): the kernel sends them SIGTERM when the launcher dies,
  even by SIGKILL;
- an engine that detaches (`ray start --head` leaves its GCS, raylet and agents running in their
  own session after `ray start` exits) is recorded in an owner file (`EngineRecord`): which
  session and which temp folder are its processes, and which launcher owns it. A watchdog process
  (`Watchdog`, `python -m deploy.lifetime`) holds a pipe from the launcher; when the pipe closes
  (the launcher exited in any way) and the record is still there, it stops the engine;
- should the watchdog die too, the next `facet up` with the same data directory finds the record
  of an owner that no longer runs and stops that engine before starting its own (`stop_stale`).

This module imports only the standard library: the watchdog starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["EngineRecord", "OwnedEngine", "Watchdog", "dying_with_parent", "process_start_time", "stop_session", "stop_stale"]

# Sets PR_SET_PDEATHSIG (prctl option 1), then checks that the parent that asked for it still
# runs: a parent that died between fork and prctl sends no signal, so the child sends itself one.
# Then execs the command (same pid; the setting survives execve). Standard library only, `-S -I`.
_PDEATHSIG_SHIM = (
    "import ctypes, os, signal, sys\n"
    "parent, sig = int(sys.argv[1]), signal.Signals['SIG' + sys.argv[2]]\n"
    "libc = ctypes.CDLL(None, use_errno=True)\n"
    "if libc.prctl(1, int(sig), 0, 0, 0) != 0:\n"
    "    raise OSError(ctypes.get_errno(), 'prctl(PR_SET_PDEATHSIG) failed')\n"
    "if os.getppid() != parent:\n"
    "    os.kill(os.getpid(), sig)\n"
    "    sys.exit(128 + int(sig))\n"
    "os.execvp(sys.argv[3], sys.argv[3:])\n"
)


def dying_with_parent(command: list[str], sig: str = "TERM") -> list[str]:
    """`command`, run so that it gets SIG`sig` when the process that starts it dies (even by SIGKILL).

    It is prefixed with a few lines of Python (`_PDEATHSIG_SHIM`, about 20 ms) that set
    `PR_SET_PDEATHSIG`, check that this process is still their parent, and exec the command (same
    pid). The check closes the race that util-linux's `setpriv --pdeathsig` leaves open: a parent
    killed after the fork but before the `prctl` sends no signal, so its child ran on (seen in CI
    when a parent was SIGKILLed right after starting its child). Not a `preexec_fn`: that forces a
    plain fork() in a process whose gRPC threads run, and gRPC's fork handlers can abort the child
    ("epoll_wait error: Bad file descriptor"). The kernel sends the signal when the *thread* that
    spawned the child exits, so spawn from a thread that lives as long as the launcher (the main
    thread). Off Linux the command is returned unchanged: the watchdog and `stop_stale` still stop
    engines, and services stop when the launcher exits normally.

    Args:
        command: the argv to run.
        sig: the signal's name without SIG (TERM: services drain, then exit).
    Returns:
        the argv to pass to `subprocess.Popen`, to be started by this process.
    Raises:
        ValueError: `sig` is not a signal's name.
    """
    if not hasattr(signal, f"SIG{sig}"):
        raise ValueError(f"no signal SIG{sig}")
    if not sys.platform.startswith("linux"):
        return list(command)
    return [sys.executable, "-S", "-I", "-c", _PDEATHSIG_SHIM, str(os.getpid()), sig, *command]


def _stat_fields(pid: int) -> list[str] | None:
    """`/proc/<pid>/stat` after the command name (field 3 on), or None when there is no such process."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def process_start_time(pid: int) -> int | None:
    """When process `pid` started, in clock ticks since boot (`/proc/<pid>/stat` field 22), or
    None when it does not run (a zombie, killed but not yet reaped, does not run). A pid with a
    different start time is another process."""
    fields = _stat_fields(pid)
    if fields is None or fields[0] in ("Z", "X"):
        return None
    try:
        return int(fields[19])
    except (ValueError, IndexError):
        return None


def _session_of(pid: int) -> int | None:
    fields = _stat_fields(pid)
    try:
        return int(fields[3]) if fields is not None and fields[0] not in ("Z", "X") else None
    except (ValueError, IndexError):
        return None


def _cmdline_has(pid: int, marker: bytes) -> bool:
    try:
        return marker in Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False


def session_processes(session_id: int | None, marker: str | None = None) -> list[int]:
    """The running processes of session `session_id`, and those whose command line names a path
    under the folder `marker` (Ray's agents rename themselves, its workers leave the session)."""
    needle = (marker.rstrip("/") + "/").encode() if marker else None
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        pid = int(proc.name)
        if pid == os.getpid():
            continue
        if (session_id is not None and _session_of(pid) == session_id) or (needle is not None and _cmdline_has(pid, needle)):
            found.append(pid)
    return found


def stop_session(session_id: int | None, marker: str | None = None, timeout_s: float = 30.0) -> int:
    """Stop every process of an engine (`session_processes`): SIGTERM, then SIGKILL for what is
    left after half of `timeout_s`.

    Args:
        session_id: the session the engine's processes run in (the pid of its leader).
        marker: a folder only the engine's processes name (Ray's temp dir), or None.
        timeout_s: total time allowed, seconds.
    Returns:
        how many processes were found running.
    """
    first = session_processes(session_id, marker)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        pids = session_processes(session_id, marker)
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, sig)
        deadline = time.monotonic() + timeout_s / 2
        while pids and time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
            time.sleep(0.1)
    return len(first)


@dataclasses.dataclass(frozen=True)
class EngineRecord:
    """The owner file of an engine a launcher started: what it is, how to find its processes,
    who owns it.

    Attributes:
        what: for messages ("Ray head on 127.0.0.1:6379").
        session_id: the session of its processes (it was started with `start_new_session`).
        marker: a folder its processes name on their command lines, or None.
        owner_pid: the launcher's pid; `owner_start_time` tells it from a later process with the
            same pid (clock ticks since boot).
    """

    what: str
    session_id: int
    marker: str | None
    owner_pid: int
    owner_start_time: int | None

    @classmethod
    def of_this_process(cls, what: str, session_id: int, marker: str | None = None) -> EngineRecord:
        """A record owned by the calling process."""
        return cls(what, session_id, marker, os.getpid(), process_start_time(os.getpid()))

    def owner_alive(self) -> bool:
        """Whether the launcher that wrote the record still runs."""
        started = process_start_time(self.owner_pid)
        return started is not None and started == self.owner_start_time

    def save(self, path: Path) -> None:
        """Write the record to `path` (atomically: a reader never sees half of it)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(dataclasses.asdict(self)))
        partial.replace(path)

    @classmethod
    def load(cls, path: Path) -> EngineRecord | None:
        """The record at `path`, or None when there is none (or it cannot be read)."""
        try:
            return cls(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):
            return None


def stop_stale(path: Path) -> str | None:
    """Stop the engine recorded at `path` when its owner no longer runs, and remove the record.

    Args:
        path: an owner file (`EngineRecord.save`).
    Returns:
        a line saying what was stopped, or None when there was nothing stale (no record, or an
        owner that still runs: its engine is left alone).
    """
    record = EngineRecord.load(path)
    if record is None:
        path.unlink(missing_ok=True)
        return None
    if record.owner_alive():
        return None
    found = stop_session(record.session_id, record.marker)
    path.unlink(missing_ok=True)
    if not found:
        return None
    return f"stopped a stale {record.what} ({found} processes) left by launcher pid {record.owner_pid}"


class Watchdog:
    """`python -m deploy.lifetime RECORD`: waits until the launcher's end of a pipe closes, then
    `stop_stale(RECORD)`. It runs in its own session, so a signal to the launcher's process group
    does not stop it first; it exits at once when the launcher removed the record itself."""

    def __init__(self, record_path: Path) -> None:
        self.record_path = record_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "deploy.lifetime", str(record_path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            cwd=Path(__file__).resolve().parents[1],
        )

    def close(self, timeout_s: float = 60.0) -> None:
        """Close the pipe (the watchdog then checks the record) and wait for it to exit."""
        if self.process.stdin is not None:
            with contextlib.suppress(OSError):
                self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout_s)


class OwnedEngine:
    """An engine this launcher starts: a stale one it left before is stopped first, the new one
    is recorded as soon as it runs (`record`, the engine's `on_spawn`) and watched until `release`.

    Args:
        record_path: the owner file (under the launcher's data directory, one per engine kind).
        what: the engine, for messages ("Ray head on 127.0.0.1:6379").
    Attributes:
        stale: what `stop_stale` stopped before this start, or None.
    """

    def __init__(self, record_path: Path, what: str) -> None:
        self.record_path, self.what = record_path, what
        self.stale = stop_stale(record_path)
        self.watchdog: Watchdog | None = None

    def record(self, session_id: int, marker: str | None) -> None:
        """Record the engine's processes as this process's, and start the watchdog."""
        EngineRecord.of_this_process(self.what, session_id, marker).save(self.record_path)
        if self.watchdog is None:
            self.watchdog = Watchdog(self.record_path)

    def release(self) -> None:
        """After the engine's own clean stop: remove the record; the watchdog exits."""
        self.record_path.unlink(missing_ok=True)
        if self.watchdog is not None:
            self.watchdog.close()


def _watch(record_path: Path) -> int:
    """The watchdog's body: block until stdin closes, then stop the engine if it is stale."""
    with contextlib.suppress(OSError):
        while sys.stdin.buffer.read(4096):
            pass
    # the launcher's pipe end closes when it exits; wait (briefly) until the kernel has reaped it
    record = EngineRecord.load(record_path)
    deadline = time.monotonic() + 10.0
    while record is not None and record.owner_alive() and time.monotonic() < deadline:
        time.sleep(0.05)
    stop_stale(record_path)
    return 0


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in the launcher's terminal is for the launcher
    sys.exit(_watch(Path(sys.argv[1])))
