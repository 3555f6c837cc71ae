"""A backend that wraps a real env key and adds one fault: for faults a real backend produces only
by accident (a pause, garbage, an exception). Used by the server, liveness, stream and metrics
tests."""

from typing import ClassVar

from signer.backends.env import EnvBackend
from signer.wallet import WalletSigner
from tests.conftest import env_wallet


class FaultyBackend:
    """An env key whose sign_digest first runs `fault` (which may block, raise or return)."""

    name: ClassVar[str] = "env"
    signature_format: ClassVar[str] = "raw"

    def __init__(self, inner: EnvBackend, fault) -> None:
        self.inner, self.fault = inner, fault

    @property
    def public_key(self) -> bytes:
        return self.inner.public_key

    def sign_digest(self, digest: bytes, timeout: float | None) -> bytes:
        replaced = self.fault(digest)
        return replaced if replaced is not None else self.inner.sign_digest(digest, timeout)

    def close(self) -> None:
        pass


def faulty_signer(env_key: str, fault) -> WalletSigner:
    return WalletSigner("hot", FaultyBackend(env_wallet(env_key).backend, fault))
