"""Configuration as frozen, validated dataclasses.

Sources, later ones winning: the defaults below, a TOML file (`--config PATH` or
`FACET_CONFIG`), then environment variables. A top-level field `x` is read from
`FACET_X`; a field `y` of section `s` from `FACET_S_Y`. For example::

    FACET_MODEL_REPOSITORY=/srv/models FACET_SERVER_PORT=0 FACET_BATCHING_MAX_BATCH_SIZE=64

The sections here are the runtime's own (server, batching, engines). Each capability adds its
own section, named after it (`[retrieval]`, `[sae]`, `[nextframe]`), from the dataclass its
registry row names (`services.registry`); a service reads it with `config.section(RetrievalConfig)`.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from sdk._contract import MAX_MESSAGE_BYTES
from services.backends.onnx_session import ProviderError, parse_providers

ENV_PREFIX = "FACET_"
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


def check(condition: bool, message: str) -> None:
    """Raise ConfigError(message) unless `condition`: the one-line checks of every section's
    `__post_init__`, capability sections included."""
    if not condition:
        raise ConfigError(message)


def default_model_repository(env: Mapping[str, str] | None = None) -> Path:
    """Per-user default: $XDG_DATA_HOME/facet/models, else ~/.local/share/facet/models."""
    env = os.environ if env is None else env
    home = Path(env["HOME"]) if env.get("HOME") else Path.home()
    base = env.get("XDG_DATA_HOME") or str(home / ".local" / "share")
    return Path(base) / "facet" / "models"


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """Per-user default for service state (collections): .../facet/data."""
    return default_model_repository(env).parent / "data"


# gRPC takes its connection settings as int32 milliseconds
MAX_CONNECTION_SETTING_S = (2**31 - 1) / 1000


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int | None = None  # None: the service's default port (sdk._contract.CAPABILITIES)
    metrics_port: int = -1  # -1: no /metrics endpoint, 0: any free port
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_concurrent_rpcs: int = 256
    grace_period_s: float = 10.0
    # TLS on the one port (health and reflection too): both PEM files set, or neither
    tls_cert_file: str = ""  # the server's certificate chain
    tls_key_file: str = ""  # its private key
    tls_client_ca_file: str = ""  # set: mTLS, clients must present a certificate signed by this CA
    # several API keys, each with its own name and rate limit (services.runtime.api_keys)
    api_keys_file: str = ""
    # Connections: a call that never sends its request or a stream never read, without a
    # deadline, is held only as long as its connection. The server pings a connection idle for
    # keepalive_time_s and closes it when no ack comes within keepalive_timeout_s (a vanished
    # client); every connection is closed (GOAWAY) after max_connection_age_s (gRPC adds +-10 %
    # jitter), its open calls then get max_connection_age_grace_s to finish before UNAVAILABLE.
    # The grace stays above the longest deadline a user gives (the SDK's default is 300 s).
    keepalive_time_s: float = 60.0
    keepalive_timeout_s: float = 20.0
    max_connection_age_s: float = 1800.0
    max_connection_age_grace_s: float = 300.0

    def __post_init__(self) -> None:
        check(
            bool(self.tls_cert_file) == bool(self.tls_key_file),
            "server.tls_cert_file and server.tls_key_file go together: set both (TLS) or neither (plaintext), "
            f"got only {'server.tls_cert_file' if self.tls_cert_file else 'server.tls_key_file'}",
        )
        check(
            not self.tls_client_ca_file or bool(self.tls_cert_file),
            "server.tls_client_ca_file (mTLS) needs server.tls_cert_file and server.tls_key_file: mTLS is TLS "
            "whose clients present certificates too",
        )
        check(self.port is None or 0 <= self.port <= 65535, f"server.port must be 0..65535, got {self.port}")
        check(-1 <= self.metrics_port <= 65535, "server.metrics_port must be -1..65535")
        check(self.max_message_bytes > 0, "server.max_message_bytes must be positive")
        check(self.max_concurrent_rpcs > 0, "server.max_concurrent_rpcs must be positive")
        check(self.grace_period_s >= 0, "server.grace_period_s must be >= 0")
        for key in ("keepalive_time_s", "keepalive_timeout_s", "max_connection_age_s"):
            value = getattr(self, key)
            check(0 < value < MAX_CONNECTION_SETTING_S, f"server.{key} must be > 0 and < {MAX_CONNECTION_SETTING_S:.0f} s, got {value}")
        check(
            0 <= self.max_connection_age_grace_s < MAX_CONNECTION_SETTING_S,
            f"server.max_connection_age_grace_s must be >= 0 and < {MAX_CONNECTION_SETTING_S:.0f} s, got {self.max_connection_age_grace_s}",
        )


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching, with Triton's knob names."""

    enabled: bool = True
    max_batch_size: int = 64
    max_queue_delay_microseconds: int = 0  # as Triton: an idle model runs at once; >0 waits for company
    # rows waiting or announced; beyond it calls get RESOURCE_EXHAUSTED. Rows are tokens for the SAE
    # (a 400-token text is 400 rows), so the limit leaves room for a burst of long texts; latency
    # under load is guarded by `deadline_admission`, not by this limit
    max_queue_size: int = 8192
    # refuse at once (RESOURCE_EXHAUSTED) a call whose queued work ahead, by the batcher's running
    # estimate of its batches' cost, cannot finish before the call's deadline
    deadline_admission: bool = True
    # cut batches, and split large requests into chunks, at this estimated run time: a cancelled
    # call's chunks that have not started are dropped, so it delays others by at most one chunk; 0: no cut
    max_batch_duration_ms: float = 250.0

    def __post_init__(self) -> None:
        check(self.max_batch_size >= 1, "batching.max_batch_size must be >= 1")
        check(self.max_queue_delay_microseconds >= 0, "batching.max_queue_delay_microseconds must be >= 0")
        check(self.max_queue_size >= 1, "batching.max_queue_size must be >= 1")
        check(
            0 <= self.max_batch_duration_ms < float("inf"),
            f"batching.max_batch_duration_ms must be a finite number >= 0 (0: no cut), got {self.max_batch_duration_ms}",
        )


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeConfig:
    """ONNX Runtime sessions (in-process backend and Ray Serve replicas; `services.backends.onnx_session`)."""

    # "auto": CUDA then CPU when the installed ONNX Runtime offers CUDA (the `gpu` extra), else
    # CPU; or provider names in priority order, e.g. "cuda,cpu"
    providers: str = "auto"
    intra_op_num_threads: int = 0  # 0: ONNX Runtime's default (one per core)
    inter_op_num_threads: int = 1
    # ONNX Runtime's idle intra-op workers spin-wait after each run when True (its own default).
    # Each session has its own pool, so in a service of several models (phenotype: 5 graphs per
    # edit) the pools spin against each other and the Python thread between runs: on 2 cores an
    # Edit took 72 ms server-side spinning and 11 ms not (README "Phenotype editing", benchmark).
    allow_spinning: bool = False
    warmup_runs: int = 2

    def __post_init__(self) -> None:
        check(self.intra_op_num_threads >= 0, "onnxruntime.intra_op_num_threads must be >= 0")
        check(self.inter_op_num_threads >= 0, "onnxruntime.inter_op_num_threads must be >= 0")
        check(self.warmup_runs >= 0, "onnxruntime.warmup_runs must be >= 0")
        try:
            parse_providers(self.providers)
        except ProviderError as exc:
            raise ConfigError(str(exc)) from None

    def session_options(self) -> dict[str, Any]:
        """Keyword arguments of `services.backends.onnx_session.create_session`."""
        return {
            "providers": self.providers,
            "intra_op_num_threads": self.intra_op_num_threads,
            "inter_op_num_threads": self.inter_op_num_threads,
            "allow_spinning": self.allow_spinning,
        }


