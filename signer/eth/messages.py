"""EIP-191 personal messages and EIP-712 typed data: the 32-byte digests a key signs."""

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from eth_account.messages import SignableMessage, encode_defunct
from eth_utils.address import to_checksum_address

from signer.errors import InvalidRequest
from signer.eth import eip712
from signer.eth.hashing import keccak

_REQUIRED_TYPED_DATA_KEYS = ("types", "primaryType", "domain", "message")
# Bounds on what eth-account walks recursively. They matter: importing eth-account raises the
# interpreter's recursion limit to 100000 (py_ecc), so deep input would overflow the C stack
# and kill the process instead of raising RecursionError.
MAX_JSON_DEPTH = 64
MAX_STRUCT_TYPES = 256
# A JSON string, or an unterminated one up to the end of the text. The closing quote being
# optional keeps the scan linear: with it required, an unterminated string of escaped quotes
# made every quote start a failed scan to the end (quadratic, holding the interpreter lock).
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"?')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_BRACKET_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
# An escaped UTF-16 surrogate: json.loads turns a lone one into a str no UTF-8 codec accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


def personal_message_digest(message: bytes) -> bytes:
    """keccak256("\\x19Ethereum Signed Message:\\n" + len(message) + message)."""
    return _digest(encode_defunct(primitive=message))


@dataclass(frozen=True, slots=True)
class TypedData:
    """EIP-712 data as signed: the digest, and the very values it was computed from.

    `domain` and `message` hold canonical values, one Python type per EIP-712 kind: int for
    (u)intN, bytes for address (20) and bytesN / bytes, bool, str, list for arrays, dict for
    structs (declared fields only). The digest is computed from these values, so a policy that
    reads them reads what is signed, not a second interpretation of the JSON.
    """

    digest: bytes
    primary_type: str
    domain: Mapping[str, Any]
    message: Mapping[str, Any]


def typed_data_digest(typed_data_json: str) -> bytes:
    """The EIP-712 digest of `eth_signTypedData_v4` JSON, parsed strictly."""
    return load_typed_data(typed_data_json).digest


def load_typed_data(typed_data_json: str) -> TypedData:
    """Parse `eth_signTypedData_v4` JSON strictly into canonical values and their digest.

    Duplicate keys are refused: a signer and a wallet that resolved them differently would
    show one message and sign another. Values eth-account would coerce ambiguously (a bool
    given as a string, a number given as text with spaces, a missing field silently zeroed, a
    fixed-size array of the wrong length) are refused, naming the field.
    """
    data = parse_typed_data(typed_data_json)
    primary = data["primaryType"]
    if not isinstance(primary, str) or primary not in data["types"] or primary == _DOMAIN:
        raise InvalidRequest("typed_data_json: primaryType must name a struct type in types")
    types = _struct_types(data["types"])
    if not isinstance(data["domain"], dict):
        raise InvalidRequest("typed_data_json: domain must be an object")
    domain: dict[str, Any] = {}
    for key, value in data["domain"].items():
        kind = _DOMAIN_FIELDS.get(key)
        if kind is None:
            raise InvalidRequest(f"typed_data_json: domain.{key[:40]}: not an EIP-712 field")
        domain[key] = _canonical(types, kind, value, f"domain.{key}", 0)
    message = _canonical(types, primary, data["message"], "message", 0)
    return TypedData(eip712.digest(types, primary, domain, message), primary, domain, message)


_DOMAIN = eip712.DOMAIN
_DOMAIN_FIELDS = dict(eip712.DOMAIN_FIELDS)
_ATOMIC = re.compile(r"(u?int)(\d{1,3})|bytes(\d{1,2})|address|bool|string|bytes")
# a fixed array length has at most 7 digits: longer ones could never fit in a request, and
# int() of 4,300 digits or more raises (Python's integer-conversion limit)
_ARRAY = re.compile(r"(.+)\[(\d{0,7})\]")
_INT_TEXT = re.compile(r"-?[0-9]{1,78}")
_HEX_TEXT = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
_ADDRESS_TEXT = re.compile(r"0x[0-9a-fA-F]{40}")
Types = dict[str, list[tuple[str, str]]]


def _struct_types(raw: dict[str, Any]) -> Types:
    types: Types = {}
    for name, fields in raw.items():
        if not isinstance(fields, list):
            raise InvalidRequest(f"typed_data_json: types.{name[:40]} must be a list")
        pairs = []
        for field in fields:
            if (
                not isinstance(field, dict)
                or set(field) != {"name", "type"}
                or not all(isinstance(v, str) for v in field.values())
            ):
                raise InvalidRequest(
                    f"typed_data_json: types.{name[:40]}: each field is {{name, type}} strings"
                )
            pairs.append((field["name"], field["type"]))
        types[name] = pairs
    return types


def _canonical(types: Types, kind: str, value: Any, path: str, depth: int) -> Any:
    if depth > MAX_JSON_DEPTH:
        raise InvalidRequest(f"typed_data_json: {path[:80]}: nested deeper than {MAX_JSON_DEPTH}")
    array = _ARRAY.fullmatch(kind)
    if array is not None:
        if not isinstance(value, list):
            raise InvalidRequest(f"typed_data_json: {path}: expected an array for {kind}")
        if array.group(2) and len(value) != int(array.group(2)):
            raise InvalidRequest(
                f"typed_data_json: {path}: {kind} needs {array.group(2)} items, got {len(value)}"
            )
        inner = array.group(1)
        return [
            _canonical(types, inner, item, f"{path}[{i}]", depth + 1)
            for i, item in enumerate(value)
        ]
    if kind in types and kind != _DOMAIN:
        if not isinstance(value, dict):
            raise InvalidRequest(f"typed_data_json: {path}: expected an object for {kind}")
        result = {}
        for name, field_kind in types[kind]:
            if name not in value:
                raise InvalidRequest(f"typed_data_json: {path}.{name}: missing")
            result[name] = _canonical(types, field_kind, value[name], f"{path}.{name}", depth + 1)
        return result
    return _atomic(kind, value, path)


