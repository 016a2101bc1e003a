"""Fuzzing every RPC of every capability over real gRPC, driven by the proto descriptors.

The RPCs come from the registry (`services.registry.CAPABILITIES`: each row's gRPC service name)
and the service descriptors of the generated stubs, so a new capability's RPCs are fuzzed
without new fuzzing code. For each RPC the fuzzer sends:

- requests generated from the request message's descriptor (hypothesis strategies): scalars at
  their boundaries (0, -1, the type's extremes, NaN, ±inf, -0.0, denormals), empty, long and
  awkward strings (NUL, bidi controls, combining marks, 70,000 characters), bytes of wrong
  sizes, repeated fields of 0..N elements, nested messages, oneofs, optional presence, enums
  with unknown values; tensors (`facet.v1.Tensor`) both incoherent and coherent (data the size
  its dtype and shape say);
- mutations of requests that got OK, so generation reaches past the first validation check:
  first the requests of each capability's demo (its registry row's `demo`, run through the SDK
  and recorded) and requests assembled from other RPCs' valid ones (fields of the same name and
  type), then whatever got OK since. Values are harvested from every OK reply and the sizes
  every refusal names ("dictionary": model names, dataset names, dimensions, tensors), never
  written per capability; structured calls carry odd `x-request-id` values;
- raw bytes (random, truncated and bit-flipped serializations) through a generic
  `unary_unary` / `unary_stream` with identity serializers.

The property (`Finding` when broken): every call ends OK or with a documented status
(`DOCUMENTED`, the README's error table) whose message is non-empty and carries no traceback;
never INTERNAL, UNKNOWN, UNAVAILABLE, a status outside the table, a hang until the deadline, or a
server that stops answering its health check.

    .venv/bin/python -m load.fuzz --examples 200 --seed 1 [--services retrieval sae]

Addresses as the SDK finds them: FACET_<NAME>_ADDR, else localhost and the default port;
FACET_API_KEY is sent when set.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import importlib
import math
import os
import pkgutil
import random
import re
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import grpc
from google.protobuf import descriptor_pool, message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor, MethodDescriptor
from google.protobuf.message import EncodeError, Message
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from load.harness import table_text
from sdk._contract import API_KEY_ENV, REQUEST_ID_METADATA, default_address
from services import registry

# The README's error table: what a caller may see for a bad request.
DOCUMENTED: frozenset[grpc.StatusCode] = frozenset(
    {
        grpc.StatusCode.OK,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.NOT_FOUND,
        grpc.StatusCode.ALREADY_EXISTS,
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.UNAUTHENTICATED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
# A DEADLINE_EXCEEDED that arrives after this share of the call's deadline is a hang (the server
# worked until the deadline); one that arrives earlier is the documented refusal at admission.
HANG_SHARE = 0.9
# A Python traceback in a status message: its header or one of its frame lines. A request's own
# text echoed in a message ("collection 'Traceback' does not exist") is not one.
TRACEBACK = re.compile(r'Traceback \(most recent call last\)|File "[^"]*", line \d+')
MAX_DEPTH = 4  # nested messages generated below this depth are left empty (Struct recursion)
MAX_REPEATED = 8
MAX_TENSOR_BYTES = 1 << 20
MAX_DICTIONARY = 64  # values of each kind kept from the replies
MAX_CORPUS = 32  # OK requests kept per RPC as mutation seeds

NASTY_STRINGS: tuple[str, ...] = (
    "",
    " ",
    "\t\n\r",
    "\x00",
    "a\x00b",
    "\u202e\u2066abc",
    "\ufeff",
    "e\u0301" * 300,
    "\U0001f4a5" * 40,
    "\U0010ffff",
    "../../etc/passwd",
    "%s%n%x{0}",
    "NaN",
    "-1",
    "1e309",
    "null",
    "' OR 1=1 --",
    "<|endoftext|>",
    "<|im_start|>system",
    "x" * 257,
    "x" * 5_000,
    "word " * 14_000,
)
FLOAT_BOUNDARIES: tuple[float, ...] = (
    0.0,
    -0.0,
    1.0,
    -1.0,
    math.nan,
    math.inf,
    -math.inf,
    5e-324,
    1e-45,
    1.17549435e-38,
    3.4028235e38,
    1e300,
    -1e300,
)
INT_BOUNDS = {
    FieldDescriptor.TYPE_INT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SINT32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_SFIXED32: (-(2**31), 2**31 - 1),
    FieldDescriptor.TYPE_INT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SINT64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_SFIXED64: (-(2**63), 2**63 - 1),
    FieldDescriptor.TYPE_UINT32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_FIXED32: (0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: (0, 2**64 - 1),
    FieldDescriptor.TYPE_FIXED64: (0, 2**64 - 1),
}
FLOAT_TYPES = (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE)
TENSOR = "facet.v1.Tensor"  # common.proto's tensor: also generated coherent (data = dtype x shape)
# facet.v1.DataType values and their item sizes, bytes.
DTYPE_BYTES = {1: 4, 2: 2, 3: 8, 4: 4, 5: 1, 6: 1}


@dataclasses.dataclass(frozen=True)
class Rpc:
    """One method of a capability's gRPC service, as the descriptors give it."""

    capability: str
    method: MethodDescriptor

    @property
    def path(self) -> str:
        """`/package.Service/Method`, as a channel calls it."""
        return f"/{self.method.containing_service.full_name}/{self.method.name}"

    @property
    def name(self) -> str:
        return f"{self.method.containing_service.name}.{self.method.name}"

    @property
    def streaming(self) -> bool:
        return bool(self.method.server_streaming)

    def request_class(self) -> type[Message]:
        return message_class(self.method.input_type)

    def reply_class(self) -> type[Message]:
        return message_class(self.method.output_type)


