"""Blob sidecars (signer.eth.blobs) against eth-account and ckzg's own verifiers: the EIP-7594
network form byte for byte as eth-account's `sign_transaction(..., blobs=...)` builds it, the
EIP-4844 form's proofs verified, and every bad blob refused naming it."""

import hashlib
import os

import ckzg
import pytest
import rlp
from eth_account import Account

from signer.errors import InvalidRequest
from signer.eth import blobs
from signer.eth.blobs import BYTES_PER_BLOB, network_form, sidecar, trusted_setup
from tests.conftest import env_wallet
from tests.support.eth_transactions import to_model

KEY = "0x" + "42" * 32
BLS_MODULUS = 0x73EDA753299D7D483339D80809A1D80553BDA402FFFE5BFEFFFFFFFF00000001


def random_blob() -> bytes:
    """4096 field elements, each below the BLS12-381 modulus (the top byte kept small)."""
    return b"".join(b"\x00" + os.urandom(31) for _ in range(4096))


def blob_tx(hashes: tuple[bytes, ...]) -> dict:
    return {"type": 3, "chainId": 1, "nonce": 5, "to": "0xABaBaBaBABabABabAbAbABAbABabababaBaBABaB", "value": 0,
            "gas": 21000, "maxFeePerGas": 3 * 10**9, "maxPriorityFeePerGas": 10**9,
            "maxFeePerBlobGas": 10**9, "data": b"", "accessList": [],
            "blobVersionedHashes": list(hashes)}


@pytest.fixture(scope="module")
def two_blobs() -> list[bytes]:
    return [random_blob(), bytes(BYTES_PER_BLOB)]


def test_the_eip7594_form_is_eth_accounts_byte_for_byte(two_blobs, monkeypatch):
    # eth-account reloads the trusted setup (seconds) for every KZG value it makes: hand it the
    # one already loaded from the same file (same sha256), its own KZG code runs unchanged
    import eth_account.typed_transactions.base as eth_account_kzg

    monkeypatch.setattr(eth_account_kzg, "load_trusted_setup", lambda path, precompute: (
        trusted_setup()))
    car = sidecar(two_blobs)
    for commitment, versioned in zip(car.commitments, car.versioned_hashes, strict=True):
        assert versioned == b"\x01" + hashlib.sha256(commitment).digest()[1:]
    tx = blob_tx(car.versioned_hashes)
    reference = Account.sign_transaction(dict(tx), KEY, blobs=two_blobs)
    signed = env_wallet(KEY).sign_transaction(to_model(tx))
    # (eth-account's `hash` here is keccak of the network form, not the transaction hash)
    assert network_form(signed.raw_transaction, car, "eip7594") == bytes(
        reference.raw_transaction)
    assert signed.raw_transaction == bytes(Account.sign_transaction(dict(tx), KEY).raw_transaction)


def test_the_eip4844_form_carries_proofs_that_verify(two_blobs):
    car = sidecar(two_blobs)
    signed = env_wallet(KEY).sign_transaction(to_model(blob_tx(car.versioned_hashes)))
    wrapped = network_form(signed.raw_transaction, car, "eip4844")
    assert wrapped[0] == 3
    body, got_blobs, commitments, proofs = rlp.decode(wrapped[1:])
    assert b"\x03" + rlp.encode(body) == signed.raw_transaction
    assert (got_blobs, commitments) == (two_blobs, list(car.commitments))
    assert ckzg.verify_blob_kzg_proof_batch(
        b"".join(got_blobs), b"".join(commitments), b"".join(proofs), trusted_setup())
    cells = network_form(signed.raw_transaction, car, "eip7594")
    _, version, _, _, cell_proofs = rlp.decode(cells[1:])
    assert version == b"\x01" and len(cell_proofs) == 2 * blobs.CELLS_PER_EXT_BLOB


@pytest.mark.parametrize(("blob_list", "message"), [
    ([], "blobs: must not be empty"),
    ([b"\x00" * (BYTES_PER_BLOB - 1)], f"blobs[0]: must be exactly {BYTES_PER_BLOB} bytes, "
                                        f"got {BYTES_PER_BLOB - 1}"),
    ([bytes(BYTES_PER_BLOB), b"\x00"], "blobs[1]: must be exactly"),
    ([bytes(BYTES_PER_BLOB)] * 10, "blobs: 10 blobs; a block holds at most 9"),
    ([BLS_MODULUS.to_bytes(32, "big") * 4096], "blobs[0]: not a valid blob"),
])
def test_bad_blobs_are_refused_naming_the_blob(blob_list, message):
    with pytest.raises(InvalidRequest) as caught:
        sidecar(blob_list)
    assert str(caught.value).startswith(message)


def test_the_trusted_setup_is_pinned(monkeypatch, tmp_path):
    forged = tmp_path / "trusted_setup.txt"
    forged.write_text("4096\n65\n")
    monkeypatch.setattr(blobs, "_setup", None)
    monkeypatch.setattr(blobs, "_trusted_setup_path", lambda: forged)
    with pytest.raises(RuntimeError, match="not the ceremony's"):
        trusted_setup()
