"""`facet load`: locust load tests of the running services through the SDK.

    facet load retrieval --users 32 --spawn-rate 8 --run-time 60s --csv out/run --html out/report.html
    facet load all --shape steps --slo load/slo.toml
    facet load sae --web                                   # locust's web UI on :8089

Runs `python -m locust -f load/locustfile.py` in its own process (locust monkey-patches with
gevent) with the chosen services' User classes, waits for it and stops it (Ctrl-C stops it too);
it starts no service: a service that does not answer at its address is reported before locust
starts. Addresses: `FACET_<NAME>_ADDR`, else `--host` at the capability's default port.
`--users` counts users per service (`all` runs that many of each).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import math
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from deploy.check import TARGET_SCHEMES, check_address
from load import slo
from load.scenarios import OUTPUT_FILE_ENVS, has_scenario, user_class_name
from load.scenarios._data import read_rarb
from sdk._contract import capability as contract
from services import registry

LOCUSTFILE = Path(__file__).resolve().with_name("locustfile.py")
REPO_ROOT = LOCUSTFILE.parent.parent
DEFAULT_SLO = Path(__file__).resolve().with_name("slo.toml")
DEFAULT_STEPS = "1,2,4,8,16,32,64"
DEFAULT_STEP_TIME = "15s"
# Seconds locust gets beyond the planned run (start-up, the users' last calls, reports) before
# `facet load` stops it.
GRACE_S = 60.0
# Shortest `--step-time`: a step needs at least 2 seconds of locust's per-second history after
# the second of its ramp, or the SLO check counts it into the next step (`load.slo.read_steps`).
MIN_STEP_S = 3.0
_DURATION = re.compile(r"^(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s?)?$")


def parse_duration(text: str) -> float:
    """locust's duration syntax ("90", "90s", "2m", "1h30m") in seconds. Raises ValueError."""
    match = _DURATION.match(text.strip())
    if not text.strip() or not match or not any(match.groups()):
        raise ValueError(f"a duration like 30s, 2m or 1h30m; got {text!r}")
    hours, minutes, seconds = (int(g or 0) for g in match.groups())
    total = hours * 3600 + minutes * 60 + seconds
    if total <= 0:
        raise ValueError(f"a duration > 0; got {text!r}")
    return float(total)


def parse_steps(text: str) -> tuple[int, ...]:
    """Users per service at each step: "1,2,4" -> (1, 2, 4). Raises ValueError unless every step
    is an integer >= 1."""
    try:
        steps = tuple(int(part) for part in text.split(",") if part.strip())
    except ValueError:
        raise ValueError(f"steps must be comma-separated integers, e.g. 1,2,4,8; got {text!r}") from None
    if not steps or min(steps) < 1:
        raise ValueError(f"steps must be integers >= 1, e.g. 1,2,4,8; got {text!r}")
    return steps


def services_for(target: str) -> list[str]:
    """The capabilities to load: "all" -> every one with a scenario (registry order); "a,b" -> those. Raises
    ValueError naming the capabilities that have scenarios."""
    available = [name for name in registry.names() if has_scenario(name)]
    if target == "all":
        return available
    wanted = list(dict.fromkeys(name.strip() for name in target.split(",") if name.strip()))  # once each
    unknown = [name for name in wanted if name not in available]
    if unknown or not wanted:
        raise ValueError(
            f"unknown service {', '.join(unknown) or repr(target)}; available: {', '.join(available)} or all"
        )
    return wanted


def _is_target(text: str) -> bool:
    """Whether `text` names services as the positional argument does ("all", "sae,retrieval")."""
    try:
        services_for(text)
    except ValueError:
        return False
    return True


