"""Configuration as frozen, validated dataclasses.

Sources, later ones winning: the defaults below, a TOML file (`--config PATH` or
`FACET_CONFIG`), then environment variables. A top-level field `x` is read from
`FACET_X`; a field `y` of section `s` from `FACET_S_Y`. For example::

    FACET_MODEL_REPOSITORY=/srv/models FACET_SERVER_PORT=0 FACET_BATCHING_MAX_BATCH_SIZE=64
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from sdk._contract import MAX_MESSAGE_BYTES

ENV_PREFIX = "FACET_"
T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range."""


def _check(condition: bool, message: str) -> None:
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


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int | None = None  # None: the service's default port (see sdk._contract.DEFAULT_PORTS)
    metrics_port: int = -1  # -1: no /metrics endpoint, 0: any free port
    max_message_bytes: int = MAX_MESSAGE_BYTES
    max_concurrent_rpcs: int = 256
    grace_period_s: float = 10.0

    def __post_init__(self) -> None:
        _check(self.port is None or 0 <= self.port <= 65535, f"server.port must be 0..65535, got {self.port}")
        _check(-1 <= self.metrics_port <= 65535, "server.metrics_port must be -1..65535")
        _check(self.max_message_bytes > 0, "server.max_message_bytes must be positive")
        _check(self.max_concurrent_rpcs > 0, "server.max_concurrent_rpcs must be positive")
        _check(self.grace_period_s >= 0, "server.grace_period_s must be >= 0")


@dataclasses.dataclass(frozen=True)
class BatchingConfig:
    """Dynamic batching, with Triton's knob names."""

    enabled: bool = True
    max_batch_size: int = 64
    max_queue_delay_microseconds: int = 0  # as Triton: an idle model runs at once; >0 waits for company
    max_queue_size: int = 1024  # rows waiting; beyond it calls get RESOURCE_EXHAUSTED

    def __post_init__(self) -> None:
        _check(self.max_batch_size >= 1, "batching.max_batch_size must be >= 1")
        _check(self.max_queue_delay_microseconds >= 0, "batching.max_queue_delay_microseconds must be >= 0")
        _check(self.max_queue_size >= 1, "batching.max_queue_size must be >= 1")


@dataclasses.dataclass(frozen=True)
class OnnxRuntimeConfig:
    intra_op_num_threads: int = 0  # 0: ONNX Runtime's default (one per core)
    inter_op_num_threads: int = 1
    # ONNX Runtime's workers spin between runs by default; on a small machine that spinning
    # takes the cores the gRPC threads need.
    allow_spinning: bool = True
    warmup_runs: int = 2

    def __post_init__(self) -> None:
        _check(self.intra_op_num_threads >= 0, "onnxruntime.intra_op_num_threads must be >= 0")
        _check(self.inter_op_num_threads >= 0, "onnxruntime.inter_op_num_threads must be >= 0")
        _check(self.warmup_runs >= 0, "onnxruntime.warmup_runs must be >= 0")


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
        _check(bool(self.url) and ":" in self.url, f"triton.url must be host:port, got {self.url!r}")
        _check(self.load_timeout_s > 0, "triton.load_timeout_s must be > 0")
        _check(self.infer_timeout_s > 0, "triton.infer_timeout_s must be > 0")


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

    def __post_init__(self) -> None:
        _check(bool(self.address), "ray.address must be set ('auto' for the local cluster)")
        _check(self.num_replicas >= 1, "ray.num_replicas must be >= 1")
        _check(self.replica_num_cpus >= 0, "ray.replica_num_cpus must be >= 0")
        _check(self.max_ongoing_requests >= 1, "ray.max_ongoing_requests must be >= 1")
        _check(self.max_batch_size >= 1, "ray.max_batch_size must be >= 1")
        _check(self.batch_wait_timeout_s >= 0, "ray.batch_wait_timeout_s must be >= 0")
        _check(self.load_timeout_s > 0, "ray.load_timeout_s must be > 0")


@dataclasses.dataclass(frozen=True)
class RetrievalConfig:
    embedding_model: str = "all-minilm-l6-v2"
    max_texts_per_request: int = 256
    max_text_chars: int = 100_000
    max_documents_per_request: int = 1024
    max_top_k: int = 1000
    index_save_interval_s: float = 30.0

    def __post_init__(self) -> None:
        _check(bool(self.embedding_model), "retrieval.embedding_model must be set")
        _check(self.max_texts_per_request >= 1, "retrieval.max_texts_per_request must be >= 1")
        _check(self.max_text_chars >= 1, "retrieval.max_text_chars must be >= 1")
        _check(self.max_documents_per_request >= 1, "retrieval.max_documents_per_request must be >= 1")
        _check(self.max_top_k >= 1, "retrieval.max_top_k must be >= 1")
        _check(self.index_save_interval_s > 0, "retrieval.index_save_interval_s must be > 0")


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
    retrieval: RetrievalConfig = dataclasses.field(default_factory=RetrievalConfig)

    def __post_init__(self) -> None:
        levels = {"DEBUG", "INFO", "WARNING", "ERROR"}
        _check(self.log_level.upper() in levels, f"log_level must be one of {sorted(levels)}")
        backends = ("onnxruntime", "triton", "ray")
        _check(self.backend in backends, f"backend must be one of {', '.join(backends)}, got {self.backend!r}")

    def to_dict(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if dataclasses.is_dataclass(value):
                return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
            return str(value) if isinstance(value, Path) else value

        result: dict[str, Any] = plain(self)
        if result["api_key"]:
            result["api_key"] = "***"
        return result


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


def _build(cls: type[T], values: Mapping[str, Any], env: Mapping[str, str], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = set(values) - known
    _check(not unknown, f"unknown config keys under '{prefix or 'top level'}': {sorted(unknown)}")
    for field in dataclasses.fields(cls):  # type: ignore[arg-type]
        hint = hints[field.name]
        key = f"{prefix}{field.name}"
        if dataclasses.is_dataclass(hint):
            section = values.get(field.name, {})
            _check(isinstance(section, Mapping), f"{key} must be a table")
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
    return _build(FacetConfig, values, env, "")


def replace(config: FacetConfig, **sections: Any) -> FacetConfig:
    """Copy of `config` with some fields or section fields replaced: replace(c, server={"port": 0})."""
    changes: dict[str, Any] = {}
    for name, value in sections.items():
        current = getattr(config, name)
        changes[name] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
    return dataclasses.replace(config, **changes)
