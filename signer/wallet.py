"""WalletSigner: one key, every kind of Ethereum signature, through one digest-signing path."""

import time
from collections.abc import Callable
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric import ec

from signer import metrics
from signer.backends.base import DigestBackend
from signer.errors import (
    BackendUnavailable,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    PermissionDenied,
    SignerError,
)
from signer.eth import messages, signature, transactions
from signer.eth.fields import address_of
from signer.eth.hashing import keccak
from signer.eth.signature import RecoverableSignature
from signer.health import KeyHealth

SELF_TEST_DIGEST = keccak(b"wallet-signer start-up self-test")
# Errors that say the key cannot sign now (as opposed to the caller's deadline running out).
_BACKEND_FAULTS = (BackendUnavailable, FailedPrecondition, PermissionDenied)

# Called with the digest after every check and right before the backend is asked to sign it
# (the audit's intent record); raising stops the signature.
BeforeSign = Callable[[bytes], None]


@dataclass(frozen=True, slots=True)
class SignedTransaction:
    raw_transaction: bytes
    transaction_hash: bytes
    r: int
    s: int
    v: int


@dataclass(frozen=True, slots=True)
class SignedDigest:
    signature: bytes  # 65 bytes r || s || v, v = 27/28
    digest: bytes


class WalletSigner:
    """Routes every request for one key through `_sign_digest`; the backend never sees more.

    Every backend signature is timed and its outcome recorded in `health` (a fault flips the key
    to not serving, a good signature back). A server sets `require_self_test`: until
    `self_test()` has passed, signing is refused.
    """

    def __init__(
        self,
        key_id: str,
        backend: DigestBackend,
        pinned_address: str | None = None,
        *,
        version: int = 1,
    ) -> None:
        self.key_id = key_id
        self.version = version  # of the key id: 1 as configured, later ones made by rotation
        self.backend = backend
        self.public_key = _checked_public_key(key_id, backend.public_key)
        self.address = address_of(self.public_key)
        # `address = "0x..."` in the key's config: checked now and at every self-test.
        self.pinned_address = pinned_address
        self._check_pin(self.address)
        self.address_bytes = bytes.fromhex(self.address[2:])
        self.health = KeyHealth(key_id)
        self.require_self_test = False

    @property
    def backend_name(self) -> str:
        return self.backend.name

    def sign_transaction(
        self,
        tx: transactions.UnsignedTransaction,
        timeout: float | None = None,
        before_sign: BeforeSign | None = None,
    ) -> SignedTransaction:
        sig = self._sign_digest(transactions.signing_hash(tx), timeout, before_sign)
        raw = transactions.encode_signed(tx, sig.recovery_id, sig.r, sig.s)
        v = transactions.signature_v(tx, sig.recovery_id)
        return SignedTransaction(raw, keccak(raw), sig.r, sig.s, v)

    def sign_authorization(
        self,
        auth: transactions.UnsignedAuthorization,
        timeout: float | None = None,
        before_sign: BeforeSign | None = None,
    ) -> transactions.Authorization:
        """An EIP-7702 authorization tuple signed by this key (its address is the authority)."""
        sig = self._sign_digest(transactions.authorization_digest(auth), timeout, before_sign)
        return transactions.Authorization(
            auth.chain_id, auth.address, auth.nonce, sig.recovery_id, sig.r, sig.s
        )

    def sign_message(
        self, message: bytes, timeout: float | None = None, before_sign: BeforeSign | None = None
    ) -> SignedDigest:
        return self.sign_prepared(messages.personal_message_digest(message), timeout, before_sign)

    def sign_typed_data(
        self,
        typed_data_json: str,
        timeout: float | None = None,
        before_sign: BeforeSign | None = None,
    ) -> SignedDigest:
        return self.sign_prepared(messages.typed_data_digest(typed_data_json), timeout, before_sign)

    def self_test(self, timeout: float | None = None) -> None:
        """Sign a fixed digest and recover this key's own public key, or raise; a pinned
        address is compared with the backend's public key as it is now."""
        try:
            self._check_pin(address_of(_checked_public_key(self.key_id, self.backend.public_key)))
        except SignerError:
            self.health.failed()
            raise
        self._backend_sign(SELF_TEST_DIGEST, timeout)
        self.health.self_tested = True

    def sign_prepared(
        self, digest: bytes, timeout: float | None, before_sign: BeforeSign | None = None
    ) -> SignedDigest:
        """Sign an EIP-191 or EIP-712 digest that `signer.eth.messages` computed."""
        return SignedDigest(self._sign_digest(digest, timeout, before_sign).to_rsv(), digest)

    def _sign_digest(
        self, digest: bytes, timeout: float | None, before_sign: BeforeSign | None = None
    ) -> RecoverableSignature:
        if self.require_self_test and not self.health.self_tested:
            raise BackendUnavailable(f"key {self.key_id!r} has not passed its self-test yet")
        deadline = None if timeout is None else time.monotonic() + timeout
        if before_sign is not None:
            before_sign(digest)
        if deadline is not None:
            timeout = deadline - time.monotonic()  # what is left after the intent record
            if timeout <= 0:
                # Never sign for a caller who has given up: the backend is not asked.
                raise DeadlineExceeded(
                    f"key {self.key_id!r}: the caller's deadline passed before the backend was "
                    "asked; nothing was signed"
                )
        return self._backend_sign(digest, timeout)

    def _backend_sign(self, digest: bytes, timeout: float | None) -> RecoverableSignature:
        assert len(digest) == 32  # every caller passes a keccak-256 output
        backend = self.backend.name
        started = time.perf_counter()
        try:
            der_or_raw = self.backend.sign_digest(digest, timeout)
            seconds = time.perf_counter() - started
            r, s = signature.decode(der_or_raw, self.backend.signature_format)
            recoverable = signature.normalize(digest, r, s, self.public_key)
        except SignerError as exc:
            kind = next(c.__name__ for c in type(exc).__mro__ if not c.__name__.startswith("_"))
            metrics.backend_failed(self.key_id, backend, kind, time.perf_counter() - started)
            if isinstance(exc, _BACKEND_FAULTS):
                self.health.failed()
            raise
        except Exception:
            metrics.backend_failed(self.key_id, backend, metrics.UNEXPECTED_ERROR,
                                   time.perf_counter() - started)
            self.health.failed()
            raise
        metrics.backend_signed(self.key_id, backend, seconds)
        self.health.succeeded()
        return recoverable

    def _check_pin(self, address: str) -> None:
        pinned = self.pinned_address
        if pinned is not None and address.lower() != pinned.lower():
            raise FailedPrecondition(
                f"keys.{self.key_id}: the backend's key has address {address}, but the config "
                f"pins address {pinned}: refusing it (was the key, alias or secret replaced?)"
            )

    def __repr__(self) -> str:
        shown = self.key_id if self.version == 1 else f"{self.key_id}@{self.version}"
        return f"WalletSigner({shown!r}, {self.backend_name}, {self.address})"


def _checked_public_key(key_id: str, public_key: bytes) -> bytes:
    """Refuse anything but a valid uncompressed secp256k1 point."""
    if len(public_key) != 65 or public_key[0] != 4:
        raise ConfigError(f"keys.{key_id}: backend public key is not a 65-byte uncompressed point")
    try:
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), public_key)
    except ValueError:
        raise ConfigError(f"keys.{key_id}: backend public key is not on secp256k1") from None
    return bytes(public_key)
