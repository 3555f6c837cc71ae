"""EIP-191 personal messages and EIP-712 typed data: the 32-byte digests a key signs."""

import json
import re
from typing import Any

from eth_account.messages import SignableMessage, encode_defunct, encode_typed_data
from eth_utils.crypto import keccak

from signer.errors import InvalidRequest

_REQUIRED_TYPED_DATA_KEYS = ("types", "primaryType", "domain", "message")
# Bounds on what eth-account walks recursively. They matter: importing eth-account raises the
# interpreter's recursion limit to 100000 (py_ecc), so deep input would overflow the C stack
# and kill the process instead of raising RecursionError.
MAX_JSON_DEPTH = 64
MAX_STRUCT_TYPES = 256
_JSON_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_JSON_BRACKET = re.compile(r"[\[\]{}]")


def personal_message_digest(message: bytes) -> bytes:
    """keccak256("\\x19Ethereum Signed Message:\\n" + len(message) + message)."""
    return _digest(encode_defunct(primitive=message))


def typed_data_digest(typed_data_json: str) -> bytes:
    """The EIP-712 digest of `eth_signTypedData_v4` JSON, parsed strictly.

    Duplicate keys are refused: a signer and a wallet that resolved them differently would
    show one message and sign another.
    """
    data = parse_typed_data(typed_data_json)
    try:
        signable = encode_typed_data(full_message=data)
    except Exception as exc:  # eth-account raises a zoo of types for bad typed data
        raise InvalidRequest(f"typed_data_json: {_describe(exc)}") from None
    return _digest(signable)


def parse_typed_data(typed_data_json: str) -> dict[str, Any]:
    _check_depth(typed_data_json)
    try:
        data = json.loads(
            typed_data_json, object_pairs_hook=_no_duplicates, parse_constant=_no_constants
        )
    except (json.JSONDecodeError, RecursionError) as exc:
        raise InvalidRequest(f"typed_data_json: not valid JSON ({_describe(exc)})") from None
    except _DuplicateKey as exc:
        raise InvalidRequest(f"typed_data_json: duplicate key {exc.args[0]!r}") from None
    if not isinstance(data, dict):
        raise InvalidRequest("typed_data_json: expected a JSON object")
    missing = [k for k in _REQUIRED_TYPED_DATA_KEYS if k not in data]
    if missing:
        raise InvalidRequest(f"typed_data_json: missing {', '.join(missing)}")
    if not isinstance(data["types"], dict):
        raise InvalidRequest("typed_data_json: types must be an object")
    if len(data["types"]) > MAX_STRUCT_TYPES:
        raise InvalidRequest(f"typed_data_json: more than {MAX_STRUCT_TYPES} struct types")
    return data


def _check_depth(text: str) -> None:
    """Refuse JSON nested deeper than MAX_JSON_DEPTH before any recursive parser sees it."""
    depth = 0
    for match in _JSON_BRACKET.finditer(_JSON_STRING.sub("", text)):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_JSON_DEPTH:
            raise InvalidRequest(f"typed_data_json: nested deeper than {MAX_JSON_DEPTH} levels")


class _DuplicateKey(ValueError):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in pairs:
        if key in result:
            raise _DuplicateKey(key[:80])
        result[key] = value
    return result


def _no_constants(name: str) -> Any:
    raise json.JSONDecodeError(f"{name} is not JSON", name, 0)


def _describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:300] + "..."


def _digest(signable: SignableMessage) -> bytes:
    return keccak(b"\x19" + signable.version + signable.header + signable.body)
