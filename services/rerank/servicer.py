"""The Rerank gRPC servicer: converts protobuf messages to scorer calls and back, nothing more."""

from __future__ import annotations

from typing import Any

import grpc
from google.protobuf import struct_pb2

from sdk._proto.facet.v1 import rerank_pb2, rerank_pb2_grpc
from services.backends import create_backend
from services.rerank.catalog import Prop
from services.rerank.config import RerankConfig
from services.rerank.scorer import Reranker, Scorer
from services.runtime.config import FacetConfig
from services.runtime.server import FacetService


def _struct(value: Any) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    if isinstance(value, dict):
        message.update(value)
    return message


def _list(value: Any) -> struct_pb2.ListValue:
    message = struct_pb2.ListValue()
    if isinstance(value, list):
        message.extend(value)
    return message


def _reranker_message(reranker: Reranker, default: bool) -> rerank_pb2.Reranker:
    meta = reranker.metadata
    return rerank_pb2.Reranker(
        name=meta.name,
        version=meta.version,
        default=default,
        max_seq_length=reranker.max_seq_length,
        temperature=reranker.temperature,
        base_model=str(reranker.property(Prop.BASE_MODEL, "")),
        source=meta.source,
        training_data=_list(reranker.property(Prop.TRAINING_DATA, [])),
        training=_struct(reranker.property(Prop.TRAINING, {})),
        metrics=_struct(reranker.property(Prop.METRICS, {})),
        calibration=_struct(reranker.property(Prop.CALIBRATION, {})),
    )


class RerankService(rerank_pb2_grpc.RerankServicer, FacetService):
    name = "rerank"

    def __init__(self, config: FacetConfig) -> None:
        self._backend = create_backend(config)
        self._scorer = Scorer(self._backend, config.section(RerankConfig), config.model_repository)

    def register(self, server: grpc.aio.Server) -> None:
        rerank_pb2_grpc.add_RerankServicer_to_server(self, server)

    async def start(self) -> None:
        await self._scorer.load()

    async def healthy(self) -> bool:
        return await self._backend.serving()

    async def stop(self) -> None:
        await self._backend.close()

    async def Rerank(self, request: rerank_pb2.RerankRequest, context: grpc.aio.ServicerContext) -> rerank_pb2.RerankResponse:
        documents = list(request.documents)
        ranking = await self._scorer.rerank(
            request.query,
            documents,
            model=request.model,
            top_n=request.top_n if request.HasField("top_n") else None,
            truncate=request.truncate,
            min_probability=request.min_probability if request.HasField("min_probability") else None,
        )
        scores = ranking.logit.astype(float) if request.raw_scores else ranking.probability
        results = [
            rerank_pb2.RerankResult(
                index=int(i),
                score=float(s),
                probability=float(p),
                document=documents[i] if request.return_documents else None,
                windowed=bool(w),
                truncated=bool(t),
            )
            for i, s, p, w, t in zip(ranking.index, scores, ranking.probability, ranking.windowed, ranking.truncated, strict=True)
        ]
        return rerank_pb2.RerankResponse(
            results=results, model=ranking.model, none_relevant=ranking.none_relevant, query_truncated=ranking.query_truncated
        )

    async def ListRerankers(
        self, request: rerank_pb2.ListRerankersRequest, context: grpc.aio.ServicerContext
    ) -> rerank_pb2.ListRerankersResponse:
        scorer = self._scorer
        return rerank_pb2.ListRerankersResponse(
            rerankers=[_reranker_message(r, r.name == scorer.default) for r in scorer.rerankers.values()]
        )

    async def GetReranker(self, request: rerank_pb2.GetRerankerRequest, context: grpc.aio.ServicerContext) -> rerank_pb2.Reranker:
        reranker = self._scorer.reranker(request.name)
        return _reranker_message(reranker, reranker.name == self._scorer.default)
