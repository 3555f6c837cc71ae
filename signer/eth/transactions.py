"""Unsigned Ethereum transactions: one validated model, one RLP codec in both directions.

Types 0 (legacy, always EIP-155), 1 (EIP-2930), 2 (EIP-1559), 3 (EIP-4844 blob, the payload
only: the sidecar of blobs, commitments and proofs is not signed and never reaches the signer)
and 4 (EIP-7702). The same field table drives encoding and the strict decoding of the unsigned
payloads that ethers, viem and eth-account hand to a signer, so the two routes cannot drift.
eth-account's TypedTransaction has no decoder for unsigned payloads, which is why the codec is
here; eth-account stays the independent reference in the tests.
"""

from dataclasses import dataclass, field
from typing import Any

import rlp

from signer.errors import InvalidRequest
from signer.eth.fields import UINT64_MAX, UINT256_MAX
from signer.eth.hashing import keccak

LEGACY, ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE = 0, 1, 2, 3, 4
SUPPORTED_TYPES = (LEGACY, ACCESS_LIST, DYNAMIC_FEE, BLOB, SET_CODE)

# EIP-2294: the largest chain id for which a legacy EIP-155 `v` still fits in 64 bits.
MAX_CHAIN_ID = UINT64_MAX // 2 - 36
# EIP-2681: a nonce of 2**64-1 can never be used.
MAX_NONCE = UINT64_MAX - 1
# EIP-4844: a versioned hash is 0x01 || sha256(commitment)[1:].
BLOB_HASH_VERSION = 0x01
# The per-block blob maximum of Prague and Osaka (EIP-7691): no transaction can carry more.
# (The blob-parameter-only forks after Osaka raise it; so would this constant.)
MAX_BLOBS_PER_TRANSACTION = 9
GAS_PER_BLOB = 2**17  # EIP-4844 GAS_PER_BLOB: the blob gas one blob uses

# The RLP field order of each type, without the signature; the one table that both encoding and
# decoding read. Legacy's EIP-155 signing form appends chain_id, 0, 0.
_FEES_1559 = ("max_priority_fee_per_gas", "max_fee_per_gas")
_TAIL = ("gas_limit", "to", "value", "data")
FIELD_ORDER: dict[int, tuple[str, ...]] = {
    LEGACY: ("nonce", "gas_price", *_TAIL),
    ACCESS_LIST: ("chain_id", "nonce", "gas_price", *_TAIL, "access_list"),
    DYNAMIC_FEE: ("chain_id", "nonce", *_FEES_1559, *_TAIL, "access_list"),
    BLOB: ("chain_id", "nonce", *_FEES_1559, *_TAIL, "access_list", "max_fee_per_blob_gas",
           "blob_versioned_hashes"),
    SET_CODE: ("chain_id", "nonce", *_FEES_1559, *_TAIL, "access_list", "authorization_list"),
}
COMMON_FIELDS = frozenset({"chain_id", "nonce", *_TAIL})
# Which optional fields each type carries.
TYPE_FIELDS = {t: frozenset(order) - COMMON_FIELDS for t, order in FIELD_ORDER.items()}
OPTIONAL_FIELDS = frozenset().union(*TYPE_FIELDS.values())


@dataclass(frozen=True, slots=True)
class AccessListEntry:
    address: bytes
    storage_keys: tuple[bytes, ...] = ()


@dataclass(frozen=True, slots=True)
class Authorization:
    """An EIP-7702 authorization tuple, already signed by the authorizing account."""

    chain_id: int
    address: bytes
    nonce: int
    y_parity: int
    r: int
    s: int


