"""Real X.509 certificates for TLS tests, made with `cryptography` (EC P-256: milliseconds each).

`make_tls_certs(directory)` writes a complete set as PEM files and returns a `TlsCerts`:

* `ca`: the client and server CA.
* `server`, `server_rotated`: two server certificates from `ca` (SAN IP 127.0.0.1 and DNS
  localhost), different keys and serials, for SIGHUP rotation tests.
* `client_uri`: identity in a URI SAN (`URI_IDENTITY`, also carries a DNS SAN and a CN that
  must lose to the URI); `client_dns`: only a DNS SAN (`DNS_IDENTITY`, CN differs);
  `client_cn`: no SAN at all, only the subject CN (`CN_IDENTITY`).
* `client_expired`, `client_not_yet_valid`, `client_other_ca`: the `URI_IDENTITY` client again,
  wrong only in its validity window or its issuer. `other_ca` has the same subject name as
  `ca` (only the signature tells them apart).

Each `Issued` has `cert_path`, `key_path` (0600), `cert_pem`, `key_pem`, `cert`; `.chain_pem` is
the certificate followed by its CA. `CertificateAuthority.issue(...)` makes any other variant.
"""

import datetime as dt
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

URI_IDENTITY = "spiffe://prod/agents/trader"
DNS_IDENTITY = "reader.ops.internal"
CN_IDENTITY = "legacy-batch-job"
CA_NAME = "wallet-signer test CA"


def _name(common_name: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "wallet-signer tests"),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


@dataclass(frozen=True)
class Issued:
    """A certificate and its private key, in memory and as PEM files."""

    name: str
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey
    cert_path: Path
    key_path: Path
    issuer_pem: bytes

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    @property
    def key_pem(self) -> bytes:
        return self.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())

    @property
    def chain_pem(self) -> bytes:
        """Leaf then issuer (a server's `tls_cert_file` may hold a chain)."""
        return self.cert_pem + self.issuer_pem


class CertificateAuthority:
    """A self-signed CA that issues leaf certificates into one directory."""

    def __init__(self, directory: Path, name: str = "ca", common_name: str = CA_NAME) -> None:
        self.directory = directory
        self.key = ec.generate_private_key(ec.SECP256R1())
        now = _now()
        subject = _name(common_name)
        public = self.key.public_key()
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject).issuer_name(subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            # wide enough to contain the expired and not-yet-valid leaves' windows
            .not_valid_before(now - dt.timedelta(days=30))
            .not_valid_after(now + dt.timedelta(days=365))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.issued = self._write(name, self.cert, self.key)

    @property
    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(
        self, name: str, *, common_name: str, uris: tuple[str, ...] = (),
        dns_names: tuple[str, ...] = (), ips: tuple[str, ...] = (), server: bool = False,
        not_before: dt.datetime | None = None, not_after: dt.datetime | None = None,
    ) -> Issued:
        """A leaf certificate (serverAuth if `server`, else clientAuth) written as
        <name>.crt / <name>.key. A SAN extension only if some SAN is given."""
        now = _now()
        key = ec.generate_private_key(ec.SECP256R1())
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common_name)).issuer_name(self.cert.subject)
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before or now - dt.timedelta(hours=1))
            .not_valid_after(not_after or now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(
                self.key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [
            *(x509.UniformResourceIdentifier(u) for u in uris),
            *(x509.DNSName(d) for d in dns_names),
            *(x509.IPAddress(ipaddress.ip_address(i)) for i in ips),
        ]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return self._write(name, builder.sign(self.key, hashes.SHA256()), key)

    def issue_server(self, name: str = "server") -> Issued:
        return self.issue(name, common_name="localhost", dns_names=("localhost",),
                          ips=("127.0.0.1",), server=True)

    def _write(self, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Issued:
        cert_path, key_path = self.directory / f"{name}.crt", self.directory / f"{name}.key"
        issued = Issued(name, cert, key, cert_path, key_path,
                        self.cert.public_bytes(serialization.Encoding.PEM))
        cert_path.write_bytes(issued.cert_pem)
        key_path.touch(mode=0o600)
        key_path.chmod(0o600)
        key_path.write_bytes(issued.key_pem)
        return issued


@dataclass(frozen=True)
class TlsCerts:
    directory: Path
    ca: CertificateAuthority
    other_ca: CertificateAuthority
    server: Issued
    server_rotated: Issued
    client_uri: Issued
    client_dns: Issued
    client_cn: Issued
    client_expired: Issued
    client_not_yet_valid: Issued
    client_other_ca: Issued


def make_tls_certs(directory: Path) -> TlsCerts:
    """The full set (see the module docstring) written into `directory`."""
    directory.mkdir(parents=True, exist_ok=True)
    ca = CertificateAuthority(directory, "ca")
    other_ca = CertificateAuthority(directory, "other-ca")  # same subject name as `ca`
    now = _now()

    def trader(authority: CertificateAuthority, name: str, not_before: dt.datetime | None = None,
               not_after: dt.datetime | None = None) -> Issued:
        return authority.issue(name, common_name="trader-cn", uris=(URI_IDENTITY,),
                               dns_names=("trader.dns.internal",), not_before=not_before,
                               not_after=not_after)

    return TlsCerts(
        directory=directory,
        ca=ca,
        other_ca=other_ca,
        server=ca.issue_server("server"),
        server_rotated=ca.issue_server("server-rotated"),
        client_uri=trader(ca, "client-uri"),
        client_dns=ca.issue("client-dns", common_name="reader-cn", dns_names=(DNS_IDENTITY,)),
        client_cn=ca.issue("client-cn", common_name=CN_IDENTITY),
        client_expired=trader(ca, "client-expired", not_before=now - dt.timedelta(days=10),
                              not_after=now - dt.timedelta(days=1)),
        client_not_yet_valid=trader(ca, "client-not-yet-valid",
                                    not_before=now + dt.timedelta(days=1),
                                    not_after=now + dt.timedelta(days=30)),
        client_other_ca=trader(other_ca, "client-other-ca"),
    )
