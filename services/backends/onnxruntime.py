"""ONNX Runtime in-process: the embedded default backend."""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from collections.abc import Mapping

import numpy as np

from services.backends.base import Backend, ModelMetadata, newest_version
from services.backends.batching import DynamicBatcher
from services.backends.onnx_session import create_session
from services.model_repository import Key, ModelRepository, ModelVersion
from services.runtime.config import FacetConfig
from services.runtime.errors import InvalidArgument, NotFound

log = logging.getLogger(__name__)

_WARMUP_ROWS = 2
# Two widths for a dynamic (sequence) axis: measured at one width only, the cost model charges the
# batch's fixed overhead per cell and overestimates long batches several times (`services.backends.cost`),
# which refuses calls of long texts that would finish and cuts batches short; two widths let its first
# fit separate the overhead from the per-cell cost. Models without a dynamic axis warm up at their shape.
_WARMUP_LENGTHS = (16, 64)


class _LoadedModel:
    def __init__(self, entry: ModelVersion, config: FacetConfig) -> None:
        self.entry = entry
        self.session = create_session(entry.model_file, **config.onnxruntime.session_options())
        self.input_names = {i.name for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]
        # One execution at a time per session, like a Triton instance; ORT uses its own threads inside.
        self.executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"ort-{entry.name}")
        self.batcher: DynamicBatcher | None = None

    def run(self, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.session.run(self.output_names, dict(inputs))
        return dict(zip(self.output_names, outputs, strict=True))

    def warmup_inputs(self) -> list[dict[str, np.ndarray]]:
        """The warm-up batches: `_WARMUP_ROWS` rows of ones at each of `_WARMUP_LENGTHS` (at most the
        model's `Key.MAX_SEQUENCE_LENGTH`) when an input has a dynamic non-batch axis, else one batch
        at the inputs' fixed shape."""
        specs = self.session.get_inputs()
        dynamic = any(not (isinstance(d, int) and d > 0) for spec in specs for d in spec.shape[1:])
        cap = self.entry.metadata.get(Key.MAX_SEQUENCE_LENGTH)
        lengths = sorted({min(n, int(cap)) for n in _WARMUP_LENGTHS}) if cap else list(_WARMUP_LENGTHS)
        batches = []
        for length in lengths if dynamic else lengths[:1]:
            arrays = {}
            for spec in specs:
                dims = [_WARMUP_ROWS] + [d if isinstance(d, int) and d > 0 else length for d in spec.shape[1:]]
                dtype = np.int64 if "int64" in spec.type else np.float32
                arrays[spec.name] = np.ones(dims, dtype=dtype)
            batches.append(arrays)
        return batches


class OnnxRuntimeBackend(Backend):
    """Runs models from the model repository with ONNX Runtime in this process."""

    def __init__(self, config: FacetConfig) -> None:
        self._config = config
        self._repository = ModelRepository(config.model_repository)
        self._models: dict[str, _LoadedModel] = {}

    async def load(self, model: str) -> ModelMetadata:
        if model not in self._models:
            entry = newest_version(self._repository, model)
            loop = asyncio.get_running_loop()
            loaded = await loop.run_in_executor(None, _LoadedModel, entry, self._config)
            if self._config.batching.enabled:
                loaded.batcher = DynamicBatcher(model, self._batch_runner(loaded), self._config.batching)
            for inputs in loaded.warmup_inputs():
                for run in range(self._config.onnxruntime.warmup_runs):
                    started = time.monotonic()
                    await loop.run_in_executor(loaded.executor, loaded.run, inputs)
                    if run > 0 and loaded.batcher is not None:  # a shape's first run allocates: not a fair measure
                        loaded.batcher.observe(inputs, time.monotonic() - started)
            self._models[model] = loaded
            log.info("loaded model %s v%d from %s", model, entry.version, entry.path)
        entry = self._models[model].entry
        return ModelMetadata.of(entry)

    def _batch_runner(self, loaded: _LoadedModel):  # type: ignore[no-untyped-def]
        async def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return await asyncio.get_running_loop().run_in_executor(loaded.executor, loaded.run, inputs)

        return run

    async def infer(self, model: str, inputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        loaded = self._models.get(model)
        if loaded is None:
            raise NotFound(f"model '{model}' is not loaded")
        missing = loaded.input_names - set(inputs)
        if missing or set(inputs) - loaded.input_names:
            raise InvalidArgument(f"model '{model}' takes inputs {sorted(loaded.input_names)}, got {sorted(inputs)}")
        if loaded.batcher is not None:
            return await loaded.batcher.submit(inputs)
        return await asyncio.get_running_loop().run_in_executor(loaded.executor, loaded.run, inputs)

    def admit(self, model: str, rows: int, row_width: int = 1) -> None:
        loaded = self._models.get(model)
        if loaded is not None and loaded.batcher is not None:
            loaded.batcher.admit(rows, row_width)

    async def ready(self, model: str) -> bool:
        return model in self._models

    async def close(self) -> None:
        for loaded in self._models.values():
            if loaded.batcher is not None:
                await loaded.batcher.close()
            loaded.executor.shutdown(wait=False, cancel_futures=True)
        self._models.clear()
