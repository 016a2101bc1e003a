"""`facet train <capability>`: a capability's training as a Ray job on a cluster.

    facet train nextframe --address http://HEAD:8265 -- --datasets pendulum --steps 3000
    facet train sae --address http://HEAD:8265 -- --widths 2304,4608 --tokens 1000000

Submits through Ray's job submission client with a `runtime_env` (this checkout as the working
directory; with --pip, Facet's pinned requirements), streams the job's logs here, and exits with
the job's outcome. The job runs the capability's build, which ends by registering the new model
versions in the model repository (--repository, a path the cluster's workers and the services both
read: one machine, or a shared volume). The same job as a KubeRay `RayJob`: see the README.
"""

from __future__ import annotations

import argparse
import asyncio
import shlex
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from services import registry
from services.backends.ray_auth import opt_in_token_auth

CHECKOUT = Path(__file__).resolve().parents[1]


def trainable() -> dict[str, str]:
    """Capability -> the module its Ray job runs (`python -m`), for every registry row that trains."""
    return {row.name: row.train_module for row in registry.CAPABILITIES if row.train_module}

# what the working directory upload leaves out (Ray's limit is 500 MiB; models are not code)
EXCLUDES = [".git", ".venv", ".venv-triton", "**/__pycache__", "*.onnx", "*.faiss", "*.sqlite3*", ".mypy_cache", ".ruff_cache", ".pytest_cache"]


def pinned_requirements() -> list[str]:
    """Facet's serve and training requirements, as pinned in pyproject.toml."""
    project = tomllib.loads((CHECKOUT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    return sorted(set(project["dependencies"]) | set(extras["serve"]) | set(extras["training"]))


def upload_excludes(checkout: Path = CHECKOUT) -> list[str]:
    """What the working-directory upload leaves out: `EXCLUDES`, and every virtualenv at the top of
    the checkout whatever its name (a folder with a `pyvenv.cfg`: `venv/`, `.venv-infinity/`), which
    would otherwise push the upload past Ray's limit (HTTP 413)."""
    venvs = sorted(f"/{d.name}" for d in checkout.iterdir() if d.is_dir() and (d / "pyvenv.cfg").is_file())
    return EXCLUDES + [v for v in venvs if v.lstrip("/") not in EXCLUDES]


def runtime_env(repository: str, pip: bool) -> dict[str, Any]:
    env: dict[str, Any] = {
        "working_dir": str(CHECKOUT),
        "excludes": upload_excludes(),
        "env_vars": {"FACET_MODEL_REPOSITORY": repository, "PYTHONUNBUFFERED": "1"},
    }
    if pip:
        env["pip"] = {"packages": pinned_requirements(), "pip_check": False}
    return env


def entrypoint(capability: str, repository: str, args: list[str]) -> str:
    return " ".join(["python", "-m", trainable()[capability], "--repository", shlex.quote(repository), *map(shlex.quote, args)])


async def _follow(client: Any, job_id: str) -> None:
    async for lines in client.tail_job_logs(job_id):
        print(lines, end="", flush=True)


def _submit(client: Any, command: str, env: dict[str, Any], submission_id: str, timeout_s: float = 120.0) -> str:
    """Submit; a head that has just started answers "No available agent" until its job agent is
    up, so that answer is retried until `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return str(client.submit_job(entrypoint=command, runtime_env=env, submission_id=submission_id))
        except RuntimeError as exc:
            if "No available agent" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="facet train", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("capability", choices=sorted(trainable()))
    parser.add_argument("--address", default=None, help="the cluster's dashboard, http://HEAD:8265 (default: RAY_ADDRESS, else the local one)")
    parser.add_argument("--repository", help="model repository as the cluster sees it (default: the configured one)")
    parser.add_argument("--pip", action="store_true", help="install Facet's pinned requirements in the job's runtime_env")
    parser.add_argument("--no-wait", action="store_true", help="submit and print the job id, do not follow it")
    parser.usage = f"facet train {{{','.join(sorted(trainable()))}}} [--address URL] [--repository PATH] [--pip] [--no-wait] [-- BUILD OPTIONS]"
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:cut])
    build_args = argv[cut + 1 :]  # the build's own options (facet <capability> build --help)
    if args.repository is None:
        from services.runtime.config import load_config

        args.repository = str(load_config().model_repository)
    opt_in_token_auth()
    from ray.job_submission import JobStatus, JobSubmissionClient

    try:
        client = JobSubmissionClient(args.address)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        print(f"facet train: no Ray cluster at {args.address or 'RAY_ADDRESS / the local one'}: {exc}", file=sys.stderr)
        return 1
    command = entrypoint(args.capability, args.repository, build_args)
    job_id = _submit(client, command, runtime_env(args.repository, args.pip), f"facet-train-{args.capability}-{int(time.time())}")
    print(f"facet train: submitted {job_id}: {command}", flush=True)
    if args.no_wait:
        return 0
    asyncio.run(_follow(client, job_id))
    while (status := client.get_job_status(job_id)) not in {JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.STOPPED}:
        time.sleep(1)
    info = client.get_job_info(job_id)
    print(f"facet train: {job_id} {status.value}" + (f": {info.message}" if info.message and status != JobStatus.SUCCEEDED else ""), flush=True)
    return 0 if status == JobStatus.SUCCEEDED else 1