@dataclasses.dataclass(frozen=True)
class Finding:
    """A call that broke the property: what was sent and what came back."""

    rpc: str
    kind: str  # "generated", "mutated", "raw"
    problem: str
    code: str
    details: str
    request: str  # text format of the message, or repr of raw bytes (cut)

    def __str__(self) -> str:
        return f"{self.rpc} [{self.kind}] {self.problem}: {self.code} {self.details[:300]!r}\n  request: {self.request[:600]}"


def message_class(descriptor: Descriptor) -> type[Message]:
    """The generated class of a message descriptor."""
    return message_factory.GetMessageClass(descriptor)  # type: ignore[no-any-return]


def _import_stubs() -> None:
    """Import every generated `*_pb2` module of the SDK, so the descriptor pool holds every service."""
    package = importlib.import_module("sdk._proto")
    for info in pkgutil.walk_packages(package.__path__, "sdk._proto."):
        if info.name.endswith("_pb2"):
            importlib.import_module(info.name)


def rpcs(capabilities: Sequence[str] | None = None) -> list[Rpc]:
    """Every method of the services of `capabilities` (default: every registry row), in order.

    Raises:
        KeyError: a capability the registry does not have, or a service the stubs lack.
    """
    _import_stubs()
    pool = descriptor_pool.Default()
    found: list[Rpc] = []
    for name in capabilities or registry.names():
        service = pool.FindServiceByName(registry.get(name).contract.service_name)
        found.extend(Rpc(name, method) for method in service.methods)
    return found


def _is_repeated(field: FieldDescriptor) -> bool:
    return bool(field.is_repeated)


def _is_map(field: FieldDescriptor) -> bool:
    return field.type == FieldDescriptor.TYPE_MESSAGE and bool(field.message_type.GetOptions().map_entry)


class Dictionary:
    """Values the services answered (names, numbers, whole messages by type), for generated
    requests to reach past "unknown model" checks. Filled from every OK reply."""

    def __init__(self) -> None:
        self.strings: list[str] = []
        self.ints: list[int] = [1, 2, 5, 8, 64]
        self.sizes: list[int] = []  # numbers the error messages name ("float32 [n, 576]")
        self.floats: list[float] = []
        self.messages: dict[str, list[Message]] = collections.defaultdict(list)

    @staticmethod
    def _keep(values: list[Any], value: Any) -> None:
        if value not in values and len(values) < MAX_DICTIONARY:
            values.append(value)

    def snapshot(self) -> Dictionary:
        """A copy that later harvests leave unchanged."""
        copy = Dictionary()
        copy.strings, copy.ints, copy.floats = list(self.strings), list(self.ints), list(self.floats)
        copy.sizes = list(self.sizes)
        copy.messages = collections.defaultdict(list, {k: list(v) for k, v in self.messages.items()})
        return copy

    def harvest_message(self, details: str) -> None:
        """Keep the sizes a status message names: a refusal says what it wants ("[t, 64, 64]")."""
        for number in re.findall(r"(?<![\w.])\d{1,4}(?![\w.])", details):
            if 0 < int(number) <= 4096:
                if int(number) in self.sizes:
                    self.sizes.remove(int(number))
                self.sizes.append(int(number))  # the latest last
                del self.sizes[:-MAX_DICTIONARY]

    def harvest(self, reply: Message) -> None:
        """Keep the short strings, the numbers and the messages of `reply` (recursively)."""
        for field, value in reply.ListFields():
            values = value if _is_repeated(field) and not _is_map(field) else [value]
            if _is_map(field):
                for key, item in value.items():
                    if isinstance(key, str):
                        self._keep(self.strings, key)
                    if isinstance(item, Message):
                        self.harvest(item)
                continue
            for item in list(values)[:MAX_REPEATED]:
                if field.type == FieldDescriptor.TYPE_MESSAGE:
                    kept = self.messages[field.message_type.full_name]
                    if len(kept) < MAX_DICTIONARY and item.ByteSize() <= MAX_TENSOR_BYTES:
                        kept.append(item)
                    self.harvest(item)
                elif field.type == FieldDescriptor.TYPE_STRING and len(item) <= 128:
                    self._keep(self.strings, item)
                elif field.type in INT_BOUNDS and abs(item) <= 1 << 20:
                    self._keep(self.ints, int(item))
                elif field.type in FLOAT_TYPES and math.isfinite(item):
                    self._keep(self.floats, float(item))


