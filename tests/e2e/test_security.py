"""TLS and the bearer token on a real `brew serve` process.

The server gets a self-signed certificate for localhost / 127.0.0.1 made in
the test and a token from an environment variable. A caller that trusts the
certificate and sends the token is scored; without the token, or with a wrong
one, it is refused UNAUTHENTICATED; health needs no token; a plaintext caller
and one that does not trust the certificate cannot connect (UNAVAILABLE).
The HTTP API of the same process serves HTTPS with the same certificate and
asks for the same token (401 without it; the probes stay open).
"""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from google.protobuf import json_format
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from serve_process import run_serve, running_serve, serve_env
from service_wire import example_request

from serving.client import NO_RETRY, RankingClient

pytestmark = [pytest.mark.integration]

TOKEN = "some-secret"
TOKEN_ENV = "BREW_TEST_TOKEN"


def write_self_signed(directory: Path, common_name: str = "localhost") -> tuple[Path, Path]:
    """A self-signed certificate for localhost and 127.0.0.1, and its key (PEM files)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_file, key_file


@pytest.fixture(scope="module")
def certificate(tmp_path_factory) -> tuple[Path, Path]:
    return write_self_signed(tmp_path_factory.mktemp("tls"))


@pytest.fixture(scope="module")
def server(tmp_path_factory, certificate):
    cert_file, key_file = certificate
    with running_serve(
        tmp_path_factory.mktemp("serve"),
        "--tls-cert", str(cert_file), "--tls-key", str(key_file), "--auth-token-env", TOKEN_ENV,
        "--http-port", "0", env=serve_env(**{TOKEN_ENV: TOKEN}),
    ) as running:
        yield running


def tls_client(server, certificate, host: str = "127.0.0.1", **options) -> RankingClient:
    return RankingClient(f"{host}:{server.port}", tls_root_cert=certificate[0], retry=NO_RETRY, **options)


async def expect_code(call, code: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as raised:
        await call
    assert raised.value.code() is code, raised.value.details()
    return raised.value.details() or ""


@pytest.mark.asyncio
@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_tls_with_the_token_scores_the_example(server, certificate, host):
    async with tls_client(server, certificate, host, token=TOKEN) as client:
        response = await client.score(example_request(), timeout=60)
    assert [len(r.scores) for r in response.results] == [3, 2, 2]
    assert all(0.0 < s.score < 1.0 for r in response.results for s in r.scores)


@pytest.mark.asyncio
async def test_no_token_is_unauthenticated(server, certificate):
    async with tls_client(server, certificate) as client:
        details = await expect_code(client.score(example_request(), timeout=30), grpc.StatusCode.UNAUTHENTICATED)
        await expect_code(client.list_tasks(timeout=30), grpc.StatusCode.UNAUTHENTICATED)
    assert "bearer token" in details


@pytest.mark.asyncio
async def test_wrong_token_is_unauthenticated(server, certificate):
    async with tls_client(server, certificate, token=TOKEN + "x") as client:
        await expect_code(client.score(example_request(), timeout=30), grpc.StatusCode.UNAUTHENTICATED)


@pytest.mark.asyncio
async def test_health_needs_no_token(server, certificate):
    async with tls_client(server, certificate) as client:
        assert await client.health(timeout=30) == health_pb2.HealthCheckResponse.SERVING
        assert await client.health("brew.v1.RankingService", timeout=30) == health_pb2.HealthCheckResponse.SERVING


def test_reflection_needs_the_token(server, certificate):
    credentials = grpc.ssl_channel_credentials(certificate[0].read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{server.port}", credentials) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            ProtoReflectionDescriptorDatabase(channel).get_services()
    assert raised.value.code() is grpc.StatusCode.UNAUTHENTICATED


@pytest.mark.asyncio
async def test_plaintext_client_cannot_connect(server):
    async with RankingClient(server.target, token=TOKEN, retry=NO_RETRY) as client:
        await expect_code(client.score(example_request(), timeout=30), grpc.StatusCode.UNAVAILABLE)
        await expect_code(client.health(timeout=30), grpc.StatusCode.UNAVAILABLE)


@pytest.mark.asyncio
async def test_client_that_does_not_trust_the_certificate_cannot_connect(server, tmp_path):
    other_cert, _ = write_self_signed(tmp_path)
    async with RankingClient(server.target, tls_root_cert=other_cert, token=TOKEN, retry=NO_RETRY) as client:
        await expect_code(client.score(example_request(), timeout=30), grpc.StatusCode.UNAVAILABLE)


def test_tls_cert_without_key_is_a_config_error(certificate):
    completed = run_serve(["--tls-cert", str(certificate[0])], timeout=120)
    assert completed.returncode == 2, completed.stderr
    assert "tls_key" in completed.stderr
    assert "listening on" not in completed.stderr  # refused before opening a port or loading the model


def test_the_http_api_serves_https_with_the_same_certificate_and_token(server, certificate):
    assert server.http_url is not None and server.http_url.startswith("https://")
    body = json_format.MessageToDict(example_request())
    headers = {"x-request-timeout": "120"}
    with httpx.Client(base_url=server.http_url, verify=ssl.create_default_context(cafile=str(certificate[0])),
                      timeout=120) as https:
        refused = https.post("/v1/brew/score", json=body, headers=headers)
        assert refused.status_code == 401 and refused.json()["type"] == "UnauthorizedError"
        scored = https.post("/v1/brew/score", json=body,
                            headers={**headers, "authorization": f"Bearer {TOKEN}"})
        assert scored.status_code == 200, scored.text
        assert scored.json()["requestId"] == example_request().request_id
        assert https.get("/health").status_code == 200  # probes need no token
    with pytest.raises(httpx.HTTPError):  # plaintext to the TLS port
        httpx.get(server.http_url.replace("https://", "http://") + "/health", timeout=10)
