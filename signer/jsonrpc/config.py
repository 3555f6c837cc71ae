"""`[jsonrpc]`: the Ethereum JSON-RPC front door's settings.

TLS is not configured here: the JSON-RPC listener serves the same certificate and trusts the
same client CA as the gRPC server (`[server] tls_cert_file`, `tls_key_file`, `client_ca_file`),
so one identity per client and one rotation (SIGHUP) cover both doors.
"""

from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

from signer.listen import ListenAddress, is_loopback

DEFAULT_JSONRPC_LISTEN = "127.0.0.1:9000"


class JsonRpcConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    listen: ListenAddress = DEFAULT_JSONRPC_LISTEN
    # The node that fills, submits and answers everything that is not signing. Optional:
    # without it only the signing methods are served.
    upstream: str | None = None
    upstream_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Larger bodies get HTTP 413 (and a -32600 error body) without being read.
    max_request_bytes: int = Field(default=1024 * 1024, ge=1024, le=64 * 1024 * 1024)
    # Requests in one JSON-RPC batch; a larger batch is refused whole with -32600.
    max_batch_size: int = Field(default=100, ge=1, le=10_000)
    # Browsers: a request carrying an `Origin` header is refused (403) unless the origin is
    # listed here ("https://app.example"); the default, none, refuses every browser page.
    allowed_origins: list[str] = Field(default_factory=list, max_length=256)
    # Host names (or host:port) the door answers to besides loopback names and addresses; a
    # request with any other `Host` is refused (403): DNS rebinding stops here.
    allowed_hosts: list[str] = Field(default_factory=list, max_length=256)
    # Seconds a caller gets to send one whole request (headers and body; for a new
    # connection the TLS handshake, too); slower ones are closed.
    request_timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    # Seconds a keep-alive connection may sit idle between requests.
    idle_timeout_seconds: float = Field(default=60.0, gt=0, le=3600)
    # Open connections in total and from one peer address. At either cap a new connection
    # takes the place of the oldest idle one whose caller is not an identified client.
    max_connections: int = Field(default=1024, ge=1, le=65536)
    max_connections_per_peer: int = Field(default=128, ge=1, le=65536)
    # Threads that run requests (signing, the upstream node); more requests wait their turn.
    max_workers: int = Field(default=64, ge=1, le=1024)

    @field_validator("upstream")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
        if parts.username or parts.password:
            raise ValueError("credentials in the URL would be logged; not supported")
        return value

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        for origin in value:
            parts = urlsplit(origin)
            if origin == "*" or not parts.scheme or not parts.netloc or parts.path:
                raise ValueError(
                    f"expected origins such as \"https://app.example\" (scheme://host[:port], "
                    f"no path, no wildcard), got {origin!r}"
                )
        return [origin.lower() for origin in value]

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, value: list[str]) -> list[str]:
        for host in value:
            if not host or host == "*" or any(c in host for c in "/@ \t"):
                raise ValueError(f"expected host names such as \"signer.internal\", got {host!r}")
        return [host.lower() for host in value]

    def is_loopback(self) -> bool:
        return is_loopback(self.listen)
