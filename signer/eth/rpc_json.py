"""Ethereum JSON-RPC values (EIP-1474) to domain objects: quantities, data, transaction objects.

Strict as the specification: a quantity is "0x" + hex digits without leading zeros ("0x0" is
zero), data is "0x" + an even number of hex digits, addresses are checked by
`signer.eth.fields.parse_address` (mixed case must be EIP-55). Every error names the field with
the name the client sent (`maxFeePerGas`, `accessList[0].address`).

A transaction object becomes a `TransactionRequest`: what the client gave, with `None` where a
field is missing, so that `eth_sendTransaction` can fill it from the node before the one
`UnsignedTransaction` is built.
"""

import re
from dataclasses import dataclass, replace
from typing import Any

from signer.errors import InvalidRequest
from signer.eth import transactions as txs
from signer.eth.fields import checksum, parse_address

_QUANTITY_RE = re.compile(r"0x(0|[1-9a-fA-F][0-9a-fA-F]*)")
_DATA_RE = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_MAX_DATA_CHARS = 16 * 1024 * 1024  # the HTTP layer caps bodies far below this

# JSON field name -> UnsignedTransaction field name; also how errors are renamed back.
JSON_NAMES = {
    "chainId": "chain_id",
    "nonce": "nonce",
    "to": "to",
    "value": "value",
    "gas": "gas_limit",
    "gasPrice": "gas_price",
    "maxFeePerGas": "max_fee_per_gas",
    "maxPriorityFeePerGas": "max_priority_fee_per_gas",
    "accessList": "access_list",
    "authorizationList": "authorization_list",
    "maxFeePerBlobGas": "max_fee_per_blob_gas",
    "blobVersionedHashes": "blob_versioned_hashes",
}
_PYTHON_NAMES = {v: k for k, v in JSON_NAMES.items()} | {"data": "input"}
ACCEPTED_FIELDS = frozenset({*JSON_NAMES, "from", "type", "input", "data", "gasLimit", "blobs"})
# Fields clients attach that carry nothing for the signature: accepted and ignored. Anything
# else is refused, so a typo is never silently dropped.
IGNORED_FIELDS = frozenset({"hash", "blockHash", "blockNumber", "transactionIndex"})
# A sidecar comes as `blobs`; commitments and proofs are computed here, never taken on trust.
_SIDECAR_FIELDS = ("sidecars", "commitments", "proofs", "kzg")


def quantity(value: Any, field: str, bits: int = 256) -> int:
    """An EIP-1474 QUANTITY: "0x" + hex without leading zeros, at most `bits` bits."""
    if not isinstance(value, str):
        raise InvalidRequest(
            f"{field}: expected a hex quantity string like \"0x1\", got {_kind(value)}"
        )
    if len(value) > 2 + 64 and _QUANTITY_RE.fullmatch(value[:80]):
        raise InvalidRequest(f"{field}: does not fit in {bits} bits")
    if not _QUANTITY_RE.fullmatch(value):
        why = "leading zeros are not allowed" if re.fullmatch(r"0x0[0-9a-fA-F]+", value) else (
            "expected \"0x\" followed by hex digits")
        raise InvalidRequest(f"{field}: {why} (EIP-1474 quantity), got {_show(value)}")
    number = int(value, 16)
    if number.bit_length() > bits:
        raise InvalidRequest(f"{field}: {value} does not fit in {bits} bits")
    return number


def data(value: Any, field: str) -> bytes:
    """EIP-1474 DATA: "0x" + an even number of hex digits (either case)."""
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: expected a 0x-prefixed hex string, got {_kind(value)}")
    if len(value) > _MAX_DATA_CHARS or not _DATA_RE.fullmatch(value):
        raise InvalidRequest(
            f"{field}: expected \"0x\" followed by an even number of hex digits, got {_show(value)}"
        )
    return bytes.fromhex(value[2:])


def address(value: Any, field: str) -> bytes:
    if not isinstance(value, str):
        raise InvalidRequest(f"{field}: expected a 0x-prefixed address string, got {_kind(value)}")
    return parse_address(value, field)


def to_quantity(number: int) -> str:
    return hex(number)


def to_data(raw: bytes) -> str:
    return "0x" + raw.hex()


