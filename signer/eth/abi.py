"""Function calls as the EVM sees them: human-readable signatures and exact calldata decoding.

A policy names calls the way Solidity prints them, `transfer(address to,uint256 amount)`; the
names address decoded arguments, the types give the selector. Decoding is exact: calldata is
accepted only if eth-abi re-encodes the decoded values to the very same bytes, which refuses
wrong lengths, trailing bytes, dirty padding and non-canonical offsets. A contract's own decoder
may be more lenient; a policy must not be.
"""

import re
from dataclasses import dataclass, field
from typing import Any

from eth_abi.codec import ABICodec
from eth_abi.decoding import AddressDecoder
from eth_abi.encoding import AddressEncoder
from eth_abi.exceptions import ABITypeError, DecodingError, EncodingError
from eth_abi.grammar import normalize, parse
from eth_abi.registry import registry as default_registry

from signer.eth.hashing import keccak


class _RawAddressDecoder(AddressDecoder):
    """Addresses as their 20 bytes: eth-abi's hex-string round trip costs more than the rest
    of a policy decision."""

    decoder_fn = staticmethod(bytes)  # type: ignore[assignment]


class _RawAddressEncoder(AddressEncoder):
    encode_fn = staticmethod(bytes)  # type: ignore[assignment]

    @classmethod
    def validate_value(cls, value: Any) -> None:
        if not isinstance(value, bytes) or len(value) != 20:
            cls.invalidate_value(value)


_registry = default_registry.copy()  # type: ignore[no-untyped-call]
_registry.unregister("address")
_registry.register("address", _RawAddressEncoder, _RawAddressDecoder, label="address")
_codec = ABICodec(_registry)

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
    # derived once: a policy reads them on every decision
    types: tuple[str, ...] = field(init=False)
    canonical: str = field(init=False)
    selector: bytes = field(init=False)
    static_size: int | None = field(init=False)  # bytes of arguments, None if any is dynamic

    def __post_init__(self) -> None:
        types = tuple(p.type.canonical for p in self.params)
        canonical = f"{self.name}({','.join(types)})"
        sizes = [_static_size(p.type) for p in self.params]
        object.__setattr__(self, "types", types)
        object.__setattr__(self, "canonical", canonical)
        object.__setattr__(self, "selector", keccak(canonical.encode())[:4])
        static = None if None in sizes else sum(s for s in sizes if s is not None)
        object.__setattr__(self, "static_size", static)

    def decode_arguments(self, data: bytes) -> tuple[Any, ...] | None:
        """The arguments if `data` (after the selector) is exactly their encoding, else None.

        Static arguments have exactly one encoding per value, one 32-byte word per leaf, so
        they are read word by word with every padding bit checked (eth-abi's decoder costs
        more than the rest of a decision; tests/eth/test_eth_abi.py checks this path against
        eth-abi decoding and re-encoding). Anything dynamic goes through decode_exact.
        """
        if self.static_size is None:
            return decode_exact(self.types, data)
        if len(data) != self.static_size:
            return None
        values = []
        offset = 0
        for param in self.params:
            value, offset = _static_value(param.type, data, offset, len(param.type.dims))
            if value is _INVALID:
                return None
            values.append(value)
        return tuple(values)


_INVALID = object()
_ZERO_WORD = bytes(32)


def _static_value(abi_type: AbiType, data: bytes, offset: int, dims: int) -> tuple[Any, int]:
    """One static value at `offset` (canonical encoding only) and the offset after it."""
    if dims:
        size = abi_type.dims[dims - 1]
        assert size is not None
        items = []
        for _ in range(size):
            item, offset = _static_value(abi_type, data, offset, dims - 1)
            if item is _INVALID:
                return _INVALID, offset
            items.append(item)
        return tuple(items), offset
    if abi_type.is_tuple:
        fields = []
        for component in abi_type.components:
            item, offset = _static_value(component.type, data, offset, len(component.type.dims))
            if item is _INVALID:
                return _INVALID, offset
            fields.append(item)
        return tuple(fields), offset
    word = data[offset : offset + 32]
    return _word(abi_type.base, word), offset + 32


def _word(base: str, word: bytes) -> Any:
    if base == "address":
        return word[12:] if word[:12] == _ZERO_WORD[:12] else _INVALID
    if base == "bool":
        return word[31] == 1 if word[:31] == _ZERO_WORD[:31] and word[31] < 2 else _INVALID
    if base.startswith("uint"):
        value = int.from_bytes(word, "big")
        return value if value >> int(base[4:]) == 0 else _INVALID
    if base.startswith("int"):
        bits = int(base[3:])
        value = int.from_bytes(word, "big", signed=True)
        return value if -(1 << (bits - 1)) <= value < 1 << (bits - 1) else _INVALID
    size = int(base[5:])  # bytesN, left-aligned
    return word[:size] if word[size:] == _ZERO_WORD[size:] else _INVALID


def _static_size(abi_type: AbiType) -> int | None:
    if abi_type.base in ("bytes", "string") or None in abi_type.dims:
        return None
    size = 32
    if abi_type.is_tuple:
        sizes = [_static_size(c.type) for c in abi_type.components]
        if None in sizes:
            return None
        size = sum(s for s in sizes if s is not None)
    for dim in abi_type.dims:
        assert dim is not None
        size *= dim
    return size


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
    """The decoded values if `data` is exactly their canonical ABI encoding, else None.

    Addresses decode to 20 bytes, everything else as eth-abi decodes it.
    """
    try:
        values: tuple[Any, ...] = _codec.decode(types, data)
    except (DecodingError, OverflowError, ValueError, TypeError):
        return None
    try:
        if _codec.encode(types, values) != data:
            return None
    except (EncodingError, OverflowError, ValueError, TypeError):
        return None
    return values


def named(params: tuple[Param, ...], values: tuple[Any, ...]) -> dict[str, Any]:
    """Decoded values by argument name; tuples become dicts."""
    return {
        p.name or str(i): _value(p.type, v)
        for i, (p, v) in enumerate(zip(params, values, strict=True))
    }


def _value(abi_type: AbiType, value: Any, depth: int = 0) -> Any:
    if depth < len(abi_type.dims):
        return [_value(abi_type, item, depth + 1) for item in value]
    if abi_type.is_tuple:
        return named(abi_type.components, value)
    return value
