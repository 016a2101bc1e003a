from google.protobuf import struct_pb2 as _struct_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Image(_message.Message):
    __slots__ = ("png", "raw")
    PNG_FIELD_NUMBER: _ClassVar[int]
    RAW_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    raw: RawImage
    def __init__(self, png: _Optional[bytes] = ..., raw: _Optional[_Union[RawImage, _Mapping]] = ...) -> None: ...

class RawImage(_message.Message):
    __slots__ = ("height", "width", "channels", "data")
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    height: int
    width: int
    channels: int
    data: bytes
    def __init__(self, height: _Optional[int] = ..., width: _Optional[int] = ..., channels: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class Region(_message.Message):
    __slots__ = ("top", "left", "bottom", "right")
    TOP_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    BOTTOM_FIELD_NUMBER: _ClassVar[int]
    RIGHT_FIELD_NUMBER: _ClassVar[int]
    top: float
    left: float
    bottom: float
    right: float
    def __init__(self, top: _Optional[float] = ..., left: _Optional[float] = ..., bottom: _Optional[float] = ..., right: _Optional[float] = ...) -> None: ...

class AttributeInfo(_message.Message):
    __slots__ = ("name", "meaning", "low", "high", "min_value", "max_value", "region")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MEANING_FIELD_NUMBER: _ClassVar[int]
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    MIN_VALUE_FIELD_NUMBER: _ClassVar[int]
    MAX_VALUE_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    name: str
    meaning: str
    low: str
    high: str
    min_value: float
    max_value: float
    region: Region
    def __init__(self, name: _Optional[str] = ..., meaning: _Optional[str] = ..., low: _Optional[str] = ..., high: _Optional[str] = ..., min_value: _Optional[float] = ..., max_value: _Optional[float] = ..., region: _Optional[_Union[Region, _Mapping]] = ...) -> None: ...

class ListAttributesRequest(_message.Message):
    __slots__ = ("model",)
    MODEL_FIELD_NUMBER: _ClassVar[int]
    model: str
    def __init__(self, model: _Optional[str] = ...) -> None: ...

class ListAttributesResponse(_message.Message):
    __slots__ = ("attributes", "image_size", "factors", "model")
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    attributes: _containers.RepeatedCompositeFieldContainer[AttributeInfo]
    image_size: int
    factors: _containers.RepeatedScalarFieldContainer[str]
    model: str
    def __init__(self, attributes: _Optional[_Iterable[_Union[AttributeInfo, _Mapping]]] = ..., image_size: _Optional[int] = ..., factors: _Optional[_Iterable[str]] = ..., model: _Optional[str] = ...) -> None: ...

class FaceModel(_message.Message):
    __slots__ = ("name", "version", "default", "image_size", "latent_dim", "factors", "companions", "metrics", "architecture", "training", "source")
    class CompanionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    LATENT_DIM_FIELD_NUMBER: _ClassVar[int]
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    COMPANIONS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    ARCHITECTURE_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: int
    default: bool
    image_size: int
    latent_dim: int
    factors: _containers.RepeatedScalarFieldContainer[str]
    companions: _containers.ScalarMap[str, str]
    metrics: _struct_pb2.Struct
    architecture: _struct_pb2.Struct
    training: _struct_pb2.Struct
    source: str
    def __init__(self, name: _Optional[str] = ..., version: _Optional[int] = ..., default: bool = ..., image_size: _Optional[int] = ..., latent_dim: _Optional[int] = ..., factors: _Optional[_Iterable[str]] = ..., companions: _Optional[_Mapping[str, str]] = ..., metrics: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., architecture: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., training: _Optional[_Union[_struct_pb2.Struct, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class ListFaceModelsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListFaceModelsResponse(_message.Message):
    __slots__ = ("models",)
    MODELS_FIELD_NUMBER: _ClassVar[int]
    models: _containers.RepeatedCompositeFieldContainer[FaceModel]
    def __init__(self, models: _Optional[_Iterable[_Union[FaceModel, _Mapping]]] = ...) -> None: ...

class GenerateRequest(_message.Message):
    __slots__ = ("factors", "seed", "model")
    class FactorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    factors: _containers.ScalarMap[str, float]
    seed: int
    model: str
    def __init__(self, factors: _Optional[_Mapping[str, float]] = ..., seed: _Optional[int] = ..., model: _Optional[str] = ...) -> None: ...

class GenerateResponse(_message.Message):
    __slots__ = ("image", "factors", "attributes", "model")
    class FactorsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FACTORS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    image: Image
    factors: _containers.ScalarMap[str, float]
    attributes: _containers.ScalarMap[str, float]
    model: str
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., factors: _Optional[_Mapping[str, float]] = ..., attributes: _Optional[_Mapping[str, float]] = ..., model: _Optional[str] = ...) -> None: ...

class EncodeRequest(_message.Message):
    __slots__ = ("image", "model")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    image: Image
    model: str
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class EncodeResponse(_message.Message):
    __slots__ = ("latent", "attributes", "reconstruction", "reconstruction_error", "latent_layout", "model")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class LatentLayoutEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: LatentSlice
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[LatentSlice, _Mapping]] = ...) -> None: ...
    LATENT_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    LATENT_LAYOUT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    latent: _containers.RepeatedScalarFieldContainer[float]
    attributes: _containers.ScalarMap[str, float]
    reconstruction: Image
    reconstruction_error: float
    latent_layout: _containers.MessageMap[str, LatentSlice]
    model: str
    def __init__(self, latent: _Optional[_Iterable[float]] = ..., attributes: _Optional[_Mapping[str, float]] = ..., reconstruction: _Optional[_Union[Image, _Mapping]] = ..., reconstruction_error: _Optional[float] = ..., latent_layout: _Optional[_Mapping[str, LatentSlice]] = ..., model: _Optional[str] = ...) -> None: ...

class LatentSlice(_message.Message):
    __slots__ = ("start", "stop")
    START_FIELD_NUMBER: _ClassVar[int]
    STOP_FIELD_NUMBER: _ClassVar[int]
    start: int
    stop: int
    def __init__(self, start: _Optional[int] = ..., stop: _Optional[int] = ...) -> None: ...

class EditTarget(_message.Message):
    __slots__ = ("value", "reference")
    VALUE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_FIELD_NUMBER: _ClassVar[int]
    value: float
    reference: Image
    def __init__(self, value: _Optional[float] = ..., reference: _Optional[_Union[Image, _Mapping]] = ...) -> None: ...

class EditRequest(_message.Message):
    __slots__ = ("image", "edits", "model")
    class EditsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: EditTarget
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[EditTarget, _Mapping]] = ...) -> None: ...
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    image: Image
    edits: _containers.MessageMap[str, EditTarget]
    model: str
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., edits: _Optional[_Mapping[str, EditTarget]] = ..., model: _Optional[str] = ...) -> None: ...

