"""The SAE service over real gRPC on loopback, with SAEs built by the project's own build on
real SmolLM2-135M activations, served through ONNX Runtime."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch

import sdk
from sdk._proto.facet.v1 import common_pb2, sae_pb2, sae_pb2_grpc
from services.model_repository import ModelRepository
from tests.services.sae.fixtures import OTHER_LAYER_SAE, TEST_SAE_LARGE, TEST_SAE_SMALL
from tests.serving import ServerProcess

pytestmark = pytest.mark.integration
TEXT = "Albert Einstein was born in Ulm, in the Kingdom of Württemberg in the German Empire."


@pytest.fixture(scope="module")
def client(sae_server: ServerProcess) -> Iterator[sdk.Client]:
    with sdk.Client(sae=sae_server.address) as c:
        yield c


@pytest.fixture(scope="module")
def stub(sae_server: ServerProcess) -> Iterator[sae_pb2_grpc.SaeStub]:
    with grpc.insecure_channel(sae_server.address) as channel:
        yield sae_pb2_grpc.SaeStub(channel)


@pytest.fixture(scope="module")
def torch_sae(sae_repository: ModelRepository):  # type: ignore[no-untyped-def]
    """The large test SAE loaded from its SAELens-format weights with the training code."""
    from training.sae.saelens_format import load_saelens

    sae, _ = load_saelens(sae_repository.get(TEST_SAE_LARGE).file("weights").parent)
    return sae.eval()


@pytest.fixture(scope="module")
def residual(sae_repository: ModelRepository, sae_work_dir: Path) -> torch.Tensor:
    """TEXT's residual stream at the SAE's layer, computed by PyTorch (not the service)."""
    from training.sae.activations import ResidualStream, load_language_model

    lm = load_language_model(checkpoint_cache=sae_work_dir / "lm")
    ids = lm.tokenizer(TEXT, add_special_tokens=False, return_tensors="pt").input_ids
    return ResidualStream(lm, 6)(ids)[0]


def test_list_saes_describes_each_sae_with_metrics(client: sdk.Client) -> None:
    saes = {s.id: s for s in client.list_saes()}
    assert {TEST_SAE_SMALL, TEST_SAE_LARGE, OTHER_LAYER_SAE} <= set(saes)
    large = saes[TEST_SAE_LARGE]
    assert (large.base_model, large.layer, large.d_in, large.width, large.architecture, large.k) == ("SmolLM2-135M-Instruct", 6, 576, 256, "batchtopk", 8)
    m = large.metrics
    assert 0 < m["fvu"] < 1 and 0 < m["l0"] < 40 and 0 <= m["dead_fraction"] < 1
    # the spliced-in reconstruction hurts the LM less than deleting the layer's signal
    assert m["ce_clean"] < m["ce_with_sae"] < m["ce_zero_ablation"]
    assert m["ce_increase"] == pytest.approx(m["ce_with_sae"] - m["ce_clean"])
    assert large.meta_width > 0 and 0 < large.meta_variance_explained < 1
    assert saes[TEST_SAE_SMALL].meta_width == 0  # the meta-SAE is trained on the largest only
    assert client.get_sae(TEST_SAE_SMALL).width == 128


def test_encode_text_matches_pytorch(client: sdk.Client, torch_sae, residual: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    tokens = client.encode_text(TEST_SAE_LARGE, TEXT, top_k=8)
    assert len(tokens) == len(residual)
    assert tokens[0].excluded and tokens[0].latents == []  # position 0 is never encoded
    assert "".join(t.token for t in tokens) == TEXT
    expected = torch_sae.encode(residual).detach().numpy()
    for t in tokens[1:]:
        assert not t.excluded
        assert len(t.latents) <= 8 and all(a > 0 for a in t.activations)
        assert t.activations == sorted(t.activations, reverse=True)
        np.testing.assert_allclose(t.activations, expected[t.position, t.latents], rtol=2e-3, atol=2e-3)
        strongest = np.sort(expected[t.position])[::-1][: len(t.latents)]
        np.testing.assert_allclose(t.activations, strongest, rtol=2e-3, atol=2e-3)


# About 420 tokens of prose: concurrent calls for it queue behind the first and run as one batch.
LONG_TEXT = " ".join([TEXT, "He developed the theory of relativity, one of the two pillars of modern physics,",
                      "and received the Nobel Prize in Physics for his services to theoretical physics."] * 8)  # fmt: skip


def test_concurrent_long_texts_encode_as_they_do_alone(client: sdk.Client) -> None:
    from concurrent.futures import ThreadPoolExecutor

    alone = client.encode_text(TEST_SAE_LARGE, LONG_TEXT, top_k=4)
    assert len(alone) > 400
    with ThreadPoolExecutor(6) as pool:
        together = list(pool.map(lambda _: client.encode_text(TEST_SAE_LARGE, LONG_TEXT, top_k=4), range(6)))
    for tokens in together:
        assert [t.latents for t in tokens] == [t.latents for t in alone]
        for t, a in zip(tokens, alone, strict=True):
            np.testing.assert_allclose(t.activations, a.activations, rtol=2e-3, atol=2e-3)


def test_encode_activations_and_reconstruct_match_pytorch(client: sdk.Client, torch_sae, residual: torch.Tensor) -> None:  # type: ignore[no-untyped-def]
    rows = residual[1:].numpy()
    dense = client.encode_activations(TEST_SAE_LARGE, rows)
    assert isinstance(dense, np.ndarray) and dense.shape == (len(rows), 256)
    np.testing.assert_allclose(dense, torch_sae.encode(residual[1:]).detach().numpy(), rtol=1e-3, atol=1e-3)
    indices, values = client.encode_activations(TEST_SAE_LARGE, rows, top_k=5)  # type: ignore[misc]
    assert indices.shape == values.shape == (len(rows), 5)
    np.testing.assert_allclose(values, np.take_along_axis(dense, indices.astype(np.int64), axis=1))
    recon, squared = client.reconstruct(TEST_SAE_LARGE, rows)
    expected = torch_sae.decode(torch_sae.encode(residual[1:])).detach().numpy()
    np.testing.assert_allclose(recon, expected, rtol=1e-3, atol=1e-2)
    np.testing.assert_allclose(squared, ((rows - recon) ** 2).sum(1), rtol=1e-4)
    assert float(squared.sum()) < float(((rows - rows.mean(0)) ** 2).sum())  # better than the mean


def test_top_activations_are_marked_contexts_strongest_first(client: sdk.Client, stub: sae_pb2_grpc.SaeStub) -> None:
    firing = [
        (latent, contexts) for latent in range(0, 256, 17) if (contexts := client.top_activations(TEST_SAE_LARGE, latent, k=5))
    ]
    assert len(firing) >= 10
    for _, contexts in firing:
        assert len(contexts) <= 5
        acts = [c.activation for c in contexts]
        assert acts == sorted(acts, reverse=True) and acts[-1] > 0
        for c in contexts:
            assert 0 <= c.highlight < len(c.tokens) and "[[" in c.text
    reply = stub.TopActivations(sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE, latent=firing[0][0]))
    assert 0 < reply.firing_rate <= 1 and len(reply.contexts) == 10  # k 0 takes the default


def test_decompose_latent_returns_meta_latents_with_members_and_explanations(client: sdk.Client) -> None:
    info = client.get_sae(TEST_SAE_LARGE)
    decompositions = [client.decompose_latent(TEST_SAE_LARGE, latent, top_n=4) for latent in range(0, 256, 32)]
    assert any(d.meta_latents for d in decompositions)
    for d in decompositions:
        assert d.latent not in {m for meta, _ in d.meta_latents for m in meta.member_latents}
        weights = [w for _, w in d.meta_latents]
        assert weights == sorted(weights, reverse=True) and all(w > 0 for w in weights) and len(weights) <= 4
        assert -1 <= d.reconstruction_cosine <= 1
        assert len(d.explanation.top_output_tokens) == 10
        for meta, _ in d.meta_latents:
            assert 0 <= meta.index < info.meta_width and len(meta.member_latents) <= 8
            # the latent itself uses the meta-latent: the full member list (GetMetaLatent) names it
            full = client.get_meta_latent(TEST_SAE_LARGE, meta.index, members=32)
            assert full.member_count == meta.member_count + 1
        text = str(d)
        assert f"latent {d.latent}" in text and "reconstruction cosine" in text
    mean_cosine = np.mean([d.reconstruction_cosine for d in decompositions if d.meta_latents])
    assert mean_cosine > 0.3  # a trained meta-SAE reconstructs decoder directions


def test_compare_saes_reports_novel_and_reconstruction_latents(client: sdk.Client) -> None:
    c = client.compare_saes(TEST_SAE_SMALL, TEST_SAE_LARGE)
    assert c.threshold == pytest.approx(0.7)
    assert c.novel_latents + c.reconstruction_latents == 256 == len(c.max_cosine) == len(c.delta_mse) == len(c.nearest)
    assert c.novel_latents == int((c.max_cosine < 0.7).sum())
    shares = [c.novel_shares[t] for t in (0.5, 0.6, 0.7, 0.8)]
    assert shares == sorted(shares)  # a higher bar leaves more latents without a counterpart
    assert c.novel_shares[0.7] == pytest.approx(c.novel_latents / 256)
    assert c.swap_mse[0] == pytest.approx(c.small_mse, rel=1e-5) and len(c.swap_mse) >= 2
    assert 0 <= c.nearest.min() and c.nearest.max() < 128 and -1 <= c.max_cosine.min() <= c.max_cosine.max() <= 1 + 1e-5
    looser = client.compare_saes(TEST_SAE_SMALL, TEST_SAE_LARGE, threshold=0.5)
    assert looser.novel_latents == int((c.max_cosine < 0.5).sum()) <= c.novel_latents
    assert "novel" in str(c)


# -- bad input ---------------------------------------------------------------------------------


def _code(call, request) -> tuple[grpc.StatusCode, str]:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as info:
        call(request)
    return info.value.code(), info.value.details()


def _rows(array: np.ndarray) -> common_pb2.Tensor:
    from sdk._tensors import tensor_from_numpy

    return tensor_from_numpy(array)


def test_unknown_or_missing_sae_is_not_found_or_invalid(stub: sae_pb2_grpc.SaeStub) -> None:
    rows = _rows(np.zeros((1, 576), np.float32))
    for call, request in (
        (stub.GetSae, sae_pb2.GetSaeRequest(sae="nope")),
        (stub.EncodeText, sae_pb2.EncodeTextRequest(sae="nope", text="hi")),
        (stub.EncodeActivations, sae_pb2.EncodeActivationsRequest(sae="nope", activations=rows)),
        (stub.Reconstruct, sae_pb2.ReconstructRequest(sae="nope", activations=rows)),
        (stub.TopActivations, sae_pb2.TopActivationsRequest(sae="nope", latent=0)),
        (stub.DecomposeLatent, sae_pb2.DecomposeLatentRequest(sae="nope", latent=0)),
        (stub.GetMetaLatent, sae_pb2.GetMetaLatentRequest(sae="nope", meta_latent=0)),
        (stub.CompareSaes, sae_pb2.CompareSaesRequest(small="nope", large=TEST_SAE_LARGE)),
    ):
        code, details = _code(call, request)
        assert code == grpc.StatusCode.NOT_FOUND and "'nope' is not served" in details and TEST_SAE_LARGE in details
    code, details = _code(stub.GetSae, sae_pb2.GetSaeRequest())
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "sae is empty" in details


def test_latents_out_of_range_are_invalid(stub: sae_pb2_grpc.SaeStub) -> None:
    for latent in (-1, 256, 10**6):
        for call, request in (
            (stub.TopActivations, sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE, latent=latent)),
            (stub.DecomposeLatent, sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=latent)),
        ):
            code, details = _code(call, request)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "0..255" in details
    code, details = _code(stub.GetMetaLatent, sae_pb2.GetMetaLatentRequest(sae=TEST_SAE_LARGE, meta_latent=10**4))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "meta_latent" in details
    for request in (
        sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE, latent=0, k=17),
        sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE, latent=0, k=-1),
    ):
        assert _code(stub.TopActivations, request)[0] == grpc.StatusCode.INVALID_ARGUMENT
    for request in (
        sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, top_n=17),
        sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, members=33),
        sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, contexts=-2),
    ):
        assert _code(stub.DecomposeLatent, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_decompose_without_a_meta_sae_is_a_failed_precondition(stub: sae_pb2_grpc.SaeStub) -> None:
    code, details = _code(stub.DecomposeLatent, sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_SMALL, latent=0))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "no meta-SAE" in details and TEST_SAE_LARGE in details


def test_bad_text_is_invalid(stub: sae_pb2_grpc.SaeStub) -> None:
    for text, message in (
        ("", "text is empty"),
        ("   \n", "text is empty"),
        ("x" * 4097, "4097 characters"),
        (" word" * 600, "tokens; the limit is 512"),
    ):
        code, details = _code(stub.EncodeText, sae_pb2.EncodeTextRequest(sae=TEST_SAE_LARGE, text=text))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details
    for top_k in (-1, 65):
        code, _ = _code(stub.EncodeText, sae_pb2.EncodeTextRequest(sae=TEST_SAE_LARGE, text="hi there", top_k=top_k))
        assert code == grpc.StatusCode.INVALID_ARGUMENT


def test_bad_activations_are_invalid(stub: sae_pb2_grpc.SaeStub) -> None:
    nan = np.zeros((2, 576), np.float32)
    nan[1, 3] = np.nan
    cases = [
        (np.zeros((2, 575), np.float32), "float32 [n, 576]"),
        (np.zeros((2, 576, 1), np.float32), "float32 [n, 576]"),
        (np.zeros((2, 576), np.int32), "float32 [n, 576]"),
        (nan, "finite"),
        (np.zeros((0, 576), np.float32), "0 rows"),
        (np.zeros((4097, 576), np.float32), "4097 rows"),
    ]
    for array, message in cases:
        for call, request in (
            (stub.EncodeActivations, sae_pb2.EncodeActivationsRequest(sae=TEST_SAE_LARGE, activations=_rows(array))),
            (stub.Reconstruct, sae_pb2.ReconstructRequest(sae=TEST_SAE_LARGE, activations=_rows(array))),
        ):
            code, details = _code(call, request)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and message in details, details
    broken = common_pb2.Tensor(dtype=common_pb2.DATA_TYPE_FLOAT32, shape=[2, 576], data=b"\0" * 12)
    code, _ = _code(stub.Reconstruct, sae_pb2.ReconstructRequest(sae=TEST_SAE_LARGE, activations=broken))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, details = _code(stub.Reconstruct, sae_pb2.ReconstructRequest(sae=TEST_SAE_LARGE))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "missing" in details
    request = sae_pb2.EncodeActivationsRequest(sae=TEST_SAE_LARGE, activations=_rows(np.zeros((1, 576), np.float32)), top_k=257)
    assert _code(stub.EncodeActivations, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_comparing_incompatible_saes_is_refused(stub: sae_pb2_grpc.SaeStub, client: sdk.Client) -> None:
    code, details = _code(stub.CompareSaes, sae_pb2.CompareSaesRequest(small=OTHER_LAYER_SAE, large=TEST_SAE_LARGE))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "different layers (3 vs 6)" in details
    code, details = _code(stub.CompareSaes, sae_pb2.CompareSaesRequest(small=TEST_SAE_LARGE, large=TEST_SAE_SMALL))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "must be narrower" in details
    for threshold in (0.0, 1.0, -0.5, float("nan")):
        code, _ = _code(stub.CompareSaes, sae_pb2.CompareSaesRequest(small=TEST_SAE_SMALL, large=TEST_SAE_LARGE, threshold=threshold))
        assert code == grpc.StatusCode.INVALID_ARGUMENT
    with pytest.raises(sdk.FailedPrecondition, match="different layers"):
        client.compare_saes(OTHER_LAYER_SAE, TEST_SAE_LARGE)
    with pytest.raises(sdk.InvalidArgument, match="2-D float"):
        client.reconstruct(TEST_SAE_LARGE, np.zeros(576, np.float32))


def test_a_repository_without_saes_fails_to_start_with_a_clear_message(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "FACET_MODEL_REPOSITORY": str(tmp_path / "empty"), "FACET_DATA_DIR": str(tmp_path / "data")}
    result = subprocess.run([sys.executable, "-m", "services.sae", "--port", "0"], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "holds no SAEs" in result.stderr and "facet models build" in result.stderr and "Traceback" not in result.stderr
