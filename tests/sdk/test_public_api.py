"""The SDK's public surface and its install footprint."""

from __future__ import annotations

import dataclasses
import inspect
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

import sdk
from sdk import _transport
from sdk._contract import CAPABILITIES


def test_public_names_are_pinned() -> None:
    assert sorted(sdk.__all__) == sorted(
        [
            "DEFAULT_TIMEOUT_S",
            "ActivatingContext",
            "AttributeInfo",
            "Attributes",
            "EditReport",
            "EncodedFace",
            "Face",
            "FaceModelInfo",
            "Interpolation",
            "save_grid",
            "AlreadyExists",
            "AsyncClient",
            "Cancelled",
            "Client",
            "Collection",
            "ConstantEstimate",
            "DeadlineExceeded",
            "Document",
            "Explanation",
            "FacetError",
            "FailedPrecondition",
            "FrameModel",
            "Hit",
            "InternalError",
            "InvalidArgument",
            "LatentDecomposition",
            "MetaLatent",
            "ModelInfo",
            "NotFound",
            "Paraphrase",
            "ParaphraseResult",
            "ParaphraseToken",
            "ParaphraserInfo",
            "PermissionDenied",
            "ProtocolError",
            "RankedDocument",
            "RerankResult",
            "RerankerInfo",
            "ResourceExhausted",
            "RetryPolicy",
            "SaeComparison",
            "SaeInfo",
            "SearchResult",
            "TokenLatents",
            "Unauthenticated",
            "Unavailable",
            "UpsertResult",
            "save_gif",
        ]
    )
    for name in sdk.__all__:
        assert hasattr(sdk, name)


PUBLIC_METHODS = {
    "address", "close",
    "embed", "model_info", "create_collection", "list_collections", "delete_collection", "upsert", "get", "delete", "search",
    "list_saes", "get_sae", "encode_text", "encode_activations", "reconstruct", "top_activations", "decompose_latent",
    "get_meta_latent", "compare_saes",
    "list_frame_models", "simulate", "predict_next", "rollout", "estimate_constant",
    "rerank", "list_rerankers", "get_reranker",
    "paraphrase", "paraphrase_stream", "list_paraphrasers",
    "list_attributes", "list_face_models", "generate_face", "encode_face", "edit_phenotype", "interpolate_phenotype",
}  # fmt: skip


def _public_methods(cls: type) -> dict[str, Callable[..., object]]:
    return {n: getattr(cls, n) for n in dir(cls) if not n.startswith("_") and callable(getattr(cls, n))}


def test_client_and_async_client_offer_the_same_methods() -> None:
    assert set(_public_methods(sdk.Client)) == set(_public_methods(sdk.AsyncClient)) == PUBLIC_METHODS


def test_every_method_has_an_async_twin_with_the_same_signature() -> None:
    for name, method in _public_methods(sdk.Client).items():
        twin = getattr(sdk.AsyncClient, name)
        if twin is method:  # no I/O (address): one method serves both
            continue
        assert inspect.iscoroutinefunction(twin) or inspect.isasyncgenfunction(twin), name
        sync, async_ = inspect.signature(method), inspect.signature(twin)
        assert async_.parameters == sync.parameters, name
        # an async generator's annotation is AsyncIterator[...] where the sync one is Iterator[...]
        assert async_.return_annotation == re.sub(r"^Iterator\[", "AsyncIterator[", sync.return_annotation), name
    assert inspect.isasyncgenfunction(sdk.AsyncClient.rollout) and inspect.isgeneratorfunction(sdk.Client.rollout)