@dataclass(frozen=True, slots=True)
class UnsignedTransaction:
    type: int
    chain_id: int
    nonce: int
    to: bytes  # b"" is contract creation
    value: int
    gas_limit: int
    data: bytes = b""
    gas_price: int = 0
    max_fee_per_gas: int = 0
    max_priority_fee_per_gas: int = 0
    access_list: tuple[AccessListEntry, ...] = ()
    authorization_list: tuple[Authorization, ...] = field(default=())
    max_fee_per_blob_gas: int = 0
    blob_versioned_hashes: tuple[bytes, ...] = ()

    def __post_init__(self) -> None:
        validate(self)

    @property
    def max_fee_wei(self) -> int:
        """The most this transaction can pay in fees: execution gas plus blob gas (EIP-4844)."""
        per_gas = self.max_fee_per_gas if self.type in FEE_MARKET_TYPES else self.gas_price
        blob_gas = len(self.blob_versioned_hashes) * GAS_PER_BLOB
        return self.gas_limit * per_gas + blob_gas * self.max_fee_per_blob_gas


FEE_MARKET_TYPES = (DYNAMIC_FEE, BLOB, SET_CODE)


@dataclass(frozen=True, slots=True)
class UnsignedAuthorization:
    """An EIP-7702 authorization to be signed by a key held here: "let `address`'s code run
    as my account on chain `chain_id` (0: every chain) while my nonce is `nonce`"."""

    chain_id: int
    address: bytes
    nonce: int

    def __post_init__(self) -> None:
        _bound(self.chain_id, UINT256_MAX, "chain_id", "does not fit in 256 bits")
        _bound(self.nonce, MAX_NONCE, "nonce", "exceeds 2**64-2 (EIP-2681)")
        if len(self.address) != 20:
            raise InvalidRequest("address: must be 20 bytes")


# EIP-7702 MAGIC: the domain byte that keeps an authorization from being any other signature.
AUTHORIZATION_MAGIC = b"\x05"


def authorization_digest(auth: UnsignedAuthorization) -> bytes:
    """keccak256(0x05 || rlp([chain_id, address, nonce])): what the authority signs."""
    return keccak(
        AUTHORIZATION_MAGIC + _rlp([_uint(auth.chain_id), auth.address, _uint(auth.nonce)])
    )


def check_type(tx_type: int) -> None:
    if tx_type not in SUPPORTED_TYPES:
        raise InvalidRequest(
            f"type: unknown transaction type {tx_type}; supported: 0, 1, 2, 3, 4"
        )


def validate(tx: UnsignedTransaction) -> None:
    """Every rule both request routes share; raises InvalidRequest naming the field."""
    check_type(tx.type)
    if tx.chain_id == 0:
        raise InvalidRequest("chain_id: required (legacy transactions are always EIP-155 signed)")
    _bound(tx.chain_id, MAX_CHAIN_ID, "chain_id", "exceeds the EIP-2294 bound")
    _bound(tx.nonce, MAX_NONCE, "nonce", "exceeds 2**64-2 (EIP-2681)")
    _bound(tx.gas_limit, UINT64_MAX, "gas_limit", "does not fit in 64 bits")
    for name in ("value", "gas_price", "max_fee_per_gas", "max_priority_fee_per_gas",
                 "max_fee_per_blob_gas"):
        _bound(getattr(tx, name), UINT256_MAX, name, "does not fit in 256 bits")
    if len(tx.to) not in (0, 20):
        raise InvalidRequest("to: must be 20 bytes or empty")
    allowed = TYPE_FIELDS[tx.type]
    for name in OPTIONAL_FIELDS - allowed:
        if getattr(tx, name):
            raise InvalidRequest(f"{name}: not a field of type {tx.type} transactions")
    if tx.max_priority_fee_per_gas > tx.max_fee_per_gas:
        raise InvalidRequest(
            "max_priority_fee_per_gas: exceeds max_fee_per_gas; no block would include it"
        )
    for i, entry in enumerate(tx.access_list):
        if len(entry.address) != 20:
            raise InvalidRequest(f"access_list[{i}].address: must be 20 bytes")
        for j, key in enumerate(entry.storage_keys):
            if len(key) != 32:
                raise InvalidRequest(
                    f"access_list[{i}].storage_keys[{j}]: must be exactly 32 bytes, got {len(key)}"
                )
    if tx.type == SET_CODE:
        if not tx.to:
            raise InvalidRequest("to: type 4 (EIP-7702) transactions cannot create contracts")
        if not tx.authorization_list:
            raise InvalidRequest("authorization_list: must not be empty for type 4 transactions")
    if tx.type == BLOB:
        _check_blob_fields(tx)
    for i, auth in enumerate(tx.authorization_list):
        where = f"authorization_list[{i}]"
        _bound(auth.chain_id, UINT256_MAX, f"{where}.chain_id", "does not fit in 256 bits")
        _bound(auth.nonce, MAX_NONCE, f"{where}.nonce", "exceeds 2**64-2 (EIP-2681)")
        if len(auth.address) != 20:
            raise InvalidRequest(f"{where}.address: must be 20 bytes")
        if auth.y_parity not in (0, 1):
            raise InvalidRequest(f"{where}.y_parity: must be 0 or 1")
        _bound(auth.r, UINT256_MAX, f"{where}.r", "does not fit in 256 bits")
        _bound(auth.s, UINT256_MAX, f"{where}.s", "does not fit in 256 bits")