def address_of(name: str, host: str) -> str:
    """Where the load goes for a capability: FACET_<NAME>_ADDR, else host:default port (the same
    rule as the locust users, `load.scenarios._user.address_for`).

    Raises:
        ValueError: FACET_<NAME>_ADDR or `--host` does not make a HOST:PORT (naming which).
    """
    row = contract(name)
    explicit = os.environ.get(row.address_env)
    if explicit:  # empty: unset, as the SDK reads it
        return check_address(explicit, row.address_env)
    bracketed = host.startswith("[") and host.endswith("]")
    if not host.strip() or any(c in host for c in "/ ") or (":" in host and not bracketed):
        raise ValueError(
            f"--host: {host!r} is not a host name, e.g. localhost, gpu-1 or [::1] (no scheme, no port: each "
            f"service is at its default port; set {row.address_env}=HOST:PORT for another)"
        )
    return check_address(f"{host}:{row.default_port}", "--host")


def unreachable(address: str, timeout_s: float = 3.0) -> str | None:
    """Why nothing accepts connections at host:port, or None when something does (or when the
    address is a gRPC target such as dns:/// or unix:, which only gRPC resolves)."""
    if address.startswith(TARGET_SCHEMES):
        return None
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "localhost", int(port)), timeout=timeout_s):
            return None
    except (OSError, ValueError) as exc:
        return str(exc) or type(exc).__name__


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facet load",
        description="Load-test running services with locust through the SDK (headless by default; --web for locust's UI).",
        epilog="Addresses: FACET_<NAME>_ADDR, else --host at each service's default port. Exit status: 0 passed; "
        "1 failed calls (no --slo) or an SLO breach (--slo); 2 bad arguments or a service not reachable.",
    )
    names = [name for name in registry.names() if has_scenario(name)]
    parser.add_argument("service", nargs="?", default=None, help=f"{', '.join(names)}, a comma-separated list, or all")
    parser.add_argument(
        "--users", type=int, default=4, help="concurrent users per service (default 4); ignored with --shape steps"
    )
    parser.add_argument(
        "--spawn-rate", type=float, default=None, help="users started per second (default: all at once)"
    )
    parser.add_argument(
        "--run-time",
        default="30s",
        help="how long to run, e.g. 60s, 5m (default 30s); with --shape steps the steps decide",
    )
    parser.add_argument(
        "--csv", default=None, help="write locust's CSV files with this prefix (stats, failures, per-second history)"
    )
    parser.add_argument("--html", default=None, help="write locust's HTML report here")
    parser.add_argument(
        "--shape",
        choices=("constant", "steps"),
        default="constant",
        help="constant users, or stepped concurrency (default constant)",
    )
    parser.add_argument(
        "--steps", default=DEFAULT_STEPS, help=f"users per service at each step (default {DEFAULT_STEPS})"
    )
    parser.add_argument(
        "--step-time",
        default=DEFAULT_STEP_TIME,
        help=f"duration of each step (default {DEFAULT_STEP_TIME})",
    )
    parser.add_argument(
        "--slo",
        type=Path,
        nargs="?",
        const=DEFAULT_SLO,
        default=None,
        help="check the run against this objectives file and print a table per step (default file: load/slo.toml)",
    )
    parser.add_argument(
        "--host", default="localhost", help="host of the services, each at its default port (default localhost)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="benchmark data directory with rarb-mcr/ (default ../shared/data beside the checkout)",
    )
    parser.add_argument(
        "--web", action="store_true", help="run locust's web UI instead of a headless run (stop with Ctrl-C)"
    )
    parser.add_argument("--web-port", type=int, default=8089, help="port of locust's web UI (default 8089)")
    return parser


def locust_command(args: argparse.Namespace, services: list[str], csv_prefix: str | None) -> list[str]:
    """The locust command line for the parsed arguments."""
    command = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--host", args.host]
    if args.web:
        command += ["--web-port", str(args.web_port)]
    else:
        command += ["--headless", "--only-summary"]
        if args.shape == "constant":
            users = args.users * len(services)
            rate = args.spawn_rate if args.spawn_rate is not None else float(users)
            command += ["--users", str(users), "--spawn-rate", f"{rate:g}", "--run-time", args.run_time]
    if csv_prefix:
        command += ["--csv", csv_prefix, "--csv-full-history"]
    if args.html:
        command += ["--html", args.html]
    if args.slo is not None:
        command += ["--exit-code-on-error", "0"]  # the objectives' error rates decide
    return [*command, *(user_class_name(name) for name in services)]


