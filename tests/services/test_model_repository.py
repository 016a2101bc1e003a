"""The model repository layout, Triton configs and `facet models list`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.cli import main as facet
from services.model_repository import ModelRepository, TensorSpec


def toy_onnx(path: Path) -> Path:
    """input_ids int64 [batch, seq] -> sentence_embedding float [batch, 8]: a real, tiny graph."""
    import onnx
    from onnx import TensorProto, helper

    nodes = [
        helper.make_node("Cast", ["input_ids"], ["ids"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["ids", "axes"], ["total"], keepdims=1),
        helper.make_node("Mul", ["total", "scale"], ["sentence_embedding"]),
    ]
    graph = helper.make_graph(
        nodes,
        "toy",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "seq"])],
        [helper.make_tensor_value_info("sentence_embedding", TensorProto.FLOAT, ["batch", 8])],
        [helper.make_tensor("axes", TensorProto.INT64, [1], [1]), helper.make_tensor("scale", TensorProto.FLOAT, [8], [1.0] * 8)],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9), path)
    return path


def _register(repo: ModelRepository, tmp_path: Path, name: str = "toy") -> None:
    model = toy_onnx(tmp_path / "model.onnx")
    tok = tmp_path / "tokenizer.json"
    tok.write_text("{}")
    meta = {
        "kind": "embedding",
        "source": "test",
        "inputs": [TensorSpec("input_ids", "int64", (-1,)).to_dict()],
        "outputs": [TensorSpec("sentence_embedding", "float32", (8,)).to_dict()],
    }
    repo.register(name, model, meta, extra_files={"tokenizer": tok}, max_batch_size=32, max_queue_delay_microseconds=500)


def test_register_writes_triton_layout_and_versions(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path / "repo")
    _register(repo, tmp_path)
    _register(repo, tmp_path)
    assert repo.models() == ["toy"] and repo.versions("toy") == [1, 2]
    entry = repo.get("toy")
    assert entry.version == 2 and entry.model_file == tmp_path / "repo" / "toy" / "2" / "model.onnx"
    assert entry.file("tokenizer").read_text() == "{}"
    assert json.loads((entry.path / "facet.json").read_text())["kind"] == "embedding"
    config = (tmp_path / "repo" / "toy" / "config.pbtxt").read_text()
    assert 'platform: "onnxruntime_onnx"' in config
    assert "max_batch_size: 32" in config
    assert "max_queue_delay_microseconds: 500" in config
    assert 'name: "input_ids"' in config and "data_type: TYPE_INT64" in config and "dims: [ -1 ]" in config
    assert "data_type: TYPE_FP32" in config and "dims: [ 8 ]" in config
    with pytest.raises(LookupError, match="no version 7"):
        repo.get("toy", 7)
    with pytest.raises(LookupError, match="not in the model repository"):
        repo.get("missing")


def test_register_copies_a_directory_given_as_an_extra_file(tmp_path: Path) -> None:
    """A saved model directory (e.g. a sentence-transformers CrossEncoder) is copied with its contents."""
    saved = tmp_path / "cross-encoder"
    (saved / "sub").mkdir(parents=True)
    (saved / "config.json").write_text('{"a": 1}')
    (saved / "sub" / "weights.bin").write_bytes(b"\x00\x01")
    repo = ModelRepository(tmp_path / "repo")
    meta = {"kind": "embedding", "source": "test", "inputs": [TensorSpec("input_ids", "int64", (-1,)).to_dict()],
            "outputs": [TensorSpec("sentence_embedding", "float32", (8,)).to_dict()]}  # fmt: skip
    entry = repo.register("toy", toy_onnx(tmp_path / "model.onnx"), meta, extra_files={"cross_encoder": saved})
    copied = entry.file("cross_encoder")
    assert copied.is_dir() and copied.parent == entry.path
    assert (copied / "config.json").read_text() == '{"a": 1}' and (copied / "sub" / "weights.bin").read_bytes() == b"\x00\x01"


def test_half_written_versions_are_invisible(tmp_path: Path) -> None:
    repo = ModelRepository(tmp_path)
    (tmp_path / "toy" / ".staging-1-99").mkdir(parents=True)
    (tmp_path / "toy" / "3").mkdir()  # no model or metadata
    assert repo.models() == [] and repo.versions("toy") == []


def test_facet_models_list(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("FACET_MODEL_REPOSITORY", str(tmp_path / "repo"))
    assert facet(["models", "list"]) == 0
    assert "no models" in capsys.readouterr().out
    _register(ModelRepository(tmp_path / "repo"), tmp_path)
    assert facet(["models", "list"]) == 0
    out = capsys.readouterr().out
    assert "toy" in out and "embedding" in out
    assert facet(["models", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["name"] == "toy"