@dataclass(frozen=True, slots=True)
class TransactionRequest:
    """A transaction object as a client sent it; `None` means the client left the field out."""

    sender: bytes | None
    type: int | None
    to: bytes  # b"": contract creation
    value: int
    data: bytes
    chain_id: int | None = None
    nonce: int | None = None
    gas_limit: int | None = None
    gas_price: int | None = None
    max_fee_per_gas: int | None = None
    max_priority_fee_per_gas: int | None = None
    access_list: tuple[txs.AccessListEntry, ...] | None = None
    authorization_list: tuple[txs.Authorization, ...] | None = None
    max_fee_per_blob_gas: int | None = None
    blob_versioned_hashes: tuple[bytes, ...] | None = None
    blobs: tuple[bytes, ...] | None = None  # the sidecar's blobs (eth_sendTransaction only)

    @property
    def carries_blobs(self) -> bool:
        return (self.max_fee_per_blob_gas is not None or self.blob_versioned_hashes is not None
                or self.blobs is not None)

    def with_fields(self, **fields: Any) -> "TransactionRequest":
        return replace(self, **fields)

    def implied_type(self) -> int | None:
        """`type` if given, else inferred from the fields present; None when only fees decide."""
        if self.type is not None:
            return self.type
        if self.authorization_list is not None:
            return txs.SET_CODE
        if self.carries_blobs:
            return txs.BLOB
        if self.max_fee_per_gas is not None or self.max_priority_fee_per_gas is not None:
            return txs.DYNAMIC_FEE
        if self.access_list is not None:
            return txs.ACCESS_LIST
        if self.gas_price is not None:
            return txs.LEGACY
        return None


def transaction_request(obj: Any, field: str = "tx") -> TransactionRequest:
    """Parse a JSON-RPC transaction object; unknown fields and fields of another type are errors."""
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{field}: expected a transaction object, got {_kind(obj)}")
    for name in obj:
        if name in _SIDECAR_FIELDS:
            raise InvalidRequest(
                f"{name}: not accepted; send the blobs as `blobs` (eth_sendTransaction computes "
                "commitments and proofs) or only blobVersionedHashes (eth_signTransaction)"
            )
        if name not in ACCEPTED_FIELDS and name not in IGNORED_FIELDS:
            raise InvalidRequest(f"{_show_name(name)}: not a transaction field this signer accepts")
    present = {k: v for k, v in obj.items() if v is not None}
    tx_type = None
    if "type" in present:
        tx_type = quantity(present["type"], "type", 8)
        txs.check_type(tx_type)
    request = TransactionRequest(
        sender=address(present["from"], "from") if "from" in present else None,
        type=tx_type,
        to=address(present["to"], "to") if "to" in present else b"",
        value=quantity(present.get("value", "0x0"), "value"),
        data=_input(present),
        chain_id=_opt(present, "chainId", lambda v, f: quantity(v, f, 64)),
        nonce=_opt(present, "nonce", lambda v, f: quantity(v, f, 64)),
        gas_limit=_gas(present),
        gas_price=_opt(present, "gasPrice", quantity),
        max_fee_per_gas=_opt(present, "maxFeePerGas", quantity),
        max_priority_fee_per_gas=_opt(present, "maxPriorityFeePerGas", quantity),
        access_list=_opt(present, "accessList", _access_list),
        authorization_list=_opt(present, "authorizationList", _authorization_list),
        max_fee_per_blob_gas=_opt(present, "maxFeePerBlobGas", quantity),
        blob_versioned_hashes=_opt(present, "blobVersionedHashes", _data_list),
        blobs=_opt(present, "blobs", _data_list),
    )
    implied = request.implied_type()
    if implied is not None:
        check_fields_fit(request, implied)
    return request


@dataclass(frozen=True, slots=True)
class AuthorizationRequest:
    """wallet_signAuthorization's object; `nonce` None: fill it from the node."""

    sender: bytes
    chain_id: int
    address: bytes
    nonce: int | None


_AUTHORIZATION_REQUEST_FIELDS = ("from", "chainId", "address", "nonce")


def authorization_request(obj: Any, field: str = "authorization") -> AuthorizationRequest:
    if not isinstance(obj, dict):
        raise InvalidRequest(f"{field}: expected an object {{from, chainId, address, nonce}}, "
                             f"got {_kind(obj)}")
    for name in obj:
        if name not in _AUTHORIZATION_REQUEST_FIELDS:
            raise InvalidRequest(f"{_show_name(name)}: not a field of wallet_signAuthorization "
                                 "(from, chainId, address, nonce)")
    for name in ("from", "chainId", "address"):
        if obj.get(name) is None:
            raise InvalidRequest(f"{name}: required" + (
                ' ("0x0" signs for every chain)' if name == "chainId" else ""))
    return AuthorizationRequest(
        sender=address(obj["from"], "from"),
        chain_id=quantity(obj["chainId"], "chainId"),
        address=address(obj["address"], "address"),
        nonce=quantity(obj["nonce"], "nonce", 64) if obj.get("nonce") is not None else None,
    )


