"""EIP-4844 blob sidecars: KZG commitments and proofs, versioned hashes, the network wrapper.

Nothing here is signed: a type 3 signature covers the payload, whose `blob_versioned_hashes`
commit to the blobs. `eth_sendTransaction` with `blobs` needs the sidecar the node gossips:

    EIP-4844 (Cancun, Prague): 0x03 || rlp([tx_payload_body, blobs, commitments, proofs])
    EIP-7594 (Osaka):          0x03 || rlp([tx_payload_body, 1, blobs, commitments, cell_proofs])

The KZG work is ckzg's (c-kzg-4844, what eth-account uses) with the mainnet trusted setup of
the KZG ceremony. The setup is read from eth-account's copy, in this one module, and checked
against its published sha256 before use; loading it costs seconds, so it is loaded once, on the
first blob.
"""

import hashlib
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import ckzg
import rlp

from signer.errors import InvalidRequest
from signer.eth.transactions import BLOB, BLOB_HASH_VERSION, MAX_BLOBS_PER_TRANSACTION

BYTES_PER_BLOB = 4096 * 32  # 4096 field elements of 32 bytes
CELLS_PER_EXT_BLOB = 128  # EIP-7594: one cell proof per cell of the extended blob
WRAPPER_VERSION_7594 = 1

# sha256 of trusted_setup.txt as published with c-kzg-4844 (and shipped by eth-account)
TRUSTED_SETUP_SHA256 = "d39b9f2d047cc9dca2de58f264b6a09448ccd34db967881a6713eacacf0f26b7"

NetworkForm = Literal["eip4844", "eip7594"]

_setup_lock = threading.Lock()
_setup: Any = None


def _trusted_setup_path() -> Path:
    # eth-account's copy of the ceremony output; a public module attribute, pinned by sha256
    from eth_account.typed_transactions.base import TRUSTED_SETUP

    return Path(TRUSTED_SETUP)


def trusted_setup() -> Any:
    """The loaded KZG setup (once a process); RuntimeError if the file is not the ceremony's."""
    global _setup
    with _setup_lock:
        if _setup is None:
            path = _trusted_setup_path()
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest != TRUSTED_SETUP_SHA256:
                raise RuntimeError(f"KZG trusted setup {path} has sha256 {digest}, not the "
                                   "ceremony's: refusing to make blob proofs with it")
            _setup = ckzg.load_trusted_setup(str(path), 0)
        return _setup


@dataclass(frozen=True, slots=True)
class Sidecar:
    blobs: tuple[bytes, ...]
    commitments: tuple[bytes, ...]
    versioned_hashes: tuple[bytes, ...]

    def proofs(self) -> list[bytes]:
        """EIP-4844 blob proofs, one a blob."""
        setup = trusted_setup()
        return [
            bytes(ckzg.compute_blob_kzg_proof(blob, commitment, setup))
            for blob, commitment in zip(self.blobs, self.commitments, strict=True)
        ]

    def cell_proofs(self) -> list[bytes]:
        """EIP-7594 cell proofs, CELLS_PER_EXT_BLOB a blob, blob by blob."""
        setup = trusted_setup()
        proofs: list[bytes] = []
        for blob in self.blobs:
            _, cell_proofs = ckzg.compute_cells_and_kzg_proofs(blob, setup)
            proofs.extend(bytes(p) for p in cell_proofs)
        return proofs


def check_blob_sizes(blobs: list[bytes], field: str = "blobs") -> None:
    if not blobs:
        raise InvalidRequest(f"{field}: must not be empty")
    if len(blobs) > MAX_BLOBS_PER_TRANSACTION:
        raise InvalidRequest(
            f"{field}: {len(blobs)} blobs; a block holds at most {MAX_BLOBS_PER_TRANSACTION}"
        )
    for i, blob in enumerate(blobs):
        if len(blob) != BYTES_PER_BLOB:
            raise InvalidRequest(
                f"{field}[{i}]: must be exactly {BYTES_PER_BLOB} bytes, got {len(blob)}"
            )


def versioned_hash(commitment: bytes) -> bytes:
    """0x01 || sha256(commitment)[1:] (EIP-4844 kzg_to_versioned_hash)."""
    return bytes([BLOB_HASH_VERSION]) + hashlib.sha256(commitment).digest()[1:]


def sidecar(blobs: list[bytes], field: str = "blobs") -> Sidecar:
    """Commitments and versioned hashes for `blobs`; InvalidRequest names a bad blob."""
    check_blob_sizes(blobs, field)
    setup = trusted_setup()
    commitments = []
    for i, blob in enumerate(blobs):
        try:
            commitments.append(bytes(ckzg.blob_to_kzg_commitment(blob, setup)))
        except RuntimeError:
            raise InvalidRequest(
                f"{field}[{i}]: not a valid blob (each 32-byte field element must be below "
                "the BLS12-381 modulus)"
            ) from None
    return Sidecar(tuple(blobs), tuple(commitments), tuple(map(versioned_hash, commitments)))


def network_form(signed_payload: bytes, sidecar: Sidecar, form: NetworkForm) -> bytes:
    """The signed payload wrapped with its sidecar, as eth_sendRawTransaction takes it."""
    if signed_payload[:1] != bytes([BLOB]):
        raise ValueError("not a signed type 3 payload")
    body = rlp.decode(signed_payload[1:])
    blobs, commitments = list(sidecar.blobs), list(sidecar.commitments)
    if form == "eip7594":
        wrapped = [body, WRAPPER_VERSION_7594, blobs, commitments, sidecar.cell_proofs()]
    else:
        wrapped = [body, blobs, commitments, sidecar.proofs()]
    encoded: bytes = rlp.encode(wrapped)
    return bytes([BLOB]) + encoded
