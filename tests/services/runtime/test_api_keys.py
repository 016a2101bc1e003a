"""Several API keys from `server.api_keys_file`, each named in the logs and metrics, each with its
own token-bucket rate limit: the runtime probe served in this process with a real keys file; the
file's format errors; the token bucket on a clock the test moves."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest

from sdk._contract import RETRY_AFTER_METADATA
from sdk._proto.facet.v1 import common_pb2
from services.runtime.api_keys import KeyRing, TokenBucket, load_api_keys
from services.runtime.config import ConfigError, FacetConfig, ServerConfig
from services.runtime.interceptor import UNAUTHENTICATED_MESSAGE
from services.runtime.metrics import METRICS
from services.runtime.server import RunningServer, start_server
from tests.services.runtime.test_interceptor import REPLY, RuntimeProbe

KEYS = """
[alice]
key = "alice-secret"
requests_per_s = 0.5
burst = 2

[bob]
key = "bob-secret"
"""


@pytest.fixture
async def keyed(tmp_path: Path) -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """keyed(text, api_key="") -> the runtime probe on port 0 with `text` as its API keys file."""
    running: list[RunningServer] = []

    async def start(text: str = KEYS, api_key: str = "") -> RunningServer:
        path = tmp_path / "api-keys.toml"
        path.write_text(text)
        config = FacetConfig(api_key=api_key, server=ServerConfig(port=0, api_keys_file=str(path)))
        running.append(await start_server(RuntimeProbe(), config))
        return running[-1]

    yield start
    for server in running:
        await server.server.stop(0)


async def _reply(server: RunningServer, key: str | None) -> grpc.aio.Call:
    """One Reply call with `key` (None: no authorization); returns the finished call."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        method = channel.unary_unary(REPLY, common_pb2.Tensor.SerializeToString, common_pb2.Tensor.FromString)
        metadata = (("authorization", f"Bearer {key}"),) if key is not None else ()
        call = method(common_pb2.Tensor(shape=[1]), timeout=10, metadata=metadata)
        try:
            await call
        except grpc.aio.AioRpcError:
            pass
        return call


def _by_key(key: str, code: str) -> float:
    return METRICS.registry.get_sample_value("facet_requests_by_key_total", {"key": key, "code": code}) or 0.0


def _decoded() -> float:
    return METRICS.registry.get_sample_value("facet_decoded_requests_total", {"method": REPLY}) or 0.0


async def test_each_key_of_the_file_works_and_is_named_in_metrics_and_logs(
    keyed, caplog: pytest.LogCaptureFixture
) -> None:  # type: ignore[no-untyped-def]
    caplog.set_level(logging.INFO, logger="facet.rpc")
    server = await keyed(api_key="single-secret")  # the single key of the config keeps working
    before = {name: _by_key(name, "OK") for name in ("alice", "bob", "api_key")}
    for key in ("alice-secret", "bob-secret", "single-secret"):
        assert await (await _reply(server, key)).code() == grpc.StatusCode.OK
    assert {name: _by_key(name, "OK") - before[name] for name in before} == {"alice": 1, "bob": 1, "api_key": 1}
    logged = [getattr(r, "fields", {}) for r in caplog.records if getattr(r, "fields", {}).get("method") == REPLY]
    assert [(f["key"], f["code"]) for f in logged] == [("alice", "OK"), ("bob", "OK"), ("api_key", "OK")]


async def test_an_unknown_or_missing_key_is_unauthenticated_before_the_request_is_read(keyed) -> None:  # type: ignore[no-untyped-def]
    server = await keyed()
    before = _decoded()
    for key in ("alice-secre", "mallory", None):
        call = await _reply(server, key)
        assert await call.code() == grpc.StatusCode.UNAUTHENTICATED
        assert await call.details() == UNAUTHENTICATED_MESSAGE
    assert _decoded() == before


async def test_a_key_over_its_rate_is_refused_with_a_retry_after_hint_and_recovers(keyed) -> None:  # type: ignore[no-untyped-def]
    server = await keyed()
    # burst 2 at 0.5 calls/s: two calls pass, the third (well within 2 s) is refused unread
    assert [await (await _reply(server, "alice-secret")).code() for _ in range(2)] == [grpc.StatusCode.OK] * 2
    decoded, refused_before = _decoded(), _by_key("alice", "RESOURCE_EXHAUSTED")
    refused = await _reply(server, "alice-secret")
    assert await refused.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    details = await refused.details()
    assert "API key 'alice'" in details and "rate limit of 0.5 calls/s" in details and "requests_per_s" in details
    trailing = dict(await refused.trailing_metadata())
    retry_after_ms = int(trailing[RETRY_AFTER_METADATA])
    assert 0 < retry_after_ms <= 2000  # one token every 2 s
    assert f"retry in {retry_after_ms} ms" in details
    assert _decoded() == decoded  # refused before its request was read
    assert _by_key("alice", "RESOURCE_EXHAUSTED") == refused_before + 1
    assert await (await _reply(server, "bob-secret")).code() == grpc.StatusCode.OK  # other keys unaffected
    # the bucket refills: alice gets through again (polled with a deadline)
    deadline = time.monotonic() + 30
    while await (await _reply(server, "alice-secret")).code() != grpc.StatusCode.OK:
        assert time.monotonic() < deadline, "alice's bucket did not refill"
        await asyncio.sleep(0.05)


