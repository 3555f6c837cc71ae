"""From whatever a backend returns to an Ethereum signature: DER or r||s in, (r, low s, recid) out.

This is the one normalization path for every backend (EIP-2 low-s; the recovery id found by
recovering against the key's own public key). A signature that recovers to no other key than the
expected one never leaves this module.
"""

from dataclasses import dataclass
from typing import Literal

from coincurve import PublicKey
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

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
        return (
            self.r.to_bytes(32, "big") + self.s.to_bytes(32, "big") + bytes([27 + self.recovery_id])
        )


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


def normalize(digest: bytes, r: int, s: int, public_key: bytes) -> RecoverableSignature:
    """Low-s (EIP-2) and the recovery id that yields `public_key` (65-byte uncompressed),
    or BadBackendSignature."""
    if not (0 < r < SECP256K1_N and 0 < s < SECP256K1_N):
        raise BadBackendSignature("backend returned a signature with r or s out of range")
    if s > HALF_N:
        s = SECP256K1_N - s
    rs = r.to_bytes(32, "big") + s.to_bytes(32, "big")
    # Recovery ids 2 and 3 (r >= n - p) occur with probability ~2**-127: not worth a branch.
    for recovery_id in (0, 1):
        try:
            candidate = PublicKey.from_signature_and_message(
                rs + bytes([recovery_id]), digest, hasher=None
            )
        except ValueError:  # no point for this recovery id
            continue
        if candidate.format(compressed=False) == public_key:
            return RecoverableSignature(r, s, recovery_id)
    raise BadBackendSignature("backend signature does not recover to the key's public key")
