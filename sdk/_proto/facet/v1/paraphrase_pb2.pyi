from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ParaphraseRequest(_message.Message):
    __slots__ = ("text", "n", "strategy", "beam_width", "beam_groups", "diversity_penalty", "temperature", "top_p", "top_k", "max_pairwise_bleu", "order_by", "max_length", "truncate", "seed", "model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    N_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BEAM_WIDTH_FIELD_NUMBER: _ClassVar[int]
    BEAM_GROUPS_FIELD_NUMBER: _ClassVar[int]
    DIVERSITY_PENALTY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_PAIRWISE_BLEU_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    n: int
    strategy: str
    beam_width: int
    beam_groups: int
    diversity_penalty: float
    temperature: float
    top_p: float
    top_k: int
    max_pairwise_bleu: float
    order_by: str
    max_length: int
    truncate: bool
    seed: int
    model: str
    def __init__(self, text: _Optional[str] = ..., n: _Optional[int] = ..., strategy: _Optional[str] = ..., beam_width: _Optional[int] = ..., beam_groups: _Optional[int] = ..., diversity_penalty: _Optional[float] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., max_pairwise_bleu: _Optional[float] = ..., order_by: _Optional[str] = ..., max_length: _Optional[int] = ..., truncate: bool = ..., seed: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class ParaphraseCandidate(_message.Message):
    __slots__ = ("text", "logprob", "similarity", "source_bleu", "tokens")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    SOURCE_BLEU_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    text: str
    logprob: float
    similarity: float
    source_bleu: float
    tokens: int
    def __init__(self, text: _Optional[str] = ..., logprob: _Optional[float] = ..., similarity: _Optional[float] = ..., source_bleu: _Optional[float] = ..., tokens: _Optional[int] = ...) -> None: ...

class ParaphraseResponse(_message.Message):
    __slots__ = ("paraphrases", "model", "truncated", "considered", "dropped_same_as_source", "dropped_duplicate", "dropped_too_similar")
    PARAPHRASES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    CONSIDERED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_SAME_AS_SOURCE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DROPPED_TOO_SIMILAR_FIELD_NUMBER: _ClassVar[int]
    paraphrases: _containers.RepeatedCompositeFieldContainer[ParaphraseCandidate]
    model: str
    truncated: bool
    considered: int
    dropped_same_as_source: int
    dropped_duplicate: int
    dropped_too_similar: int
    def __init__(self, paraphrases: _Optional[_Iterable[_Union[ParaphraseCandidate, _Mapping]]] = ..., model: _Optional[str] = ..., truncated: bool = ..., considered: _Optional[int] = ..., dropped_same_as_source: _Optional[int] = ..., dropped_duplicate: _Optional[int] = ..., dropped_too_similar: _Optional[int] = ...) -> None: ...

class ParaphraseStreamRequest(_message.Message):
    __slots__ = ("text", "strategy", "temperature", "top_p", "top_k", "max_length", "truncate", "seed", "model")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    TOP_K_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    text: str
    strategy: str
    temperature: float
    top_p: float
    top_k: int
    max_length: int
    truncate: bool
    seed: int
    model: str
    def __init__(self, text: _Optional[str] = ..., strategy: _Optional[str] = ..., temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., top_k: _Optional[int] = ..., max_length: _Optional[int] = ..., truncate: bool = ..., seed: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class ParaphraseToken(_message.Message):
    __slots__ = ("index", "token_id", "text", "logprob", "model", "truncated")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    LOGPROB_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    index: int
    token_id: int
    text: str
    logprob: float
    model: str
    truncated: bool
    def __init__(self, index: _Optional[int] = ..., token_id: _Optional[int] = ..., text: _Optional[str] = ..., logprob: _Optional[float] = ..., model: _Optional[str] = ..., truncated: bool = ...) -> None: ...

class ListParaphrasersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListParaphrasersResponse(_message.Message):
    __slots__ = ("paraphrasers",)
    PARAPHRASERS_FIELD_NUMBER: _ClassVar[int]
    paraphrasers: _containers.RepeatedCompositeFieldContainer[Paraphraser]
    def __init__(self, paraphrasers: _Optional[_Iterable[_Union[Paraphraser, _Mapping]]] = ...) -> None: ...

class Paraphraser(_message.Message):
    __slots__ = ("name", "version", "default", "setting", "training_data", "metrics", "max_length", "architecture", "training", "encoder", "source")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    SETTING_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DATA_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    ENCODER_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    default: bool
    setting: str
    training_data: _struct_pb2.Struct
    metrics: _struct_pb2.Struct
    max_length: int
    architecture: _struct_pb2.Struct
    training: _struct_pb2.Struct
    encoder: str
    source: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., default: bool = ..., setting: _Optional[str] = ..., training_data: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., max_length: _Optional[int] = ..., architecture: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., training: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., encoder: _Optional[str] = ..., source: _Optional[str] = ...) -> None: ...