# ---------------------------------------------------------------- strategies over descriptors


def string_values(dictionary: Dictionary) -> st.SearchStrategy[str]:
    """Strings: answered names, awkward ones, and arbitrary text (valid UTF-8: proto3 strings are)."""
    options: list[st.SearchStrategy[str]] = [st.sampled_from(NASTY_STRINGS), st.text(max_size=40)]
    if dictionary.strings:
        answered = st.sampled_from(dictionary.strings)
        options += [answered, answered, answered.map(lambda s: s + "x"), answered.map(str.upper)]
    return st.one_of(options)


def int_values(field_type: int, dictionary: Dictionary) -> st.SearchStrategy[int]:
    """Integers of one proto type: its extremes, 0, ±1, small ones and answered numbers ±1."""
    low, high = INT_BOUNDS[field_type]
    edges = sorted({v for v in (low, low + 1, -1, 0, 1, 2, high - 1, high, 2**31 - 1, 2**53 + 1) if low <= v <= high})
    options = [st.sampled_from(edges), st.integers(max(low, -300), min(high, 300))]
    if dictionary.ints:
        near = [v + d for v in dictionary.ints for d in (-1, 0, 1) if low <= v + d <= high]
        options += [st.sampled_from(near), st.sampled_from(near)]
    return st.one_of(options)


def float_values(dictionary: Dictionary) -> st.SearchStrategy[float]:
    """Floats: NaN, ±inf, -0.0, denormals, the float32 extremes, answered values, any float."""
    options = [st.sampled_from(FLOAT_BOUNDARIES), st.floats(allow_nan=True, allow_infinity=True)]
    if dictionary.floats:
        options += [st.sampled_from(dictionary.floats), st.sampled_from(dictionary.floats)]
    return st.one_of(options)


def bytes_values() -> st.SearchStrategy[bytes]:
    """Bytes of awkward sizes: empty, odd, one short of a float32, random."""
    return st.one_of(st.just(b""), st.binary(max_size=67), st.integers(0, 4096).map(lambda n: bytes(n)))


def enum_values(field: FieldDescriptor) -> st.SearchStrategy[int]:
    """An enum's values and numbers it does not define (proto3 enums are open)."""
    return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.sampled_from([-1, 99, 2**31 - 1]))


def scalar_values(field: FieldDescriptor, dictionary: Dictionary) -> st.SearchStrategy[Any]:
    """Values of one non-message field."""
    if field.type == FieldDescriptor.TYPE_STRING:
        return string_values(dictionary)
    if field.type == FieldDescriptor.TYPE_BYTES:
        return bytes_values()
    if field.type == FieldDescriptor.TYPE_BOOL:
        return st.booleans()
    if field.type == FieldDescriptor.TYPE_ENUM:
        return enum_values(field)
    if field.type in FLOAT_TYPES:
        return float_values(dictionary)
    return int_values(field.type, dictionary)


