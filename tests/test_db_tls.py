"""TLS to the database, for real: FerretDB's own TLS listener with a CA, server and client
certificates this module makes (`cryptography`); the service connects with MONGODB_TLS_CA_FILE
and MONGODB_TLS_CERT_KEY_FILE, and a client without a certificate, trusting another CA or
speaking plain TCP is refused. And APP_ENV=production refuses a MONGODB_URI that would cross the
network without TLS unless MONGODB_ALLOW_UNENCRYPTED says the network is private."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from app.db import open_db
from app.localdb import LocalServer, TlsListener, free_port
from app.settings import Settings
from tests import analytics_support

JWT_SECRET = "tls-tests-jwt-secret-0123456789abcdef0123"
Key = ec.EllipticCurvePrivateKey


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _ca(common_name: str) -> tuple[Key, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return key, cert


def _issue(
    ca: tuple[Key, x509.Certificate], common_name: str, server: bool
) -> tuple[Key, x509.Certificate]:
    ca_key, ca_cert = ca
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    return key, builder.sign(ca_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: Key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass
class Pki:
    ca: Path
    other_ca: Path
    server_cert: Path
    server_key: Path
    client: Path  # certificate and key in one PEM, as MONGODB_TLS_CERT_KEY_FILE takes them
    stranger: Path  # a client certificate from another CA


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca, other = _ca("tmdb-analytics test CA"), _ca("someone else's CA")
    server_key, server_cert = _issue(ca, "localhost", server=True)
    client_key, client_cert = _issue(ca, "tmdb-analytics", server=False)
    stranger_key, stranger_cert = _issue(other, "tmdb-analytics", server=False)
    files = {
        "ca.pem": _pem(ca[1]),
        "other-ca.pem": _pem(other[1]),
        "server.pem": _pem(server_cert),
        "server.key": _key_pem(server_key),
        "client.pem": _pem(client_cert) + _key_pem(client_key),
        "stranger.pem": _pem(stranger_cert) + _key_pem(stranger_key),
    }
    for name, body in files.items():
        (directory / name).write_bytes(body)
        (directory / name).chmod(0o600)
    return Pki(
        ca=directory / "ca.pem",
        other_ca=directory / "other-ca.pem",
        server_cert=directory / "server.pem",
        server_key=directory / "server.key",
        client=directory / "client.pem",
        stranger=directory / "stranger.pem",
    )


@dataclass
class TlsDb:
    server: LocalServer
    pki: Pki

    @property
    def uri(self) -> str:
        assert self.server.tls is not None
        return f"mongodb://localhost:{self.server.tls.port}/"


@pytest.fixture(scope="module")
def tls_db(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsDb]:
    """A FerretDB of its own whose TLS listener requires a client certificate from our CA."""
    root = tmp_path_factory.mktemp("tls")
    pki = make_pki(root / "pki")
    listener = TlsListener(
        port=free_port(), cert_file=pki.server_cert, key_file=pki.server_key, ca_file=pki.ca
    )
    server = LocalServer(directory=root / "ferretdb", port=free_port(), tls=listener)
    server.start()
    try:
        yield TlsDb(server, pki)
    finally:
        server.stop()


def _settings(uri: str, tmp_path: Path, **values: Any) -> Settings:
    return Settings(
        app_env="test",
        mongodb_uri=uri,
        mongodb_db="tls_test",
        mongodb_timeout_ms=2000,
        artifacts_dir=tmp_path / "artifacts",
        local_db_dir=tmp_path / "localdb",
        **values,
    )


async def test_the_service_reaches_the_database_over_tls_with_its_client_certificate(
    tls_db: TlsDb, tmp_path: Path
) -> None:
    settings = analytics_support.app_settings(
        tls_db.uri,
        "tls_service",
        tmp_path,
        mongodb_tls_ca_file=tls_db.pki.ca,
        mongodb_tls_cert_key_file=tls_db.pki.client,
    )
    assert settings.mongodb_tls_enabled
    async with open_db(settings) as db:
        await db["probe"].insert_one({"_id": "over-tls", "n": 1})
        assert await db["probe"].find_one({"_id": "over-tls"}) == {"_id": "over-tls", "n": 1}
    async with analytics_support.serve(settings, drop_database=True) as http:
        # No model is trained here, so /ready is 503 for that alone: its database check ran
        # over TLS.
        ready = await http.get("/ready")
        assert ready.json()["checks"]["database"] == "ok", ready.text


@pytest.mark.parametrize(
    "values",
    [
        pytest.param({"mongodb_tls_ca_file": "ca"}, id="no-client-certificate"),
        pytest.param(
            {"mongodb_tls_ca_file": "ca", "mongodb_tls_cert_key_file": "stranger"},
            id="client-certificate-from-another-ca",
        ),
        pytest.param(
            {"mongodb_tls_ca_file": "other_ca", "mongodb_tls_cert_key_file": "client"},
            id="server-not-trusted",
        ),
        pytest.param({}, id="plain-tcp"),
    ],
)
async def test_connections_the_tls_listener_must_refuse(
    tls_db: TlsDb, tmp_path: Path, values: dict[str, str]
) -> None:
    files = {name: getattr(tls_db.pki, attr) for name, attr in values.items()}
    settings = _settings(tls_db.uri, tmp_path, **files)
    with pytest.raises(PyMongoError):
        async with open_db(settings) as db:
            await db.command("ping")


def test_the_plain_listener_still_answers_without_tls(tls_db: TlsDb) -> None:
    # The same server's plain port, for contrast: what the refusals above refuse is TLS.
    assert tls_db.server.accepts_connections()


PRODUCTION: dict[str, Any] = {"app_env": "production", "jwt_secret": JWT_SECRET}


@pytest.mark.parametrize(
    "uri",
    [
        "mongodb://db.example.org:27017/tmdb",
        "mongodb://user:pw@10.0.0.5:27017,10.0.0.6:27017/?replicaSet=rs0",
        "mongodb://mongo:27017/?tls=false",
        "mongodb+srv://cluster.example.net/?tls=false",
        "mongodb://db.example.org/?ssl=false&authSource=admin",
    ],
)
def test_production_refuses_a_remote_database_without_tls(uri: str) -> None:
    with pytest.raises(ValidationError, match=r"without TLS.*MONGODB_ALLOW_UNENCRYPTED"):
        Settings(mongodb_uri=uri, **PRODUCTION)
    # Said explicitly, it is allowed; outside production it is not checked.
    Settings(mongodb_uri=uri, mongodb_allow_unencrypted=True, **PRODUCTION)
    Settings(mongodb_uri=uri, app_env="development")


@pytest.mark.parametrize(
    ("uri", "values"),
    [
        ("mongodb://db.example.org:27017/?tls=true", {}),
        ("mongodb://db.example.org:27017/?ssl=true", {}),
        ("mongodb://db.example.org:27017/?TLS=TRUE", {}),
        ("mongodb+srv://cluster.example.net/tmdb", {}),
        ("mongodb://db.example.org:27017/", {"mongodb_tls": True}),
        ("mongodb://db.example.org:27017/", {"mongodb_tls_ca_file": "ca"}),
        ("mongodb://127.0.0.1:27017/", {}),
        ("mongodb://localhost:27017,[::1]:27018/", {}),
        (None, {}),
    ],
)
def test_production_accepts_tls_and_local_databases(
    uri: str | None, values: dict[str, Any], tmp_path: Path
) -> None:
    if values.get("mongodb_tls_ca_file") == "ca":
        (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
        values = {**values, "mongodb_tls_ca_file": tmp_path / "ca.pem"}
    Settings(mongodb_uri=uri, **PRODUCTION, **values)


def test_tls_settings_that_cannot_work_are_refused_at_startup(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match=r"MONGODB_TLS_CA_FILE: .* is not a readable file"):
        Settings(mongodb_uri="mongodb://db:27017/", mongodb_tls_ca_file=tmp_path / "missing.pem")
    with pytest.raises(ValidationError, match="tls=false but MONGODB_TLS"):
        Settings(mongodb_uri="mongodb://db:27017/?tls=false", mongodb_tls=True)