def authorization_json(signed: txs.Authorization) -> dict[str, str]:
    return {
        "chainId": to_quantity(signed.chain_id),
        "address": checksum(signed.address),
        "nonce": to_quantity(signed.nonce),
        "yParity": to_quantity(signed.y_parity),
        "r": to_quantity(signed.r),
        "s": to_quantity(signed.s),
    }


def check_fields_fit(request: TransactionRequest, tx_type: int) -> None:
    """A field the client sent that the type has no place for is an error, never dropped."""
    allowed = txs.TYPE_FIELDS[tx_type]
    for name in ("gas_price", "max_fee_per_gas", "max_priority_fee_per_gas", "access_list",
                 "authorization_list", "max_fee_per_blob_gas", "blob_versioned_hashes"):
        if getattr(request, name) is not None and name not in allowed:
            raise InvalidRequest(
                f"{_PYTHON_NAMES[name]}: not a field of type {tx_type} transactions"
                + ("" if request.type is not None else " (type inferred from the fields present)")
            )


def unsigned_transaction(request: TransactionRequest) -> txs.UnsignedTransaction:
    """The transaction to sign; every field the type needs must be present by now."""
    tx_type = request.implied_type()
    if tx_type is None:
        raise InvalidRequest("type: cannot infer the type: give gasPrice or maxFeePerGas, or type")
    check_fields_fit(request, tx_type)
    required = ["chain_id", "nonce", "gas_limit"]
    required += ["gas_price"] if tx_type in (txs.LEGACY, txs.ACCESS_LIST) else [
        "max_fee_per_gas", "max_priority_fee_per_gas"]
    if tx_type == txs.BLOB:
        required += ["max_fee_per_blob_gas", "blob_versioned_hashes"]
    for name in required:
        if getattr(request, name) is None:
            raise InvalidRequest(f"{_PYTHON_NAMES[name]}: required")
    try:
        return txs.UnsignedTransaction(
            type=tx_type,
            chain_id=request.chain_id or 0,
            nonce=request.nonce or 0,
            to=request.to,
            value=request.value,
            gas_limit=request.gas_limit or 0,
            data=request.data,
            gas_price=request.gas_price or 0,
            max_fee_per_gas=request.max_fee_per_gas or 0,
            max_priority_fee_per_gas=request.max_priority_fee_per_gas or 0,
            access_list=request.access_list or (),
            authorization_list=request.authorization_list or (),
            max_fee_per_blob_gas=request.max_fee_per_blob_gas or 0,
            blob_versioned_hashes=request.blob_versioned_hashes or (),
        )
    except InvalidRequest as exc:
        raise InvalidRequest(json_field_names(str(exc))) from None


def json_field_names(message: str) -> str:
    """Rename the leading field of a core validation message to its JSON-RPC name."""
    head, sep, rest = message.partition(":")
    base, bracket, tail = head.partition("[")
    if sep and base in _PYTHON_NAMES:
        tail = tail.replace("storage_keys", "storageKeys").replace("y_parity", "yParity")
        tail = tail.replace("chain_id", "chainId")
        return f"{_PYTHON_NAMES[base]}{bracket}{tail}{sep}{rest}"
    return message


def _opt(present: dict[str, Any], name: str, parse: Any) -> Any:
    return parse(present[name], name) if name in present else None


def _gas(present: dict[str, Any]) -> int | None:
    if "gas" in present and "gasLimit" in present and present["gas"] != present["gasLimit"]:
        raise InvalidRequest("gas: differs from gasLimit; send one of them")
    name = "gas" if "gas" in present else "gasLimit"
    return quantity(present[name], name, 64) if name in present else None


def _input(present: dict[str, Any]) -> bytes:
    given = {name: data(present[name], name) for name in ("input", "data") if name in present}
    if len(given) == 2 and given["input"] != given["data"]:
        raise InvalidRequest("input: differs from data; send one of them, or both equal")
    return next(iter(given.values()), b"")


