from sdk._proto.facet.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListFrameModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class FrameModel(_message.Message):
    __slots__ = ("id", "dataset", "constant", "units", "constant_low", "constant_high", "metrics", "version")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_LOW_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_HIGH_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    id: str
    dataset: str
    constant: str
    units: str
    constant_low: float
    constant_high: float
    metrics: _containers.ScalarMap[str, float]
    version: int
    def __init__(self, id: _Optional[str] = ..., dataset: _Optional[str] = ..., constant: _Optional[str] = ..., units: _Optional[str] = ..., constant_low: _Optional[float] = ..., constant_high: _Optional[float] = ..., metrics: _Optional[_Mapping[str, float]] = ..., version: _Optional[int] = ...) -> None: ...

class DatasetInfo(_message.Message):
    __slots__ = ("name", "constant", "units", "low", "high")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    name: str
    constant: str
    units: str
    low: float
    high: float
    def __init__(self, name: _Optional[str] = ..., constant: _Optional[str] = ..., units: _Optional[str] = ..., low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class ListFrameModelsResponse(_message.Message):
    __slots__ = ("models", "datasets")
    MODELS_FIELD_NUMBER: _ClassVar[int]
    DATASETS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[FrameModel]
    datasets: _containers.RepeatedCompositeFieldContainer[DatasetInfo]
    def __init__(self, models: _Optional[_Iterable[_Union[FrameModel, _Mapping]]] = ..., datasets: _Optional[_Iterable[_Union[DatasetInfo, _Mapping]]] = ...) -> None: ...

class SimulateRequest(_message.Message):
    __slots__ = ("dataset", "constant", "frames", "seed")
    DATASET_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    dataset: str
    constant: float
    frames: int
    seed: int
    def __init__(self, dataset: _Optional[str] = ..., constant: _Optional[float] = ..., frames: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class SimulateResponse(_message.Message):
    __slots__ = ("frames", "constant")
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    frames: _common_pb2.Tensor
    constant: float
    def __init__(self, frames: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., constant: _Optional[float] = ...) -> None: ...

class PredictNextRequest(_message.Message):
    __slots__ = ("model", "frames")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    frames: _common_pb2.Tensor
    def __init__(self, model: _Optional[str] = ..., frames: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class PredictNextResponse(_message.Message):
    __slots__ = ("frame",)
    FRAME_FIELD_NUMBER: _ClassVar[int]
    frame: _common_pb2.Tensor
    def __init__(self, frame: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class RolloutRequest(_message.Message):
    __slots__ = ("model", "frames", "horizon")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    HORIZON_FIELD_NUMBER: _ClassVar[int]
    model: str
    frames: _common_pb2.Tensor
    horizon: int
    def __init__(self, model: _Optional[str] = ..., frames: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ..., horizon: _Optional[int] = ...) -> None: ...

class RolloutFrame(_message.Message):
    __slots__ = ("step", "frame")
    STEP_FIELD_NUMBER: _ClassVar[int]
    FRAME_FIELD_NUMBER: _ClassVar[int]
    step: int
    frame: _common_pb2.Tensor
    def __init__(self, step: _Optional[int] = ..., frame: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class EstimateConstantRequest(_message.Message):
    __slots__ = ("model", "frames")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FRAMES_FIELD_NUMBER: _ClassVar[int]
    model: str
    frames: _common_pb2.Tensor
    def __init__(self, model: _Optional[str] = ..., frames: _Optional[_Union[_common_pb2.Tensor, _Mapping]] = ...) -> None: ...

class EstimateConstantResponse(_message.Message):
    __slots__ = ("value", "constant", "units", "trained_low", "trained_high", "in_trained_range", "ood_score", "ood_threshold", "out_of_distribution")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    CONSTANT_FIELD_NUMBER: _ClassVar[int]
    UNITS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_LOW_FIELD_NUMBER: _ClassVar[int]
    TRAINED_HIGH_FIELD_NUMBER: _ClassVar[int]
    IN_TRAINED_RANGE_FIELD_NUMBER: _ClassVar[int]
    OOD_SCORE_FIELD_NUMBER: _ClassVar[int]
    OOD_THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    OUT_OF_DISTRIBUTION_FIELD_NUMBER: _ClassVar[int]
    value: float
    constant: str
    units: str
    trained_low: float
    trained_high: float
    in_trained_range: bool
    ood_score: float
    ood_threshold: float
    out_of_distribution: bool
    def __init__(self, value: _Optional[float] = ..., constant: _Optional[str] = ..., units: _Optional[str] = ..., trained_low: _Optional[float] = ..., trained_high: _Optional[float] = ..., in_trained_range: bool = ..., ood_score: _Optional[float] = ..., ood_threshold: _Optional[float] = ..., out_of_distribution: bool = ...) -> None: ...