@dataclasses.dataclass(frozen=True)
class TritonConfig:
    """The Triton Inference Server the "triton" backend calls (gRPC)."""

    url: str = "localhost:8001"
    # ask Triton to load a model that is not READY (its explicit model control mode); off for a
    # server that loads its models itself (modes none and poll)
    load_models: bool = True
    load_timeout_s: float = 180.0
    infer_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        check(bool(self.url) and ":" in self.url, f"triton.url must be host:port, got {self.url!r}")
        check(self.load_timeout_s > 0, "triton.load_timeout_s must be > 0")
        check(self.infer_timeout_s > 0, "triton.infer_timeout_s must be > 0")


@dataclasses.dataclass(frozen=True)
class RayConfig:
    """The Ray cluster the "ray" backend calls: each model a Ray Serve application."""

    address: str = "auto"  # as RAY_ADDRESS: "auto" finds the local cluster (`ray start --head`)
    deploy_models: bool = True  # deploy (or update) a model's application when a service loads it
    num_replicas: int = 1
    # Serve replicas reserve no CPU by default: every model of a repository fits on a small
    # cluster and they share its cores, as models in one process do
    replica_num_cpus: float = 0.0
    max_ongoing_requests: int = 256  # per replica; the rest wait in the handle's queue
    max_batch_size: int = 32  # @serve.batch: calls run together
    batch_wait_timeout_s: float = 0.0  # @serve.batch: how long a batch that is not full waits
    load_timeout_s: float = 300.0
    # the cluster unreachable this long while serving (its head died): the service exits 1 and
    # its supervisor starts it again, which waits for a cluster and deploys the models on it
    cluster_lost_timeout_s: float = 30.0

    def __post_init__(self) -> None:
        check(bool(self.address), "ray.address must be set ('auto' for the local cluster)")
        check(0 < self.cluster_lost_timeout_s < float("inf"), "ray.cluster_lost_timeout_s must be a finite number > 0")
        check(self.num_replicas >= 1, "ray.num_replicas must be >= 1")
        check(self.replica_num_cpus >= 0, "ray.replica_num_cpus must be >= 0")
        check(self.max_ongoing_requests >= 1, "ray.max_ongoing_requests must be >= 1")
        check(self.max_batch_size >= 1, "ray.max_batch_size must be >= 1")
        check(self.batch_wait_timeout_s >= 0, "ray.batch_wait_timeout_s must be >= 0")
        check(self.load_timeout_s > 0, "ray.load_timeout_s must be > 0")


