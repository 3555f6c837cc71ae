"""Parsing of the scalar fields callers send: addresses, quantities, fixed-size byte strings.

Each parser names the field in its error so a caller can fix the request without guessing.
"""

import functools
import re

from eth_utils.address import to_checksum_address

from signer.errors import InvalidRequest
from signer.eth.hashing import keccak

UINT64_MAX = 2**64 - 1
UINT256_MAX = 2**256 - 1

_ADDRESS_RE = re.compile(r"0x[0-9a-fA-F]{40}")
_DECIMAL_RE = re.compile(r"[0-9]+")
# 78 digits hold any uint256; the cap keeps int() away from huge strings.
_MAX_DECIMAL_DIGITS = 78


@functools.lru_cache(maxsize=4096)
def checksum(raw: bytes) -> str:
    """The EIP-55 form of a 20-byte address (cached: agents use the same few addresses)."""
    return str(to_checksum_address(raw))


def parse_address(text: str, field: str) -> bytes:
    """A 0x-prefixed 20-byte address; mixed case must be a valid EIP-55 checksum."""
    if not _ADDRESS_RE.fullmatch(text):
        raise InvalidRequest(
            f"{field}: expected a 0x-prefixed 20-byte hex address, got {_show(text)}"
        )
    digits = text[2:]
    raw = bytes.fromhex(digits)
    if not (digits.islower() or digits.isupper() or digits.isdigit()):
        if checksum(raw) != text:
            raise InvalidRequest(f"{field}: EIP-55 checksum mismatch in {text}")
    return raw


def parse_uint256_decimal(text: str, field: str) -> int:
    """A base-10 string of digits ("" is 0) no greater than 2**256-1."""
    if text == "":
        return 0
    if len(text) > _MAX_DECIMAL_DIGITS or not _DECIMAL_RE.fullmatch(text):
        raise InvalidRequest(
            f"{field}: expected a non-negative base-10 integer string, got {_show(text)}"
        )
    value = int(text)
    if value > UINT256_MAX:
        raise InvalidRequest(f"{field}: {text} does not fit in 256 bits")
    return value


def parse_uint256_bytes(raw: bytes, field: str) -> int:
    """A big-endian unsigned integer of at most 32 bytes."""
    if len(raw) > 32:
        raise InvalidRequest(f"{field}: at most 32 bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")


def check_uint64(value: int, field: str) -> int:
    if not 0 <= value <= UINT64_MAX:
        raise InvalidRequest(f"{field}: {value} does not fit in 64 bits")
    return value


def address_of(public_key: bytes) -> str:
    """The EIP-55 address of a 65-byte uncompressed SEC1 public key."""
    return checksum(keccak(public_key[1:])[-20:])


def _show(text: str) -> str:
    """Echo a bad value back, truncated so an error never becomes a megabyte long."""
    return repr(text) if len(text) <= 80 else repr(text[:80]) + "..."