def _access_list(value: Any, field: str) -> tuple[txs.AccessListEntry, ...]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{field}: expected a list, got {_kind(value)}")
    entries = []
    for i, entry in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(entry, dict) or set(entry) - {"address", "storageKeys"}:
            raise InvalidRequest(f"{where}: expected {{address, storageKeys}}")
        keys = entry.get("storageKeys", [])
        if not isinstance(keys, list):
            raise InvalidRequest(f"{where}.storageKeys: expected a list, got {_kind(keys)}")
        storage = tuple(data(k, f"{where}.storageKeys[{j}]") for j, k in enumerate(keys))
        for j, key in enumerate(storage):
            if len(key) != 32:
                raise InvalidRequest(
                    f"{where}.storageKeys[{j}]: must be exactly 32 bytes, got {len(key)}"
                )
        entries.append(txs.AccessListEntry(address(entry.get("address"), f"{where}.address"),
                                           storage))
    return tuple(entries)


def _data_list(value: Any, field: str) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise InvalidRequest(f"{field}: expected a list, got {_kind(value)}")
    return tuple(data(item, f"{field}[{i}]") for i, item in enumerate(value))


_AUTH_FIELDS = {"address", "chainId", "nonce", "yParity", "v", "r", "s"}


def _authorization_list(value: Any, field: str) -> tuple[txs.Authorization, ...]:
    """Signed EIP-7702 tuples as viem and ethers write them (`yParity`, or legacy `v`)."""
    if not isinstance(value, list):
        raise InvalidRequest(f"{field}: expected a list, got {_kind(value)}")
    tuples = []
    for i, auth in enumerate(value):
        where = f"{field}[{i}]"
        if not isinstance(auth, dict):
            raise InvalidRequest(f"{where}: expected an authorization object")
        unknown = sorted(set(auth) - _AUTH_FIELDS)
        if unknown:
            raise InvalidRequest(f"{where}.{_show_name(unknown[0])}: not an authorization field")
        for name in ("address", "chainId", "nonce", "r", "s"):
            if auth.get(name) is None:
                raise InvalidRequest(f"{where}.{name}: required")
        tuples.append(txs.Authorization(
            chain_id=quantity(auth["chainId"], f"{where}.chainId"),
            address=address(auth["address"], f"{where}.address"),
            nonce=quantity(auth["nonce"], f"{where}.nonce", 64),
            y_parity=_y_parity(auth, where),
            r=quantity(auth["r"], f"{where}.r"),
            s=quantity(auth["s"], f"{where}.s"),
        ))
    return tuple(tuples)


def _y_parity(auth: dict[str, Any], where: str) -> int:
    if auth.get("yParity") is not None:
        parity = quantity(auth["yParity"], f"{where}.yParity", 8)
        if auth.get("v") is not None and quantity(auth["v"], f"{where}.v", 8) not in (
            parity, parity + 27
        ):
            raise InvalidRequest(f"{where}.v: disagrees with yParity")
    elif auth.get("v") is not None:
        v = quantity(auth["v"], f"{where}.v", 8)
        parity = v - 27 if v in (27, 28) else v
    else:
        raise InvalidRequest(f"{where}.yParity: required")
    if parity not in (0, 1):
        raise InvalidRequest(f"{where}.yParity: must be 0 or 1")
    return parity


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a JSON number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return _show(str(value))


def _show(text: str) -> str:
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."


def _show_name(name: str) -> str:
    return name if len(name) <= 40 and name.isprintable() else repr(name[:40])



def call_object(request: TransactionRequest, sender: bytes) -> dict[str, Any]:
    """The transaction as an `eth_estimateGas` / `eth_call` object (no fees, no nonce)."""
    obj: dict[str, Any] = {"from": to_data(sender), "value": to_quantity(request.value)}
    if request.to:
        obj["to"] = to_data(request.to)
    if request.data:
        obj["data"] = to_data(request.data)
    if request.blob_versioned_hashes is not None:
        obj["blobVersionedHashes"] = [to_data(h) for h in request.blob_versioned_hashes]
    if request.max_fee_per_blob_gas is not None:
        obj["maxFeePerBlobGas"] = to_quantity(request.max_fee_per_blob_gas)
    if request.access_list is not None:
        obj["accessList"] = [
            {"address": to_data(e.address), "storageKeys": [to_data(k) for k in e.storage_keys]}
            for e in request.access_list
        ]
    if request.authorization_list is not None:
        obj["authorizationList"] = [
            {
                "chainId": to_quantity(a.chain_id),
                "address": to_data(a.address),
                "nonce": to_quantity(a.nonce),
                "yParity": to_quantity(a.y_parity),
                "r": to_quantity(a.r),
                "s": to_quantity(a.s),
            }
            for a in request.authorization_list
        ]
    return obj
