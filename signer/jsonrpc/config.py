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

    def is_loopback(self) -> bool:
        return is_loopback(self.listen)
