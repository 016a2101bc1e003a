"""The one way Facet opens an ONNX file with ONNX Runtime: the in-process backend, the Ray Serve
replicas, the local Triton server's python-backend models, the training exports' parity checks and
the benchmarks all call `create_session`.

Execution providers come from the `onnxruntime.providers` setting: "auto" (the default) takes CUDA
and then CPU when the installed ONNX Runtime offers CUDA (the `gpu` extra installs
`onnxruntime-gpu`), else CPU alone; or a comma-separated list of provider names, in priority order,
e.g. "CUDAExecutionProvider,CPUExecutionProvider" (short names "cuda", "cpu", "tensorrt" work too).

This module imports only onnxruntime (lazily), so the Triton python stub, which has nothing of
Facet, can import it as a file copied beside its model.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

AUTO = "auto"
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_SHORT_NAMES = {
    "cpu": CPU,
    "cuda": CUDA,
    "tensorrt": "TensorrtExecutionProvider",
    "rocm": "ROCMExecutionProvider",
    "openvino": "OpenVINOExecutionProvider",
    "dml": "DmlExecutionProvider",
    "coreml": "CoreMLExecutionProvider",
}


class ProviderError(ValueError):
    """The providers asked for are unknown to ONNX Runtime, or not in this build of it."""


def parse_providers(setting: str | Sequence[str]) -> list[str]:
    """The provider names a setting asks for, in order ("auto" stays "auto").

    Raises:
        ProviderError: an empty setting or a name ONNX Runtime does not know (one line, with the
            names it does know).
    """
    items = [p.strip() for p in (setting.split(",") if isinstance(setting, str) else setting) if p.strip()]
    if not items:
        raise ProviderError("onnxruntime.providers is empty; use 'auto' or provider names such as 'cpu' or 'cuda,cpu'")
    if items == [AUTO]:
        return [AUTO]
    known = _known_providers()
    names = []
    for item in items:
        name = _SHORT_NAMES.get(item.lower(), item)
        if name == AUTO or (known is not None and name not in known):
            raise ProviderError(
                f"onnxruntime.providers: unknown provider {item!r}; use 'auto' alone, or names among "
                f"{', '.join(sorted(_SHORT_NAMES))} or {', '.join(sorted(known or []))}"
            )
        names.append(name)
    return names


def resolve_providers(setting: str | Sequence[str] = AUTO) -> list[str]:
    """The providers a session gets on this machine: "auto" is CUDA then CPU when this ONNX Runtime
    offers CUDA, else CPU.

    Raises:
        ProviderError: a provider this build of ONNX Runtime does not offer (e.g. CUDA with the CPU
            package installed).
    """
    import onnxruntime as ort

    available = ort.get_available_providers()
    names = parse_providers(setting)
    if names == [AUTO]:
        return [CUDA, CPU] if CUDA in available else [CPU]
    missing = [n for n in names if n not in available]
    if missing:
        raise ProviderError(
            f"onnxruntime.providers asks for {', '.join(missing)}, which this ONNX Runtime build does not offer "
            f"(it has {', '.join(available)}); install the `gpu` extra (onnxruntime-gpu) for CUDA"
        )
    return names


def create_session(
    path: Any,
    *,
    providers: str | Sequence[str] = AUTO,
    intra_op_num_threads: int = 0,
    inter_op_num_threads: int = 1,
    allow_spinning: bool = False,
    optimize: bool = True,
) -> Any:
    """An `onnxruntime.InferenceSession` on the ONNX file at `path`.

    Args:
        path: the `.onnx` file (str or Path).
        providers: as the `onnxruntime.providers` setting ("auto", or names in priority order).
        intra_op_num_threads: threads inside one operator; 0 is ONNX Runtime's default (one per core).
        inter_op_num_threads: threads across operators.
        allow_spinning: whether idle intra-op threads spin-wait after a run (ONNX Runtime's own
            default). Off here: every session has its own pool, and where a call runs several
            sessions in turn their spinning pools take the cores from each other (a phenotype
            edit, five graphs: 72 ms spinning, 11 ms not, on 2 cores).
        optimize: all graph optimisations (serving); False reads the graph as written (e.g. to
            inspect its declared inputs and outputs).
    Returns:
        the session.
    Raises:
        ProviderError: see `resolve_providers`.
    """
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_num_threads
    options.inter_op_num_threads = inter_op_num_threads
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    return ort.InferenceSession(str(path), options, providers=resolve_providers(providers))


def _known_providers() -> set[str] | None:
    try:
        import onnxruntime as ort
    except ImportError:  # a process without ONNX Runtime (the SDK, a Triton or Ray client): names unchecked
        return None
    return set(ort.get_all_providers())