class EditReport(_message.Message):
    __slots__ = ("target", "achieved", "drift", "identity_similarity", "pixel_change_outside", "pixel_change_inside", "before", "reconstruction_error")
    class TargetEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class AchievedEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class DriftEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class BeforeEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    TARGET_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_FIELD_NUMBER: _ClassVar[int]
    DRIFT_FIELD_NUMBER: _ClassVar[int]
    IDENTITY_SIMILARITY_FIELD_NUMBER: _ClassVar[int]
    PIXEL_CHANGE_OUTSIDE_FIELD_NUMBER: _ClassVar[int]
    PIXEL_CHANGE_INSIDE_FIELD_NUMBER: _ClassVar[int]
    BEFORE_FIELD_NUMBER: _ClassVar[int]
    RECONSTRUCTION_ERROR_FIELD_NUMBER: _ClassVar[int]
    target: _containers.ScalarMap[str, float]
    achieved: _containers.ScalarMap[str, float]
    drift: _containers.ScalarMap[str, float]
    identity_similarity: float
    pixel_change_outside: float
    pixel_change_inside: float
    before: _containers.ScalarMap[str, float]
    reconstruction_error: float
    def __init__(self, target: _Optional[_Mapping[str, float]] = ..., achieved: _Optional[_Mapping[str, float]] = ..., drift: _Optional[_Mapping[str, float]] = ..., identity_similarity: _Optional[float] = ..., pixel_change_outside: _Optional[float] = ..., pixel_change_inside: _Optional[float] = ..., before: _Optional[_Mapping[str, float]] = ..., reconstruction_error: _Optional[float] = ...) -> None: ...

class EditResponse(_message.Message):
    __slots__ = ("image", "report", "model")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    REPORT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    image: Image
    report: EditReport
    model: str
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., report: _Optional[_Union[EditReport, _Mapping]] = ..., model: _Optional[str] = ...) -> None: ...

class InterpolateRequest(_message.Message):
    __slots__ = ("image", "attribute", "values", "model")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    image: Image
    attribute: str
    values: _containers.RepeatedScalarFieldContainer[float]
    model: str
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., attribute: _Optional[str] = ..., values: _Optional[_Iterable[float]] = ..., model: _Optional[str] = ...) -> None: ...

class InterpolateResponse(_message.Message):
    __slots__ = ("images", "achieved", "model")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    ACHIEVED_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    achieved: _containers.RepeatedScalarFieldContainer[float]
    model: str
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ..., achieved: _Optional[_Iterable[float]] = ..., model: _Optional[str] = ...) -> None: ...
