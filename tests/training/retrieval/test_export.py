"""The embedding model export: parity with sentence-transformers, dynamic axes, registration."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from services.backends.onnx_session import create_session
from services.model_repository import ModelRepository
from services.retrieval.tokenization import TextTokenizer
from services.runtime.errors import InvalidArgument
from training.retrieval.export import (
    DEFAULT_EMBEDDING_MODEL,
    PARITY_MIN_COSINE,
    build_defaults,
    describe_sentence_transformer,
    has_defaults,
    main,
    packaged_minilm_dir,
)


def test_default_model_passed_parity_on_real_sentences(model_repository: ModelRepository) -> None:
    entry = model_repository.get("all-minilm-l6-v2")
    parity = entry.metadata["parity"]
    assert parity["passed"] and parity["min_cosine"] >= PARITY_MIN_COSINE
    assert parity["sentences"] >= 300 and "rarb-mcr" in parity["data"]
    assert entry.metadata["properties"] == {
        "pooling": "mean",
        "normalize_in_model": True,
        "max_seq_length": 256,
        "dimension": 384,
    }
    assert len(entry.metadata["source_sha256"]) == 64


def test_onnx_model_has_dynamic_batch_and_sequence_axes(model_repository: ModelRepository) -> None:
    entry = model_repository.get("all-minilm-l6-v2")
    session = create_session(entry.model_file, providers="cpu")
    for batch, length in ((1, 3), (7, 41), (3, 256)):
        ids = np.full((batch, length), 1000, dtype=np.int64)
        out = session.run(None, {"input_ids": ids, "attention_mask": np.ones_like(ids)})
        assert out[0].shape == (batch, 384) and out[1].shape == (batch, 384)
        np.testing.assert_allclose(np.linalg.norm(out[1], axis=1), 1.0, atol=1e-5)


def test_tokenizer_truncates_at_max_length_keeping_special_tokens(model_repository: ModelRepository) -> None:
    entry = model_repository.get("all-minilm-l6-v2")
    tokenizer = TextTokenizer(entry.file("tokenizer"), 256)
    batch = tokenizer(["short one", "word " * 1000])
    assert batch.input_ids.shape == (2, 256)
    assert batch.token_counts.tolist() == [4, 256]
    assert batch.truncated.tolist() == [False, True]
    assert batch.input_ids[1, 0] == 101 and batch.input_ids[1, 255] == 102  # [CLS] ... [SEP]
    assert batch.attention_mask[0].sum() == 4
    with pytest.raises(InvalidArgument, match="text 1 is longer"):
        tokenizer(["fine", "word " * 1000], truncate=False)


def test_describe_reads_pooling_and_limits() -> None:
    facts = describe_sentence_transformer(packaged_minilm_dir())
    assert facts["pooling"] == "mean" and facts["max_seq_length"] == 256 and facts["dimension"] == 384


def test_export_embedding_command_registers_a_new_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FACET_MODEL_REPOSITORY", str(tmp_path))  # the configured repository: the default
    assert main([str(packaged_minilm_dir()), "--name", "my-encoder"]) == 0
    entry = ModelRepository(tmp_path).get("my-encoder")
    assert entry.kind == "embedding" and entry.metadata["parity"]["passed"]
    assert f"registered my-encoder v1 at {entry.path}" in capsys.readouterr().out
    assert main([str(tmp_path / "not-a-model"), "--repository", str(tmp_path / "other")]) == 1
    assert "facet models export-embedding: " in capsys.readouterr().err and not (tmp_path / "other").exists()


def test_default_model_is_built_only_when_missing(model_repository: ModelRepository, tmp_path: Path) -> None:
    assert has_defaults(model_repository) and build_defaults(model_repository, tmp_path) == []
    assert not has_defaults(ModelRepository(tmp_path / "empty"))
    assert model_repository.get(DEFAULT_EMBEDDING_MODEL).kind == "embedding"
