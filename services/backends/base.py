"""The interface every inference backend implements (ONNX Runtime in-process, Triton, Ray Serve).

Services call only this: named numpy arrays in, named numpy arrays out, async. Axis 0
of every input and output is the batch axis.
"""

from __future__ import annotations

import abc
import asyncio
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from services.model_repository import Key, ModelRepository, ModelVersion
from services.runtime.errors import NotFound


@dataclasses.dataclass(frozen=True)
class ModelMetadata:
    """What a service needs to know about a loaded model."""

    name: str
    version: int
    kind: str
    properties: Mapping[str, Any]
    files: Mapping[str, str]  # key -> absolute path of files beside the model (tokenizer, ...)
    source: str = ""

    @classmethod
    def of(cls, entry: ModelVersion) -> ModelMetadata:
        """What the model repository records for one version."""
        return cls(
            name=entry.name,
            version=entry.version,
            kind=entry.kind,
            properties=entry.properties,
            files={k: str(entry.path / v) for k, v in entry.metadata.get(Key.FILES, {}).items()},
            source=str(entry.metadata.get(Key.SOURCE, "")),
        )


def newest_version(repository: ModelRepository, model: str) -> ModelVersion:
    """The model's newest version in the repository; NotFound (with the fix) when it has none."""
    try:
        return repository.get(model)
    except LookupError as exc:
        raise NotFound(f"{exc}; build it with `facet models build`") from None


class Backend(abc.ABC):
    """Runs models from the model repository."""

    @abc.abstractmethod
    async def load(self, model: str) -> ModelMetadata:
        """Load and warm `model` (newest version); return its metadata.

        Raises NotFound when the repository has no such model.
        """

    async def load_all(self, models: Iterable[str]) -> dict[str, ModelMetadata]:
        """Load several models at once (a service's start: sessions build, Triton loads and Serve
        deployments start side by side); the first failure is raised."""
        names = list(dict.fromkeys(models))
        return dict(zip(names, await asyncio.gather(*(self.load(name) for name in names)), strict=True))

    @abc.abstractmethod
    async def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run `model` on a batch. Raises InvalidArgument for inputs that do not fit the
        model, ResourceExhausted when the queue is full or the call cannot finish before its
        deadline (see `admit`), Unavailable when the engine is down."""

    def admit(self, model: str, rows: int, row_width: int = 1) -> None:  # noqa: B027 - optional hook
        """Refuse now, before a service prepares its inputs (tokenizing), a call that `infer`
        would refuse: its queue is full, or the work queued ahead of it cannot finish before the
        call's deadline (`services.backends.deadline`). Cheap: no inference, no waiting.

        Args:
            model: the loaded model the call will run.
            rows: the rows the call will send (>= 1).
            row_width: a lower bound of each row's width (its sequence length for token inputs;
                1 when unknown): admission refuses only what cannot finish even so.
        Raises:
            ResourceExhausted: overload; the message names the limit's config key
                (`batching.max_queue_size`, `batching.deadline_admission`).
            DeadlineExceeded: the call alone would not finish before its deadline
                (`batching.deadline_admission`).
        """

    @abc.abstractmethod
    async def ready(self, model: str) -> bool:
        """Whether `model` can serve now."""

    async def serving(self) -> bool:
        """Whether every loaded model can serve now; a service reports NOT_SERVING otherwise.
        In-process models always can; a remote engine's can go away."""
        return True

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release sessions, connections and worker threads."""