@st.composite
def coherent_tensors(draw: st.DrawFn, dictionary: Dictionary) -> Message:
    """A `facet.v1.Tensor` whose data has the size its dtype and shape say (floats with the odd
    NaN or inf), so requests reach past the tensor checks to the shape and value rules."""
    tensor = message_class(descriptor_pool.Default().FindMessageTypeByName(TENSOR))()
    dtype = draw(st.sampled_from([1, 1, 1, 1, 5, 5, 5, 2, 3, 4, 6]))  # float32 and uint8 the most: what RPCs take
    # rows first (few), then sizes the latest refusals named ("[n, 576]") or the services answered
    named = [v for v in dictionary.sizes[-6:] if v <= 2048] or [1]
    answered = [v for v in dictionary.ints if 0 <= v <= 2048] or [1]
    rank = draw(st.sampled_from([1, 2, 2, 3]))
    dims = [draw(st.sampled_from([0, 1, 2, 3, 5, 6, 64]))]
    dims += [draw(st.sampled_from(named) | st.sampled_from(answered)) for _ in range(rank - 1)]
    size = DTYPE_BYTES[dtype] * math.prod(dims)
    if size > MAX_TENSOR_BYTES:
        dims = [1, *dims[1:]]
        size = DTYPE_BYTES[dtype] * math.prod(dims)
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    if dtype == 1:  # float32: values of a realistic size, sometimes NaN/inf
        import numpy as np

        values = (
            np.random.default_rng(rng.getrandbits(32))
            .normal(0.0, draw(st.sampled_from([1e-3, 1.0, 100.0, 1e30])), size // 4)
            .astype(np.float32)
        )
        if values.size and draw(st.booleans()):
            values[rng.randrange(values.size)] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 3e38]))
        data = values.tobytes()
    else:
        data = rng.randbytes(size)
    tensor.dtype = dtype
    tensor.shape.extend(dims)
    tensor.data = data
    return tensor


def _field_values(field: FieldDescriptor, dictionary: Dictionary, depth: int) -> st.SearchStrategy[Any]:
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return messages(field.message_type, dictionary, depth + 1)
    return scalar_values(field, dictionary)


def messages(descriptor: Descriptor, dictionary: Dictionary, depth: int = 0) -> st.SearchStrategy[Message]:
    """Messages of `descriptor`: each field left unset or given a drawn value (repeated fields
    0..MAX_REPEATED elements, maps, one member of each oneof), nested messages to MAX_DEPTH, and
    messages of the same type the services answered.

    Returns:
        A strategy of instances of the descriptor's generated class.
    """
    generated = _generated_messages(descriptor, dictionary, depth)
    options = [generated]
    if descriptor.full_name == TENSOR:
        options += [coherent_tensors(dictionary), coherent_tensors(dictionary)]
    answered = dictionary.messages.get(descriptor.full_name)
    if answered:
        options.append(st.sampled_from(answered))
    return st.one_of(options)


@st.composite
def _generated_messages(draw: st.DrawFn, descriptor: Descriptor, dictionary: Dictionary, depth: int) -> Message:
    message = message_class(descriptor)()
    if depth >= MAX_DEPTH:
        return message
    chosen_oneofs: dict[str, str] = {}
    for oneof in descriptor.oneofs:
        members = [f.name for f in oneof.fields]
        chosen_oneofs[oneof.name] = draw(st.sampled_from([*members, ""]))
    for field in descriptor.fields:
        oneof = field.containing_oneof
        if oneof is not None and len(oneof.fields) > 1:  # a real oneof (not proto3 `optional`)
            if chosen_oneofs[oneof.name] != field.name:
                continue
        elif not draw(st.integers(0, 3)):  # unset one time in four
            continue
        _assign(message, field, draw, dictionary, depth)
    return message


def _assign(message: Message, field: FieldDescriptor, draw: st.DrawFn, dictionary: Dictionary, depth: int) -> None:
    """Give `field` of `message` a drawn value (a list for repeated fields, a dict for maps)."""
    if _is_map(field):
        key_field = field.message_type.fields_by_name["key"]
        value_field = field.message_type.fields_by_name["value"]
        entries = draw(
            st.dictionaries(
                scalar_values(key_field, dictionary), _field_values(value_field, dictionary, depth), max_size=4
            )
        )
        target = getattr(message, field.name)
        for key, value in entries.items():
            if value_field.type == FieldDescriptor.TYPE_MESSAGE:
                target[key].CopyFrom(value)
            else:
                target[key] = value
        return
    if _is_repeated(field):
        values = draw(st.lists(_field_values(field, dictionary, depth), max_size=MAX_REPEATED))
        target = getattr(message, field.name)
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            for value in values:
                target.add().CopyFrom(value)
        else:
            target.extend(values)
        return
    value = draw(_field_values(field, dictionary, depth))
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        getattr(message, field.name).CopyFrom(value)
    else:
        setattr(message, field.name, value)


