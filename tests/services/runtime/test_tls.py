"""TLS and mTLS on a service's one port, with real certificates (`tests.certificates`): the runtime
probe served in this process over TLS (calls, health and reflection), what a plaintext client, a
client without a certificate and one with an untrusted certificate get, the API key still
required under TLS, and the startup errors of bad TLS settings (one line, naming the key)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from sdk._proto.facet.v1 import common_pb2
from services.runtime.config import ConfigError, FacetConfig, ServerConfig, load_config
from services.runtime.interceptor import UNAUTHENTICATED_MESSAGE
from services.runtime.metrics import METRICS
from services.runtime.server import RunningServer, start_server
from services.runtime.tls import server_credentials
from tests.certificates import TlsMaterial, make_expired_server, make_tls_material, write_encrypted_key
from tests.services.runtime.test_interceptor import REPLY, SERVICE, RuntimeProbe


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> TlsMaterial:
    return make_tls_material(tmp_path_factory.mktemp("tls"))


@pytest.fixture
async def probe_on() -> AsyncIterator[Callable[..., Awaitable[RunningServer]]]:
    """probe_on(api_key="", **server_config) -> the runtime probe on port 0 with that config."""
    running: list[RunningServer] = []

    async def start(api_key: str = "", **server: object) -> RunningServer:
        config = FacetConfig(api_key=api_key, server=ServerConfig(**{"port": 0, **server}))  # type: ignore[arg-type]
        running.append(await start_server(RuntimeProbe(), config))
        return running[-1]

    yield start
    for server in running:
        await server.server.stop(0)


def _tls(certs: TlsMaterial, mtls: bool = False) -> dict[str, object]:
    settings: dict[str, object] = {"tls_cert_file": str(certs.server.cert), "tls_key_file": str(certs.server.key)}
    if mtls:
        settings["tls_client_ca_file"] = str(certs.ca.cert)
    return settings


def _channel(server: RunningServer, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
    address = f"localhost:{server.port}"  # the name in the server certificate
    if credentials is None:
        return grpc.aio.insecure_channel(address)
    return grpc.aio.secure_channel(address, credentials)


def _client(certs: TlsMaterial, pair: object = None, root: Path | None = None) -> grpc.ChannelCredentials:
    """Channel credentials trusting `root` (default: the CA), presenting `pair` (a Pem) when given."""
    key = pair.key.read_bytes() if pair is not None else None  # type: ignore[attr-defined]
    chain = pair.cert.read_bytes() if pair is not None else None  # type: ignore[attr-defined]
    return grpc.ssl_channel_credentials((root or certs.ca.cert).read_bytes(), key, chain)


async def _reply(channel: grpc.aio.Channel, metadata: tuple[tuple[str, str], ...] = ()) -> common_pb2.Tensor:
    call = channel.unary_unary(REPLY, common_pb2.Tensor.SerializeToString, common_pb2.Tensor.FromString)
    return await call(common_pb2.Tensor(shape=[3]), timeout=10, metadata=metadata)


def _decoded() -> float:
    return METRICS.registry.get_sample_value("facet_decoded_requests_total", {"method": REPLY}) or 0.0


async def test_calls_health_and_reflection_work_over_tls_on_the_one_port(probe_on, certs: TlsMaterial) -> None:  # type: ignore[no-untyped-def]
    server = await probe_on(**_tls(certs))
    async with _channel(server, _client(certs)) as channel:
        assert (await _reply(channel)).data == b"\x00" * 3
        health = await health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(service=SERVICE), timeout=10
        )
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        listing = reflection_pb2_grpc.ServerReflectionStub(channel).ServerReflectionInfo(
            iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
        )
        names = [s.name async for reply in listing for s in reply.list_services_response.service]
        assert SERVICE in names and "grpc.health.v1.Health" in names


async def test_a_plaintext_client_is_refused_before_any_call_reaches_the_service(probe_on, certs: TlsMaterial) -> None:  # type: ignore[no-untyped-def]
    server = await probe_on(**_tls(certs))
    before = _decoded()
    async with _channel(server, None) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _reply(channel)
        with pytest.raises(grpc.aio.AioRpcError) as health:
            await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert health.value.code() == grpc.StatusCode.UNAVAILABLE  # health needs TLS too: the same port
    assert "failed to connect" in (refused.value.details() or "")
    assert _decoded() == before


async def test_mtls_takes_a_client_certificate_from_its_ca_and_refuses_the_rest(probe_on, certs: TlsMaterial) -> None:  # type: ignore[no-untyped-def]
    server = await probe_on(**_tls(certs, mtls=True))
    async with _channel(server, _client(certs, certs.client)) as channel:
        assert (await _reply(channel)).data == b"\x00" * 3
    before = _decoded()
    for credentials in (_client(certs), _client(certs, certs.untrusted_client)):  # no certificate; another CA's
        async with _channel(server, credentials) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await _reply(channel)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert _decoded() == before


async def test_a_client_that_does_not_trust_the_server_certificate_fails(probe_on, certs: TlsMaterial) -> None:  # type: ignore[no-untyped-def]
    server = await probe_on(**_tls(certs))
    async with _channel(server, _client(certs, root=certs.untrusted_ca.cert)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _reply(channel)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in (refused.value.details() or "")


async def test_the_api_key_is_still_required_under_mtls(probe_on, certs: TlsMaterial) -> None:  # type: ignore[no-untyped-def]
    server = await probe_on(api_key="s3cret", **_tls(certs, mtls=True))
    async with _channel(server, _client(certs, certs.client)) as channel:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await _reply(channel)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.details() == UNAUTHENTICATED_MESSAGE
        assert (await _reply(channel, (("authorization", "Bearer s3cret"),))).data == b"\x00" * 3


# -- startup errors: one line naming the config key -----------------------------------------------


def test_a_certificate_without_its_key_is_a_config_error_naming_both_keys(certs: TlsMaterial) -> None:
    env = {"FACET_SERVER_TLS_CERT_FILE": str(certs.server.cert)}  # the config loader's env convention
    with pytest.raises(
        ConfigError, match=r"server\.tls_cert_file and server\.tls_key_file go together.*only server\.tls_cert_file"
    ):
        load_config(env=env)
    with pytest.raises(ConfigError, match=r"server\.tls_client_ca_file \(mTLS\) needs server\.tls_cert_file"):
        ServerConfig(tls_client_ca_file=str(certs.ca.cert))
    both = load_config(
        env={
            **env,
            "FACET_SERVER_TLS_KEY_FILE": str(certs.server.key),
            "FACET_SERVER_TLS_CLIENT_CA_FILE": str(certs.ca.cert),
        }
    )
    assert (both.server.tls_key_file, both.server.tls_client_ca_file) == (str(certs.server.key), str(certs.ca.cert))


def test_unreadable_or_invalid_pem_files_are_config_errors_naming_the_key(certs: TlsMaterial, tmp_path: Path) -> None:
    not_pem = tmp_path / "notes.txt"
    not_pem.write_text("not a certificate")
    broken = tmp_path / "broken.crt"
    broken.write_text("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    cases = {
        r"server\.tls_cert_file: cannot read .*missing\.crt": {"tls_cert_file": str(tmp_path / "missing.crt")},
        r"server\.tls_key_file: .*notes\.txt is not a PEM file": {"tls_key_file": str(not_pem)},
        r"server\.tls_cert_file / server\.tls_key_file: .*not a valid PEM certificate and its private key": {
            "tls_key_file": str(certs.client.key)
        },
        r"server\.tls_cert_file / server\.tls_key_file: .*broken\.crt": {"tls_cert_file": str(broken)},
        r"server\.tls_client_ca_file: .*notes\.txt is not a PEM file": {"tls_client_ca_file": str(not_pem)},
        r"server\.tls_client_ca_file: .*broken\.crt holds no valid PEM CA certificate": {
            "tls_client_ca_file": str(broken)
        },
    }
    for pattern, change in cases.items():
        server = ServerConfig(**{**_tls(certs), **change})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=pattern) as error:
            server_credentials(server)
        assert "\n" not in str(error.value)


def test_mixed_up_certificate_files_are_one_line_saying_what_to_fix(certs: TlsMaterial, tmp_path: Path) -> None:
    """The usual mistakes: files swapped, an encrypted key (no passphrase prompt), an empty file,
    an expired certificate, a client's certificate where the client CA belongs."""
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    encrypted = write_encrypted_key(certs.server, tmp_path / "encrypted.key")
    expired = make_expired_server(tmp_path, certs.ca)
    cases = {
        r"server\.tls_cert_file: .*server\.key holds a private key, not a certificate \(certificate and key swapped\?\)": {
            "tls_cert_file": str(certs.server.key), "tls_key_file": str(certs.server.cert)
        },
        r"server\.tls_key_file: .*encrypted\.key holds an encrypted private key; give it unencrypted": {
            "tls_key_file": str(encrypted)
        },
        r"server\.tls_key_file: .*empty\.pem is empty": {"tls_key_file": str(empty)},
        r"server\.tls_cert_file: the certificate in .*expired-server\.crt expired on 20\d\d-.*renew it": {
            "tls_cert_file": str(expired.cert), "tls_key_file": str(expired.key)
        },
        r"server\.tls_client_ca_file: .*client\.crt holds no CA certificate .*give the CA that signs the client": {
            "tls_client_ca_file": str(certs.client.cert)
        },
    }  # fmt: skip
    for pattern, change in cases.items():
        server = ServerConfig(**{**_tls(certs), **change})  # type: ignore[arg-type]
        with pytest.raises(ConfigError, match=pattern) as error:
            server_credentials(server)
        assert "\n" not in str(error.value)