def _check_blob_fields(tx: UnsignedTransaction) -> None:
    if not tx.to:
        raise InvalidRequest("to: type 3 (EIP-4844) transactions cannot create contracts")
    count = len(tx.blob_versioned_hashes)
    if count == 0:
        raise InvalidRequest("blob_versioned_hashes: must not be empty for type 3 transactions")
    if count > MAX_BLOBS_PER_TRANSACTION:
        raise InvalidRequest(
            f"blob_versioned_hashes: {count} blobs; a block holds at most "
            f"{MAX_BLOBS_PER_TRANSACTION}"
        )
    for i, versioned in enumerate(tx.blob_versioned_hashes):
        if len(versioned) != 32:
            raise InvalidRequest(
                f"blob_versioned_hashes[{i}]: must be exactly 32 bytes, got {len(versioned)}"
            )
        if versioned[0] != BLOB_HASH_VERSION:
            raise InvalidRequest(
                f"blob_versioned_hashes[{i}]: version byte 0x{versioned[0]:02x}, expected 0x01 "
                "(KZG)"
            )


def _bound(value: int, maximum: int, name: str, why: str) -> None:
    if not 0 <= value <= maximum:
        raise InvalidRequest(f"{name}: {value} {why}")


# --- encoding -------------------------------------------------------------------------------
# Items are turned into bytes here and handed to rlp's raw encoder: rlp.encode's per-item type
# inference costs more than the signature itself on the hot path.

Item = bytes | list["Item"]


