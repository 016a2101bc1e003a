"""`Client` and `AsyncClient`: one method per user action, one channel per service, reused."""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from typing import Any, TypeVar

import grpc
import grpc.aio
import numpy as np

from sdk import _nextframe, _retrieval, _sae
from sdk._call import Call
from sdk._contract import API_KEY_ENV, MAX_MESSAGE_BYTES, SERVICE_NAMES, default_address
from sdk._errors import error_from_rpc
from sdk._nextframe import ConstantEstimate, FrameModel
from sdk._proto.facet.v1 import nextframe_pb2_grpc, retrieval_pb2_grpc, sae_pb2_grpc
from sdk._sae_types import ActivatingContext, LatentDecomposition, MetaLatent, SaeComparison, SaeInfo, TokenLatents
from sdk._tensors import tensor_to_numpy
from sdk._types import Collection, Document, Hit, ModelInfo, UpsertResult

R = TypeVar("R")

DEFAULT_TIMEOUT_S = 30.0
_STUBS: dict[str, Any] = {
    "retrieval": retrieval_pb2_grpc.RetrievalStub,
    "sae": sae_pb2_grpc.SaeStub,
    "nextframe": nextframe_pb2_grpc.NextFrameStub,
}


def _service_config() -> str:
    """Retries with exponential backoff on UNAVAILABLE only (a server starting, restarting or draining)."""
    return json.dumps(
        {
            "methodConfig": [
                {
                    "name": [{"service": name} for name in SERVICE_NAMES.values()],
                    "retryPolicy": {
                        "maxAttempts": 5,
                        "initialBackoff": "0.1s",
                        "maxBackoff": "2s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ]
        }
    )


def _channel_options(max_message_bytes: int) -> list[tuple[str, Any]]:
    return [
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.service_config", _service_config()),
        ("grpc.enable_retries", 1),
    ]


class _Base:
    def __init__(
        self,
        addresses: Mapping[str, str | None],
        api_key: str | None,
        timeout_s: float,
        max_message_bytes: int,
    ) -> None:
        self._addresses = {service: address or default_address(service) for service, address in addresses.items()}
        key = api_key if api_key is not None else os.environ.get(API_KEY_ENV, "")
        self._metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {key}"),) if key else ()
        self.timeout_s = timeout_s
        self._options = _channel_options(max_message_bytes)
        self._stubs: dict[str, Any] = {}

    def address(self, service: str) -> str:
        """The `host:port` this client uses for `service`."""
        return self._addresses[service]


class Client(_Base):
    """Blocking client for every Facet service.

    Endpoints come from the arguments, else `FACET_<SERVICE>_ADDR`, else the ports
    `facet up` uses on localhost. The API key comes from `api_key` or `FACET_API_KEY`.

    Example::

        import sdk
        with sdk.Client() as client:
            vectors = client.embed(["a sentence", "another"])   # float32 (2, 384)
            client.create_collection("notes")
            client.upsert("notes", ids=["a"], texts=["Paris is in France."], metadata=[{"lang": "en"}])
            hits = client.search("notes", "Which country is Paris in?", top_k=5)

    Errors raise subclasses of `sdk.FacetError`.
    """

    def __init__(
        self,
        retrieval: str | None = None,
        *,
        sae: str | None = None,
        nextframe: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__({"retrieval": retrieval, "sae": sae, "nextframe": nextframe}, api_key, timeout_s, max_message_bytes)
        self._channels: dict[str, grpc.Channel] = {}

    def _stub(self, service: str) -> Any:
        if service not in self._stubs:
            channel = grpc.insecure_channel(self._addresses[service], options=self._options)
            self._channels[service] = channel
            self._stubs[service] = _STUBS[service](channel)
        return self._stubs[service]

    def _run(self, call: Call[R], timeout_s: float | None) -> R:
        method = getattr(self._stub(call.service), call.method)
        try:
            response = method(call.request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return call.parse(response)

    def close(self) -> None:
        """Close every channel. The client can be used again afterwards (channels reopen)."""
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()
        self._stubs.clear()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    # -- retrieval ---------------------------------------------------------------------------

    def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool = True,
        truncate: bool = True,
        prompt: str = "",
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """Embed texts with the service's embedding model.

        Args:
            texts: the texts (at most the server's `max_texts_per_request`, 256 by default).
            normalize: L2-normalise each embedding (default).
            truncate: cut texts longer than the model's max sequence length (default);
                with False such a text raises InvalidArgument.
            prompt: prepended to every text, e.g. an instruction.
        Returns:
            float32 array [len(texts), dimension].
        Raises:
            InvalidArgument: empty list, too many texts, a text too long with truncate=False.

        >>> client.embed(["a sentence", "another"]).shape
        (2, 384)
        """
        return self._run(_retrieval.embed(texts, normalize, truncate, prompt), timeout_s)

    def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        """The embedding model the retrieval service uses (name, version, dimension, ...)."""
        return self._run(_retrieval.get_model(), timeout_s)

    def create_collection(
        self,
        name: str,
        *,
        metric: str = "cosine",
        index_type: str = "flat",
        dimension: int = 0,
        hnsw_m: int = 0,
        hnsw_ef_search: int = 0,
        timeout_s: float | None = None,
    ) -> Collection:
        """Create a collection.

        Args:
            name: 1-128 characters from A-Z a-z 0-9 _ -.
            metric: "cosine" (default), "dot" or "l2".
            index_type: "flat" (exact, default) or "hnsw" (approximate, for large collections).
            dimension: vector dimension; 0 takes the embedding model's.
        Raises:
            AlreadyExists: a collection of that name exists.

        >>> client.create_collection("notes").dimension
        384
        """
        return self._run(_retrieval.create_collection(name, metric, index_type, dimension, hnsw_m, hnsw_ef_search), timeout_s)

    def list_collections(self, *, timeout_s: float | None = None) -> list[Collection]:
        """Every collection, by name."""
        return self._run(_retrieval.list_collections(), timeout_s)

    def delete_collection(self, name: str, *, timeout_s: float | None = None) -> int:
        """Delete a collection and its documents; return how many documents it held."""
        return self._run(_retrieval.delete_collection(name), timeout_s)

    def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        texts: Sequence[str] | None = None,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> UpsertResult:
        """Insert or replace documents by id; returns once they are durable.

        A document with a vector is stored with it; one without is embedded from its text.

        >>> client.upsert("notes", ids=["a", "b"], texts=["Hello", "Hallo"],
        ...               metadata=[{"lang": "en"}, {"lang": "de"}])
        UpsertResult(upserted=2, created=2)
        """
        return self._run(_retrieval.upsert(collection, ids, texts, vectors, metadata), timeout_s)

    def get(
        self, collection: str, ids: Sequence[str], *, include_vectors: bool = False, timeout_s: float | None = None
    ) -> list[Document]:
        """Documents by id, in the order asked; unknown ids are left out."""
        return self._run(_retrieval.get(collection, ids, include_vectors), timeout_s)

    def delete(self, collection: str, ids: Sequence[str], *, timeout_s: float | None = None) -> int:
        """Delete documents by id; return how many existed."""
        return self._run(_retrieval.delete_documents(collection, ids), timeout_s)

    def search(
        self,
        collection: str,
        query: str | np.ndarray | Sequence[float],
        *,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        prompt: str = "",
        include_vectors: bool = False,
        timeout_s: float | None = None,
    ) -> list[Hit]:
        """Nearest documents to a text (embedded by the service) or a vector.

        Args:
            filter: metadata equality, e.g. {"lang": "en"}: every key must match.
            prompt: prepended to a text query before embedding (an instruction).

        >>> hits = client.search("notes", "greeting", top_k=5, filter={"lang": "en"})
        >>> hits[0].id, hits[0].score, hits[0].text, hits[0].metadata
        """
        return self._run(_retrieval.search(collection, query, top_k, filter, prompt, include_vectors), timeout_s)

    # -- SAE analysis ------------------------------------------------------------------------

    def list_saes(self, *, timeout_s: float | None = None) -> list[SaeInfo]:
        """Every SAE the service holds: id, base model, layer, width, architecture, metrics.

        >>> [(s.id, s.width, round(s.metrics["fvu"], 3)) for s in client.list_saes()]
        """
        return self._run(_sae.list_saes(), timeout_s)

    def get_sae(self, sae: str, *, timeout_s: float | None = None) -> SaeInfo:
        """One SAE by id. Raises NotFound for an unknown id."""
        return self._run(_sae.get_sae(sae), timeout_s)

    def encode_text(self, sae: str, text: str, *, top_k: int = 8, timeout_s: float | None = None) -> list[TokenLatents]:
        """Run `text` (1..4096 characters, at most 512 tokens) through the LM to the SAE's layer;
        per token, its `top_k` (1..64) strongest active latents.

        >>> for token in client.encode_text(sae, "Albert Einstein was born in Ulm."):
        ...     print(token)
        """
        return self._run(_sae.encode_text(sae, text, top_k), timeout_s)

    def encode_activations(
        self, sae: str, activations: np.ndarray, *, top_k: int = 0, timeout_s: float | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Latents of residual-stream rows [n, d_in] (n ≤ 4096): dense float32 [n, width] when
        top_k = 0, else (indices int32 [n, top_k], values float32 [n, top_k]), strongest first."""
        return self._run(_sae.encode_activations(sae, activations, top_k), timeout_s)

    def reconstruct(self, sae: str, activations: np.ndarray, *, timeout_s: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(reconstruction float32 [n, d_in], squared error per row) of rows [n, d_in]."""
        return self._run(_sae.reconstruct(sae, activations), timeout_s)

    def top_activations(self, sae: str, latent: int, *, k: int = 10, timeout_s: float | None = None) -> list[ActivatingContext]:
        """The corpus contexts where `latent` fires most strongly, firing token marked.

        >>> for context in client.top_activations(sae, 1234, k=5):
        ...     print(context)        # activation, then the text with the token in [[ ]]
        """
        return self._run(_sae.top_activations(sae, latent, k), timeout_s)

    def decompose_latent(
        self, sae: str, latent: int, *, top_n: int = 4, members: int = 8, contexts: int = 3, timeout_s: float | None = None
    ) -> LatentDecomposition:
        """A latent's meta-latents (its decomposition by the meta-SAE trained on the SAE's decoder),
        with explanations and the other latents that share each meta-latent.

        Raises FailedPrecondition when no meta-SAE was trained on `sae`.

        >>> print(client.decompose_latent(sae, 1234, top_n=4))
        """
        return self._run(_sae.decompose_latent(sae, latent, top_n, members, contexts), timeout_s)

    def get_meta_latent(
        self, sae: str, meta_latent: int, *, members: int = 8, contexts: int = 3, timeout_s: float | None = None
    ) -> MetaLatent:
        """One meta-latent of `sae`'s meta-SAE: the latents that use it and its explanation."""
        return self._run(_sae.get_meta_latent(sae, meta_latent, members, contexts), timeout_s)

    def compare_saes(self, small: str, large: str, *, threshold: float | None = None, timeout_s: float | None = None) -> SaeComparison:
        """Stitching of two SAEs of one LM and layer: novel vs reconstruction latents of the larger
        one (max decoder cosine below / above `threshold`, default 0.7), ΔMSE of inserting each,
        and the MSE-vs-swaps curve. Raises FailedPrecondition for SAEs of different models or layers.

        >>> print(client.compare_saes(small_id, large_id))
        """
        return self._run(_sae.compare_saes(small, large, threshold), timeout_s)

    # -- next-frame --------------------------------------------------------------------------

    def list_frame_models(self, *, timeout_s: float | None = None) -> list[FrameModel]:
        """The frame models (one per dataset) and what their probes estimate."""
        return self._run(_nextframe.list_frame_models(), timeout_s)

    def simulate(self, dataset: str, *, constant: float, frames: int = 40, seed: int = 0, timeout_s: float | None = None) -> np.ndarray:
        """A simulated video, uint8 [frames, 64, 64].

        >>> clip = client.simulate("pendulum", constant=9.81, frames=40, seed=1)
        """
        return self._run(_nextframe.simulate(dataset, constant, frames, seed), timeout_s)

    def predict_next(self, model: str, frames: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        """The frame after `frames` (uint8 [t, 64, 64], t >= 5; the last 5 are the context): uint8 [64, 64]."""
        return self._run(_nextframe.predict_next(model, frames), timeout_s)

    def rollout(self, model: str, frames: np.ndarray, *, horizon: int, timeout_s: float | None = None) -> Iterator[np.ndarray]:
        """Autoregressive rollout: yields uint8 [64, 64] frames as the server produces them.
        Stop iterating (or `close()` the generator) to cancel the call; the server stops too.

        >>> for frame in client.rollout(model, clip[:5], horizon=30): ...
        """
        stream = self._stub("nextframe").Rollout(
            _nextframe.rollout_request(model, frames, horizon), timeout=timeout_s or self.timeout_s, metadata=self._metadata
        )
        try:
            for message in stream:
                yield tensor_to_numpy(message.frame, "frame")
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            stream.cancel()

    def estimate_constant(self, model: str, frames: np.ndarray, *, timeout_s: float | None = None) -> ConstantEstimate:
        """The probe's estimate of the video's physical constant (5..64 frames), with its units."""
        return self._run(_nextframe.estimate_constant(model, frames), timeout_s)


class AsyncClient(_Base):
    """The same methods as `Client`, awaitable, on `grpc.aio` channels.

    Example::

        async with sdk.AsyncClient() as client:
            vectors = await client.embed(["a sentence"])
    """

    def __init__(
        self,
        retrieval: str | None = None,
        *,
        sae: str | None = None,
        nextframe: str | None = None,
        api_key: str | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        max_message_bytes: int = MAX_MESSAGE_BYTES,
    ) -> None:
        super().__init__({"retrieval": retrieval, "sae": sae, "nextframe": nextframe}, api_key, timeout_s, max_message_bytes)
        self._channels: dict[str, grpc.aio.Channel] = {}

    def _stub(self, service: str) -> Any:
        if service not in self._stubs:
            channel = grpc.aio.insecure_channel(self._addresses[service], options=self._options)
            self._channels[service] = channel
            self._stubs[service] = _STUBS[service](channel)
        return self._stubs[service]

    async def _run(self, call: Call[R], timeout_s: float | None) -> R:
        method = getattr(self._stub(call.service), call.method)
        try:
            response = await method(call.request, timeout=timeout_s or self.timeout_s, metadata=self._metadata)
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        return call.parse(response)

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()
        self._channels.clear()
        self._stubs.clear()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def embed(
        self,
        texts: Sequence[str],
        *,
        normalize: bool = True,
        truncate: bool = True,
        prompt: str = "",
        timeout_s: float | None = None,
    ) -> np.ndarray:
        """See `Client.embed`."""
        return await self._run(_retrieval.embed(texts, normalize, truncate, prompt), timeout_s)

    async def model_info(self, *, timeout_s: float | None = None) -> ModelInfo:
        """See `Client.model_info`."""
        return await self._run(_retrieval.get_model(), timeout_s)

    async def create_collection(
        self,
        name: str,
        *,
        metric: str = "cosine",
        index_type: str = "flat",
        dimension: int = 0,
        hnsw_m: int = 0,
        hnsw_ef_search: int = 0,
        timeout_s: float | None = None,
    ) -> Collection:
        """See `Client.create_collection`."""
        return await self._run(
            _retrieval.create_collection(name, metric, index_type, dimension, hnsw_m, hnsw_ef_search), timeout_s
        )

    async def list_collections(self, *, timeout_s: float | None = None) -> list[Collection]:
        """See `Client.list_collections`."""
        return await self._run(_retrieval.list_collections(), timeout_s)

    async def delete_collection(self, name: str, *, timeout_s: float | None = None) -> int:
        """See `Client.delete_collection`."""
        return await self._run(_retrieval.delete_collection(name), timeout_s)

    async def upsert(
        self,
        collection: str,
        ids: Sequence[str],
        texts: Sequence[str] | None = None,
        vectors: np.ndarray | Sequence[Sequence[float]] | None = None,
        metadata: Sequence[Mapping[str, Any] | None] | None = None,
        *,
        timeout_s: float | None = None,
    ) -> UpsertResult:
        """See `Client.upsert`."""
        return await self._run(_retrieval.upsert(collection, ids, texts, vectors, metadata), timeout_s)

    async def get(
        self, collection: str, ids: Sequence[str], *, include_vectors: bool = False, timeout_s: float | None = None
    ) -> list[Document]:
        """See `Client.get`."""
        return await self._run(_retrieval.get(collection, ids, include_vectors), timeout_s)

    async def delete(self, collection: str, ids: Sequence[str], *, timeout_s: float | None = None) -> int:
        """See `Client.delete`."""
        return await self._run(_retrieval.delete_documents(collection, ids), timeout_s)

    async def search(
        self,
        collection: str,
        query: str | np.ndarray | Sequence[float],
        *,
        top_k: int = 10,
        filter: Mapping[str, Any] | None = None,
        prompt: str = "",
        include_vectors: bool = False,
        timeout_s: float | None = None,
    ) -> list[Hit]:
        """See `Client.search`."""
        return await self._run(_retrieval.search(collection, query, top_k, filter, prompt, include_vectors), timeout_s)

    async def list_saes(self, *, timeout_s: float | None = None) -> list[SaeInfo]:
        """See `Client.list_saes`."""
        return await self._run(_sae.list_saes(), timeout_s)

    async def get_sae(self, sae: str, *, timeout_s: float | None = None) -> SaeInfo:
        """See `Client.get_sae`."""
        return await self._run(_sae.get_sae(sae), timeout_s)

    async def encode_text(self, sae: str, text: str, *, top_k: int = 8, timeout_s: float | None = None) -> list[TokenLatents]:
        """See `Client.encode_text`."""
        return await self._run(_sae.encode_text(sae, text, top_k), timeout_s)

    async def encode_activations(
        self, sae: str, activations: np.ndarray, *, top_k: int = 0, timeout_s: float | None = None
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """See `Client.encode_activations`."""
        return await self._run(_sae.encode_activations(sae, activations, top_k), timeout_s)

    async def reconstruct(
        self, sae: str, activations: np.ndarray, *, timeout_s: float | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """See `Client.reconstruct`."""
        return await self._run(_sae.reconstruct(sae, activations), timeout_s)

    async def top_activations(
        self, sae: str, latent: int, *, k: int = 10, timeout_s: float | None = None
    ) -> list[ActivatingContext]:
        """See `Client.top_activations`."""
        return await self._run(_sae.top_activations(sae, latent, k), timeout_s)

    async def decompose_latent(
        self, sae: str, latent: int, *, top_n: int = 4, members: int = 8, contexts: int = 3, timeout_s: float | None = None
    ) -> LatentDecomposition:
        """See `Client.decompose_latent`."""
        return await self._run(_sae.decompose_latent(sae, latent, top_n, members, contexts), timeout_s)

    async def get_meta_latent(
        self, sae: str, meta_latent: int, *, members: int = 8, contexts: int = 3, timeout_s: float | None = None
    ) -> MetaLatent:
        """See `Client.get_meta_latent`."""
        return await self._run(_sae.get_meta_latent(sae, meta_latent, members, contexts), timeout_s)

    async def compare_saes(
        self, small: str, large: str, *, threshold: float | None = None, timeout_s: float | None = None
    ) -> SaeComparison:
        """See `Client.compare_saes`."""
        return await self._run(_sae.compare_saes(small, large, threshold), timeout_s)

    async def list_frame_models(self, *, timeout_s: float | None = None) -> list[FrameModel]:
        """See `Client.list_frame_models`."""
        return await self._run(_nextframe.list_frame_models(), timeout_s)

    async def simulate(
        self, dataset: str, *, constant: float, frames: int = 40, seed: int = 0, timeout_s: float | None = None
    ) -> np.ndarray:
        """See `Client.simulate`."""
        return await self._run(_nextframe.simulate(dataset, constant, frames, seed), timeout_s)

    async def predict_next(self, model: str, frames: np.ndarray, *, timeout_s: float | None = None) -> np.ndarray:
        """See `Client.predict_next`."""
        return await self._run(_nextframe.predict_next(model, frames), timeout_s)

    async def rollout(self, model: str, frames: np.ndarray, *, horizon: int, timeout_s: float | None = None) -> AsyncIterator[np.ndarray]:
        """See `Client.rollout`."""
        call = self._stub("nextframe").Rollout(
            _nextframe.rollout_request(model, frames, horizon), timeout=timeout_s or self.timeout_s, metadata=self._metadata
        )
        try:
            async for message in call:
                yield tensor_to_numpy(message.frame, "frame")
        except grpc.RpcError as exc:
            raise error_from_rpc(exc) from None
        finally:
            call.cancel()

    async def estimate_constant(self, model: str, frames: np.ndarray, *, timeout_s: float | None = None) -> ConstantEstimate:
        """See `Client.estimate_constant`."""
        return await self._run(_nextframe.estimate_constant(model, frames), timeout_s)