# -- the file's format ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("[alice]\nrequests_per_s = 5\n", r"\[alice\]\.key must be a non-empty string"),
        ('[alice]\nkey = "a b"\n', r"\[alice\]\.key must be a non-empty string of printable ASCII without spaces"),
        (
            '[alice]\nkey = "a"\nrate = 5\n',
            r"\[alice\]: unknown fields rate; a key's table has burst, key, requests_per_s",
        ),
        ('[alice]\nkey = "a"\nrequests_per_s = 0\n', r"\[alice\]\.requests_per_s must be a finite number > 0, got 0"),
        ('[alice]\nkey = "a"\nburst = 4\n', r"\[alice\]\.burst needs requests_per_s in the same table"),
        ('[alice]\nkey = "a"\nrequests_per_s = 2\nburst = 0.5\n', r"\[alice\]\.burst must be >= 1"),
        ('[alice]\nkey = "same"\n[bob]\nkey = "same"\n', r"\[alice\] and \[bob\] have the same key"),
        ('alice = "a"\n', r"\[alice\] must be a table"),
        ("[alice\n", r"server\.api_keys_file: .* is not valid TOML"),
        ("", r"defines no key"),
        ('[""]\nkey = "a"\n', r"the table name '' is empty or has control characters"),
        ('["a\\nb"]\nkey = "a"\n', r"the table name 'a\\nb' is empty or has control characters"),
        (
            '[a]\nkey = "a"\nrequests_per_s = 1e-310\n',
            r"\[a\]\.requests_per_s must be at least 3\.17e-08 \(one call a year\)",
        ),
    ],
)
def test_an_invalid_keys_file_is_one_config_error_naming_the_table(tmp_path: Path, text: str, error: str) -> None:
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=error) as raised:
        load_api_keys(path)
    assert "\n" not in str(raised.value) and 'same"' not in str(raised.value)  # one line, never a secret


@pytest.mark.parametrize("api_key", ["abc def", "abc\n", "älice"])
def test_a_single_api_key_no_client_could_send_is_a_config_error(api_key: str) -> None:
    """FACET_API_KEY with a space, a line break or non-ASCII used to start a server nobody could call."""
    with pytest.raises(ConfigError, match=r"api_key \(FACET_API_KEY\) must be printable ASCII without spaces") as error:
        KeyRing.from_config(api_key=api_key)
    assert api_key not in str(error.value)  # never the secret


def test_a_missing_keys_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.api_keys_file: cannot read .*nowhere\.toml"):
        KeyRing.from_config(api_keys_file=str(tmp_path / "nowhere.toml"))


def test_a_rate_without_burst_holds_one_second_of_calls(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[a]\nkey = "a"\nrequests_per_s = 20\n[b]\nkey = "b"\nrequests_per_s = 0.2\n')
    assert [(k.name, k.burst) for k in load_api_keys(path)] == [("a", 20.0), ("b", 1.0)]


def test_the_token_bucket_admits_a_burst_then_the_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)  # one token every 0.5 s; nothing taken
    now[0] = 0.25
    assert bucket.take() == pytest.approx(0.25)
    now[0] = 0.5
    assert bucket.take() == 0.0
    now[0] = 100.0  # a long pause refills to the burst, not beyond
    assert [bucket.take() for _ in range(4)][-1] == pytest.approx(0.5)


def _take_concurrently(bucket: TokenBucket, threads: int, calls: int) -> int:
    """How many of `threads` x `calls` concurrent take() calls were admitted."""
    import threading

    admitted = [0] * threads
    barrier = threading.Barrier(threads)

    def take(i: int) -> None:
        barrier.wait()
        admitted[i] = sum(1 for _ in range(calls) if bucket.take() == 0.0)

    workers = [threading.Thread(target=take, args=(i,)) for i in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return sum(admitted)


def test_the_token_bucket_never_admits_more_than_its_tokens_under_concurrent_calls() -> None:
    """The server's handler threads share a key's bucket: with the clock stopped, 16 threads taking
    500 tokens each from a bucket of 2000 get exactly 2000 (without the lock, up to 4597 here)."""
    import sys

    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible, inside take() too
    try:
        for _ in range(3):
            bucket = TokenBucket(rate=1e-6, burst=2000.0, clock=lambda: 0.0)
            assert _take_concurrently(bucket, threads=16, calls=500) == 2000
    finally:
        sys.setswitchinterval(previous)