@st.composite
def mutations(draw: st.DrawFn, seed_message: Message, dictionary: Dictionary) -> Message:
    """`seed_message` with one to three changes: a field cleared, set to a boundary or drawn
    value, a repeated field emptied, grown, cut or given a boundary element, bytes cut or grown,
    a nested message changed the same way (its path drawn field by field)."""
    message = type(seed_message)()
    message.CopyFrom(seed_message)
    for _ in range(draw(st.integers(1, 3))):
        _mutate_once(draw, message, dictionary, 0)
    return message


def _mutate_once(draw: st.DrawFn, message: Message, dictionary: Dictionary, depth: int) -> None:
    fields = list(message.DESCRIPTOR.fields)
    if not fields:
        return
    field = draw(st.sampled_from(fields))
    set_fields = {f.name for f, _ in message.ListFields()}
    is_message = field.type == FieldDescriptor.TYPE_MESSAGE
    if (
        is_message
        and not _is_repeated(field)
        and field.name in set_fields
        and depth < MAX_DEPTH
        and draw(st.booleans())
    ):
        _mutate_once(draw, getattr(message, field.name), dictionary, depth + 1)
        return
    operation = draw(st.sampled_from(["clear", "set", "set", "set", "edit"]))
    if operation == "clear":
        message.ClearField(field.name)
        return
    if operation == "edit" and _is_repeated(field) and not _is_map(field):
        target = getattr(message, field.name)
        edit = draw(st.sampled_from(["cut", "duplicate", "grow", "element"]))
        if edit == "cut" and len(target):
            del target[draw(st.integers(0, len(target) - 1)) :]
        elif edit == "duplicate" and len(target):
            if is_message:
                target.add().CopyFrom(target[0])
            else:
                target.append(target[0])
        elif edit == "grow" and not is_message:
            target.extend([draw(scalar_values(field, dictionary))] * draw(st.sampled_from([1, 17, 300, 70_000])))
        elif edit == "element" and len(target) and not is_message:
            target[draw(st.integers(0, len(target) - 1))] = draw(scalar_values(field, dictionary))
        return
    if operation == "edit" and field.type == FieldDescriptor.TYPE_BYTES:
        data = getattr(message, field.name)
        cut = draw(st.integers(0, max(len(data), 1)))
        setattr(
            message, field.name, draw(st.sampled_from([data[:cut], data + bytes(draw(st.integers(1, 9))), data[::-1]]))
        )
        return
    message.ClearField(field.name)
    _assign(message, field, draw, dictionary, depth)


def request_ids() -> st.SearchStrategy[str | None]:
    """x-request-id values a client can send (printable ASCII: gRPC refuses the rest before
    sending): none (the server makes one), awkward and long ones."""
    printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=40)
    awkward = st.sampled_from(["", " ", "a b", "%s%n", "{}", "../..", "-" * 129, "x" * 7_000])
    return st.one_of(st.none(), st.none(), printable, awkward)


@st.composite
def raw_bytes(draw: st.DrawFn, seeds: Sequence[Message]) -> bytes:
    """Serialized requests that are not: random bytes, cut or bit-flipped serializations,
    a valid serialization with garbage after it, field tags of every wire type."""
    kind = draw(st.sampled_from(["random", "cut", "flip", "trailing", "tags"]))
    serialized = draw(st.sampled_from([s.SerializeToString() for s in seeds])) if seeds else b""
    if kind == "random" or not serialized:
        return bytes(draw(st.binary(max_size=256)))
    if kind == "cut":
        return serialized[: draw(st.integers(0, len(serialized) - 1))]
    if kind == "flip":
        data = bytearray(serialized)
        for _ in range(draw(st.integers(1, 4))):
            data[draw(st.integers(0, len(data) - 1))] ^= 1 << draw(st.integers(0, 7))
        return bytes(data)
    if kind == "trailing":
        return serialized + bytes(draw(st.binary(min_size=1, max_size=16)))
    field_number = draw(st.integers(1, 20))
    wire_type = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7]))
    return bytes([(field_number << 3) | wire_type]) + bytes(draw(st.binary(max_size=12)))


# ---------------------------------------------------------------- sending and checking


@dataclasses.dataclass
class Outcome:
    """What one call ended with."""

    code: grpc.StatusCode
    details: str
    elapsed_s: float
    replies: list[bytes]


