from sdk._proto.facet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListSaesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListSaesResponse(_message.Message):
    __slots__ = ("saes",)
    SAES_FIELD_NUMBER: _ClassVar[int]
    saes: _containers.RepeatedCompositeFieldContainer[SaeInfo]
    def __init__(self, saes: _Optional[_Iterable[_Union[SaeInfo, _Mapping]]] = ...) -> None: ...

class GetSaeRequest(_message.Message):
    __slots__ = ("sae",)
    SAE_FIELD_NUMBER: _ClassVar[int]
    sae: str
    def __init__(self, sae: _Optional[str] = ...) -> None: ...

class SaeMetrics(_message.Message):
    __slots__ = ("mse", "fvu", "l0", "dead_fraction", "ce_clean", "ce_with_sae", "ce_zero_ablation", "ce_increase", "ce_loss_recovered", "held_out_tokens")
    MSE_FIELD_NUMBER: _ClassVar[int]
    FVU_FIELD_NUMBER: _ClassVar[int]
    L0_FIELD_NUMBER: _ClassVar[int]
    DEAD_FRACTION_FIELD_NUMBER: _ClassVar[int]
    CE_CLEAN_FIELD_NUMBER: _ClassVar[int]
    CE_WITH_SAE_FIELD_NUMBER: _ClassVar[int]
    CE_ZERO_ABLATION_FIELD_NUMBER: _ClassVar[int]
    CE_INCREASE_FIELD_NUMBER: _ClassVar[int]
    CE_LOSS_RECOVERED_FIELD_NUMBER: _ClassVar[int]
    HELD_OUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    mse: float
    fvu: float
    l0: float
    dead_fraction: float
    ce_clean: float
    ce_with_sae: float
    ce_zero_ablation: float
    ce_increase: float
    ce_loss_recovered: float
    held_out_tokens: int
    def __init__(self, mse: _Optional[float] = ..., fvu: _Optional[float] = ..., l0: _Optional[float] = ..., dead_fraction: _Optional[float] = ..., ce_clean: _Optional[float] = ..., ce_with_sae: _Optional[float] = ..., ce_zero_ablation: _Optional[float] = ..., ce_increase: _Optional[float] = ..., ce_loss_recovered: _Optional[float] = ..., held_out_tokens: _Optional[int] = ...) -> None: ...

class SaeInfo(_message.Message):
    __slots__ = ("id", "base_model", "layer", "hook", "d_in", "width", "architecture", "k", "family", "corpus", "training_tokens", "metrics", "meta_width", "meta_variance_explained", "meta_mean_active", "top_activations_stored", "model_version")
    ID_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    LAYER_FIELD_NUMBER: _ClassVar[int]
    HOOK_FIELD_NUMBER: _ClassVar[int]
    D_IN_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FAMILY_FIELD_NUMBER: _ClassVar[int]
    CORPUS_FIELD_NUMBER: _ClassVar[int]
    TRAINING_TOKENS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    META_WIDTH_FIELD_NUMBER: _ClassVar[int]
    META_VARIANCE_EXPLAINED_FIELD_NUMBER: _ClassVar[int]
    META_MEAN_ACTIVE_FIELD_NUMBER: _ClassVar[int]
    TOP_ACTIVATIONS_STORED_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    base_model: str
    layer: int
    hook: str
    d_in: int
    width: int
    architecture: str
    k: int
    family: str
    corpus: str
    training_tokens: int
    metrics: SaeMetrics
    meta_width: int
    meta_variance_explained: float
    meta_mean_active: float
    top_activations_stored: int
    model_version: int
    def __init__(self, id: _Optional[str] = ..., base_model: _Optional[str] = ..., layer: _Optional[int] = ..., hook: _Optional[str] = ..., d_in: _Optional[int] = ..., width: _Optional[int] = ..., architecture: _Optional[str] = ..., k: _Optional[int] = ..., family: _Optional[str] = ..., corpus: _Optional[str] = ..., training_tokens: _Optional[int] = ..., metrics: _Optional[_Union[SaeMetrics, _Mapping]] = ..., meta_width: _Optional[int] = ..., meta_variance_explained: _Optional[float] = ..., meta_mean_active: _Optional[float] = ..., top_activations_stored: _Optional[int] = ..., model_version: _Optional[int] = ...) -> None: ...

