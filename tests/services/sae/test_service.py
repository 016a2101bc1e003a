"""The SAE service over real gRPC on loopback, with SAEs built by the project's own build on
real SmolLM2-135M activations, served through ONNX Runtime."""

from __future__ import annotations

import re
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
    assert [TEXT[t.start : t.end] for t in tokens] == [t.token for t in tokens]
    assert not any(t.special for t in tokens)
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
            assert 0 <= c.highlight < len(c.tokens) and "[[" in c.marked and "".join(c.tokens) == c.text
    reply = stub.TopActivations(sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE, latent=firing[0][0]))
    assert 0 < reply.firing_rate <= 1 and len(reply.contexts) == 10  # k unset takes the default


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
        sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE, latent=0, k=0),
    ):
        code, details = _code(stub.TopActivations, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "k must be 1..16 (unset: 10)" in details
    for request, field in (
        (sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, top_n=17), "top_n"),
        (sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, members=33), "members"),
        (sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, contexts=-2), "contexts"),
        (sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, top_n=0), "top_n"),
    ):
        code, details = _code(stub.DecomposeLatent, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and f"{field} must be" in details


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
    for top_k in (-1, 0, 65):
        code, details = _code(stub.EncodeText, sae_pb2.EncodeTextRequest(sae=TEST_SAE_LARGE, text="hi there", top_k=top_k))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "top_k must be 1..64 (unset: 8)" in details


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
    for top_k in (257, 0, -1):
        request = sae_pb2.EncodeActivationsRequest(sae=TEST_SAE_LARGE, activations=_rows(np.zeros((1, 576), np.float32)), top_k=top_k)
        code, details = _code(stub.EncodeActivations, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and "or unset for dense latents" in details


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


# -- text is text; tokens give the text back (issue #12, items 1 and 2) ----------------------

HARD_TEXTS = [
    "I ❤️ 🤖 naïve café 北京 Привет",
    "👨‍👩‍👧‍👦 family, 👩🏽‍💻 coder, 🏳️‍🌈 flag, 👍🏿",
    "🇫🇷🇩🇪🇯🇵 flags",
    "e\u0301 a\u0300\u0316 n\u0303o\u0308 combining",
    "北京欢迎你。東京タワー。서울특별시",
    "Съешь же ещё этих мягких французских булок",
    "مرحبا بالعالم שלום עולם 𝕳𝖊𝖑𝖑𝖔 🀄",
    "tab\tnew\nline\r\n  \u200b\u200d end  ",
]


def _assert_spans_tile(text: str, spans: list[tuple[int, int]], pieces: list[str]) -> None:
    assert spans[0][0] == 0 and spans[-1][1] == len(text)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # in order, no gap, no overlap
    assert [text[s:e] for s, e in spans] == pieces and "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)


def test_encode_text_tokens_give_the_text_back(client: sdk.Client) -> None:
    for text in HARD_TEXTS:
        tokens = client.encode_text(TEST_SAE_LARGE, text)
        _assert_spans_tile(text, [(t.start, t.end) for t in tokens], [t.token for t in tokens])
        assert [t.position for t in tokens] == list(range(len(tokens)))
    tokens = client.encode_text(TEST_SAE_LARGE, HARD_TEXTS[0])
    heart = next(i for i, t in enumerate(tokens) if t.token == " ❤")  # its 3 bytes: 3 tokens
    assert [t.token for t in tokens[heart : heart + 3]] == [" ❤", "", ""] and all(t.partial for t in tokens[heart : heart + 3])
    assert not any(t.partial for t in tokens if t.token in ("I", " café"))


def test_special_token_strings_in_user_text_are_plain_text(client: sdk.Client) -> None:
    text = "Hello<|endoftext|>world <|im_start|>user"
    tokens = client.encode_text(TEST_SAE_LARGE, text)
    assert not {0, 1} & {t.token_id for t in tokens} and not any(t.special for t in tokens)
    assert "".join(t.token for t in tokens) == text
    assert all(t.latents for t in tokens[1:] if not t.excluded)  # the split pieces are encoded as text
    for other in ("<|im_end|>", "<|endoftext|>", "a<|im_start|>assistant\n<|im_end|>b"):
        assert not any(t.special for t in client.encode_text(TEST_SAE_LARGE, other))
    allowed = client.encode_text(TEST_SAE_LARGE, text, allow_special_tokens=True)
    special = [t for t in allowed if t.special]
    assert [(t.token_id, t.token) for t in special] == [(0, "<|endoftext|>"), (1, "<|im_start|>")]
    assert all(t.excluded and t.latents == [] and t.activations == [] for t in special)  # never encoded
    assert "".join(t.token for t in allowed) == text


def test_top_activation_contexts_give_their_text_back(client: sdk.Client, stub: sae_pb2_grpc.SaeStub) -> None:
    seen = 0
    for latent in range(256):
        for c in client.top_activations(TEST_SAE_LARGE, latent, k=16):
            _assert_spans_tile(c.text, c.spans, c.tokens)
            assert len(c.token_ids) == len(c.partial) == len(c.special) == len(c.tokens)
            # the LM's EOS between corpus documents (<|im_end|> for SmolLM2-Instruct), as its literal string
            assert all(re.fullmatch(r"<\|\w+\|>", c.tokens[i]) for i, s in enumerate(c.special) if s)
            seen += 1
    assert seen > 1000
    decomposition = client.decompose_latent(TEST_SAE_LARGE, 3, contexts=16)
    assert not any("\ufffd" in t for t, _ in decomposition.explanation.top_output_tokens)
    for meta, _ in decomposition.meta_latents:
        for c in meta.explanation.top_contexts:
            _assert_spans_tile(c.text, c.spans, c.tokens)
    reply = stub.TopActivations(sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE, latent=0, k=1))
    assert all(t.start <= t.end for t in reply.contexts[0].tokens)


# -- no non-finite number leaves as OK (item 5) ----------------------------------------------


def test_activations_that_would_overflow_are_invalid_naming_the_limit(client: sdk.Client, stub: sae_pb2_grpc.SaeStub) -> None:
    for value in (1e18, 3e38, -1e7, 1.5e6):
        rows = np.full((1, 576), value, np.float32)
        for call, request in (
            (stub.Reconstruct, sae_pb2.ReconstructRequest(sae=TEST_SAE_LARGE, activations=_rows(rows))),
            (stub.EncodeActivations, sae_pb2.EncodeActivationsRequest(sae=TEST_SAE_LARGE, activations=_rows(rows))),
        ):
            code, details = _code(call, request)
            assert code == grpc.StatusCode.INVALID_ARGUMENT and "sae.max_abs_activation" in details and "1e+06" in details
    with pytest.raises(sdk.InvalidArgument, match="sae.max_abs_activation") as info:
        client.reconstruct(TEST_SAE_LARGE, np.full((1, 576), 1e18))
    assert info.value.request_id  # the server said so, not the SDK
    recon, squared = client.reconstruct(TEST_SAE_LARGE, np.full((2, 576), 1e6))  # at the limit: finite
    assert np.isfinite(recon).all() and np.isfinite(squared).all()


def test_a_non_finite_output_is_internal_with_a_request_id(sae_repository: ModelRepository, tmp_path: Path) -> None:
    """With the limit raised past float32's safe range, 1e18 overflows the squared error: the
    server answers INTERNAL (its fault) with a request id and counts it, never OK with inf."""
    import urllib.request

    from tests.serving import ServerProcess

    server = ServerProcess(sae_repository.root, tmp_path, {"FACET_SAE_MAX_ABS_ACTIVATION": "1e38"}, service="sae").start(timeout_s=300)
    try:
        with sdk.Client(sae=server.address) as c:
            with pytest.raises(sdk.InternalError) as info:
                c.reconstruct(TEST_SAE_LARGE, np.full((1, 576), 1e18))
            assert info.value.request_id and info.value.request_id in info.value.message
            assert np.isfinite(c.reconstruct(TEST_SAE_LARGE, np.ones((1, 576)))[1]).all()
        from prometheus_client.parser import text_string_to_metric_families

        text = urllib.request.urlopen(f"http://127.0.0.1:{server.metrics_port}/metrics", timeout=5).read().decode()
        counts = {
            (sample.labels["method"].rsplit("/", 1)[-1], sample.labels["code"]): sample.value
            for family in text_string_to_metric_families(text) if family.name == "facet_requests"
            for sample in family.samples if sample.name == "facet_requests_total"
        }  # fmt: skip
        assert counts[("Reconstruct", "INTERNAL")] == 1 and counts[("Reconstruct", "OK")] == 1
        assert "non-finite" in server.log_path.read_text()
    finally:
        server.terminate(10.0)


# -- explicit values are not replaced (item 4) -----------------------------------------------


def test_zero_is_never_read_as_unset(stub: sae_pb2_grpc.SaeStub, client: sdk.Client) -> None:
    rows = _rows(np.ones((2, 576), np.float32))
    dense = stub.EncodeActivations(sae_pb2.EncodeActivationsRequest(sae=TEST_SAE_LARGE, activations=rows))
    assert list(dense.latents.shape) == [2, 256]  # unset top_k: dense
    assert len(client.encode_text(TEST_SAE_LARGE, TEXT)[1].latents) <= 8  # unset top_k: 8
    for call, request, field in (
        (stub.TopActivations, sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE), "latent is required: 0..255"),
        (stub.DecomposeLatent, sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE), "latent is required: 0..255"),
        (stub.GetMetaLatent, sae_pb2.GetMetaLatentRequest(sae=TEST_SAE_LARGE), "meta_latent is required"),
        (stub.GetMetaLatent, sae_pb2.GetMetaLatentRequest(sae=TEST_SAE_LARGE, meta_latent=0, members=0), "members must be 1..32 (unset: 8)"),
        (stub.GetMetaLatent, sae_pb2.GetMetaLatentRequest(sae=TEST_SAE_LARGE, meta_latent=0, contexts=0), "contexts must be 1..16 (unset: 3)"),
        (stub.DecomposeLatent, sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, members=0), "members must be 1..32"),
        (stub.DecomposeLatent, sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=0, contexts=0), "contexts must be 1..16"),
    ):
        code, details = _code(call, request)
        assert code == grpc.StatusCode.INVALID_ARGUMENT and field in details, details
    assert client.top_activations(TEST_SAE_LARGE, 0, k=None) == client.top_activations(TEST_SAE_LARGE, 0, k=10)
    with pytest.raises(sdk.InvalidArgument, match="top_k must be"):
        client.encode_text(TEST_SAE_LARGE, TEXT, top_k=0)
    one = stub.Reconstruct(sae_pb2.ReconstructRequest(sae=TEST_SAE_LARGE, activations=_rows(np.ones((1, 576), np.float32))))
    assert not one.HasField("fvu")  # undefined for one row: unset, not 0 (a perfect reconstruction)


