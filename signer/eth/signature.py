"""From whatever a backend returns to an Ethereum signature: DER or r||s in, (r, low s, recid) out.

This is the one normalization path for every backend (EIP-2 low-s; the recovery id found by
recovering against the key's own public key). A signature that recovers to no other key than the
expected one never leaves this module.
"""

from dataclasses import dataclass
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from eth_keys import keys
from eth_keys.exceptions import BadSignature

from signer.errors import BackendUnavailable

SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
HALF_N = SECP256K1_N // 2

SignatureFormat = Literal["der", "raw"]


@dataclass(frozen=True, slots=True)
class RecoverableSignature:
    r: int
    s: int
    recovery_id: int

    def to_rsv(self) -> bytes:
        """65 bytes r || s || v with v = 27 + recovery id (EIP-191 / EIP-712 convention)."""
        return self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big") + bytes([27 + self.recovery_id])


class BadBackendSignature(BackendUnavailable):
    """The backend's output is not a valid signature by this key: never released."""


def decode(signature: bytes, fmt: SignatureFormat) -> tuple[int, int]:
    """(r, s) from a DER ECDSA-Sig-Value or a 64-byte r||s."""
    if fmt == "der":
        try:
            return decode_dss_signature(signature)
        except ValueError:
            raise BadBackendSignature("backend returned a malformed DER signature") from None
    if len(signature) != 64:
        raise BadBackendSignature(f"backend returned {len(signature)} bytes, expected r||s (64)")
    return int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")


def normalize(digest: bytes, r: int, s: int, public_key: keys.PublicKey) -> RecoverableSignature:
    """Low-s (EIP-2) and the recovery id that yields `public_key`, or BadBackendSignature."""
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise BadBackendSignature("backend returned a signature with r or s out of range")
    if s > HALF_N:
        s = SECP256K1_N - s
    for recovery_id in (0, 1):
        try:
            candidate = keys.Signature(vrs=(recovery_id, r, s)).recover_public_key_from_msg_hash(
                digest
            )
        except BadSignature:
            continue
        if candidate == public_key:
            return RecoverableSignature(r, s, recovery_id)
    raise BadBackendSignature("backend signature does not recover to the key's public key")
