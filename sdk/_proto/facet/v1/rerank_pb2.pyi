from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RerankRequest(_message.Message):
    __slots__ = ("query", "documents", "top_n", "return_documents", "raw_scores", "truncate", "min_probability", "model")
    QUERY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    TOP_N_FIELD_NUMBER: _ClassVar[int]
    RETURN_DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    RAW_SCORES_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_FIELD_NUMBER: _ClassVar[int]
    MIN_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    query: str
    documents: _containers.RepeatedScalarFieldContainer[str]
    top_n: int
    return_documents: bool
    raw_scores: bool
    truncate: bool
    min_probability: float
    model: str
    def __init__(self, query: _Optional[str] = ..., documents: _Optional[_Iterable[str]] = ..., top_n: _Optional[int] = ..., return_documents: bool = ..., raw_scores: bool = ..., truncate: bool = ..., min_probability: _Optional[float] = ..., model: _Optional[str] = ...) -> None: ...

class RerankResult(_message.Message):
    __slots__ = ("index", "score", "probability", "document", "windowed", "truncated")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    DOCUMENT_FIELD_NUMBER: _ClassVar[int]
    WINDOWED_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    index: int
    score: float
    probability: float
    document: str
    windowed: bool
    truncated: bool
    def __init__(self, index: _Optional[int] = ..., score: _Optional[float] = ..., probability: _Optional[float] = ..., document: _Optional[str] = ..., windowed: bool = ..., truncated: bool = ...) -> None: ...

class RerankResponse(_message.Message):
    __slots__ = ("results", "model", "none_relevant", "query_truncated")
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    NONE_RELEVANT_FIELD_NUMBER: _ClassVar[int]
    QUERY_TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[RerankResult]
    model: str
    none_relevant: bool
    query_truncated: bool
    def __init__(self, results: _Optional[_Iterable[_Union[RerankResult, _Mapping]]] = ..., model: _Optional[str] = ..., none_relevant: bool = ..., query_truncated: bool = ...) -> None: ...

class ListRerankersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListRerankersResponse(_message.Message):
    __slots__ = ("rerankers",)
    RERANKERS_FIELD_NUMBER: _ClassVar[int]
    rerankers: _containers.RepeatedCompositeFieldContainer[Reranker]
    def __init__(self, rerankers: _Optional[_Iterable[_Union[Reranker, _Mapping]]] = ...) -> None: ...

class GetRerankerRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class Reranker(_message.Message):
    __slots__ = ("name", "version", "default", "max_seq_length", "temperature", "base_model", "source", "training_data", "training", "metrics", "calibration")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQ_LENGTH_FIELD_NUMBER: _ClassVar[int]
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    BASE_MODEL_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_DATA_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    CALIBRATION_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    default: bool
    max_seq_length: int
    temperature: float
    base_model: str
    source: str
    training_data: _struct_pb2.ListValue
    training: _struct_pb2.Struct
    metrics: _struct_pb2.Struct
    calibration: _struct_pb2.Struct
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., default: bool = ..., max_seq_length: _Optional[int] = ..., temperature: _Optional[float] = ..., base_model: _Optional[str] = ..., source: _Optional[str] = ..., training_data: _Optional[_Union[_struct_pb2.ListValue, _Mapping]] = ..., training: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., calibration: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ...) -> None: ...
