"""The test certificate factory: what each certificate claims, checked by two verifiers
(cryptography's X.509 path validation and an OpenSSL TLS handshake over loopback)."""

import datetime as dt
import ipaddress
import socket
import ssl
import threading
from collections.abc import Callable

import pytest
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from tests.tls_certs import (
    CN_IDENTITY,
    DNS_IDENTITY,
    URI_IDENTITY,
    Issued,
    TlsCerts,
)


def san(issued: Issued, kind: type[x509.GeneralName]) -> list[object]:
    try:
        ext = issued.cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    return list(ext.value.get_values_for_type(kind))  # type: ignore[arg-type]


def common_name(issued: Issued) -> str:
    return str(issued.cert.subject.get_attributes_for_oid(x509.oid.NameOID.COMMON_NAME)[0].value)


def verify_client(certs: TlsCerts, issued: Issued, at: dt.datetime | None = None) -> None:
    builder = PolicyBuilder().store(Store([certs.ca.cert]))
    if at is not None:
        builder = builder.time(at)
    builder.build_client_verifier().verify(issued.cert, [])


def test_server_certificates_verify_for_loopback_names(tls_certs: TlsCerts) -> None:
    store = Store([tls_certs.ca.cert])
    for server in (tls_certs.server, tls_certs.server_rotated):
        for name in (x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                     x509.DNSName("localhost")):
            chain = PolicyBuilder().store(store).build_server_verifier(name).verify(
                server.cert, [])
            assert chain[-1] == tls_certs.ca.cert
        eku = server.cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    assert tls_certs.server.cert.serial_number != tls_certs.server_rotated.cert.serial_number
    assert tls_certs.server.key_pem != tls_certs.server_rotated.key_pem
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("example.com")).verify(
            tls_certs.server.cert, [])


def test_client_identities(tls_certs: TlsCerts) -> None:
    assert san(tls_certs.client_uri, x509.UniformResourceIdentifier) == [URI_IDENTITY]
    assert san(tls_certs.client_uri, x509.DNSName) != []  # the URI must win over it
    assert san(tls_certs.client_dns, x509.UniformResourceIdentifier) == []
    assert san(tls_certs.client_dns, x509.DNSName) == [DNS_IDENTITY]
    assert common_name(tls_certs.client_dns) != DNS_IDENTITY
    assert san(tls_certs.client_cn, x509.DNSName) == []
    assert san(tls_certs.client_cn, x509.UniformResourceIdentifier) == []
    assert common_name(tls_certs.client_cn) == CN_IDENTITY
    for bad in (tls_certs.client_expired, tls_certs.client_not_yet_valid,
                tls_certs.client_other_ca):
        assert san(bad, x509.UniformResourceIdentifier) == [URI_IDENTITY]


def test_valid_clients_verify_and_bad_ones_do_not(tls_certs: TlsCerts) -> None:
    verify_client(tls_certs, tls_certs.client_uri)
    verify_client(tls_certs, tls_certs.client_dns)
    # cryptography's client verifier requires a SAN; check the CN-only one by its signature
    tls_certs.client_cn.cert.verify_directly_issued_by(tls_certs.ca.cert)
    with pytest.raises(VerificationError):
        verify_client(tls_certs, tls_certs.client_expired)
    with pytest.raises(VerificationError):
        verify_client(tls_certs, tls_certs.client_not_yet_valid)
    # ...and they are wrong only in time: inside their windows they verify
    verify_client(tls_certs, tls_certs.client_expired,
                  at=tls_certs.client_expired.cert.not_valid_before_utc + dt.timedelta(hours=1))
    verify_client(tls_certs, tls_certs.client_not_yet_valid,
                  at=tls_certs.client_not_yet_valid.cert.not_valid_before_utc
                  + dt.timedelta(hours=1))
    # the other CA shares the real CA's name: only the signature tells them apart
    assert tls_certs.client_other_ca.cert.issuer == tls_certs.ca.cert.subject
    with pytest.raises(VerificationError):
        verify_client(tls_certs, tls_certs.client_other_ca)
    with pytest.raises(InvalidSignature):
        tls_certs.client_other_ca.cert.verify_directly_issued_by(tls_certs.ca.cert)


def test_files_hold_the_pem_and_keys_are_private(tls_certs: TlsCerts) -> None:
    for issued in (tls_certs.ca.issued, tls_certs.server, tls_certs.client_uri,
                   tls_certs.client_other_ca):
        assert issued.cert_path.read_bytes() == issued.cert_pem
        assert issued.key_path.read_bytes() == issued.key_pem
        assert issued.key_path.stat().st_mode & 0o077 == 0
        key = serialization.load_pem_private_key(issued.key_path.read_bytes(), None)
        assert key.public_key() == issued.cert.public_key()
    chain = x509.load_pem_x509_certificates(tls_certs.server.chain_pem)
    assert chain == [tls_certs.server.cert, tls_certs.ca.cert]


def handshake(certs: TlsCerts, client: Issued | None) -> None:
    """One mutual-TLS handshake over loopback; raises ssl.SSLError if either side refuses."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(certs.server.cert_path, certs.server.key_path)
    server_ctx.load_verify_locations(certs.ca.issued.cert_path)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    client_ctx = ssl.create_default_context(cafile=certs.ca.issued.cert_path)
    if client is not None:
        client_ctx.load_cert_chain(client.cert_path, client.key_path)
    server_error: list[BaseException] = []
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(10)

        def serve() -> None:
            try:
                conn, _ = listener.accept()
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                server_error.append(exc)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()
        try:
            with socket.create_connection(listener.getsockname(), timeout=10) as raw:
                with client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls:
                    assert tls.recv(2) == b"ok"
        finally:
            thread.join(10)
    if server_error:
        raise server_error[0]


GOOD: list[Callable[[TlsCerts], Issued]] = [
    lambda c: c.client_uri, lambda c: c.client_dns, lambda c: c.client_cn]
BAD: list[Callable[[TlsCerts], Issued | None]] = [
    lambda c: None, lambda c: c.client_expired, lambda c: c.client_not_yet_valid,
    lambda c: c.client_other_ca]


@pytest.mark.parametrize("pick", GOOD, ids=["uri", "dns", "cn"])
def test_openssl_accepts_good_clients(tls_certs: TlsCerts,
                                      pick: Callable[[TlsCerts], Issued]) -> None:
    handshake(tls_certs, pick(tls_certs))


@pytest.mark.parametrize("pick", BAD, ids=["none", "expired", "not-yet-valid", "other-ca"])
def test_openssl_refuses_bad_clients(tls_certs: TlsCerts,
                                     pick: Callable[[TlsCerts], Issued | None]) -> None:
    with pytest.raises((ssl.SSLError, ConnectionResetError, BrokenPipeError)):
        handshake(tls_certs, pick(tls_certs))