class Fuzzer:
    """Fuzzes the RPCs of running services: generated, mutated and raw requests, over real gRPC.

    Args:
        addresses: capability name -> "host:port".
        deadline_s: deadline of every call, seconds (a call that runs into it is a hang).
        api_key: sent as "authorization: Bearer <key>" when set.
    """

    def __init__(self, addresses: dict[str, str], deadline_s: float = 10.0, api_key: str = "") -> None:
        self.addresses = addresses
        self.rpcs = rpcs(list(addresses))
        self.deadline_s = deadline_s
        self.metadata: tuple[tuple[str, str], ...] = (("authorization", f"Bearer {api_key}"),) if api_key else ()
        options = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
        self.channels = {name: grpc.insecure_channel(address, options=options) for name, address in addresses.items()}
        self.dictionary = Dictionary()
        self.corpus: dict[str, list[Message]] = collections.defaultdict(list)
        self.demo_requests: list[tuple[Rpc, Message]] = []
        self.counts: dict[str, collections.Counter[str]] = collections.defaultdict(collections.Counter)
        self.findings: list[Finding] = []

    def close(self) -> None:
        for channel in self.channels.values():
            channel.close()

    def call(self, rpc: Rpc, data: bytes, request_id: str | None = None) -> Outcome:
        """Send serialized `data` to `rpc` with the deadline (and `request_id` as its
        x-request-id, when given); read a stream to its end."""
        channel = self.channels[rpc.capability]
        metadata = (*self.metadata, (REQUEST_ID_METADATA, request_id)) if request_id is not None else self.metadata
        start = time.monotonic()
        replies: list[bytes] = []
        try:
            if rpc.streaming:
                stream = channel.unary_stream(rpc.path)(data, timeout=self.deadline_s, metadata=metadata)
                replies.extend(stream)
            else:
                replies.append(channel.unary_unary(rpc.path)(data, timeout=self.deadline_s, metadata=metadata))
            return Outcome(grpc.StatusCode.OK, "", time.monotonic() - start, replies)
        except grpc.RpcError as error:
            return Outcome(error.code(), error.details() or "", time.monotonic() - start, replies)  # type: ignore[attr-defined]

    def problem(self, outcome: Outcome, sent_bytes: int, sent: str = "") -> str | None:
        """What is wrong with `outcome`, or None when it keeps the property.

        Args:
            outcome: the call's end.
            sent_bytes: the serialized request's size, bytes.
            sent: the request as text: what the message may echo without leaking a traceback.
        """
        code = outcome.code
        if code not in DOCUMENTED:
            return f"status {code.name} is not in the README's error table"
        if code == grpc.StatusCode.OK:
            return None
        if not outcome.details.strip():
            return "status without a message"
        if any(match.group(0) not in sent for match in TRACEBACK.finditer(outcome.details)):
            return "traceback in the status message"
        if (
            code == grpc.StatusCode.DEADLINE_EXCEEDED
            and outcome.elapsed_s >= HANG_SHARE * self.deadline_s
            and sent_bytes < 1 << 20
        ):
            return f"hang: ran into the {self.deadline_s:g} s deadline on a {sent_bytes}-byte request"
        return None

    def check(self, rpc: Rpc, kind: str, data: bytes, shown: str, request_id: str | None = None) -> Outcome:
        """Send, count the status, record a finding; OK requests join the corpus and their replies
        the dictionary."""
        outcome = self.call(rpc, data, request_id)
        if request_id is not None:
            shown = f"{shown} (x-request-id {request_id[:80]!r}, {len(request_id)} characters)"
        self.counts[rpc.name][outcome.code.name] += 1
        self.counts[rpc.name][kind] += 1
        problem = self.problem(outcome, len(data), shown)
        if problem:
            self.findings.append(Finding(rpc.name, kind, problem, outcome.code.name, outcome.details, shown))
        if outcome.code == grpc.StatusCode.INVALID_ARGUMENT and kind != "raw":
            self.dictionary.harvest_message(outcome.details)
        if outcome.code == grpc.StatusCode.OK and kind != "raw":
            corpus = self.corpus[rpc.name]
            if len(corpus) < MAX_CORPUS:
                corpus.append(rpc.request_class().FromString(data))
            for reply in outcome.replies[:MAX_REPEATED]:
                self.dictionary.harvest(rpc.reply_class().FromString(reply))
        return outcome

    def send(self, rpc: Rpc, request: Message, kind: str) -> Outcome:
        return self.check(rpc, kind, request.SerializeToString(), _text(request))

    def warm_up(self, targets: Iterable[Rpc]) -> None:
        """Call every RPC with an empty request, so the dictionary holds what the services list."""
        for rpc in targets:
            self.send(rpc, rpc.request_class()(), "generated")

    def healthy(self, capability: str) -> str | None:
        """None when the capability's service answers SERVING on its health check, else why not."""
        stub = health_pb2_grpc.HealthStub(self.channels[capability])
        service = registry.get(capability).contract.service_name
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self.deadline_s)
        except grpc.RpcError as error:
            return f"health check failed: {error.code().name} {error.details()}"  # type: ignore[attr-defined]
        if reply.status != health_pb2.HealthCheckResponse.SERVING:
            return f"health check answered {health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)}"
        return None

    def seed_from_demos(self, capabilities: Iterable[str]) -> None:
        """Add the requests of each capability's demo (its registry row's `demo`, run through the
        SDK) to the corpus: valid requests built by the SDK, for mutation to start from. A demo
        that fails part-way leaves what it sent before (and is counted, not a finding)."""
        import contextlib
        import io

        import sdk
        from sdk._transport import SyncTransport

        recorder = _Recorder()
        original = SyncTransport._open_channel

        def recording(transport: SyncTransport, address: str) -> grpc.Channel:
            return grpc.intercept_channel(original(transport, address), recorder)

        for capability in capabilities:
            demo = registry.load(registry.get(capability).demo)
            SyncTransport._open_channel = recording  # type: ignore[method-assign,assignment]
            try:
                client = sdk.Client(**{capability: self.addresses[capability]}, timeout_s=60.0)  # type: ignore[arg-type]
                with client, contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(sdk.FacetError):
                    demo(client)
            finally:
                SyncTransport._open_channel = original  # type: ignore[method-assign]
        paths = {rpc.path: rpc for rpc in self.rpcs}
        for path, request in recorder.requests:
            rpc = paths.get(path)
            if rpc is None:
                continue
            copy = rpc.request_class().FromString(request.SerializeToString())
            self.demo_requests.append((rpc, copy))
            if len(self.corpus[rpc.name]) < MAX_CORPUS:
                self.corpus[rpc.name].append(copy)

    def replay_demo(self, capability: str) -> None:
        """Send the demo's unary requests of `capability` again, uncounted: puts back the state
        that fuzzed calls may have removed (a deleted collection) before the next RPC's turn."""
        for rpc, request in self.demo_requests:
            if rpc.capability == capability and not rpc.streaming:
                self.call(rpc, request.SerializeToString())

    def crossover(self, rpc: Rpc) -> list[Message]:
        """Requests of `rpc` assembled from the corpus of the other RPCs of its service: every field
        with the same name and type copied over (`GetSae.sae` from `EncodeText.sae`,
        `PredictNext.frames` from `Rollout.frames`)."""
        fields = rpc.method.input_type.fields_by_name
        made: list[Message] = []
        for other in self.rpcs:
            if other.capability != rpc.capability or other.name == rpc.name:
                continue
            for donor in self.corpus[other.name][:4]:
                request = rpc.request_class()()
                for field, value in donor.ListFields():
                    target = fields.get(field.name)
                    if target is None or target.type != field.type or target.is_repeated != field.is_repeated:
                        continue
                    if field.type == FieldDescriptor.TYPE_MESSAGE and target.message_type is not field.message_type:
                        continue
                    if field.is_repeated or field.type == FieldDescriptor.TYPE_MESSAGE:
                        getattr(request, field.name).MergeFrom(value)
                    else:
                        setattr(request, field.name, value)
                if request.ListFields():
                    made.append(request)
        return made

    def fuzz(self, rpc: Rpc, examples: int, seed_value: int, rounds: int = 3) -> None:
        """`examples` generated or mutated requests to `rpc` in `rounds` rounds, then
        `examples // 4` raw ones, then a health check of its service (a finding when it no longer
        answers). Each round draws from a snapshot of the dictionary and the corpus (hypothesis
        wants strategies that do not change under it), so later rounds mutate what earlier
        rounds got through."""
        descriptor = rpc.method.input_type
        known = {m.SerializeToString() for m in self.corpus[rpc.name]}
        for request in self.crossover(rpc):  # sent as they are first: the valid ones join the corpus
            if request.SerializeToString() not in known:
                self.send(rpc, request, "mutated")
        for round_index in range(rounds):
            count = examples // rounds + (1 if round_index < examples % rounds else 0)
            if count == 0:
                continue
            dictionary = self.dictionary.snapshot()
            corpus = list(self.corpus[rpc.name]) or self.crossover(rpc)
            options = [st.tuples(st.just("generated"), messages(descriptor, dictionary))]
            if corpus:
                seeds = st.sampled_from(corpus).flatmap(lambda message, d=dictionary: mutations(message, d))  # type: ignore[misc]
                options.append(st.tuples(st.just("mutated"), seeds))

            @_quiet_settings(count)
            @seed(seed_value * 1000 + round_index)
            @given(st.one_of(options), request_ids())
            def structured(drawn: tuple[str, Message], request_id: str | None) -> None:
                kind, request = drawn
                try:
                    serialized = request.SerializeToString()
                except EncodeError:  # a message protobuf itself refuses to encode: nothing to send
                    return
                self.check(rpc, kind, serialized, _text(request), request_id)

            structured()

        valid = list(self.corpus[rpc.name]) or [rpc.request_class()()]

        @_quiet_settings(max(1, examples // 4))
        @seed(seed_value)
        @given(raw_bytes(valid))
        def raw(payload: bytes) -> None:
            self.check(rpc, "raw", payload, repr(payload[:300]))

        raw()
        unhealthy = self.healthy(rpc.capability)
        if unhealthy:
            self.findings.append(Finding(rpc.name, "after", "the service stopped answering", "", unhealthy, ""))

    def run(self, examples: int, seed_value: int, progress: Callable[[str], None] | None = None) -> None:
        """Warm up, seed the corpus from the demos, then fuzz every RPC in turn."""
        self.warm_up(self.rpcs)
        self.seed_from_demos(self.addresses)
        for rpc in self.rpcs:
            started = time.monotonic()
            self.replay_demo(rpc.capability)
            self.fuzz(rpc, examples, seed_value)
            if progress:
                progress(
                    f"{rpc.name}: {sum(self.counts[rpc.name][k] for k in ('generated', 'mutated', 'raw'))} calls in {time.monotonic() - started:.0f} s"
                )

    def table(self) -> str:
        """Per RPC: calls by kind and by status."""
        codes = sorted(
            {c for counts in self.counts.values() for c in counts if c not in ("generated", "mutated", "raw")},
            key=_code_order,
        )
        header = ["rpc", "generated", "mutated", "raw", *codes, "findings"]
        findings = collections.Counter(f.rpc for f in self.findings)
        rows = [
            [rpc, *(str(counts[c]) for c in header[1:-1]), str(findings[rpc])] for rpc, counts in self.counts.items()
        ]
        return table_text(header, rows)


class _Recorder(grpc.UnaryUnaryClientInterceptor, grpc.UnaryStreamClientInterceptor):  # type: ignore[misc]
    """Keeps (method path, request) of every call an SDK client sends."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, Message]] = []

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Message) -> Any:
        self.requests.append((details.method, request))
        return continuation(details, request)

    def intercept_unary_stream(self, continuation: Any, details: Any, request: Message) -> Any:
        self.requests.append((details.method, request))
        return continuation(details, request)


def _code_order(name: str) -> int:
    return grpc.StatusCode[name].value[0]


def _text(message: Message) -> str:
    from google.protobuf import text_format

    text = text_format.MessageToString(message, as_one_line=True, as_utf8=True)
    return text if len(text) <= 2_000 else f"{text[:2_000]}… ({len(text)} characters)"


def _quiet_settings(examples: int) -> settings:
    """Hypothesis settings for a bounded run against a server: no shrinking (findings are
    recorded, not raised), no example database, no per-example time limit."""
    return settings(
        max_examples=examples,
        phases=(Phase.explicit, Phase.generate),
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=False,
        print_blob=False,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m load.fuzz`: fuzz running services, print the table and the findings.

    Returns:
        0 when no call broke the property, 1 otherwise.
    """
    parser = argparse.ArgumentParser(prog="python -m load.fuzz", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples",
        type=int,
        default=100,
        help="generated and mutated requests per RPC (raw ones: a quarter of it more)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--services", nargs="*", default=registry.names(), choices=registry.names())
    parser.add_argument(
        "--deadline-s", type=float, default=10.0, help="deadline of every call; running into it is a hang"
    )
    args = parser.parse_args(argv)
    addresses = {name: default_address(name) for name in args.services}
    fuzzer = Fuzzer(addresses, args.deadline_s, os.environ.get(API_KEY_ENV, ""))
    started = time.monotonic()
    try:
        fuzzer.run(
            args.examples,
            args.seed,
            progress=lambda line: print(line, file=sys.stderr, flush=True),
        )
    finally:
        fuzzer.close()
    print(table_text(["service", "address"], [[n, a] for n, a in addresses.items()]))
    print()
    print(fuzzer.table())
    print(
        f"\n{sum(sum(c[k] for k in ('generated', 'mutated', 'raw')) for c in fuzzer.counts.values())} calls in {time.monotonic() - started:.0f} s; {len(fuzzer.findings)} findings"
    )
    for finding in fuzzer.findings:
        print(f"- {finding}")
    return 1 if fuzzer.findings else 0


if __name__ == "__main__":
    sys.exit(main())
