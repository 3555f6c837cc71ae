"""Malformed SignTransaction requests with the status and message fragment each must get, and a
few good ones: shared by the unary tests (tests/grpc/test_bad_input.py), the stream tests and
the metrics tests."""

import grpc
import rlp

from signer.v1 import signer_pb2 as pb

GOOD_TO = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55 test vector
BAD_CHECKSUM = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"
TOO_BIG = str(2**256)


def tx(**fields: object) -> pb.SignTransactionRequest:
    base: dict[str, object] = {
        "type": 2, "chain_id": 1, "to": GOOD_TO, "gas_limit": 21000,
        "max_fee_per_gas": "10", "max_priority_fee_per_gas": "1",
    }
    base.update(fields)
    return pb.SignTransactionRequest(key_id="hot", transaction=pb.Transaction(**base))


def unsigned(payload: bytes) -> pb.SignTransactionRequest:
    return pb.SignTransactionRequest(key_id="hot", unsigned_transaction=payload)


INVALID = grpc.StatusCode.INVALID_ARGUMENT
CASES = [
    # (request, status, fragment of the message)
    (tx(to="0x1234"), INVALID, "to: expected a 0x-prefixed 20-byte hex address"),
    (tx(to="5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed00"), INVALID, "to: expected a 0x-prefixed"),
    (tx(to="0X5AAEB6053F3E94C9B9A09F33669435E7EF1BEAED"), INVALID, "to: expected a 0x-prefixed"),
    (tx(to=BAD_CHECKSUM), INVALID, "to: EIP-55 checksum mismatch"),
    (tx(to=GOOD_TO + " "), INVALID, "to: expected"),
    (tx(value="-1"), INVALID, "value: expected a non-negative base-10 integer"),
    (tx(value="0x10"), INVALID, "value: expected a non-negative base-10 integer"),
    (tx(value="1e18"), INVALID, "value: expected"),
    (tx(value=" 1"), INVALID, "value: expected"),
    (tx(value="١٢"), INVALID, "value: expected"),  # Arabic-Indic digits: isdigit() but not ASCII
    (tx(value=TOO_BIG), INVALID, "value: " + TOO_BIG + " does not fit in 256 bits"),
    (tx(value="9" * 200), INVALID, "value: expected"),
    (tx(max_fee_per_gas=TOO_BIG), INVALID, "max_fee_per_gas: "),
    (tx(max_priority_fee_per_gas="11"), INVALID, "max_priority_fee_per_gas: exceeds max_fee_per_gas"),
    (tx(gas_price="1"), INVALID, "gas_price: not a field of type 2"),
    (tx(type=0, gas_price="1", max_fee_per_gas="", max_priority_fee_per_gas="1"), INVALID,
     "max_priority_fee_per_gas: not a field of type 0"),
    (tx(type=0, gas_price="1", max_fee_per_gas="", max_priority_fee_per_gas="",
        access_list=[pb.AccessListEntry(address=GOOD_TO)]), INVALID, "access_list: not a field of type 0"),
    (tx(authorization_list=[pb.Authorization(chain_id=1, address=GOOD_TO, r=b"\1", s=b"\1")]),
     INVALID, "authorization_list: not a field of type 2"),
    (tx(type=3), INVALID, "blob_versioned_hashes: must not be empty for type 3 transactions"),
    (tx(type=3, blob_versioned_hashes=[b"\x01" + b"\0" * 31], to=""), INVALID,
     "to: type 3 (EIP-4844) transactions cannot create contracts"),
    (tx(type=3, blob_versioned_hashes=[b"\x00" + b"\0" * 31]), INVALID,
     "blob_versioned_hashes[0]: version byte 0x00, expected 0x01"),
    (tx(type=3, blob_versioned_hashes=[b"\x01" * 31]), INVALID,
     "blob_versioned_hashes[0]: must be exactly 32 bytes, got 31"),
    (tx(type=3, blob_versioned_hashes=[b"\x01" * 32] * 10), INVALID,
     "blob_versioned_hashes: 10 blobs; a block holds at most 9"),
    (tx(type=3, blob_versioned_hashes=[b"\x01" * 32], max_fee_per_blob_gas="x"), INVALID,
     "max_fee_per_blob_gas: expected a non-negative base-10 integer string"),
    (tx(blob_versioned_hashes=[b"\x01" * 32]), INVALID,
     "blob_versioned_hashes: not a field of type 2 transactions"),
    (tx(max_fee_per_blob_gas="1"), INVALID, "max_fee_per_blob_gas: not a field of type 2"),
    (tx(type=5), INVALID, "unknown transaction type 5"),
    (tx(type=0x7F), INVALID, "unknown transaction type 127"),
    (tx(chain_id=0), INVALID, "chain_id: required"),
    (tx(type=0, chain_id=0, gas_price="1", max_fee_per_gas="", max_priority_fee_per_gas=""),
     INVALID, "chain_id: required"),
    (tx(chain_id=2**63), INVALID, "chain_id: 9223372036854775808 exceeds the EIP-2294 bound"),
    (tx(nonce=2**64 - 1), INVALID, "nonce: 18446744073709551615 exceeds 2**64-2 (EIP-2681)"),
    (tx(access_list=[pb.AccessListEntry(address=GOOD_TO, storage_keys=[b"\0" * 31])]), INVALID,
     "access_list[0].storage_keys[0]: must be exactly 32 bytes, got 31"),
    (tx(access_list=[pb.AccessListEntry(address=BAD_CHECKSUM)]), INVALID,
     "access_list[0].address: EIP-55 checksum mismatch"),
    (tx(type=4), INVALID, "authorization_list: must not be empty for type 4"),
    (tx(type=4, to="", authorization_list=[pb.Authorization(chain_id=1, address=GOOD_TO)]),
     INVALID, "to: type 4 (EIP-7702) transactions cannot create contracts"),
    (tx(type=4, authorization_list=[pb.Authorization(chain_id=1, address=GOOD_TO, y_parity=2)]),
     INVALID, "authorization_list[0].y_parity: must be 0 or 1"),
    (tx(type=4, authorization_list=[pb.Authorization(chain_id=1, address=GOOD_TO, r=b"\1" * 33)]),
     INVALID, "authorization_list[0].r: at most 32 bytes, got 33"),
    (tx(type=4, authorization_list=[pb.Authorization(address="0x00")]), INVALID,
     "authorization_list[0].address: expected"),
    (pb.SignTransactionRequest(key_id="hot"), INVALID,
     "payload: set either transaction or unsigned_transaction"),
    (unsigned(b""), INVALID, "unsigned_transaction: empty"),
    (unsigned(b"\x02"), INVALID, "malformed RLP"),
    (unsigned(b"\x03" + rlp.encode([])), INVALID, "type 3 has 11 fields, got 0"),
    (unsigned(b"\x03" + rlp.encode([1, 0, 1, 1, 21000, b"\x11" * 20, 0, b"", [], 1, [b"\x01"]])),
     INVALID, "blob_versioned_hashes[0]: must be exactly 32 bytes, got 1"),
    (unsigned(b"\x03" + rlp.encode([1, 0, 1, 1, 21000, b"\x11" * 20, 0, b"", [], 1, b""])),
     INVALID, "blob_versioned_hashes: expected a list, got a byte string"),
    (unsigned(b"\x05" + rlp.encode([])), INVALID, "unknown transaction type 5"),
    (unsigned(b"\x85hello"), INVALID, "an RLP string, not a list"),
    (unsigned(b"\x00" + rlp.encode([0, 1, 21000, b"", 0, b"", 1, 0, 0])), INVALID,
     "legacy transactions have no type byte"),
    (unsigned(b"\x02" + rlp.encode([1, 0, 1, 1, 21000, b"", 0, b"", []]) + b"\x00"), INVALID,
     "malformed RLP"),
    (unsigned(b"\x02" + rlp.encode([1, 0, 1, 1, 21000, b"", 0, b""])), INVALID,
     "type 2 has 9 fields, got 8"),
    (unsigned(b"\x02" + rlp.encode([1, 0, 1, 1, 21000, b"", 0, b"", [], 0, 1, 1])), INVALID,
     "(was it already signed?)"),
    (unsigned(b"\x02" + rlp.encode([b"\x00\x01", 0, 1, 1, 21000, b"", 0, b"", []])), INVALID,
     "chain_id: non-canonical integer (leading zero byte)"),
    (unsigned(b"\x02" + rlp.encode([1, 0, 1, 1, 21000, b"\x11" * 19, 0, b"", []])), INVALID,
     "to: must be 20 bytes or empty, got 19"),
    (unsigned(b"\x02" + rlp.encode([1, b"\x01" * 9, 1, 1, 21000, b"", 0, b"", []])), INVALID,
     "nonce: does not fit in 64 bits"),
    (unsigned(b"\x02" + rlp.encode([1, 0, 1, 1, 21000, b"", 0, [], []])), INVALID,
     "data: expected a byte string, got a list"),
    (unsigned(b"\x01" + rlp.encode([1, 0, 1, 21000, b"", 0, b"", [[b"\x11" * 20, [b"\0"]]]])),
     INVALID, "access_list[0].storage_keys[0]: must be exactly 32 bytes, got 1"),
    (unsigned(rlp.encode([0, 1, 21000, b"", 0, b""])), INVALID, "pre-EIP-155 legacy payload"),
    (unsigned(rlp.encode([0, 1, 21000, b"", 0, b"", 1, 0, 1])), INVALID,
     "EIP-155 payload must end with 0, 0"),
    (unsigned(rlp.encode([0, 1, 21000, b"", 0, b"", 0, 0, 0])), INVALID, "chain_id: required"),
    (unsigned(b"\xf8\x03\x80\x80\x80"), INVALID, "malformed RLP"),  # long form for a short list
    (unsigned(b"\xc2\x81\x05"), INVALID, "malformed RLP"),  # single byte wrapped as a string
    (pb.SignTransactionRequest(key_id="nope", transaction=pb.Transaction(type=2)),
     grpc.StatusCode.NOT_FOUND, "no key named 'nope' is configured"),
    (pb.SignTransactionRequest(key_id="", transaction=pb.Transaction(type=2)), INVALID,
     "key_id: required"),
]

# five valid requests that differ by nonce and value
GOOD = [tx(nonce=n, value=str(10**15 + n)) for n in range(5)]
