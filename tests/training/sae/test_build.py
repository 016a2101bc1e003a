"""The family build on a local Hugging Face *encoder* directory (BERT-like), not only causal LMs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from services.backends.onnx_session import create_session
from services.model_repository import ModelRepository
from training.sae.build import BuildOptions, build

pytestmark = pytest.mark.integration


def test_build_an_sae_family_on_an_encoder_directory_trained_on_ray(tmp_path: Path) -> None:
    """Also the build's Ray path: the family is trained by Ray Train with 2 workers."""
    from transformers import AutoModel, AutoTokenizer

    from training.retrieval.export import packaged_minilm_dir

    source = packaged_minilm_dir()  # all-MiniLM-L6-v2: a 6-layer BERT encoder, d_model 384
    options = BuildOptions(layer=3, tokens=3000, epochs=1, widths=(48, 96), k=8, batch_tokens=256, context_tokens=64,
                           lm=source, work_dir=tmp_path / "work", ce_contexts=2, progress=False, ray_workers=2)  # fmt: skip
    repo = ModelRepository(tmp_path / "models")
    kinds = {e.kind for e in build(repo, options)}
    assert kinds == {"lm-residual", "sae", "sae-decoder", "meta-sae"}
    large = repo.get(options.sae_name(96))
    props = large.metadata["properties"]
    assert (props["d_in"], props["layer"], props["width"]) == (384, 3, 96)
    assert 0 < props["metrics"]["fvu"] < 1.5
    assert (tmp_path / "work" / "ray" / "sae-family").is_dir()  # Ray Train's run storage, for resuming
    assert math.isnan(props["metrics"]["ce_clean"])  # an encoder has no next-token loss
    with np.load(large.file("analysis")) as arrays:
        assert arrays["output_ids"].shape == (96, 0)  # nor an unembedding
        assert (arrays["top_values"][:, 0] > 0).any()

    # the exported prefix gives the encoder's own hidden state after block 3
    tokenizer = AutoTokenizer.from_pretrained(str(source))
    ids = tokenizer("Albert Einstein was born in Ulm.", add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        expected = AutoModel.from_pretrained(str(source))(ids, output_hidden_states=True).hidden_states[3]
    prefix = repo.get(options.base_name + "-prefix")
    session = create_session(prefix.model_file, providers="cpu")
    got = session.run(None, {"input_ids": ids.numpy(), "attention_mask": np.ones(ids.shape, np.int64)})[0]
    np.testing.assert_allclose(got, expected.numpy(), rtol=1e-4, atol=1e-4)
