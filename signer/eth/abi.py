"""Function calls as the EVM sees them: human-readable signatures and exact calldata decoding.

A policy names calls the way Solidity prints them, `transfer(address to,uint256 amount)`; the
names address decoded arguments, the types give the selector. Decoding is exact: calldata is
accepted only if eth-abi re-encodes the decoded values to the very same bytes, which refuses
wrong lengths, trailing bytes, dirty padding and non-canonical offsets. A contract's own decoder
may be more lenient; a policy must not be.
"""

import re
from dataclasses import dataclass
from typing import Any

from eth_abi.abi import decode, encode
from eth_abi.exceptions import ABITypeError, DecodingError, EncodingError
from eth_abi.grammar import normalize, parse
from eth_utils.crypto import keccak

_TOKEN = re.compile(r"\s*([A-Za-z_$][A-Za-z0-9_$]*|\d+|[(),\[\]])")
_IDENTIFIER = re.compile(r"[A-Za-z_$][A-Za-z0-9_$]*")
MAX_SIGNATURE_LENGTH = 2000
# fixed/ufixed are not implemented by Solidity; function pointers are not addresses to judge
_BASES = frozenset({"uint", "int", "address", "bool", "bytes", "string"})


@dataclass(frozen=True, slots=True)
class AbiType:
    """An ABI type: a basic type (`uint256`) or a tuple of named components, with array dims."""

    base: str  # canonical basic type, or "" for a tuple
    components: tuple["Param", ...] = ()
    dims: tuple[int | None, ...] = ()  # outermost last, as written: uint8[2][] -> (2, None)

    @property
    def canonical(self) -> str:
        inner = self.base or "(" + ",".join(c.type.canonical for c in self.components) + ")"
        return inner + "".join(f"[{'' if d is None else d}]" for d in self.dims)

    @property
    def is_tuple(self) -> bool:
        return not self.base

    def element(self) -> "AbiType":
        """This type without its arrays."""
        return AbiType(self.base, self.components)


@dataclass(frozen=True, slots=True)
class Param:
    name: str  # "" when the signature does not name it
    type: AbiType


@dataclass(frozen=True, slots=True)
class FunctionSignature:
    name: str
    params: tuple[Param, ...]

    @property
    def canonical(self) -> str:
        return f"{self.name}({','.join(p.type.canonical for p in self.params)})"

    @property
    def selector(self) -> bytes:
        return keccak(text=self.canonical)[:4]

    @property
    def types(self) -> tuple[str, ...]:
        return tuple(p.type.canonical for p in self.params)


def parse_signature(text: str) -> FunctionSignature:
    """`name(type name, (type name, ...)[] name, ...)`; raises ValueError saying what is wrong."""
    if len(text) > MAX_SIGNATURE_LENGTH:
        raise ValueError(f"longer than {MAX_SIGNATURE_LENGTH} characters")
    tokens = _tokenize(text)
    if len(tokens) < 3 or not _IDENTIFIER.fullmatch(tokens[0]) or tokens[1] != "(":
        raise ValueError(f"expected name(type name, ...), got {text!r}")
    params, pos = _params(tokens, 2)
    if pos != len(tokens):
        raise ValueError(f"unexpected {' '.join(tokens[pos:])!r} after the argument list")
    names = [p.name for p in params if p.name]
    if len(names) != len(set(names)):
        raise ValueError("argument names must be unique")
    return FunctionSignature(tokens[0], params)


def _tokenize(text: str) -> list[str]:
    tokens, pos = [], 0
    text = text.strip()
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise ValueError(f"unexpected character {text[pos]!r} at {pos}")
        tokens.append(match.group(1))
        pos = match.end()
    return tokens


def _params(tokens: list[str], pos: int) -> tuple[tuple[Param, ...], int]:
    """Parse `... )` starting after an opening parenthesis; returns the params and the end."""
    params: list[Param] = []
    if pos < len(tokens) and tokens[pos] == ")":
        return (), pos + 1
    while True:
        abi_type, pos = _type(tokens, pos)
        name = ""
        if pos < len(tokens) and tokens[pos] not in (",", ")"):
            name = tokens[pos]
            if not _IDENTIFIER.fullmatch(name):
                raise ValueError(f"expected an argument name, got {name!r}")
            pos += 1
        params.append(Param(name, abi_type))
        if pos >= len(tokens):
            raise ValueError("unbalanced parentheses")
        if tokens[pos] == ")":
            return tuple(params), pos + 1
        if tokens[pos] != ",":
            raise ValueError(f"expected ',' or ')', got {tokens[pos]!r}")
        pos += 1


def _type(tokens: list[str], pos: int) -> tuple[AbiType, int]:
    if pos >= len(tokens):
        raise ValueError("unbalanced parentheses")
    word = tokens[pos]
    if word == "tuple" and pos + 1 < len(tokens) and tokens[pos + 1] == "(":
        pos, word = pos + 1, "("
    if word == "(":
        components, pos = _params(tokens, pos + 1)
        if not components:
            raise ValueError("empty tuple")
        base = ""
    else:
        if not _IDENTIFIER.fullmatch(word):
            raise ValueError(f"expected a type, got {word!r}")
        base = _basic(word)
        components = ()
        pos += 1
    dims: list[int | None] = []
    while pos < len(tokens) and tokens[pos] == "[":
        if pos + 1 < len(tokens) and tokens[pos + 1] == "]":
            dims.append(None)
            pos += 2
        elif pos + 2 < len(tokens) and tokens[pos + 1].isdigit() and tokens[pos + 2] == "]":
            size = int(tokens[pos + 1])
            if size < 1:
                raise ValueError("fixed array size must be at least 1")
            dims.append(size)
            pos += 3
        else:
            raise ValueError("malformed array suffix")
    return AbiType(base, components, tuple(dims)), pos


def _basic(word: str) -> str:
    if word == "function" or word.startswith(("fixed", "ufixed")):
        # eth-abi would encode `function` as bytes24, but its selector says "function"
        raise ValueError(f"unsupported type {word!r}")
    try:
        parsed = parse(normalize(word))  # type: ignore[no-untyped-call]
        parsed.validate()
    except (ABITypeError, ValueError):
        raise ValueError(f"unknown type {word!r}") from None
    canonical: str = parsed.to_type_str()
    if parsed.is_array or getattr(parsed, "base", None) not in _BASES:
        raise ValueError(f"unknown type {word!r}")
    return canonical


def decode_exact(types: tuple[str, ...], data: bytes) -> tuple[Any, ...] | None:
    """The decoded values if `data` is exactly their canonical ABI encoding, else None."""
    try:
        values = decode(types, data)
    except (DecodingError, OverflowError, ValueError, TypeError):
        return None
    try:
        if encode(types, values) != data:
            return None
    except (EncodingError, OverflowError, ValueError, TypeError):
        return None
    return values


def named(params: tuple[Param, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    """Decoded values by argument name; tuples become dicts, addresses 20 bytes."""
    return {
        p.name or str(i): _value(p.type, v)
        for i, (p, v) in enumerate(zip(params, values, strict=True))
    }


def _value(abi_type: AbiType, value: Any, depth: int = 0) -> Any:
    if depth < len(abi_type.dims):
        return [_value(abi_type, item, depth + 1) for item in value]
    if abi_type.is_tuple:
        return named(abi_type.components, value)
    if abi_type.base == "address":
        return bytes.fromhex(value[2:])
    return value