class EncodeTextRequest(_message.Message):
    __slots__ = ("sae", "text", "top_k", "allow_special_tokens")
    SAE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    ALLOW_SPECIAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    sae: str
    text: str
    top_k: int
    allow_special_tokens: bool
    def __init__(self, sae: _Optional[str] = ..., text: _Optional[str] = ..., top_k: _Optional[int] = ..., allow_special_tokens: bool = ...) -> None: ...

class TokenLatents(_message.Message):
    __slots__ = ("position", "token_id", "token", "latents", "activations", "excluded", "start", "end", "partial", "special")
    POSITION_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    EXCLUDED_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_FIELD_NUMBER: _ClassVar[int]
    position: int
    token_id: int
    token: str
    latents: _containers.RepeatedScalarFieldContainer[int]
    activations: _containers.RepeatedScalarFieldContainer[float]
    excluded: bool
    start: int
    end: int
    partial: bool
    special: bool
    def __init__(self, position: _Optional[int] = ..., token_id: _Optional[int] = ..., token: _Optional[str] = ..., latents: _Optional[_Iterable[int]] = ..., activations: _Optional[_Iterable[float]] = ..., excluded: bool = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., partial: bool = ..., special: bool = ...) -> None: ...

class EncodeTextResponse(_message.Message):
    __slots__ = ("sae", "tokens")
    SAE_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    sae: str
    tokens: _containers.RepeatedCompositeFieldContainer[TokenLatents]
    def __init__(self, sae: _Optional[str] = ..., tokens: _Optional[_Iterable[_Union[TokenLatents, _Mapping]]] = ...) -> None: ...

class EncodeActivationsRequest(_message.Message):
    __slots__ = ("sae", "activations", "top_k")
    SAE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    sae: str
    activations: _common_pb2.Tensor
    top_k: int
    def __init__(self, sae: _Optional[str] = ..., activations: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., top_k: _Optional[int] = ...) -> None: ...