def _atomic(kind: str, value: Any, path: str) -> Any:
    match = _ATOMIC.fullmatch(kind)
    if match is None:
        raise InvalidRequest(f"typed_data_json: {path}: unknown type {kind[:40]!r}")
    where = f"typed_data_json: {path}"
    if match.group(1):
        bits = int(match.group(2))
        if bits % 8 or not 8 <= bits <= 256:
            raise InvalidRequest(f"{where}: unknown type {kind!r}")
        number = _integer(value, where)
        signed = match.group(1) == "int"
        low, high = (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)
        if not low <= number <= high:
            raise InvalidRequest(f"{where}: {number} out of range for {kind}")
        return number
    if kind == "address":
        if not isinstance(value, str) or not _ADDRESS_TEXT.fullmatch(value):
            raise InvalidRequest(f"{where}: expected a 0x-prefixed 20-byte hex address")
        raw = bytes.fromhex(value[2:])
        digits = value[2:]
        if not (digits.islower() or digits.isupper() or digits.isdigit()):
            if to_checksum_address(raw) != value:
                raise InvalidRequest(f"{where}: EIP-55 checksum mismatch in {value}")
        return raw
    if kind == "bool":
        if not isinstance(value, bool):
            raise InvalidRequest(f"{where}: expected true or false")
        return value
    if kind == "string":
        if not isinstance(value, str):
            raise InvalidRequest(f"{where}: expected a string")
        return value
    if not isinstance(value, str) or not _HEX_TEXT.fullmatch(value):
        raise InvalidRequest(f"{where}: expected 0x-prefixed hex bytes")
    raw = bytes.fromhex(value[2:])
    if match.group(3):
        size = int(match.group(3))
        if not 1 <= size <= 32:
            raise InvalidRequest(f"{where}: unknown type {kind!r}")
        if len(raw) > size:
            raise InvalidRequest(f"{where}: {len(raw)} bytes do not fit in {kind}")
        raw = raw.ljust(size, b"\0")  # how eth-abi encodes a shorter value
    return raw


def _integer(value: Any, where: str) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        if _INT_TEXT.fullmatch(value):
            return int(value)
        if value.startswith("0x") and 2 < len(value) <= 66:
            try:
                return int(value[2:], 16)
            except ValueError:
                pass
    raise InvalidRequest(f"{where}: expected an integer, a decimal string or 0x-prefixed hex")


def parse_typed_data(typed_data_json: str) -> dict[str, Any]:
    _check_depth(typed_data_json)
    try:
        data = json.loads(
            typed_data_json, object_pairs_hook=no_duplicate_keys, parse_constant=no_json_constants
        )
    except DuplicateKey as exc:
        raise InvalidRequest(f"typed_data_json: duplicate key {exc.args[0]!r}") from None
    except (ValueError, RecursionError) as exc:  # ValueError: also an integer over 4,300 digits
        raise InvalidRequest(f"typed_data_json: not valid JSON ({_describe(exc)})") from None
    if not isinstance(data, dict):
        raise InvalidRequest("typed_data_json: expected a JSON object")
    check_no_lone_surrogates(typed_data_json, data, "typed_data_json")
    missing = [k for k in _REQUIRED_TYPED_DATA_KEYS if k not in data]
    if missing:
        raise InvalidRequest(f"typed_data_json: missing {', '.join(missing)}")
    if not isinstance(data["types"], dict):
        raise InvalidRequest("typed_data_json: types must be an object")
    if len(data["types"]) > MAX_STRUCT_TYPES:
        raise InvalidRequest(f"typed_data_json: more than {MAX_STRUCT_TYPES} struct types")
    return data


def _check_depth(text: str) -> None:
    check_json_depth(text, "typed_data_json", MAX_JSON_DEPTH)


def check_json_depth(text: str, field: str, max_depth: int) -> None:
    """Refuse JSON nested deeper than `max_depth` before any recursive parser sees it. Linear
    in the text, and the loop over brackets runs in C (accumulate, max)."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    if max(accumulate(map(_BRACKET_STEP.__getitem__, brackets)), default=0) > max_depth:
        raise InvalidRequest(f"{field}: nested deeper than {max_depth} levels")


def check_no_lone_surrogates(text: str, data: Any, field: str) -> None:
    """Refuse parsed JSON holding a lone UTF-16 surrogate (from an escape such as "\\ud800"):
    no UTF-8 encoder takes it, so it would fail later, in hashing or in an error message. Only
    text with a surrogate escape is checked (a valid pair is fine: json.loads joins it)."""
    if _SURROGATE_ESCAPE.search(text) is None:
        return
    try:
        json.dumps(data, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        message = f"{field}: a lone UTF-16 surrogate (\\ud800-\\udfff) is not text"
        raise InvalidRequest(message) from None


class DuplicateKey(ValueError):
    pass


def no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads` object_pairs_hook: a repeated key raises ValueError naming it."""
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise DuplicateKey(key[:80])
        result[key] = value
    return result


def no_json_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "..."


def _digest(signable: SignableMessage) -> bytes:
    return keccak(b"\x19" + signable.version + signable.header + signable.body)
