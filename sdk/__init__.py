"""Facet's Python SDK: one client for every Facet model service.

    import sdk
    client = sdk.Client()
    print(client.decompose_latent(sae=client.list_saes()[-1].id, latent=1234))
    vectors = client.embed(["a sentence", "another"])
    ranked = client.rerank("Where is the Eiffel Tower?", ["It is in Paris.", "Bananas are yellow."])
    paraphrases = client.paraphrase("How do I learn Python quickly?", n=3, strategy="diverse_beam")

Needs only grpcio, protobuf and numpy.
"""

from sdk._client import AsyncClient, Client
from sdk._errors import (
    AlreadyExists,
    Cancelled,
    DeadlineExceeded,
    FacetError,
    FailedPrecondition,
    InternalError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ProtocolError,
    ResourceExhausted,
    Unauthenticated,
    Unavailable,
)
from sdk._images import save_grid
from sdk._nextframe import ConstantEstimate, FrameModel, save_gif
from sdk._paraphrase import Paraphrase, ParaphraseResult, ParaphraserInfo, ParaphraseToken
from sdk._phenotype import AttributeInfo, Attributes, EditReport, EncodedFace, Face, FaceModelInfo, Interpolation
from sdk._rerank import RankedDocument, RerankerInfo, RerankResult
from sdk._retrieval import Collection, Document, Hit, ModelInfo, SearchResult, UpsertResult
from sdk._retry import RetryPolicy
from sdk._sae import (
    ActivatingContext,
    Explanation,
    LatentDecomposition,
    MetaLatent,
    SaeComparison,
    SaeInfo,
    TokenLatents,
)
from sdk._transport import DEFAULT_TIMEOUT_S

__all__ = [
    "DEFAULT_TIMEOUT_S",
    "ActivatingContext",
    "AttributeInfo",
    "Attributes",
    "EditReport",
    "EncodedFace",
    "Face",
    "Interpolation",
    "FaceModelInfo",
    "save_grid",
    "Explanation",
    "LatentDecomposition",
    "MetaLatent",
    "SaeComparison",
    "SaeInfo",
    "TokenLatents",
    "AlreadyExists",
    "AsyncClient",
    "Cancelled",
    "Client",
    "Collection",
    "ConstantEstimate",
    "DeadlineExceeded",
    "Document",
    "FacetError",
    "FailedPrecondition",
    "FrameModel",
    "Hit",
    "InternalError",
    "InvalidArgument",
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
    "SearchResult",
    "Unauthenticated",
    "Unavailable",
    "UpsertResult",
    "save_gif",
]
