"""The fixed-seed fuzz run of CI: every RPC of every capability in the registry, over real gRPC to
real servers, with generated, mutated and raw requests (`load.fuzz`). The property:
every call ends OK or with a status of the README's error table and a message without a
traceback; no INTERNAL, UNKNOWN, hang or dead server. The longer run is `python -m load.fuzz`."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import grpc
import pytest
from google.protobuf.message import Message

from load.fuzz import DOCUMENTED, Dictionary, Fuzzer, Outcome, coherent_tensors, messages, mutations, raw_bytes, rpcs
from services import registry
from tests.serving import REPO_ROOT, ServerProcess

# The servers on the onnxruntime backend only: the fuzzer checks what the servicers do with a
# request, the same code on every backend.
FUZZ_BACKEND = "onnxruntime"
EXAMPLES_PER_RPC = 8  # x 23 RPCs, plus a quarter as raw bytes: about 250 calls
SEED = 13


def server_fixture(capability: str) -> str:
    """The fixture of a capability's server (`<capability>_server`, one per backend, module-scoped)."""
    return f"{capability}_server"


def with_every_server(test: Callable[..., Any]) -> Callable[..., Any]:
    """Give `test` the server of every capability in the registry, on FUZZ_BACKEND (started for this
    module and stopped after it, as the fixtures' own scope says)."""
    for name in registry.names():
        test = pytest.mark.parametrize(server_fixture(name), [FUZZ_BACKEND], indirect=True, scope="module")(test)
    return pytest.mark.usefixtures(*(server_fixture(name) for name in registry.names()))(test)


def proto_rpcs() -> set[str]:
    """`Service.Method` of every rpc in the .proto files, read from their text."""
    found: set[str] = set()
    for path in (REPO_ROOT / "protos" / "facet" / "v1").glob("*.proto"):
        text = path.read_text()
        for service, body in re.findall(r"service (\w+) \{(.*?)\n\}", text, flags=re.S):
            found.update(f"{service}.{method}" for method in re.findall(r"rpc (\w+)\(", body))
    return found


def test_every_rpc_of_every_registered_service_is_fuzzed() -> None:
    assert {rpc.name for rpc in rpcs()} == proto_rpcs()
    assert {rpc.capability for rpc in rpcs()} == set(registry.names())


@pytest.mark.parametrize("rpc", rpcs(), ids=lambda rpc: rpc.name)
def test_generated_and_mutated_requests_serialize(rpc) -> None:  # type: ignore[no-untyped-def]
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    dictionary = Dictionary()

    @settings(max_examples=25, derandomize=True, database=None, suppress_health_check=list(HealthCheck), deadline=None)
    @given(st.data())
    def check(data: st.DataObject) -> None:
        request = data.draw(messages(rpc.method.input_type, dictionary))
        assert isinstance(request, rpc.request_class())
        mutated = data.draw(mutations(request, dictionary))
        assert type(mutated) is type(request)
        mutated.SerializeToString()
        assert isinstance(data.draw(raw_bytes([request])), bytes)

    check()


def test_coherent_tensors_hold_the_bytes_their_dtype_and_shape_say() -> None:
    from hypothesis import given, settings

    sizes = {1: 4, 2: 2, 3: 8, 4: 4, 5: 1, 6: 1}

    @settings(max_examples=50, derandomize=True, database=None, deadline=None)
    @given(coherent_tensors(Dictionary()))
    def check(tensor: Message) -> None:
        count = 1
        for dim in tensor.shape:  # type: ignore[attr-defined]
            count *= dim
        assert len(tensor.data) == sizes[tensor.dtype] * count  # type: ignore[attr-defined]

    check()


@pytest.mark.parametrize(
    ("code", "details", "given_duration_s", "broken"),
    [
        (grpc.StatusCode.INTERNAL, "internal error; request id 1", 0.1, True),
        (grpc.StatusCode.UNKNOWN, "Exception calling application", 0.1, True),
        (grpc.StatusCode.UNAVAILABLE, "connection reset", 0.1, True),
        (grpc.StatusCode.INVALID_ARGUMENT, "", 0.1, True),
        (grpc.StatusCode.INVALID_ARGUMENT, "Traceback (most recent call last):\n  boom", 0.1, True),
        (grpc.StatusCode.INVALID_ARGUMENT, 'bad value\n  File "/srv/x.py", line 3, in run', 0.1, True),
        # a name from the request echoed back is no traceback (a 34,646-call run flagged it once)
        (grpc.StatusCode.NOT_FOUND, "collection 'Traceback' does not exist", 0.1, False),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", 9.5, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "refused: cannot finish before the deadline", 0.01, False),
        (grpc.StatusCode.INVALID_ARGUMENT, "texts[0] must not be blank", 0.1, False),
        (grpc.StatusCode.OK, "", 0.1, False),
    ],
)
def test_the_property_flags_what_a_caller_must_never_see(
    code: grpc.StatusCode, details: str, given_duration_s: float, broken: bool
) -> None:
    fuzzer = Fuzzer({}, deadline_s=10.0)
    # the call's duration is a made-up input of the classification (a DEADLINE_EXCEEDED that used
    # the whole deadline is a hang; one refused at once is admission): nothing is timed here
    outcome = Outcome(code, details, given_duration_s, [])
    assert (fuzzer.problem(outcome, sent_bytes=10) is not None) is broken
    assert (code in DOCUMENTED) or broken


@pytest.mark.integration
@with_every_server
@pytest.mark.parametrize("capability", registry.names())
def test_every_rpc_answers_fuzzed_requests_with_a_documented_status(
    capability: str, request: pytest.FixtureRequest
) -> None:
    server: ServerProcess = request.getfixturevalue(server_fixture(capability))
    fuzzer = Fuzzer({capability: server.address}, deadline_s=30.0)
    try:
        fuzzer.run(EXAMPLES_PER_RPC, SEED)
        unhealthy = fuzzer.healthy(capability)
    finally:
        fuzzer.close()
    assert not fuzzer.findings, "\n" + "\n".join(map(str, fuzzer.findings)) + "\n" + fuzzer.table()
    for rpc in fuzzer.rpcs:
        calls = fuzzer.counts[rpc.name]
        assert calls["raw"] >= 1 and calls["generated"] + calls["mutated"] >= 1, (rpc.name, dict(calls))
    # past the first validation check: some request with fields got OK (the demo's, or a mutation)
    assert any(fuzzer.corpus[rpc.name] for rpc in fuzzer.rpcs if rpc.method.input_type.fields), fuzzer.table()
    assert server.alive() and unhealthy is None, (unhealthy, (server.data_dir / "server.log").read_text()[-3000:])


def test_a_traceback_the_request_itself_holds_is_an_echo_not_a_leak() -> None:
    fuzzer = Fuzzer({}, deadline_s=10.0)
    echoed = Outcome(
        grpc.StatusCode.NOT_FOUND, "collection 'Traceback (most recent call last)' does not exist", 0.1, []
    )
    assert fuzzer.problem(echoed, sent_bytes=40, sent='name: "Traceback (most recent call last)"') is None
    assert fuzzer.problem(echoed, sent_bytes=40, sent='name: "x"') is not None