def _sections(doc: str) -> dict[str, str]:
    """Google-style sections of a docstring: {"Args": text, "Returns": text, ...}."""
    parts = re.split(r"^\s*(Args|Returns|Yields|Raises|Example|Attributes):\s*$", doc, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


@pytest.mark.parametrize("cls", [sdk.Client, sdk.AsyncClient], ids=["Client", "AsyncClient"])
def test_every_public_method_documents_its_arguments_result_and_errors(cls: type) -> None:
    for name, method in _public_methods(cls).items():
        doc = inspect.getdoc(method)
        assert doc, f"{cls.__name__}.{name} has no docstring"
        if name == "close":
            continue
        sections = _sections(doc)
        parameters = [p for p in inspect.signature(method).parameters if p != "self"]
        for parameter in parameters:
            assert re.search(rf"^\s*{parameter}:", sections.get("Args", ""), re.MULTILINE), (
                f"{name}: Args lacks {parameter}"
            )
        assert "Returns" in sections or "Yields" in sections, f"{name}: no Returns section"
        assert "Raises" in sections, f"{name}: no Raises section"
        if "timeout_s" in parameters:  # an RPC: its errors are FacetErrors
            assert "FacetError" in sections["Raises"], name


def test_every_result_type_documents_its_fields() -> None:
    exported = [getattr(sdk, n) for n in sdk.__all__]
    results = [t for t in exported if isinstance(t, type) and dataclasses.is_dataclass(t)]
    assert {t.__name__ for t in results} >= {
        "Hit",
        "Document",
        "SaeInfo",
        "SaeComparison",
        "FrameModel",
        "ConstantEstimate",
    }
    for result in results:
        attributes = _sections(inspect.getdoc(result) or "").get("Attributes", "")
        for field in dataclasses.fields(result):
            assert re.search(rf"^\s*{field.name}:", attributes, re.MULTILINE), (
                f"{result.__name__}.{field.name} is undocumented"
            )
    assert "Raises:" in (sdk.save_gif.__doc__ or "") and "Returns:" in (sdk.save_gif.__doc__ or "")


def test_clients_are_one_mixin_per_capability_on_one_transport() -> None:
    for client, transport in ((sdk.Client, _transport.SyncTransport), (sdk.AsyncClient, _transport.AsyncTransport)):
        mixins = [base for base in client.__bases__ if base is not transport]
        assert client.__bases__[-1] is transport
        served = [vars(m)["_service"].capability for m in mixins]
        assert sorted(served) == sorted(c.name for c in CAPABILITIES), client.__name__
        assert all(issubclass(m, transport) for m in mixins)


def test_the_transport_names_no_capability() -> None:
    source = Path(_transport.__file__).read_text()
    for c in CAPABILITIES:
        assert not re.search(rf"\b{c.name}\b", source, re.IGNORECASE), c.name
        assert c.service_name not in source


def test_one_address_keyword_per_capability(monkeypatch: pytest.MonkeyPatch) -> None:
    for c in CAPABILITIES:
        monkeypatch.delenv(c.address_env, raising=False)
    addresses = {c.name: f"{c.name}.example:{c.default_port}" for c in CAPABILITIES}
    for cls in (sdk.Client, sdk.AsyncClient):
        client = cls(**addresses)  # type: ignore[arg-type]
        assert {name: client.address(name) for name in addresses} == addresses
        assert cls().address("sae") == "localhost:50051"
        assert cls("h:1").address("retrieval") == cls(retrieval="h:1").address("retrieval") == "h:1"
        with pytest.raises(TypeError, match="nonexistent.*sae, nextframe, retrieval, rerank"):
            cls(nonexistent="h:2")
        with pytest.raises(TypeError, match="twice"):
            cls("h:1", retrieval="h:2")
        with pytest.raises(KeyError, match="unknown capability 'nonexistent'"):
            cls().address("nonexistent")


def test_every_error_is_a_facet_error_with_its_status_code() -> None:
    pairs = {
        sdk.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
        sdk.NotFound: grpc.StatusCode.NOT_FOUND,
        sdk.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
        sdk.Unavailable: grpc.StatusCode.UNAVAILABLE,
        sdk.DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
        sdk.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    }
    for cls, code in pairs.items():
        assert issubclass(cls, sdk.FacetError) and cls.code == code


def test_sdk_imports_without_server_or_training_dependencies() -> None:
    code = (
        "import sys, sdk; heavy = {'onnxruntime', 'faiss', 'torch', 'transformers', 'tokenizers', 'services', 'ray'}; "
        "print(sorted(heavy & set(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


def test_endpoint_and_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FACET_RETRIEVAL_ADDR", "db.example:9000")
    monkeypatch.setenv("FACET_API_KEY", "k1")
    client = sdk.Client()
    assert client.address("retrieval") == "db.example:9000"
    assert client._metadata == (("authorization", "Bearer k1"),)
    assert sdk.Client("other:1", api_key="").address("retrieval") == "other:1"
    monkeypatch.delenv("FACET_RETRIEVAL_ADDR")
    assert sdk.Client().address("retrieval") == "localhost:50053"


def test_unreachable_service_is_unavailable_after_retries() -> None:
    with sdk.Client("127.0.0.1:1", timeout_s=3) as client, pytest.raises(sdk.Unavailable):
        client.list_collections()


def test_arguments_are_checked_before_sending() -> None:
    client = sdk.Client("127.0.0.1:1")
    with pytest.raises(sdk.InvalidArgument, match="list of strings"):
        client.embed("one string")  # type: ignore[arg-type]
    with pytest.raises(sdk.InvalidArgument, match="metric"):
        client.create_collection("c", metric="manhattan")
    with pytest.raises(sdk.InvalidArgument, match="texts has 1 entries but ids has 2"):
        client.upsert("c", ids=["a", "b"], texts=["x"])
    with pytest.raises(sdk.InvalidArgument, match="JSON-like"):
        client.upsert("c", ids=["a"], texts=["x"], metadata=[{"when": object()}])
