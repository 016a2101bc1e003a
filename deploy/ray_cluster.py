"""A Ray cluster to run on: a local head for `facet up --backend ray` and the tests (the token
authentication its `ray start` turns on: `services.backends.ray_auth`)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from deploy.lifetime import stop_session


@dataclasses.dataclass
class LocalRay:
    """`ray start --head` on this machine (what `facet up --backend ray` and the tests start);
    `stop()` runs `ray stop` for it. RAY_ADDRESS for clients is `address`."""

    port: int
    num_cpus: int = 2
    temp_dir: Path | None = None
    dashboard_port: int = 8265
    session_id: int | None = None  # set by start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def dashboard(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray(self) -> str:
        found = Path(sys.executable).with_name("ray")
        return str(found) if found.exists() else (shutil.which("ray") or "ray")

    def start(self, timeout_s: float = 120.0, on_spawn: Callable[[int, str | None], None] | None = None) -> LocalRay:
        """`ray start --head`; returns once the head's GCS answers.

        Args:
            timeout_s: how long `ray start` may take, seconds.
            on_spawn: called with (session id, temp dir or None) as soon as `ray start` runs, before
                it returns: the launcher records the head it owns (`deploy.lifetime`).
        Raises:
            RuntimeError: `ray start` failed (its output in the message).
        """
        command = [self._ray(), "start", "--head", "--node-ip-address=127.0.0.1", f"--port={self.port}", f"--num-cpus={self.num_cpus}", "--disable-usage-stats",
                   "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={self.dashboard_port}"]  # fmt: skip
        if self.temp_dir is not None:
            command.append(f"--temp-dir={self.temp_dir}")
        # jobs run `python ...`: on this head, that is this environment's Python
        path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
        env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PATH": path}
        # the head's agents get free ports too: a second head on this machine (or one that did not
        # stop cleanly) must not leave this one without a job agent ("No available agent")
        command += [f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                    f"--metrics-export-port={_free_port()}", f"--runtime-env-agent-port={_free_port()}"]  # fmt: skip
        # its own session: every process it leaves running can be found again by session id
        started = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True)
        self.session_id = started.pid
        if on_spawn is not None:
            on_spawn(started.pid, None if self.temp_dir is None else str(self.temp_dir.resolve()))
        output, _ = started.communicate(timeout=timeout_s)
        done = subprocess.CompletedProcess(command, started.returncode, output, "")
        if done.returncode != 0:
            raise RuntimeError(f"`ray start --head` failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        return self  # `ray start` returns once the head's GCS answers

    def stop(self, timeout_s: float = 30.0) -> None:
        """Stop this head: with its own temp dir, only the processes of that session (SIGTERM,
        then SIGKILL); without, `ray stop` (every Ray process of this machine)."""
        if self.temp_dir is None:
            env = {**os.environ, "RAY_ADDRESS": self.address}
            subprocess.run([self._ray(), "stop", "--force"], capture_output=True, timeout=120, env=env, check=False)
            return
        stop_session(self.session_id, str(self.temp_dir.resolve()), timeout_s)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
