"""Server lifecycle shared by every service: health, reflection, interceptor, drain on SIGTERM,
TLS/mTLS on the one port (`services.runtime.tls`), API keys and their rate limits
(`services.runtime.api_keys`).

    running = await start_server(service, config)   # binds, loads models, reports SERVING
    await running.stop()                            # NOT_SERVING, drain within the grace period

`serve()` is the process entrypoint (`python -m services.<capability>`).
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio
from grpc_reflection.v1alpha import reflection

from sdk._contract import capability
from services.runtime.api_keys import KeyRing
from services.runtime.config import FacetConfig
from services.runtime.errors import EngineLost
from services.runtime.interceptor import FacetInterceptor
from services.runtime.logs import configure_logging
from services.runtime.metrics import METRICS
from services.runtime.tls import certificate_names, server_credentials

log = logging.getLogger("facet.server")

# After the drain: how long the last refusals get to finish before grpc cancels what is left
# (health Watch streams); a stop waits this long only while such calls remain.
FINAL_STOP_GRACE_S = 1.0
GRPC_BACKSTOP_MIN_RPCS = 1024  # gRPC's own concurrent-call limit is never below this (see start_server)

_SERVING = health_pb2.HealthCheckResponse.SERVING
_NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


class FacetService(abc.ABC):
    """One capability's servicer plus what it must load before it can serve."""

    name: str  # the capability's short name, as in the registry: "retrieval"

    @property
    def service_name(self) -> str:
        """The gRPC service, from the registry: "facet.v1.Retrieval"."""
        return capability(self.name).service_name

    @abc.abstractmethod
    def register(self, server: grpc.aio.Server) -> None:
        """Add the servicer to `server`."""

    @abc.abstractmethod
    async def start(self) -> None:
        """Load and warm models, open stores. The service reports SERVING after this returns."""

    async def stop(self) -> None:  # noqa: B027 - optional hook
        """Release what `start` acquired, after in-flight calls are drained."""

    async def healthy(self) -> bool:
        """Whether the service can serve now (checked every second once started; e.g. its models
        on a remote inference engine are READY). Health reports NOT_SERVING while it is not."""
        return True


