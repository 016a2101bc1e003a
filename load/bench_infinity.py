"""Infinity (`infinity-emb`, PyPI), the server a user would pick instead of Facet, for the side-by-side
benchmarks: start it from its own virtualenv on a free loopback port, wait until it serves, call its
HTTP API, stop it.

Infinity pins numpy < 2 and sentence-transformers < 4, which clash with Facet's, so it lives in
`.venv-infinity` beside the checkout (`load/install_infinity.sh` makes it). It serves local model
directories, offline (HF_HUB_OFFLINE=1), without its request cache (`--no-vector-disk-cache`: every
call runs the model, as every Facet call does):

    with InfinityServer([InfinityModel(minilm_dir, "minilm")]).start() as server:
        client = InfinityClient(server.url)
        vectors = await client.embed("minilm", ["Paris is in France."])   # float32 [1, 384]
        await client.close()

HTTP API (Infinity 0.0.78, OpenAI- and Cohere-shaped): `POST /embeddings {"model", "input": [...]}`
-> `{"data": [{"index", "embedding"}]}`; `POST /rerank {"model", "query", "documents", "raw_scores"}`
-> `{"results": [{"index", "relevance_score"}]}`; `GET /health` 200 once the models are loaded and
warmed up; `GET /models`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

import sdk
from load.harness import REPO_ROOT, free_port

INFINITY_VENV = REPO_ROOT / ".venv-infinity"
INSTALL_HINT = "make it with `bash load/install_infinity.sh`"
INFINITY_STARTUP_TIMEOUT_S = 600.0  # loading plus Infinity's own warm-up (a 32 x 256-token batch), on 2 shared cores
INFINITY_STOP_TIMEOUT_S = 30.0
HTTP_TIMEOUT_S = 300.0  # default per-call timeout: one call under 32 concurrent callers on 2 busy cores
# torch: Infinity's default engine; optimum: ONNX Runtime, needs an .onnx file in the directory
ENGINES = ("torch", "optimum")


@dataclasses.dataclass(frozen=True)
class InfinityModel:
    """A local model directory Infinity serves, and the name calls select it by.

    Attributes:
        path: a sentence-transformers model directory (embeddings) or a CrossEncoder directory
            (a `*ForSequenceClassification` config with one label: Infinity serves it as a reranker).
        name: the `--served-model-name`, the `model` field of each call.
    """

    path: Path
    name: str


def infinity_command(
    executable: Path,
    models: Sequence[InfinityModel],
    port: int,
    *,
    engine: str = "torch",
    batch_size: int = 32,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The `infinity_emb v2` command line serving `models` on 127.0.0.1:`port` on the CPU.

    Options repeat once per model (Infinity's v2 CLI pairs the i-th `--model-id` with the i-th of
    every other repeated option). Infinity's defaults otherwise, except `--no-vector-disk-cache`
    (its result cache would answer repeated texts without running the model).

    Args:
        executable: the `infinity_emb` script of the Infinity virtualenv.
        models: the directories to serve, each with its name.
        port: the TCP port on 127.0.0.1.
        engine: "torch" (Infinity's default) or "optimum" (ONNX Runtime).
        batch_size: Infinity's `--batch-size`, the most texts or pairs per forward pass (default 32).
        extra_args: further `infinity_emb v2` options, appended as given.
    Returns:
        The argv list.
    Raises:
        ValueError: no models, an unknown engine or a batch size below 1.
    """
    if not models:
        raise ValueError("infinity_command: give at least one model")
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, not {batch_size}")
    argv = [str(executable), "v2"]
    for model in models:
        argv += [
            "--model-id",
            str(model.path),
            "--served-model-name",
            model.name,
            "--engine",
            engine,
            "--batch-size",
            str(batch_size),
            "--device",
            "cpu",
            "--no-vector-disk-cache",
        ]
    return argv + ["--host", "127.0.0.1", "--port", str(port), *extra_args]


