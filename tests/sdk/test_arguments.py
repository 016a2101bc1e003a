"""Malformed SDK calls raise sdk.InvalidArgument naming the argument, before anything is sent.

One table of malformed calls across every public method of every capability and the
constructor, run on `Client` and `AsyncClient`. The client points at a port where nothing listens,
with retries off: a check that does not fire client-side shows as Unavailable, and a check that
lets Python's own TypeError / ValueError / UnicodeEncodeError / RecursionError escape fails too."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

import sdk
from sdk._contract import MAX_JSON_DEPTH
from sdk._proto.facet.v1 import retrieval_pb2
from sdk._retrieval import _upsert_call

NOWHERE = "127.0.0.1:1"
CLIP = np.zeros((5, 64, 64), np.uint8)
OK_ROWS = np.zeros((1, 4), np.float32)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": 1}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def _cyclic() -> dict[str, Any]:
    value: dict[str, Any] = {}
    value["self"] = value
    return value


Case = tuple[str, Callable[[Any], Any], str]
# (what, call, text the message must contain: the argument's name)
CASES: list[Case] = [
    # embed
    ("embed: one string", lambda c: c.embed("abc"), "texts must be a list of strings, not one string"),
    ("embed: an int item", lambda c: c.embed([1]), "texts[0]"),
    ("embed: None", lambda c: c.embed(None), "texts"),
    ("embed: a None item", lambda c: c.embed(["ok", None]), "texts[1]"),
    ("embed: lone surrogate", lambda c: c.embed(["\ud800"]), "texts[0]"),
    ("embed: bytes item", lambda c: c.embed([b"bytes"]), "texts[0]"),
    ("embed: bytes", lambda c: c.embed(b"abc"), "texts"),
    ("embed: a dict", lambda c: c.embed({"a": 1}), "texts"),
    ("embed: prompt None", lambda c: c.embed(["a"], prompt=None), "prompt"),
    ("embed: prompt surrogate", lambda c: c.embed(["a"], prompt="x\udfff"), "prompt"),
    ("embed: normalize str", lambda c: c.embed(["a"], normalize="no"), "normalize"),
    ("embed: truncate int", lambda c: c.embed(["a"], truncate=1), "truncate"),
    ("embed: timeout 0", lambda c: c.embed(["a"], timeout_s=0), "timeout_s"),
    ("embed: timeout negative", lambda c: c.embed(["a"], timeout_s=-1), "timeout_s"),
    ("embed: timeout NaN", lambda c: c.embed(["a"], timeout_s=float("nan")), "timeout_s"),
    ("embed: timeout str", lambda c: c.embed(["a"], timeout_s="5"), "timeout_s"),
    ("model_info: timeout 0", lambda c: c.model_info(timeout_s=0), "timeout_s"),
    # collections
    ("create: name None", lambda c: c.create_collection(None), "name"),
    ("create: unknown metric", lambda c: c.create_collection("c", metric="manhattan"), "metric"),
    ("create: index_type None", lambda c: c.create_collection("c", index_type=None), "index_type"),
    ("create: dimension str", lambda c: c.create_collection("c", dimension="384"), "dimension"),
    ("create: dimension float", lambda c: c.create_collection("c", dimension=1.5), "dimension"),
    ("create: dimension negative", lambda c: c.create_collection("c", dimension=-1), "dimension"),
    ("create: hnsw_m beyond int32", lambda c: c.create_collection("c", hnsw_m=2**40), "hnsw_m"),
    ("create: hnsw_ef_search bool", lambda c: c.create_collection("c", hnsw_ef_search=True), "hnsw_ef_search"),
    ("list_collections: timeout negative", lambda c: c.list_collections(timeout_s=-5), "timeout_s"),
    ("delete_collection: name int", lambda c: c.delete_collection(123), "name"),
    ("delete_collection: surrogate", lambda c: c.delete_collection("c\ud800"), "name"),
    # upsert
    ("upsert: ids one string", lambda c: c.upsert("c", "abc", texts=["a", "b", "c"]), "ids"),
    ("upsert: texts one string", lambda c: c.upsert("c", ["a"], texts="x"), "texts"),
    ("upsert: id int", lambda c: c.upsert("c", [1], texts=["x"]), "ids[0]"),
    ("upsert: neither texts nor vectors", lambda c: c.upsert("c", ["a"]), "texts"),
    ("upsert: vectors of strings", lambda c: c.upsert("c", ["a"], vectors=[["x"]]), "vectors"),
    ("upsert: vectors NaN", lambda c: c.upsert("c", ["a"], vectors=[[1.0, float("nan")]]), "vectors"),
    ("upsert: vectors overflow float32", lambda c: c.upsert("c", ["a"], vectors=[[1e39]]), "vectors"),
    ("upsert: vectors ragged", lambda c: c.upsert("c", ["a", "b"], vectors=[[1.0], [1.0, 2.0]]), "vectors"),
    ("upsert: vectors 1-D", lambda c: c.upsert("c", ["a"], vectors=[1.0, 2.0]), "vectors"),
    ("upsert: vectors too few", lambda c: c.upsert("c", ["a", "b"], vectors=[[1.0]]), "vectors"),
    ("upsert: texts too few", lambda c: c.upsert("c", ["a", "b"], texts=["x"]), "texts"),
    ("upsert: metadata one dict", lambda c: c.upsert("c", ["a"], texts=["x"], metadata={"k": 1}), "metadata"),
    ("upsert: metadata too few", lambda c: c.upsert("c", ["a", "b"], texts=["x", "y"], metadata=[{}]), "metadata"),
    ("upsert: metadata object", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[{"k": object()}]), "metadata[0]"),
    ("upsert: metadata 1000 deep", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[_nested(1000)]), "metadata[0]"),
    ("upsert: metadata too deep", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[_nested(MAX_JSON_DEPTH + 1)]), "metadata[0]"),
    ("upsert: metadata cyclic", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[_cyclic()]), "metadata[0]"),
    ("upsert: metadata int key", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[{1: "x"}]), "metadata[0]"),
    ("upsert: metadata 2**53+1", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[{"n": 2**53 + 1}]), "metadata[0]['n']"),
    ("upsert: metadata inf", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[{"x": float("inf")}]), "metadata[0]['x']"),
    ("upsert: metadata surrogate value", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[{"s": "\ud800"}]), "metadata[0]['s']"),
    ("upsert: metadata surrogate key", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[{"\ud800": 1}]), "metadata[0]"),
    ("upsert: metadata set", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=[{"s": {1, 2}}]), "metadata[0]['s']"),
    ("upsert: metadata list of str", lambda c: c.upsert("c", ["a"], texts=["x"], metadata=["lang=en"]), "metadata[0]"),
    ("upsert: collection None", lambda c: c.upsert(None, ["a"], texts=["x"]), "collection"),
    ("upsert: text surrogate", lambda c: c.upsert("c", ["a"], texts=["\ud83d"]), "texts[0]"),
    # get / delete
    ("get: ids one string", lambda c: c.get("c", "abc"), "ids must be a list of strings, not one string"),
    ("get: ids None", lambda c: c.get("c", None), "ids"),
    ("get: include_vectors str", lambda c: c.get("c", ["a"], include_vectors="yes"), "include_vectors"),
    ("get: collection None", lambda c: c.get(None, ["a"]), "collection"),
    ("get: ids ints", lambda c: c.get("c", range(3)), "ids[0]"),
    ("delete: ids one string", lambda c: c.delete("c", "abc"), "ids must be a list of strings, not one string"),
    ("delete: a None id", lambda c: c.delete("c", [None]), "ids[0]"),
    ("delete: timeout inf", lambda c: c.delete("c", ["a"], timeout_s=float("inf")), "timeout_s"),
    # search
    ("search: top_k 0", lambda c: c.search("c", "q", top_k=0), "top_k must be at least 1, got 0"),
    ("search: top_k negative", lambda c: c.search("c", "q", top_k=-1), "top_k must be at least 1, got -1"),
    ("search: query None", lambda c: c.search("c", None), "query"),
    ("search: query bytes", lambda c: c.search("c", b"bytes"), "query"),
    ("search: query surrogate", lambda c: c.search("c", "q\ud800"), "query"),
    ("search: query NaN vector", lambda c: c.search("c", [float("nan")] * 4), "query"),
    ("search: query matrix", lambda c: c.search("c", np.ones((2, 4))), "query"),
    ("search: query strings", lambda c: c.search("c", ["a", "b"]), "query"),
    ("search: top_k str", lambda c: c.search("c", "q", top_k="a"), "top_k"),
        ("search: top_k negative", lambda c: c.search("c", "q", top_k=-3), "top_k"),
    ("search: top_k beyond int32", lambda c: c.search("c", "q", top_k=2**31), "top_k"),
    ("search: top_k bool", lambda c: c.search("c", "q", top_k=True), "top_k"),
    ("search: top_k float", lambda c: c.search("c", "q", top_k=5.0), "top_k"),
    ("search: filter string", lambda c: c.search("c", "q", filter="lang=en"), "filter"),
    ("search: filter deep", lambda c: c.search("c", "q", filter={"a": _nested(1000)}), "filter"),
    ("search: filter NaN", lambda c: c.search("c", "q", filter={"x": float("nan")}), "filter['x']"),
    ("search: prompt int", lambda c: c.search("c", "q", prompt=1), "prompt"),
    ("search: include_vectors None", lambda c: c.search("c", "q", include_vectors=None), "include_vectors"),
    ("search: collection int", lambda c: c.search(1, "q"), "collection"),
    # SAE
    ("list_saes: timeout 0", lambda c: c.list_saes(timeout_s=0), "timeout_s"),
    ("get_sae: None", lambda c: c.get_sae(None), "sae"),
    ("get_sae: surrogate", lambda c: c.get_sae("\ud800"), "sae"),
    ("encode_text: text None", lambda c: c.encode_text("s", None), "text"),
    ("encode_text: text surrogate", lambda c: c.encode_text("s", "t\ud800"), "text"),
    ("encode_text: text list", lambda c: c.encode_text("s", ["a", "b"]), "text"),
    ("encode_text: top_k str", lambda c: c.encode_text("s", "t", top_k="8"), "top_k"),
    ("encode_text: top_k negative", lambda c: c.encode_text("s", "t", top_k=-1), "top_k"),
    ("encode_activations: str", lambda c: c.encode_activations("s", "x"), "activations"),
    ("encode_activations: 1-D", lambda c: c.encode_activations("s", np.zeros(576)), "activations"),
    ("encode_activations: NaN", lambda c: c.encode_activations("s", np.full((1, 4), np.nan)), "activations"),
    ("encode_activations: strings", lambda c: c.encode_activations("s", [["a"]]), "activations"),
    ("encode_activations: top_k negative", lambda c: c.encode_activations("s", OK_ROWS, top_k=-1), "top_k"),
    ("reconstruct: overflow float32", lambda c: c.reconstruct("s", np.full((1, 4), 3e39)), "activations"),
    ("reconstruct: sae int", lambda c: c.reconstruct(123, OK_ROWS), "sae"),
    ("reconstruct: None", lambda c: c.reconstruct("s", None), "activations"),
    ("top_activations: latent negative", lambda c: c.top_activations("s", -1), "latent"),
    ("top_activations: latent float", lambda c: c.top_activations("s", 1.5), "latent"),
    ("top_activations: k negative", lambda c: c.top_activations("s", 1, k=-10), "k"),
    ("decompose_latent: latent str", lambda c: c.decompose_latent("s", "12"), "latent"),
    ("decompose_latent: top_n negative", lambda c: c.decompose_latent("s", 1, top_n=-4), "top_n"),
    ("decompose_latent: members beyond int32", lambda c: c.decompose_latent("s", 1, members=2**31), "members"),
    ("decompose_latent: contexts negative", lambda c: c.decompose_latent("s", 1, contexts=-1), "contexts"),
    ("get_meta_latent: None", lambda c: c.get_meta_latent("s", None), "meta_latent"),
    ("get_meta_latent: members str", lambda c: c.get_meta_latent("s", 1, members="8"), "members"),
    ("compare_saes: large None", lambda c: c.compare_saes("a", None), "large"),
    ("compare_saes: threshold str", lambda c: c.compare_saes("a", "b", threshold="0.5"), "threshold"),
    ("compare_saes: threshold NaN", lambda c: c.compare_saes("a", "b", threshold=float("nan")), "threshold"),
    # next-frame
    ("list_frame_models: timeout str", lambda c: c.list_frame_models(timeout_s="1"), "timeout_s"),
    ("simulate: dataset None", lambda c: c.simulate(None, constant=9.8), "dataset"),
    ("simulate: constant str", lambda c: c.simulate("pendulum", constant="9.8"), "constant"),
    ("simulate: constant inf", lambda c: c.simulate("pendulum", constant=float("inf")), "constant"),
    ("simulate: constant beyond float32", lambda c: c.simulate("pendulum", constant=1e39), "constant"),
    ("simulate: frames negative", lambda c: c.simulate("pendulum", constant=9.8, frames=-40), "frames"),
    ("simulate: frames float", lambda c: c.simulate("pendulum", constant=9.8, frames=2.5), "frames"),
    ("simulate: seed negative", lambda c: c.simulate("pendulum", constant=9.8, seed=-1), "seed"),
    ("simulate: seed beyond int64", lambda c: c.simulate("pendulum", constant=9.8, seed=2**64), "seed"),
    ("predict_next: model None", lambda c: c.predict_next(None, CLIP), "model"),
    ("predict_next: float frames", lambda c: c.predict_next("m", CLIP.astype(np.float32)), "frames"),
    ("predict_next: one frame", lambda c: c.predict_next("m", CLIP[0]), "frames"),
    ("predict_next: str frames", lambda c: c.predict_next("m", "frames"), "frames"),
    ("rollout: horizon negative", lambda c: c.rollout("m", CLIP, horizon=-1), "horizon"),
    ("rollout: horizon str", lambda c: c.rollout("m", CLIP, horizon="3"), "horizon"),
    ("rollout: model surrogate", lambda c: c.rollout("m\ud800", CLIP, horizon=3), "model"),
    ("estimate_constant: frames None", lambda c: c.estimate_constant("m", None), "frames"),
    ("estimate_constant: model bytes", lambda c: c.estimate_constant(b"m", CLIP), "model"),
    # rerank
    ("rerank: documents one string", lambda c: c.rerank("q", "abc"), "documents must be a list of strings, not one string"),
    ("rerank: query None", lambda c: c.rerank(None, ["a"]), "query"),
    ("rerank: a None document", lambda c: c.rerank("q", ["a", None]), "documents[1]"),
    ("rerank: document surrogate", lambda c: c.rerank("q", ["\ud800"]), "documents[0]"),
    ("rerank: top_n float", lambda c: c.rerank("q", ["a"], top_n=2.0), "top_n"),
    ("rerank: top_n beyond int32", lambda c: c.rerank("q", ["a"], top_n=2**31), "top_n"),
    ("rerank: min_probability above 1", lambda c: c.rerank("q", ["a"], min_probability=1.5), "min_probability"),
    ("rerank: min_probability negative", lambda c: c.rerank("q", ["a"], min_probability=-0.01), "min_probability"),
    ("rerank: min_probability NaN", lambda c: c.rerank("q", ["a"], min_probability=float("nan")), "min_probability"),
    ("rerank: min_probability str", lambda c: c.rerank("q", ["a"], min_probability="0.5"), "min_probability"),
    ("rerank: raw_scores str", lambda c: c.rerank("q", ["a"], raw_scores="yes"), "raw_scores"),
    ("rerank: truncate int", lambda c: c.rerank("q", ["a"], truncate=1), "truncate"),
    ("rerank: return_documents None", lambda c: c.rerank("q", ["a"], return_documents=None), "return_documents"),
    ("rerank: model int", lambda c: c.rerank("q", ["a"], model=3), "model"),
    ("list_rerankers: timeout 0", lambda c: c.list_rerankers(timeout_s=0), "timeout_s"),
    ("get_reranker: name None", lambda c: c.get_reranker(None), "name"),
    # paraphrase
    ("paraphrase: text None", lambda c: c.paraphrase(None), "text"),
    ("paraphrase: text surrogate", lambda c: c.paraphrase("\ud800"), "text"),
    ("paraphrase: n float", lambda c: c.paraphrase("q", n=2.0), "n"),
    ("paraphrase: n bool", lambda c: c.paraphrase("q", n=True), "n"),
    ("paraphrase: n beyond int32", lambda c: c.paraphrase("q", n=2**31), "n"),
    ("paraphrase: strategy None", lambda c: c.paraphrase("q", strategy=None), "strategy"),
    ("paraphrase: beam_width str", lambda c: c.paraphrase("q", beam_width="4"), "beam_width"),
    ("paraphrase: temperature NaN", lambda c: c.paraphrase("q", temperature=float("nan")), "temperature"),
    ("paraphrase: top_p str", lambda c: c.paraphrase("q", top_p="0.9"), "top_p"),
    ("paraphrase: max_pairwise_bleu inf", lambda c: c.paraphrase("q", max_pairwise_bleu=float("inf")), "max_pairwise_bleu"),
    ("paraphrase: seed beyond int64", lambda c: c.paraphrase("q", seed=2**64), "seed"),
    ("paraphrase: truncate int", lambda c: c.paraphrase("q", truncate=1), "truncate"),
    ("paraphrase: model int", lambda c: c.paraphrase("q", model=3), "model"),
    ("paraphrase_stream: text bytes", lambda c: c.paraphrase_stream(b"q"), "text"),
    ("paraphrase_stream: top_k float", lambda c: c.paraphrase_stream("q", top_k=1.5), "top_k"),
    ("paraphrase_stream: temperature str", lambda c: c.paraphrase_stream("q", temperature="1"), "temperature"),
    ("list_paraphrasers: timeout negative", lambda c: c.list_paraphrasers(timeout_s=-1), "timeout_s"),
    # phenotype
    ("list_attributes: model int", lambda c: c.list_attributes(model=3), "model"),
    ("list_face_models: timeout negative", lambda c: c.list_face_models(timeout_s=-1), "timeout_s"),
    ("generate_face: factor NaN", lambda c: c.generate_face({"skin_tone": float("nan")}), "skin_tone"),
    ("generate_face: factor above 1", lambda c: c.generate_face({"skin_tone": 1.5}), "skin_tone"),
    ("generate_face: factor beyond float", lambda c: c.generate_face({"skin_tone": 10**400}), "skin_tone"),
    ("paraphrase: temperature beyond float", lambda c: c.paraphrase("q", temperature=10**400), "temperature"),
    ("generate_face: seed negative", lambda c: c.generate_face(seed=-1), "seed"),
    ("generate_face: seed beyond uint64", lambda c: c.generate_face(seed=2**64), "seed"),
    ("encode_face: float image", lambda c: c.encode_face(np.zeros((16, 16, 3), dtype=np.float32)), "image"),
    ("encode_face: channels first", lambda c: c.encode_face(np.zeros((3, 16, 16), dtype=np.uint8)), "image"),
    ("edit_phenotype: empty edits", lambda c: c.edit_phenotype(np.zeros((16, 16, 3), dtype=np.uint8), {}), "edits"),
    ("edit_phenotype: value inf", lambda c: c.edit_phenotype(np.zeros((16, 16, 3), dtype=np.uint8), {"skin_tone": float("inf")}), "edits"),
    ("edit_phenotype: not a dict", lambda c: c.edit_phenotype(np.zeros((16, 16, 3), dtype=np.uint8), ["skin_tone"]), "edits"),
    ("interpolate_phenotype: values empty", lambda c: c.interpolate_phenotype(np.zeros((16, 16, 3), dtype=np.uint8), "skin_tone", []), "values"),
    ("interpolate_phenotype: one number", lambda c: c.interpolate_phenotype(np.zeros((16, 16, 3), dtype=np.uint8), "skin_tone", 0.5), "values"),
    ("interpolate_phenotype: attribute int", lambda c: c.interpolate_phenotype(np.zeros((16, 16, 3), dtype=np.uint8), 3, [0.5]), "attribute"),
]  # fmt: skip

CONSTRUCTOR_CASES: list[tuple[str, dict[str, Any], str]] = [
    ("timeout 0", {"timeout_s": 0}, "timeout_s"),
    ("timeout None", {"timeout_s": None}, "timeout_s"),
    ("api_key newline", {"api_key": "k\n"}, "api_key"),
    ("api_key int", {"api_key": 5}, "api_key"),
    ("retry str", {"retry": "fast"}, "retry"),
    ("max_message_bytes negative", {"max_message_bytes": -1}, "max_message_bytes"),
    ("address int", {"sae": 123}, "sae"),
]


def test_the_table_covers_every_method() -> None:
    assert len(CASES) + len(CONSTRUCTOR_CASES) >= 54
    covered = {what.split(":")[0] for what, _, _ in CASES}
    names = {"create": "create_collection"}
    methods = {n for n in dir(sdk.Client) if not n.startswith("_") and callable(getattr(sdk.Client, n))}
    assert {names.get(c, c) for c in covered} == methods - {"address", "close"}


async def _invoke(client: Any, call: Callable[[Any], Any]) -> Any:
    result = call(client)
    if inspect.isgenerator(result):
        return next(result)
    if inspect.isasyncgen(result):
        return await result.__anext__()
    if inspect.isawaitable(result):
        return await result
    return result


@pytest.mark.parametrize("cls", [sdk.Client, sdk.AsyncClient], ids=["sync", "async"])
@pytest.mark.parametrize(("what", "call", "named"), CASES, ids=[c[0] for c in CASES])
async def test_a_malformed_call_raises_invalid_argument_naming_the_argument(
    cls: type, what: str, call: Callable[[Any], Any], named: str
) -> None:
    client = cls(NOWHERE, sae=NOWHERE, nextframe=NOWHERE, timeout_s=2, retry=sdk.RetryPolicy(max_attempts=1))
    with pytest.raises(sdk.InvalidArgument) as caught:
        await _invoke(client, call)
    error = caught.value
    assert named in error.message, error.message
    assert isinstance(error, sdk.FacetError) and isinstance(error, ValueError) and isinstance(error, TypeError)
    assert error.request_id is None  # refused before sending


@pytest.mark.parametrize(("what", "kwargs", "named"), CONSTRUCTOR_CASES, ids=[c[0] for c in CONSTRUCTOR_CASES])
def test_a_malformed_constructor_argument_raises_invalid_argument(
    what: str, kwargs: dict[str, Any], named: str
) -> None:
    for cls in (sdk.Client, sdk.AsyncClient):
        with pytest.raises(sdk.InvalidArgument, match=named):
            cls(NOWHERE, **kwargs)


def test_well_formed_variants_pass_the_checks() -> None:
    """Other iterables of strings, numpy scalars and arrays, tuples in metadata, and metadata nested
    exactly MAX_JSON_DEPTH deep are accepted; the deepest metadata still decodes at the server."""
    deep = _nested(MAX_JSON_DEPTH)
    call = _upsert_call(
        "c",
        np.array(["a", "b"]),  # type: ignore[arg-type]
        ("x", "y"),
        np.ones((2, 3), np.float64),
        [deep, {"n": np.int64(2**53), "t": (1, "two", None, True), "f": np.float32(0.5)}],
    )
    decoded = retrieval_pb2.UpsertRequest.FromString(call.request.SerializeToString())
    assert [d.id for d in decoded.documents] == ["a", "b"]
    assert decoded.documents[1].metadata["n"] == 2**53
    from sdk._arguments import integer, number

    assert integer(np.int32(5), "k") == 5 and number(np.float32(0.25), "x") == 0.25


@pytest.mark.parametrize("cls", [sdk.Client, sdk.AsyncClient], ids=["sync", "async"])
async def test_a_request_over_the_message_limit_is_refused_before_sending_naming_the_limit(cls: type) -> None:
    """gRPC's own refusal ("CLIENT: Sent message larger than max") names no setting; the SDK
    sizes each request first (a 25 MB metadata upsert was the case a user hit)."""
    client = cls(NOWHERE, timeout_s=2, max_message_bytes=10_000, retry=sdk.RetryPolicy(max_attempts=1))
    with pytest.raises(sdk.ResourceExhausted) as caught:
        await _invoke(client, lambda c: c.upsert("c", ids=["a"], texts=["x"], metadata=[{"note": "y" * 20_000}]))
    message = caught.value.message
    assert "Upsert request is" in message and "10,000 bytes" in message and "max_message_bytes" in message
    assert caught.value.request_id is None  # nothing was sent