def locust_env(args: argparse.Namespace, services: list[str]) -> dict[str, str]:
    """The locust process's environment: which scenarios, the shape, the data, the import path."""
    env = dict(os.environ)
    env["FACET_LOAD_SERVICES"] = ",".join(services)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    if args.data is not None:
        env["FACET_LOAD_DATA"] = str(args.data.resolve())
    if args.shape == "steps":
        env["FACET_LOAD_SHAPE"] = "steps"
        env["FACET_LOAD_STEPS"] = args.steps
        env["FACET_LOAD_STEP_S"] = f"{parse_duration(args.step_time):g}"
        if args.spawn_rate is not None:
            env["FACET_LOAD_SPAWN_RATE"] = f"{args.spawn_rate:g}"
    else:
        env.pop("FACET_LOAD_SHAPE", None)
    return env


def planned_s(args: argparse.Namespace) -> float | None:
    """How long the run should take, seconds (None: the web UI, until stopped)."""
    if args.web:
        return None
    if args.shape == "steps":
        return len(parse_steps(args.steps)) * parse_duration(args.step_time)
    return parse_duration(args.run_time)


class _Stopped(Exception):
    """`facet load` got SIGTERM or SIGHUP (a job runner, a closed terminal) while locust ran."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def _raise_stopped(signum: int, _frame: object) -> None:
    raise _Stopped(signum)


def run_locust(command: list[str], env: dict[str, str], limit_s: float | None) -> int:
    """Run locust to its end (or `limit_s`, or Ctrl-C, SIGTERM or SIGHUP) and make sure it is gone.
    Returns its status (128 + the signal's number when stopped by one)."""
    stop_signals = (signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in stop_signals}
    try:
        for signum in stop_signals:
            signal.signal(signum, _raise_stopped)
    except ValueError:  # not the main thread: the caller handles signals
        previous = {}
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT)
    try:
        return process.wait(timeout=limit_s)
    except subprocess.TimeoutExpired:
        print(f"facet load: locust still running {limit_s:.0f} s after start; stopping it", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except _Stopped as stopped:
        print(f"facet load: {stopped}: stopping locust", file=sys.stderr)
        return 128 + stopped.signum
    finally:
        for signum in previous:
            signal.signal(signum, signal.SIG_IGN)  # stopping already: a second signal must not orphan locust
        if process.poll() is None:
            process.send_signal(signal.SIGINT)  # locust writes its reports on SIGINT
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def check_web_port(port: int) -> None:
    """A ValueError unless locust's web UI can listen on `port` (a number in 1-65535, free)."""
    if not 1 <= port <= 65535:
        raise ValueError(f"--web-port must be a port from 1 to 65535; got {port}")
    with socket.socket() as probe:
        try:
            probe.bind(("", port))
        except OSError as exc:
            why = "in use" if exc.errno == errno.EADDRINUSE else (exc.strerror or str(exc))
            raise ValueError(f"--web-port {port}: {why}; pick another with --web-port P") from None


def check_output(path: Path, flag: str) -> None:
    """A ValueError unless a file can be written at `path` (its folder is made when missing).

    Args:
        path: a file locust (or a scenario) writes.
        flag: what named it, e.g. "--csv" or "FACET_LOAD_ACK_LOG", for the message.
    """
    if path.is_dir():
        raise ValueError(f"{flag}: {path} is a directory; give a file name in it, e.g. {path / 'run'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(f"{flag}: cannot make the folder {path.parent} ({exc.strerror or exc})") from None
    if not os.access(path.parent, os.W_OK | os.X_OK) or (path.exists() and not os.access(path, os.W_OK)):
        raise ValueError(f"{flag}: cannot write {path} (no write permission)")


def still_serving(services: list[str], host: str) -> int:
    """After a run: 0 when every service still accepts connections, else 1 with one line per
    service that stopped (its calls may have been waiting in the SDK's retries, not failed)."""
    status = 0
    for name in services:
        address = address_of(name, host)
        why = unreachable(address)
        if why is not None:
            print(
                f"facet load: the {name} service at {address} stopped accepting connections during the run ({why}); "
                "calls in flight then were not counted: the run is not a pass",
                file=sys.stderr,
            )
            status = 1
    return status


def main(argv: list[str] | None = None) -> int:
    """`facet load <service|all> [options]`; returns the exit status (see `--help`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.service is None:
        # `facet load --slo retrieval`: the bare --slo took the service as its file
        if args.slo is not None and not args.slo.exists() and _is_target(str(args.slo)):
            args.service, args.slo = str(args.slo), DEFAULT_SLO
        else:
            parser.error("the service to load is missing (e.g. facet load retrieval --slo, or facet load all)")
    try:
        services = services_for(args.service)
        if args.users < 1:
            raise ValueError(f"--users must be >= 1; got {args.users}")
        if args.spawn_rate is not None and not (math.isfinite(args.spawn_rate) and args.spawn_rate > 0):
            raise ValueError(f"--spawn-rate must be a number > 0 (users per second); got {args.spawn_rate:g}")
        if args.web:
            check_web_port(args.web_port)
        outputs = [(args.csv and f"{args.csv}_stats.csv", "--csv"), (args.html, "--html")]
        for path, flag in [*outputs, *((os.environ.get(env), env) for env in OUTPUT_FILE_ENVS)]:
            if path:
                check_output(Path(path), flag)
        addresses = {name: address_of(name, args.host) for name in services}
        if args.shape == "steps":
            parse_steps(args.steps)
            if parse_duration(args.step_time) < MIN_STEP_S:
                raise ValueError(
                    f"--step-time must be at least {MIN_STEP_S:g}s (each step needs 2 s of history after its ramp "
                    f"to be a step of its own); got {args.step_time}"
                )
        if args.web and args.slo is not None:
            raise ValueError(
                "--slo checks a headless run; with --web give --csv PREFIX and run python -m load.slo PREFIX afterwards"
            )
        limit = planned_s(args)
        if args.slo is not None:
            slo.load_objectives(args.slo)  # a bad file fails before the run, not after it
    except (ValueError, OSError) as exc:
        print(f"facet load: {exc}", file=sys.stderr)
        return 2
    data = args.data or Path(os.environ.get("FACET_LOAD_DATA") or REPO_ROOT.parent / "shared" / "data")
    if not (data / "rarb-mcr").is_dir():
        print(
            f"facet load: no benchmark data at {data / 'rarb-mcr'}: pass --data DIR (the directory holding rarb-mcr/)",
            file=sys.stderr,
        )
        return 2
    try:
        read_rarb(data / "rarb-mcr")  # what the users read: unusable data stops the run here, not in each user
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        print(f"facet load: {exc}", file=sys.stderr)
        return 2
    for name, address in addresses.items():
        why = unreachable(address)
        if why is not None:
            print(
                f"facet load: no {name} service at {address} ({why}): start it with `facet up` first, or set {contract(name).address_env}",
                file=sys.stderr,
            )
            return 2
    with contextlib.ExitStack() as stack:
        prefix = args.csv
        if prefix is None and args.slo is not None and not args.web:
            prefix = str(Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="facet-load-"))) / "run")
        status = run_locust(
            locust_command(args, services, prefix),
            locust_env(args, services),
            None if limit is None else limit + GRACE_S,
        )
        if status > 128:  # stopped by a signal (130: Ctrl-C)
            return status
        gone = still_serving(services, args.host)
        if args.slo is None or args.web or status not in (0,):
            return status or gone
        try:
            return slo.run_check(prefix or "", args.slo) or gone
        except (OSError, ValueError) as exc:
            print(f"facet load: SLO check: {exc}", file=sys.stderr)
            return 2
