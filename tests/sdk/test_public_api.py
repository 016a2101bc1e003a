"""The SDK's public surface and its install footprint."""

from __future__ import annotations

import subprocess
import sys

import grpc
import pytest

import sdk


def test_public_names_are_pinned() -> None:
    assert sorted(sdk.__all__) == sorted(
        [
            "DEFAULT_TIMEOUT_S",
            "ActivatingContext",
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
            "PermissionDenied",
            "ResourceExhausted",
            "SaeComparison",
            "SaeInfo",
            "TokenLatents",
            "Unauthenticated",
            "Unavailable",
            "UpsertResult",
            "save_gif",
        ]
    )
    for name in sdk.__all__:
        assert hasattr(sdk, name)


def test_client_and_async_client_offer_the_same_methods() -> None:
    public = {n for n in dir(sdk.Client) if not n.startswith("_")}
    assert public == {n for n in dir(sdk.AsyncClient) if not n.startswith("_")}
    assert {"embed", "create_collection", "upsert", "search", "get", "delete"} <= public


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
