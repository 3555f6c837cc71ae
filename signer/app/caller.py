"""Who is asking: what a door knows about the caller, before the application identifies it."""

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Caller:
    peer: str  # the transport's peer address, e.g. "ipv4:127.0.0.1:53412"
    request_id: str  # the caller's x-request-id (bounded, printable) or one we generated
    certificate_pem: bytes | None = None  # the client certificate the TLS handshake verified

    def __repr__(self) -> str:  # the certificate is public, but long: keep logs short
        cert = "cert" if self.certificate_pem else "no cert"
        return f"Caller({self.peer}, {self.request_id}, {cert})"