# -- fuzzing: bad values never give INTERNAL (item 9) ----------------------------------------


def _bad_tensors() -> list[common_pb2.Tensor]:
    f32 = common_pb2.DATA_TYPE_FLOAT32
    huge = np.full((1, 576), 3e38, np.float32)
    return [
        common_pb2.Tensor(),
        common_pb2.Tensor(dtype=f32, shape=[2**40, 576]),
        common_pb2.Tensor(dtype=f32, shape=[-1, 576], data=b"\0" * 4),
        common_pb2.Tensor(dtype=f32, shape=[0, 576]),
        common_pb2.Tensor(dtype=f32, shape=[576], data=b"\0" * 2304),
        common_pb2.Tensor(dtype=f32, shape=[1, 576], data=b"\0" * 7),
        common_pb2.Tensor(dtype=99, shape=[1, 576], data=b"\0" * 2304),  # type: ignore[arg-type]
        _rows(np.full((1, 576), np.nan, np.float32)),
        _rows(np.full((1, 576), -np.inf, np.float32)),
        _rows(huge),
        _rows(np.zeros((1, 576), np.float16)),
        _rows(np.zeros((1, 576), np.int64)),
        _rows(np.zeros((3, 577), np.float32)),
    ]


BAD_VALUES: dict[int, list[object]] = {
    # FieldDescriptor types
    5: [-1, 0, -(2**31), 2**31 - 1, 257, 10**6],  # int32
    2: [float("nan"), float("inf"), -float("inf"), 0.0, -0.5, 1.0, 3e38],  # float
    9: ["", "nope", "\x00", " \u200b\ufeff ", "<|endoftext|>", "x" * 5000, "👨‍👩‍👧‍👦" * 2000, "a\u0301" * 1000],  # string
    8: [True, False],  # bool
}