@dataclasses.dataclass(frozen=True)
class FacetConfig:
    model_repository: Path = dataclasses.field(default_factory=default_model_repository)
    data_dir: Path = dataclasses.field(default_factory=default_data_dir)
    api_key: str = ""  # when set, every call but health needs `authorization: Bearer <key>`
    log_level: str = "INFO"
    backend: str = "onnxruntime"  # "onnxruntime" (in-process), "triton" or "ray"
    server: ServerConfig = dataclasses.field(default_factory=ServerConfig)
    batching: BatchingConfig = dataclasses.field(default_factory=BatchingConfig)
    onnxruntime: OnnxRuntimeConfig = dataclasses.field(default_factory=OnnxRuntimeConfig)
    triton: TritonConfig = dataclasses.field(default_factory=TritonConfig)
    ray: RayConfig = dataclasses.field(default_factory=RayConfig)
    # each capability's section (its registry row's config class -> the values); see `section`
    sections: Mapping[type, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        levels = {"DEBUG", "INFO", "WARNING", "ERROR"}
        check(self.log_level.upper() in levels, f"log_level must be one of {sorted(levels)}")
        backends = ("onnxruntime", "triton", "ray")
        check(self.backend in backends, f"backend must be one of {', '.join(backends)}, got {self.backend!r}")

    def section(self, cls: type[T]) -> T:
        """A capability's section, e.g. `config.section(RetrievalConfig)`: as loaded, or the
        section's defaults when this config was built without it."""
        value = self.sections.get(cls)
        return value if value is not None else cls()

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.name != "sections"}
            return str(value) if isinstance(value, Path) else value

        result: dict[str, Any] = plain(self)
        for row in _capability_sections():
            result[row.name] = plain(self.section(row.cls))
        if result["api_key"]:
            result["api_key"] = "***"
        for section in result.values():  # secrets of a section (its fields declared repr=False)
            if isinstance(section, dict) and section.get("milvus_token"):
                section["milvus_token"] = "***"
        return result


