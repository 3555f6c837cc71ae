"""The contract every key backend fulfils; everything Ethereum-specific lives in `signer.eth`."""

from typing import ClassVar, Protocol

from signer.eth.signature import SignatureFormat


class DigestBackend(Protocol):
    """Signs 32-byte digests with one secp256k1 key that never leaves the backend.

    `sign_digest` must not hash, prefix or domain-separate its input. It returns the signature in
    `signature_format` ("der": an ECDSA-Sig-Value, "raw": r || s, 32 bytes each), with `s` in
    either half of the curve order: the core normalizes and checks it. Backend faults are raised
    as `signer.errors` exceptions, never as the backend library's own.
    """

    name: ClassVar[str]  # "env", "kms" or "pkcs11": shown in ListKeys
    signature_format: ClassVar[SignatureFormat]

    @property
    def public_key(self) -> bytes:
        """The 65-byte uncompressed SEC1 point, read once and cached."""
        ...

    def sign_digest(self, digest: bytes, timeout: float | None) -> bytes:
        """Sign exactly 32 bytes; `timeout` is the caller's remaining deadline in seconds."""
        ...

    def close(self) -> None: ...