def _base_requests() -> list[tuple[str, object]]:
    rows = _rows(np.ones((2, 576), np.float32))
    return [
        ("GetSae", sae_pb2.GetSaeRequest(sae=TEST_SAE_LARGE)),
        ("EncodeText", sae_pb2.EncodeTextRequest(sae=TEST_SAE_LARGE, text=TEXT, top_k=4)),
        ("EncodeActivations", sae_pb2.EncodeActivationsRequest(sae=TEST_SAE_LARGE, activations=rows, top_k=4)),
        ("Reconstruct", sae_pb2.ReconstructRequest(sae=TEST_SAE_LARGE, activations=rows)),
        ("TopActivations", sae_pb2.TopActivationsRequest(sae=TEST_SAE_LARGE, latent=3, k=2)),
        ("DecomposeLatent", sae_pb2.DecomposeLatentRequest(sae=TEST_SAE_LARGE, latent=3, top_n=2, members=2, contexts=2)),
        ("GetMetaLatent", sae_pb2.GetMetaLatentRequest(sae=TEST_SAE_LARGE, meta_latent=1, members=2, contexts=2)),
        ("CompareSaes", sae_pb2.CompareSaesRequest(small=TEST_SAE_SMALL, large=TEST_SAE_LARGE, threshold=0.6)),
    ]


def test_fuzzed_requests_never_get_internal(stub: sae_pb2_grpc.SaeStub) -> None:
    """Every field of every SAE request, one bad value at a time: OK or a clear client error."""
    allowed = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION}
    tried = 0
    for method, base in _base_requests():
        for field in base.DESCRIPTOR.fields:  # type: ignore[attr-defined]
            values = _bad_tensors() if field.message_type is not None else BAD_VALUES[field.type]
            for value in values:
                request = type(base)()
                request.CopyFrom(base)  # type: ignore[arg-type]
                if field.message_type is not None:
                    getattr(request, field.name).CopyFrom(value)
                else:
                    setattr(request, field.name, value)
                try:
                    getattr(stub, method)(request, timeout=60)
                    code, details = grpc.StatusCode.OK, ""
                except grpc.RpcError as exc:
                    code, details = exc.code(), exc.details()
                assert code in allowed, f"{method}.{field.name}={str(value)[:60]!r}: {code} {details}"
                tried += 1
    assert tried > 150