@dataclasses.dataclass(frozen=True)
class _Section:
    name: str  # the capability: its TOML table and FACET_<NAME>_ prefix
    cls: type


def _capability_sections() -> list[_Section]:
    """Every capability's config section, from the registry (imported here: each is a small module)."""
    from services import registry

    return [_Section(row.name, registry.load(row.config)) for row in registry.CAPABILITIES]


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    target = annotation
    if isinstance(target, types.UnionType):
        target = next(a for a in typing.get_args(target) if a is not type(None))
    try:
        if target is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(value)
        if target in (int, float, str, Path):
            if target is int and isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return target(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: cannot read {value!r} as {getattr(target, '__name__', target)}") from None
    return value


def _build(cls: type[T], values: Mapping[str, Any], env: Mapping[str, str], prefix: str, extra: frozenset[str] = frozenset()) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(cls)} - {"sections"}  # type: ignore[arg-type]
    unknown = set(values) - known - extra
    if unknown:
        named = [f"{key} (did you mean {close[0]}?)" if (close := difflib.get_close_matches(key, known | extra, n=1)) else key for key in sorted(unknown)]
        raise ConfigError(f"unknown config keys under '{prefix.rstrip('.') or 'top level'}': {', '.join(named)}")
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        if field.name == "sections":
            continue
        hint = hints[field.name]
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(hint):
            section = values.get(field.name, {})
            check(isinstance(section, Mapping), f"{key} must be a table")
            kwargs[field.name] = _build(hint, section, env, f"{key}.")  # type: ignore[arg-type]
            continue
        env_name = ENV_PREFIX + key.replace(".", "_").upper()
        if env_name in env:
            kwargs[field.name] = _coerce(env[env_name], hint, env_name)
        elif field.name in values:
            kwargs[field.name] = _coerce(values[field.name], hint, key)
    return cls(**kwargs)


def load_config(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> FacetConfig:
    """Read the config from defaults, an optional TOML file and `FACET_*` variables.

    Raises ConfigError with the offending key when a value is invalid.
    """
    env = os.environ if env is None else env
    path = path or env.get("FACET_CONFIG")
    values: dict[str, Any] = {}
    if path:
        try:
            values = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"cannot read config file {path}: {exc}") from None
    values.setdefault("model_repository", str(default_model_repository(env)))
    values.setdefault("data_dir", str(default_data_dir(env)))
    sections = _capability_sections()
    config = _build(FacetConfig, values, env, "", extra=frozenset(s.name for s in sections))
    built: dict[type, Any] = {}
    for section in sections:
        table = values.get(section.name, {})
        check(isinstance(table, Mapping), f"{section.name} must be a table")
        built[section.cls] = _build(section.cls, table, env, f"{section.name}.")
    return dataclasses.replace(config, sections=built)


def replace(config: FacetConfig, **sections: Any) -> FacetConfig:
    """Copy of `config` with some fields or section fields replaced: replace(c, server={"port": 0}),
    replace(c, retrieval={"max_top_k": 10}) for a capability's section."""
    changes: dict[str, Any] = {}
    capability = {s.name: s.cls for s in _capability_sections()}
    built = dict(config.sections)
    for name, value in sections.items():
        if name in capability:
            built[capability[name]] = dataclasses.replace(config.section(capability[name]), **value)
            continue
        current = getattr(config, name)
        changes[name] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
    return dataclasses.replace(config, **changes, sections=built)
