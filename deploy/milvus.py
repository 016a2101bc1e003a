"""A local Milvus standalone server for the retrieval service's Milvus store (`facet up
--retrieval-store milvus` without a URI, and the tests): the server binary that the PyPI
package `milvus` ships (Milvus 2.3, embedded etcd, RocksMQ, local storage), started from
Facet's own process handling so that it dies with the launcher (`dying_with_parent`) and
stops cleanly (SIGTERM, then SIGKILL after `stop`'s timeout).

A cluster is not started here: point `retrieval.milvus_uri` at it (Milvus' own Helm chart).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

from deploy.lifetime import dying_with_parent

MILVUS_PACKAGE = "milvus==2.3.5"


class MilvusNotStarted(RuntimeError):
    """The local Milvus did not answer its health check in time, or exited; the message names its log."""


def _can_listen(host: str, port: int) -> bool:
    """Whether a server could listen on host:port now (SO_REUSEADDR, as Milvus binds: connections
    of an earlier run in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


class LocalMilvus:
    """A Milvus standalone server whose data lives in `base_dir` (etcd, RocksMQ, segments).

    Args:
        base_dir: its data, config and logs (`logs/milvus.log`); a second start on the same
            folder finds every collection again.
        port: the gRPC port clients use (0: a free one, kept across restarts of this object).
        host: the address it listens on for clients.
        settings: milvus.yaml values to change, {"<section>.<key>": value} for keys the file
            already has at the section's first level (e.g. {"queryCoord.checkInterval": 200});
            an unknown one raises ValueError at start.
    """

    def __init__(self, base_dir: Path, port: int = 0, host: str = "127.0.0.1", settings: Mapping[str, int | str] | None = None) -> None:
        self.base_dir = Path(base_dir).resolve()
        self.host = host
        self.settings = dict(settings or {})
        self.port = port or _free_port(host)
        self.health_port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def uri(self) -> str:
        """What `retrieval.milvus_uri` takes: http://host:port."""
        return f"http://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.base_dir / "logs" / "milvus.log"

    def start(self, timeout_s: float = 180.0, on_spawn: Callable[[int, str | None], None] | None = None) -> LocalMilvus:
        """Write its config, start it and wait until /healthz answers OK.

        Args:
            timeout_s: how long it may take to become healthy, seconds.
            on_spawn: called with (session id, None) as soon as it runs (the launcher records
                the engines it owns, so a killed launcher's Milvus is stopped by its watchdog).

        Raises:
            ImportError: the `milvus` package is not installed (pip install MILVUS_PACKAGE).
            MilvusNotStarted: it exited or did not answer within `timeout_s`.
        """
        if not _can_listen(self.host, self.port):
            raise MilvusNotStarted(
                f"cannot start a local Milvus on {self.host}:{self.port}: the port is in use (set FACET_MILVUS_PORT to a free port, "
                "or pass --milvus-uri to use the Milvus that holds it)"
            )
        try:
            import milvus
        except ImportError as exc:
            raise ImportError(f"a local Milvus needs the `milvus` package: pip install '{MILVUS_PACKAGE}'") from exc
        config = milvus.MilvusServerConfig()
        config.configs.update(data_dir=str(self.base_dir))
        config.resolve_storage()
        config.set("proxy_port", self.port)
        config.resolve()  # picks free ports for its internal services and writes configs/milvus.yaml
        # resolve() moves the client port on when it cannot bind it without SO_REUSEADDR (after a
        # restart, connections of the last run linger in TIME_WAIT); Milvus itself can: keep it
        config.configurable_items["proxy_port"][1] = self.port
        config.write_config()
        self._embedded_etcd_ports(self.base_dir / "configs")
        self._apply_settings(self.base_dir / "configs" / "milvus.yaml")
        milvus._initialize_data_files(str(self.base_dir))  # unpacks the server binary (once)
        self.health_port = _free_port(self.host)
        binary = self.base_dir / "bin" / "milvus"
        env = {
            **os.environ,
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(self.health_port),
            "MILVUS_RUN_DIR": str(self.base_dir / "run"),
            "LD_LIBRARY_PATH": f"{binary.parent}:{os.environ.get('LD_LIBRARY_PATH', '')}",
        }
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - held while the server runs
        self.process = subprocess.Popen(
            dying_with_parent([str(binary), "run", "standalone"]),
            cwd=self.base_dir, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        if on_spawn is not None:
            on_spawn(self.process.pid, None)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self._close_log()
                raise MilvusNotStarted(f"Milvus exited with code {code} while starting; see {self.log_path}")
            if self.ready():
                return self
            time.sleep(0.2)
        self.stop()
        raise MilvusNotStarted(f"Milvus did not become healthy within {timeout_s:.0f} s; see {self.log_path}")

    def _apply_settings(self, main: Path) -> None:
        """Set `settings` in milvus.yaml, in place (the file's comments and layout kept)."""
        text = main.read_text()
        for name, value in self.settings.items():
            section, _, key = name.partition(".")
            block = re.search(rf"^{re.escape(section)}:\n((?:[ #].*\n|\n)*)", text, flags=re.MULTILINE)
            line = re.compile(rf"^(  {re.escape(key)}:) *[^#\n]*?( *#.*)?$", flags=re.MULTILINE)
            found = line.search(text, block.start(1), block.end(1)) if block else None
            if block is None or found is None:
                raise ValueError(f"milvus.yaml has no key {name!r} to set (settings take <section>.<key> of the file's first level)")
            text = text[: found.start()] + f"{found.group(1)} {value}{found.group(2) or ''}" + text[found.end() :]
        main.write_text(text)

    def _embedded_etcd_ports(self, configs: Path) -> None:
        """Give the embedded etcd free ports: by default it listens on 2379 and 2380, so a second
        local Milvus on the machine (a test's, a launcher's) would fail to start."""
        client, peer = _free_port(self.host), _free_port(self.host)
        etcd = configs / "embedEtcd.yaml"
        etcd.write_text(
            f"name: facet-milvus\n"
            f"listen-client-urls: http://{self.host}:{client}\nadvertise-client-urls: http://{self.host}:{client}\n"
            f"listen-peer-urls: http://{self.host}:{peer}\ninitial-advertise-peer-urls: http://{self.host}:{peer}\n"
            f"initial-cluster: facet-milvus=http://{self.host}:{peer}\n"
        )
        main = configs / "milvus.yaml"
        text = main.read_text()
        marker = "\n  use:\n    embed: true"
        if marker not in text:
            raise MilvusNotStarted(f"{main}: no embedded etcd section to configure (an unexpected `milvus` package version)")
        main.write_text(text.replace(marker, f"\n  config:\n    path: {etcd}{marker}", 1))

    def ready(self) -> bool:
        """Whether its /healthz answers OK and its client port takes connections (Milvus moves to
        another port, saying so only in its log, when the configured one is taken)."""
        try:
            socket.create_connection((self.host, self.port), timeout=2).close()
        except OSError:
            return False
        try:
            with urllib.request.urlopen(f"http://{self.host}:{self.health_port}/healthz", timeout=2) as reply:
                return b"OK" in reply.read()
        except (OSError, urllib.error.URLError):
            return False

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM, SIGKILL after `timeout_s` (a standalone often does not finish its graceful stop
        within 30 s; every acknowledged write is in its write-ahead log either way)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
        self._close_log()

    def kill(self) -> None:
        """SIGKILL, as a crash would (the tests' kill -9)."""
        if self.process is not None:
            with contextlib.suppress(ProcessLookupError):
                self.process.kill()
            self.process.wait(10)
        self.process = None
        self._close_log()

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> LocalMilvus:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()