def test_a_path_with_a_stray_space_or_line_break_is_shown_quoted_on_one_line(
    certs: TlsMaterial, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`FACET_SERVER_TLS_CERT_FILE=$(cat path-file)` keeps a trailing newline: the message stays one
    line and shows it; a relative path says where it was looked for."""
    for path, shown in (
        (f"{certs.server.cert}\n", repr(f"{certs.server.cert}\n")),
        (f" {certs.server.cert}", repr(f" {certs.server.cert}")),
    ):
        with pytest.raises(ConfigError) as error:
            server_credentials(ServerConfig(**{**_tls(certs), "tls_cert_file": path}))  # type: ignore[arg-type]
        assert "\n" not in str(error.value)
        assert f"cannot read {shown} (mind the spaces or line breaks in the value)" in str(error.value)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match=rf"cannot read certs/server\.crt \(relative to {tmp_path}\)"):
        server_credentials(ServerConfig(**{**_tls(certs), "tls_cert_file": "certs/server.crt"}))  # type: ignore[arg-type]


def test_a_service_with_a_bad_tls_setting_exits_with_one_clear_line(service_on, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    missing = tmp_path / "server.crt"
    server = service_on(
        "onnxruntime",
        env={"FACET_SERVER_TLS_CERT_FILE": str(missing), "FACET_SERVER_TLS_KEY_FILE": str(missing)},
        wait=False,
    )
    assert server.wait(60) == 1
    lines = [line for line in server.log().splitlines() if line.startswith("facet retrieval:")]
    assert lines == [
        f"facet retrieval: cannot start: server.tls_cert_file: cannot read {missing}: No such file or directory"
    ]
    assert "Traceback" not in server.log()


def test_the_certificate_s_names_are_what_the_serving_line_reports(certs: TlsMaterial, tmp_path: Path) -> None:
    """A certificate for another host starts fine and fails every handshake: the `serving` log
    line lists the names clients must connect to (the test certificate's: localhost, 127.0.0.1)."""
    from services.runtime.tls import certificate_names

    names = certificate_names(str(certs.server.cert))
    assert "DNS:localhost" in names and any(n.endswith(":127.0.0.1") for n in names), names
    assert certificate_names(str(tmp_path / "missing.pem")) == []