class RunningServer:
    def __init__(
        self,
        server: grpc.aio.Server,
        service: FacetService,
        health: health_aio.HealthServicer,
        port: int,
        interceptor: FacetInterceptor | None = None,
    ) -> None:
        self.server = server
        self.service = service
        self.health = health
        self.port = port
        self.interceptor = interceptor or FacetInterceptor()
        self.serving = False

    async def set_serving(self, serving: bool) -> None:
        self.serving = serving
        status = _SERVING if serving else _NOT_SERVING
        await self.health.set(health.OVERALL_HEALTH, status)
        await self.health.set(self.service.service_name, status)

    async def watch(self, interval_s: float = 1.0) -> None:
        """Keep health in step with `service.healthy()` until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            now = await self.check()
            if now != self.serving:
                log.warning("health", extra={"fields": {"serving": now}})
                await self.set_serving(now)

    async def check(self) -> bool:
        """`service.healthy()`; False when the check itself fails (EngineLost propagates)."""
        try:
            return await self.service.healthy()
        except EngineLost:
            raise  # not recoverable here: the server stops (see _serve)
        except Exception:  # noqa: BLE001 - a failing check means not healthy
            return False

    async def stop(self, grace_period_s: float) -> None:
        """Drain, then stop: report NOT_SERVING (health stays open), answer new calls with
        UNAVAILABLE, let the calls in flight finish within `grace_period_s` seconds, end the ones
        still running then with UNAVAILABLE (retryable, unlike grpc's own CANCELLED), then close
        the port and release the service's resources."""
        await self.set_serving(False)
        calls = self.interceptor.calls
        calls.start_drain()
        if not await calls.wait_idle(grace_period_s):
            cut = await calls.cut_off()
            log.warning("grace period over", extra={"fields": {"cut_off_calls": cut, "grace_period_s": grace_period_s}})
        # what is left: health watches, and refusals of calls that just arrived, which get this
        # long to send their UNAVAILABLE (grpc takes no new call meanwhile)
        await self.server.stop(FINAL_STOP_GRACE_S)
        await self.service.stop()


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def start_server(service: FacetService, config: FacetConfig) -> RunningServer:
    """Bind (TLS when `server.tls_cert_file` is set), start (NOT_SERVING), load the service's
    models, then report SERVING.

    Raises:
        ConfigError: a TLS file or the API keys file is missing or invalid (checked before binding).
        OSError: the port cannot be bound.
    """
    limit = config.server.max_message_bytes
    credentials = server_credentials(config.server)
    keys = KeyRing.from_config(config.api_key, config.server.api_keys_file)
    interceptor = FacetInterceptor(
        max_reply_bytes=limit, max_concurrent_rpcs=config.server.max_concurrent_rpcs, keys=keys
    )
    server = grpc.aio.server(
        interceptors=[interceptor],
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
            ("grpc.so_reuseport", 0),
            ("grpc.keepalive_time_ms", _ms(config.server.keepalive_time_s)),
            ("grpc.keepalive_timeout_ms", _ms(config.server.keepalive_timeout_s)),
            ("grpc.max_connection_age_ms", _ms(config.server.max_connection_age_s)),
            ("grpc.max_connection_age_grace_ms", _ms(config.server.max_connection_age_grace_s)),
            # clients' own keepalive pings are welcome up to every 10 s (gRPC's default, 5 min,
            # would answer a client pinging more often with GOAWAY "too_many_pings")
            ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
        ],
        # the interceptor refuses past the limit naming its key, before reading the request. gRPC's
        # own limit counts those refusals too until they finish, and its message names no key, so
        # it is only a far backstop against floods: at 2x the limit a burst of 12 calls against 2
        # slots got gRPC's bare "Concurrent RPC limit exceeded!"
        maximum_concurrent_rpcs=max(GRPC_BACKSTOP_MIN_RPCS, 16 * config.server.max_concurrent_rpcs),
    )
    service.register(server)
    health_servicer = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((service.service_name, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    port = config.server.port if config.server.port is not None else capability(service.name).default_port
    try:
        address = f"{config.server.host}:{port}"
        bound = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    except RuntimeError:  # grpc reports a failed bind this way
        bound = 0
    if bound == 0:
        raise OSError(f"cannot bind {config.server.host}:{port}: the port is in use or not allowed (set server.port)")
    running = RunningServer(server, service, health_servicer, bound, interceptor)
    await running.set_serving(False)
    interceptor.calls.starting = True  # health answers NOT_SERVING, calls UNAVAILABLE (retryable)
    await server.start()
    try:
        await service.start()
    except BaseException:
        await server.stop(0)
        raise
    interceptor.calls.starting = False
    # SERVING only if the service can serve now (a store it needs may be down: it starts anyway
    # and reports NOT_SERVING until the store answers)
    serving = await running.check()
    if not serving:
        log.warning("health", extra={"fields": {"serving": False}})
    await running.set_serving(serving)
    return running


async def _serve(service: FacetService, config: FacetConfig, port_file: Path | None, served: list[bool]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    metrics_port = None
    if config.server.metrics_port >= 0:
        metrics_port = METRICS.serve(config.server.metrics_port, config.server.host)
    running = await start_server(service, config)
    served.append(True)
    # An engine's client library may have put its own handler in place while the models loaded
    # (Ray's core worker does, and it ends the process): SIGTERM must start the drain.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    facts = {
        "event": "serving",
        "service": service.name,
        "port": running.port,
        "metrics_port": metrics_port,
        "tls": bool(config.server.tls_cert_file),
        "mtls": bool(config.server.tls_client_ca_file),
        # the names clients must connect to: a certificate for another host starts fine
        "tls_names": certificate_names(config.server.tls_cert_file) if config.server.tls_cert_file else [],
        "api_keys": [k.name for k in running.interceptor.keys.keys],
    }
    log.info("serving", extra={"fields": facts})
    if port_file is not None:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(facts))
        tmp.replace(port_file)
    watch = asyncio.create_task(running.watch())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({watch, stopping}, return_when=asyncio.FIRST_COMPLETED)
    lost = watch.exception() if watch.done() else None  # the watch ends only by EngineLost
    watch.cancel()
    stopping.cancel()
    if lost is not None:
        log.error("engine lost: draining and exiting so the service is started again", extra={"fields": {"error": str(lost)}})
    log.info("draining", extra={"fields": {"grace_period_s": config.server.grace_period_s}})
    await running.stop(config.server.grace_period_s)
    log.info("stopped")
    if lost is not None:
        raise lost


def serve(service: FacetService, config: FacetConfig, port_file: Path | None = None) -> int:
    """Run `service` until SIGTERM or SIGINT; return the process exit code."""
    configure_logging(service.name, config.log_level)
    served: list[bool] = []
    try:
        asyncio.run(_serve(service, config, port_file, served))
    except Exception as exc:  # noqa: BLE001 - one clear line, not a traceback
        what = "stopped with an error" if served else "cannot start"
        log.error("%s: %s", what, exc)
        print(f"facet {service.name}: {what}: {exc}", file=sys.stderr, flush=True)
        if isinstance(exc, EngineLost):
            # the engine's client library may hang at interpreter exit on a dead cluster (Ray's
            # atexit shutdown waits for its lost head): the drain is done, nothing is left to save
            logging.shutdown()
            os._exit(1)
        return 1
    return 0
