"""The generated Triton model configurations: every model of every test repository gets a
`config.pbtxt` that Triton's own ModelConfig schema accepts, whose tensors match the ONNX graph,
for Triton's onnxruntime backend (production, as is) and for the local python-backend server."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2

from deploy.triton import model_config, write_python_repository
from services.model_repository import ModelRepository

pytestmark = pytest.mark.integration

_TYPES = {"tensor(float)": model_config_pb2.TYPE_FP32, "tensor(int64)": model_config_pb2.TYPE_INT64, "tensor(uint8)": model_config_pb2.TYPE_UINT8}


def _parse(text: str) -> model_config_pb2.ModelConfig:
    return text_format.Parse(text, model_config_pb2.ModelConfig())  # strict: unknown fields raise


def _check_against_graph(config: model_config_pb2.ModelConfig, model_file: Path) -> None:
    session = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    for declared, graph in ((config.input, session.get_inputs()), (config.output, session.get_outputs())):
        assert [t.name for t in declared] == [g.name for g in graph]
        for t, g in zip(declared, graph, strict=True):
            assert t.data_type == _TYPES[g.type]
            shape = [d if isinstance(d, int) and d > 0 else -1 for d in g.shape]
            if config.max_batch_size > 0:
                assert shape[0] == -1, f"{t.name}: a batched model needs a dynamic first axis"
                shape = shape[1:]
            if t.HasField("reshape"):
                assert list(t.dims) == [1] and list(t.reshape.shape) == shape == []
            else:
                assert list(t.dims) == shape


# every capability's test models (its fixtures' session repository)
@pytest.fixture(scope="module", params=["model_repository", "sae_repository", "nextframe_repository", "rerank_repository", "phenotype_repository"])
def repository(request: pytest.FixtureRequest) -> ModelRepository:
    return request.getfixturevalue(request.param)


def test_every_registered_config_is_valid_and_matches_its_graph(repository: ModelRepository) -> None:
    for name in repository.models():
        text = (repository.root / name / "config.pbtxt").read_text()
        config = _parse(text)
        assert config.name == name and config.platform == "onnxruntime_onnx"
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
        assert config.version_policy.latest.num_versions == 1
        if config.max_batch_size > 0:
            assert config.HasField("dynamic_batching")
        _check_against_graph(config, repository.get(name).model_file)


def test_the_local_repository_wraps_each_model_for_the_python_backend(repository: ModelRepository, tmp_path: Path) -> None:
    names = write_python_repository(repository, tmp_path, max_batch_size=16, max_queue_delay_microseconds=100, intra_op_num_threads=1)
    assert names == repository.models()
    for name in names:
        entry = repository.get(name)
        config = _parse((tmp_path / name / "config.pbtxt").read_text())
        assert config.backend == "python" and not config.platform
        assert config.max_batch_size in (0, 16) and config.parameters["intra_op_num_threads"].string_value == "1"
        _check_against_graph(config, entry.model_file)
        for tensor in config.input:  # requests of different lengths batch together; the wrapper pads them
            assert tensor.allow_ragged_batch == (config.max_batch_size > 0 and -1 in tensor.dims)
        version = tmp_path / name / str(entry.version)
        assert (version / "model.onnx").resolve() == entry.model_file.resolve()
        assert "def run_together" in (version / "facet_padding.py").read_text()
        assert "class TritonPythonModel" in (version / "model.py").read_text()


def test_unknown_backends_are_refused(model_repository: ModelRepository) -> None:
    with pytest.raises(ValueError, match="'onnxruntime' or 'python'"):
        model_config(model_repository.get(model_repository.models()[0]), backend="tensorrt")


def test_configs_for_a_gpu_node_ask_for_gpu_instances(model_repository: ModelRepository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from deploy.triton import main

    copy = ModelRepository(shutil.copytree(model_repository.root, tmp_path / "models", symlinks=True))
    monkeypatch.setenv("FACET_MODEL_REPOSITORY", str(copy.root))
    assert main(["configs", "--kind", "gpu", "--instances", "2"]) == 0
    for name in copy.models():
        config = _parse((copy.root / name / "config.pbtxt").read_text())
        assert config.platform == "onnxruntime_onnx"
        assert (config.instance_group[0].kind, config.instance_group[0].count) == (model_config_pb2.ModelInstanceGroup.KIND_GPU, 2)
        _check_against_graph(config, copy.get(name).model_file)
    with pytest.raises(ValueError, match="instance_kind must be one of cpu, gpu"):
        model_config(copy.get(copy.models()[0]), instance_kind="tpu")