def infinity_env(home: Path) -> dict[str, str]:
    """The environment Infinity runs with: this one's, offline (no hub access, no usage
    statistics), its Hugging Face cache (optimum's optimized models) in `home`, and no FACET_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACET_") and k != "VIRTUAL_ENV"}
    env.update(
        HF_HUB_OFFLINE="1",
        TRANSFORMERS_OFFLINE="1",
        DO_NOT_TRACK="1",
        INFINITY_ANONYMOUS_USAGE_STATS="0",
        HF_HOME=str(home / "hf"),
        COLUMNS="200",  # its rich log lines, readable in the log file
    )
    return env


class InfinityServer:
    """`infinity_emb v2` as a child process on a free loopback port, its log in a temporary folder.

    Args:
        models: what it serves.
        engine: "torch" (Infinity's default) or "optimum".
        batch_size: Infinity's `--batch-size`.
        venv: the Infinity virtualenv (default `.venv-infinity` in the checkout).
        extra_args: further `infinity_emb v2` options.
    Raises:
        FileNotFoundError: (from `start`) the virtualenv has no `infinity_emb`.
    """

    def __init__(
        self,
        models: Sequence[InfinityModel],
        *,
        engine: str = "torch",
        batch_size: int = 32,
        venv: Path = INFINITY_VENV,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.models = list(models)
        self.engine = engine
        self.batch_size = batch_size
        self.venv = venv
        self.port = free_port()
        self.workdir = Path(tempfile.mkdtemp(prefix="facet-bench-infinity-"))
        self.log_path = self.workdir / "infinity.log"
        self.argv = infinity_command(
            venv / "bin" / "infinity_emb",
            self.models,
            self.port,
            engine=engine,
            batch_size=batch_size,
            extra_args=extra_args,
        )
        self.process: subprocess.Popen[bytes] | None = None
        self.startup_seconds: float | None = None
        self.exit_code: int | None = None
        self.problems: list[str] = []
        self.stopped = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        assert self.process is not None, "start() first"
        return self.process.pid

    def start(self, timeout_s: float = INFINITY_STARTUP_TIMEOUT_S) -> Self:
        """Start it and wait until `GET /health` answers 200; `startup_seconds` says how long that took.

        Raises:
            FileNotFoundError: no Infinity virtualenv.
            RuntimeError: it exited, or did not serve within `timeout_s` (stopped then; the log's tail in the message).
        """
        if not (self.venv / "bin" / "infinity_emb").is_file():
            raise FileNotFoundError(f"no Infinity at {self.venv}; {INSTALL_HINT}")
        began = time.perf_counter()
        with self.log_path.open("wb") as log_file:
            self.process = subprocess.Popen(
                self.argv,
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=infinity_env(self.workdir),
                cwd=self.workdir,
                start_new_session=True,  # its own process group: stop() ends it and any worker it forks
            )
        deadline = began + timeout_s
        while True:
            if self.process.poll() is not None:
                self.exit_code = self.process.returncode
                raise RuntimeError(f"Infinity exited ({self.exit_code}) while starting:\n{self.log_tail()}")
            if self._healthy():
                break
            if time.perf_counter() > deadline:
                tail = self.log_tail()
                self.stop()
                raise RuntimeError(f"Infinity did not serve within {timeout_s:.0f} s:\n{tail}")
            time.sleep(0.5)  # polling a child process's readiness, not synchronising with it
        self.startup_seconds = time.perf_counter() - began
        return self

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            return False

    def stop(self, timeout_s: float = INFINITY_STOP_TIMEOUT_S) -> None:
        """SIGTERM to its process group, SIGKILL after `timeout_s`; records `exit_code` and the log's
        warnings and errors (`problems`), then removes its temporary folder. Idempotent."""
        if self.stopped:
            return
        self.stopped = True
        try:
            if self.process is not None and self.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGTERM)
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.problems.append(f"did not stop within {timeout_s:.0f} s of SIGTERM; killed")
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(self.process.pid, signal.SIGKILL)
                    self.process.wait()
            if self.process is not None:
                self.exit_code = self.process.returncode
            self.problems += log_problems(self.log_path)
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def log_tail(self, lines: int = 30) -> str:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process so far."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def versions(self) -> dict[str, str]:
        """Versions of infinity-emb and the libraries it computes with, from its virtualenv."""
        return infinity_versions(self.venv)


def log_problems(log_path: Path, limit: int = 12) -> list[str]:
    """Infinity's log lines at WARNING, ERROR or CRITICAL, and tracebacks' last lines, deduplicated with counts."""
    counts: dict[str, int] = {}
    lines = log_path.read_text(errors="replace").splitlines() if log_path.exists() else []
    for i, line in enumerate(lines):
        text = line.strip()
        if any(f" {level} " in f" {text} " for level in ("WARNING", "ERROR", "CRITICAL")) or (
            text.startswith("Traceback") and i + 1 < len(lines)
        ):
            key = " ".join(text.split()[:40])[:300]
            counts[key] = counts.get(key, 0) + 1
    ranked = sorted(counts.items(), key=lambda item: -item[1])[:limit]
    return [f"{message} (x{n})" if n > 1 else message for message, n in ranked]


def infinity_versions(venv: Path = INFINITY_VENV) -> dict[str, str]:
    """{"infinity-emb": ..., "torch": ..., ...} as installed in `venv` ("" for a missing one)."""
    names = [
        "infinity-emb",
        "torch",
        "sentence-transformers",
        "transformers",
        "onnxruntime",
        "optimum",
        "fastapi",
        "uvicorn",
    ]
    code = (
        "import importlib.metadata as m, json, sys\n"
        "def v(n):\n"
        "    try: return m.version(n)\n"
        "    except m.PackageNotFoundError: return ''\n"
        f"print(json.dumps({{n: v(n) for n in {names!r}}}))"
    )
    import json

    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return dict(json.loads(out.stdout))


class HTTPCallError(sdk.FacetError):
    """An Infinity call that failed (HTTP status >= 400, or a transport error).

    A `sdk.FacetError`, so the shared load generator (`load.harness.callers_for_duration`) counts it
    as a failed call and goes on, exactly as it counts a failed gRPC call on the Facet side.
    """


class InfinityClient:
    """Calls to one Infinity server over HTTP/1.1 (httpx, one connection pool shared by every caller,
    keep-alive, as a user's service would hold one client).

    Args:
        url: `http://127.0.0.1:<port>`.
        max_connections: the pool's size; at least the number of concurrent callers, so no call waits for a connection.
        timeout_s: each call's timeout (connect, write, read) in seconds.
    """

    def __init__(self, url: str, max_connections: int = 64, timeout_s: float = HTTP_TIMEOUT_S) -> None:
        import httpx

        self._httpx = httpx
        self.client = httpx.AsyncClient(
            base_url=url,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
        )

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        try:
            response = await self.client.post(path, json=body)
        except self._httpx.HTTPError as exc:
            raise HTTPCallError(f"POST {path}: {type(exc).__name__}: {exc}") from exc
        if response.status_code >= 400:
            raise HTTPCallError(f"POST {path}: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    async def embed(self, model: str, texts: Sequence[str]) -> np.ndarray:
        """`POST /embeddings`: float32 [len(texts), dimension], in the order of `texts` (Infinity
        normalises them to unit length)."""
        payload = await self._post("/embeddings", {"model": model, "input": list(texts)})
        rows = sorted(payload["data"], key=lambda item: item["index"])
        return np.asarray([row["embedding"] for row in rows], dtype=np.float32)

    async def rerank(self, model: str, query: str, documents: Sequence[str], raw_scores: bool = False) -> np.ndarray:
        """`POST /rerank`: float32 [len(documents)], each document's score in the order of
        `documents`: the logit with `raw_scores`, else Infinity's sigmoid of it."""
        payload = await self._post(
            "/rerank", {"model": model, "query": query, "documents": list(documents), "raw_scores": raw_scores}
        )
        scores = np.full(len(documents), np.nan, dtype=np.float32)
        for item in payload["results"]:
            scores[int(item["index"])] = float(item["relevance_score"])
        return scores

    async def close(self) -> None:
        await self.client.aclose()