class EncodeActivationsResponse(_message.Message):
    __slots__ = ("latents", "indices", "values")
    LATENTS_FIELD_NUMBER: _ClassVar[int]
    INDICES_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    latents: _common_pb2.Tensor
    indices: _common_pb2.Tensor
    values: _common_pb2.Tensor
    def __init__(self, latents: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., indices: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., values: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ReconstructRequest(_message.Message):
    __slots__ = ("sae", "activations")
    SAE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    sae: str
    activations: _common_pb2.Tensor
    def __init__(self, sae: _Optional[str] = ..., activations: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class ReconstructResponse(_message.Message):
    __slots__ = ("reconstruction", "squared_error", "fvu")
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    SQUARED_ERROR_FIELD_NUMBER: _ClassVar[int]
    FVU_FIELD_NUMBER: _ClassVar[int]
    reconstruction: _common_pb2.Tensor
    squared_error: _containers.RepeatedScalarFieldContainer[float]
    fvu: float
    def __init__(self, reconstruction: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., squared_error: _Optional[_Iterable[float]] = ..., fvu: _Optional[float] = ...) -> None: ...

class TopActivationsRequest(_message.Message):
    __slots__ = ("sae", "latent", "k")
    SAE_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    sae: str
    latent: int
    k: int
    def __init__(self, sae: _Optional[str] = ..., latent: _Optional[int] = ..., k: _Optional[int] = ...) -> None: ...

class ContextToken(_message.Message):
    __slots__ = ("token_id", "token", "start", "end", "partial", "special")
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    START_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_FIELD_NUMBER: _ClassVar[int]
    token_id: int
    token: str
    start: int
    end: int
    partial: bool
    special: bool
    def __init__(self, token_id: _Optional[int] = ..., token: _Optional[str] = ..., start: _Optional[int] = ..., end: _Optional[int] = ..., partial: bool = ..., special: bool = ...) -> None: ...

class ActivatingContext(_message.Message):
    __slots__ = ("highlight", "activation", "text", "tokens")
    HIGHLIGHT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    highlight: int
    activation: float
    text: str
    tokens: _containers.RepeatedCompositeFieldContainer[ContextToken]
    def __init__(self, highlight: _Optional[int] = ..., activation: _Optional[float] = ..., text: _Optional[str] = ..., tokens: _Optional[_Iterable[_Union[ContextToken, _Mapping]]] = ...) -> None: ...

class TopActivationsResponse(_message.Message):
    __slots__ = ("contexts", "firing_rate")
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    FIRING_RATE_FIELD_NUMBER: _ClassVar[int]
    contexts: _containers.RepeatedCompositeFieldContainer[ActivatingContext]
    firing_rate: float
    def __init__(self, contexts: _Optional[_Iterable[_Union[ActivatingContext, _Mapping]]] = ..., firing_rate: _Optional[float] = ...) -> None: ...

class TokenScore(_message.Message):
    __slots__ = ("token", "score", "partial", "special")
    TOKEN_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PARTIAL_FIELD_NUMBER: _ClassVar[int]
    SPECIAL_FIELD_NUMBER: _ClassVar[int]
    token: str
    score: float
    partial: bool
    special: bool
    def __init__(self, token: _Optional[str] = ..., score: _Optional[float] = ..., partial: bool = ..., special: bool = ...) -> None: ...

class Explanation(_message.Message):
    __slots__ = ("top_contexts", "top_output_tokens")
    TOP_CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    TOP_OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    top_contexts: _containers.RepeatedCompositeFieldContainer[ActivatingContext]
    top_output_tokens: _containers.RepeatedCompositeFieldContainer[TokenScore]
    def __init__(self, top_contexts: _Optional[_Iterable[_Union[ActivatingContext, _Mapping]]] = ..., top_output_tokens: _Optional[_Iterable[_Union[TokenScore, _Mapping]]] = ...) -> None: ...

class DecomposeLatentRequest(_message.Message):
    __slots__ = ("sae", "latent", "top_n", "members", "contexts")
    SAE_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    sae: str
    latent: int
    top_n: int
    members: int
    contexts: int
    def __init__(self, sae: _Optional[str] = ..., latent: _Optional[int] = ..., top_n: _Optional[int] = ..., members: _Optional[int] = ..., contexts: _Optional[int] = ...) -> None: ...

class MetaLatent(_message.Message):
    __slots__ = ("index", "member_latents", "member_activations", "member_count", "explanation")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    MEMBER_LATENTS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_COUNT_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    index: int
    member_latents: _containers.RepeatedScalarFieldContainer[int]
    member_activations: _containers.RepeatedScalarFieldContainer[float]
    member_count: int
    explanation: Explanation
    def __init__(self, index: _Optional[int] = ..., member_latents: _Optional[_Iterable[int]] = ..., member_activations: _Optional[_Iterable[float]] = ..., member_count: _Optional[int] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ...) -> None: ...

class MetaLatentActivation(_message.Message):
    __slots__ = ("meta_latent", "activation")
    META_LATENT_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    meta_latent: MetaLatent
    activation: float
    def __init__(self, meta_latent: _Optional[_Union[MetaLatent, _Mapping]] = ..., activation: _Optional[float] = ...) -> None: ...

class LatentDecomposition(_message.Message):
    __slots__ = ("sae", "latent", "explanation", "meta_latents", "reconstruction_cosine")
    SAE_FIELD_NUMBER: _ClassVar[int]
    LATENT_FIELD_NUMBER: _ClassVar[int]
    EXPLANATION_FIELD_NUMBER: _ClassVar[int]
    META_LATENTS_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_COSINE_FIELD_NUMBER: _ClassVar[int]
    sae: str
    latent: int
    explanation: Explanation
    meta_latents: _containers.RepeatedCompositeFieldContainer[MetaLatentActivation]
    reconstruction_cosine: float
    def __init__(self, sae: _Optional[str] = ..., latent: _Optional[int] = ..., explanation: _Optional[_Union[Explanation, _Mapping]] = ..., meta_latents: _Optional[_Iterable[_Union[MetaLatentActivation, _Mapping]]] = ..., reconstruction_cosine: _Optional[float] = ...) -> None: ...

class GetMetaLatentRequest(_message.Message):
    __slots__ = ("sae", "meta_latent", "members", "contexts")
    SAE_FIELD_NUMBER: _ClassVar[int]
    META_LATENT_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    CONTEXTS_FIELD_NUMBER: _ClassVar[int]
    sae: str
    meta_latent: int
    members: int
    contexts: int
    def __init__(self, sae: _Optional[str] = ..., meta_latent: _Optional[int] = ..., members: _Optional[int] = ..., contexts: _Optional[int] = ...) -> None: ...

class CompareSaesRequest(_message.Message):
    __slots__ = ("small", "large", "threshold")
    SMALL_FIELD_NUMBER: _ClassVar[int]
    LARGE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    small: str
    large: str
    threshold: float
    def __init__(self, small: _Optional[str] = ..., large: _Optional[str] = ..., threshold: _Optional[float] = ...) -> None: ...

class NovelShare(_message.Message):
    __slots__ = ("threshold", "share")
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SHARE_FIELD_NUMBER: _ClassVar[int]
    threshold: float
    share: float
    def __init__(self, threshold: _Optional[float] = ..., share: _Optional[float] = ...) -> None: ...

class SaeComparison(_message.Message):
    __slots__ = ("small", "large", "threshold", "novel_latents", "reconstruction_latents", "novel_shares", "small_mse", "large_mse", "swap_mse", "swap_threshold", "max_cosine", "nearest", "delta_mse", "latents_that_help", "evaluation_tokens")
    SMALL_FIELD_NUMBER: _ClassVar[int]
    LARGE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    NOVEL_LATENTS_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_LATENTS_FIELD_NUMBER: _ClassVar[int]
    NOVEL_SHARES_FIELD_NUMBER: _ClassVar[int]
    SMALL_MSE_FIELD_NUMBER: _ClassVar[int]
    LARGE_MSE_FIELD_NUMBER: _ClassVar[int]
    SWAP_MSE_FIELD_NUMBER: _ClassVar[int]
    SWAP_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    MAX_COSINE_FIELD_NUMBER: _ClassVar[int]
    NEAREST_FIELD_NUMBER: _ClassVar[int]
    DELTA_MSE_FIELD_NUMBER: _ClassVar[int]
    LATENTS_THAT_HELP_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_TOKENS_FIELD_NUMBER: _ClassVar[int]
    small: str
    large: str
    threshold: float
    novel_latents: int
    reconstruction_latents: int
    novel_shares: _containers.RepeatedCompositeFieldContainer[NovelShare]
    small_mse: float
    large_mse: float
    swap_mse: _containers.RepeatedScalarFieldContainer[float]
    swap_threshold: float
    max_cosine: _common_pb2.Tensor
    nearest: _common_pb2.Tensor
    delta_mse: _common_pb2.Tensor
    latents_that_help: float
    evaluation_tokens: int
    def __init__(self, small: _Optional[str] = ..., large: _Optional[str] = ..., threshold: _Optional[float] = ..., novel_latents: _Optional[int] = ..., reconstruction_latents: _Optional[int] = ..., novel_shares: _Optional[_Iterable[_Union[NovelShare, _Mapping]]] = ..., small_mse: _Optional[float] = ..., large_mse: _Optional[float] = ..., swap_mse: _Optional[_Iterable[float]] = ..., swap_threshold: _Optional[float] = ..., max_cosine: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., nearest: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., delta_mse: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., latents_that_help: _Optional[float] = ..., evaluation_tokens: _Optional[int] = ...) -> None: ...