def _uint(value: int) -> bytes:
    """Canonical RLP integer: minimal big-endian, zero as the empty string."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _rlp(items: list[Item]) -> bytes:
    encoded: bytes = rlp.codec.encode_raw(items)
    return encoded


def _encode_field(tx: UnsignedTransaction, name: str) -> Item:
    value = getattr(tx, name)
    if name in _INT_BITS:
        return _uint(value)
    if name == "access_list":
        return [[e.address, list(e.storage_keys)] for e in tx.access_list]
    if name == "blob_versioned_hashes":
        return list(tx.blob_versioned_hashes)
    if name == "authorization_list":
        return [
            [
                _uint(a.chain_id),
                a.address,
                _uint(a.nonce),
                _uint(a.y_parity),
                _uint(a.r),
                _uint(a.s),
            ]
            for a in tx.authorization_list
        ]
    encoded: bytes = value  # to, data
    return encoded


def _fields(tx: UnsignedTransaction) -> list[Item]:
    """The RLP field list without signature, in the order each EIP defines."""
    return [_encode_field(tx, name) for name in FIELD_ORDER[tx.type]]


def encode_unsigned(tx: UnsignedTransaction) -> bytes:
    """The payload whose keccak-256 is signed (EIP-155 form for legacy)."""
    if tx.type == LEGACY:
        return _rlp([*_fields(tx), _uint(tx.chain_id), b"", b""])
    return bytes([tx.type]) + _rlp(_fields(tx))


def signing_hash(tx: UnsignedTransaction) -> bytes:
    return keccak(encode_unsigned(tx))


def signature_v(tx: UnsignedTransaction, recovery_id: int) -> int:
    """`v` as encoded in the signed transaction: EIP-155 for legacy, y_parity for typed."""
    if tx.type == LEGACY:
        return tx.chain_id * 2 + 35 + recovery_id
    return recovery_id


def encode_signed(tx: UnsignedTransaction, recovery_id: int, r: int, s: int) -> bytes:
    """The raw transaction for eth_sendRawTransaction."""
    signed = _rlp([*_fields(tx), _uint(signature_v(tx, recovery_id)), _uint(r), _uint(s)])
    return signed if tx.type == LEGACY else bytes([tx.type]) + signed


# --- strict decoding of unsigned payloads ---------------------------------------------------


def decode_unsigned(payload: bytes) -> UnsignedTransaction:
    """Parse an unsigned serialization; anything non-canonical or trailing is refused."""
    if not payload:
        raise InvalidRequest("unsigned_transaction: empty")
    first = payload[0]
    if first >= 0xC0:
        return _decode_legacy(_rlp_list(payload, "unsigned_transaction"))
    if first >= 0x80:
        raise InvalidRequest("unsigned_transaction: not a transaction (an RLP string, not a list)")
    if first == LEGACY:
        raise InvalidRequest(
            "unsigned_transaction: legacy transactions have no type byte; send the RLP list"
        )
    check_type(first)
    items = _rlp_list(payload[1:], f"unsigned_transaction (type {first})")
    names = FIELD_ORDER[first]
    if len(items) != len(names):
        raise InvalidRequest(
            f"unsigned_transaction: type {first} has {len(names)} fields, got {len(items)}"
            + (" (was it already signed?)" if len(items) == len(names) + 3 else "")
        )
    kwargs = {name: _field(name, item) for name, item in zip(names, items, strict=True)}
    return UnsignedTransaction(type=first, **kwargs)


def _decode_legacy(items: list[Any]) -> UnsignedTransaction:
    if len(items) == 6:
        raise InvalidRequest(
            "unsigned_transaction: pre-EIP-155 legacy payload; this signer only signs "
            "replay-protected transactions: send "
            "rlp([nonce, gasPrice, gas, to, value, data, chainId, 0, 0])"
        )
    if len(items) != 9:
        raise InvalidRequest(
            f"unsigned_transaction: a legacy (EIP-155) payload has 9 fields, got {len(items)}"
        )
    names = (*FIELD_ORDER[LEGACY], "chain_id")
    kwargs = {name: _field(name, item) for name, item in zip(names, items, strict=False)}
    if items[7] != b"" or items[8] != b"":
        raise InvalidRequest("unsigned_transaction: EIP-155 payload must end with 0, 0")
    return UnsignedTransaction(type=LEGACY, **kwargs)


# Deepest list in any supported payload: tx -> access_list -> entry -> storage_keys.
MAX_RLP_DEPTH = 4


def _rlp_list(data: bytes, what: str) -> list[Any]:
    _check_nesting(data, what)
    try:
        decoded = rlp.decode(data, strict=True)
    except rlp.exceptions.DecodingError as exc:
        raise InvalidRequest(f"{what}: malformed RLP ({_first_line(exc)})") from None
    if not isinstance(decoded, list):
        raise InvalidRequest(f"{what}: expected an RLP list")
    return decoded


def _check_nesting(data: bytes, what: str) -> None:
    """Refuse lists nested deeper than any transaction has, before rlp.decode recurses.

    pyrlp decodes recursively and copies each level: a 256 KiB payload of nested lists costs
    seconds of CPU. This walk reads only list headers; rlp.decode still judges the encoding.
    """
    ends = [len(data)]  # end offsets of the lists we are inside, outermost first
    pos = 0
    while pos < len(data):
        while pos >= ends[-1] and len(ends) > 1:
            ends.pop()
        prefix = data[pos]
        if prefix < 0x80:
            pos += 1
        elif prefix <= 0xB7:
            pos += 1 + prefix - 0x80
        elif prefix <= 0xBF:
            size = 1 + prefix - 0xB7
            pos += size + int.from_bytes(data[pos + 1 : pos + size], "big")
        else:
            if prefix <= 0xF7:
                header, length = 1, prefix - 0xC0
            else:
                header = 1 + prefix - 0xF7
                length = int.from_bytes(data[pos + 1 : pos + header], "big")
            ends.append(pos + header + length)
            pos += header
            if len(ends) - 1 > MAX_RLP_DEPTH:
                raise InvalidRequest(f"{what}: lists nested deeper than {MAX_RLP_DEPTH} levels")


def _first_line(exc: Exception) -> str:
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return text[:120]


_INT_BITS = {
    "chain_id": 256,
    "nonce": 64,
    "gas_limit": 64,
    "value": 256,
    "gas_price": 256,
    "max_fee_per_gas": 256,
    "max_priority_fee_per_gas": 256,
    "max_fee_per_blob_gas": 256,
}


def _field(name: str, item: Any) -> Any:
    if name in _INT_BITS:
        return _int(item, name, _INT_BITS[name])
    if name == "to":
        raw = _bytes(item, name)
        if len(raw) not in (0, 20):
            raise InvalidRequest(f"to: must be 20 bytes or empty, got {len(raw)}")
        return raw
    if name == "data":
        return _bytes(item, name)
    if name == "access_list":
        return tuple(_access_entry(e, i) for i, e in enumerate(_list(item, name)))
    if name == "authorization_list":
        return tuple(_authorization(a, i) for i, a in enumerate(_list(item, name)))
    if name == "blob_versioned_hashes":
        return tuple(_bytes(h, f"{name}[{i}]") for i, h in enumerate(_list(item, name)))
    raise AssertionError(name)  # pragma: no cover - the tables above name every field


def _int(item: Any, name: str, bits: int) -> int:
    raw = _bytes(item, name)
    if raw[:1] == b"\x00":
        raise InvalidRequest(f"{name}: non-canonical integer (leading zero byte)")
    if len(raw) * 8 > bits:
        raise InvalidRequest(f"{name}: does not fit in {bits} bits")
    return int.from_bytes(raw, "big")


def _bytes(item: Any, name: str) -> bytes:
    if not isinstance(item, bytes):
        raise InvalidRequest(f"{name}: expected a byte string, got a list")
    return item


def _list(item: Any, name: str) -> list[Any]:
    if not isinstance(item, list):
        raise InvalidRequest(f"{name}: expected a list, got a byte string")
    return item


def _access_entry(item: Any, i: int) -> AccessListEntry:
    where = f"access_list[{i}]"
    pair = _list(item, where)
    if len(pair) != 2:
        raise InvalidRequest(f"{where}: expected [address, storage_keys]")
    address = _bytes(pair[0], f"{where}.address")
    if len(address) != 20:
        raise InvalidRequest(f"{where}.address: must be 20 bytes, got {len(address)}")
    keys = tuple(
        _bytes(k, f"{where}.storage_keys") for k in _list(pair[1], f"{where}.storage_keys")
    )
    return AccessListEntry(address, keys)


def _authorization(item: Any, i: int) -> Authorization:
    where = f"authorization_list[{i}]"
    parts = _list(item, where)
    if len(parts) != 6:
        raise InvalidRequest(f"{where}: expected [chain_id, address, nonce, y_parity, r, s]")
    address = _bytes(parts[1], f"{where}.address")
    if len(address) != 20:
        raise InvalidRequest(f"{where}.address: must be 20 bytes, got {len(address)}")
    return Authorization(
        chain_id=_int(parts[0], f"{where}.chain_id", 256),
        address=address,
        nonce=_int(parts[2], f"{where}.nonce", 64),
        y_parity=_int(parts[3], f"{where}.y_parity", 8),
        r=_int(parts[4], f"{where}.r", 256),
        s=_int(parts[5], f"{where}.s", 256),
    )
