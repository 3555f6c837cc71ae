"""EIP-712 hashing of canonical typed data, in time linear in its size.

eth-account's `encode_typed_data` recomputes a struct's type string (and walks its whole
dependency graph) for every instance of the struct, and encodes through eth-abi, which keeps an
encoder for every distinct array length it ever sees: 1,500 instances of a 250-type chain took
12 s of CPU, and 40 requests with long arrays grew the process by 500 MiB. Here each type's
string and hash is computed once per request and values are encoded word by word, without
eth-abi. The result is byte for byte eth-account's (tests/eth: reference vectors and a property
test against `encode_typed_data`), including what it refuses: a domain whose keys differ from
`types.EIP712Domain`, a `primaryType` that is not the one root of the type graph, a type that
is used but not defined.

Values come from `signer.eth.messages`, already canonical: int for (u)intN, bytes for address
(20 bytes) and bytes/bytesN (bytesN already padded to N), bool, str, list, dict.
"""

from collections.abc import Mapping
from typing import Any

from signer.errors import InvalidRequest
from signer.eth.hashing import keccak

Types = Mapping[str, list[tuple[str, str]]]

DOMAIN = "EIP712Domain"
# The domain's fields in the order eth-account hashes them (whatever order types lists them in).
DOMAIN_FIELDS = (
    ("name", "string"),
    ("version", "string"),
    ("chainId", "uint256"),
    ("verifyingContract", "address"),
    ("salt", "bytes32"),
)
# eth-account's list of Solidity type names that are never looked up in `types`.
_SOLIDITY = frozenset(
    ["bool", "address", "string", "bytes", "uint", "int"]
    + [f"{kind}{8 * n}" for kind in ("int", "uint") for n in range(1, 33)]
    + [f"bytes{n}" for n in range(1, 33)]
)
_EMPTY_ARRAY_HASH = keccak(b"")


def digest(types: Types, primary: str, domain: Mapping[str, Any], message: Any) -> bytes:
    """keccak256(0x19 0x01 || hashStruct(domain) || hashStruct(message)) as eth-account
    computes it for `encode_typed_data(full_message=...)`."""
    if DOMAIN in types:
        declared = {name for name, _ in types[DOMAIN]}
        if set(domain) != declared:
            raise InvalidRequest(
                "typed_data_json: the fields of domain and of types.EIP712Domain differ"
            )
    message_types = {name: fields for name, fields in types.items() if name != DOMAIN}
    root = _primary_type(message_types)
    if root != primary:
        raise InvalidRequest(
            f"typed_data_json: primaryType {primary[:40]!r} is not the root of types "
            f"({root[:40]!r})"
        )
    domain_types = {DOMAIN: [(n, k) for n, k in DOMAIN_FIELDS if n in domain]}
    domain_hash = _Hasher(domain_types).struct_hash(DOMAIN, domain)
    message_hash = _Hasher(message_types).struct_hash(primary, message)
    return keccak(b"\x19\x01" + domain_hash + message_hash)


def _core(kind: str) -> str:
    """Person[][3] -> Person (eth-account: everything before the first '[')."""
    return kind[: kind.index("[")] if kind.endswith("]") else kind


def _primary_type(types: Types) -> str:
    referenced = {
        _core(kind)
        for name, fields in types.items()
        for _, kind in fields
        if _core(kind) in types and _core(kind) != name
    }
    roots = [name for name in types if name not in referenced]
    if len(roots) != 1:
        raise InvalidRequest("typed_data_json: types must have exactly one root (primaryType)")
    return roots[0]


class _Hasher:
    """One request's types, with each type's hash computed at most once."""

    def __init__(self, types: Types) -> None:
        self._types = types
        self._type_hashes: dict[str, bytes] = {}

    def struct_hash(self, kind: str, value: Mapping[str, Any]) -> bytes:
        words = [self._type_hash(kind)]
        words.extend(self._word(field_kind, value[name]) for name, field_kind in self._types[kind])
        return keccak(b"".join(words))

    def _type_hash(self, kind: str) -> bytes:
        cached = self._type_hashes.get(kind)
        if cached is None:
            deps = self._dependencies(kind)
            deps.discard(kind)
            text = "".join(
                f"{name}({','.join(f'{k} {n}' for n, k in self._types[name])})"
                for name in [kind, *sorted(deps)]
            )
            cached = self._type_hashes[kind] = keccak(text.encode("utf-8"))
        return cached

    def _dependencies(self, kind: str) -> set[str]:
        found: set[str] = set()
        pending = [kind]
        while pending:
            core = _core(pending.pop())
            if core in _SOLIDITY or core in found:
                continue
            if core not in self._types:
                raise InvalidRequest(f"typed_data_json: type {core[:40]!r} is not defined")
            found.add(core)
            pending.extend(k for _, k in self._types[core])
        return found

    def _word(self, kind: str, value: Any) -> bytes:
        """The 32 bytes `kind`'s value contributes to its struct's encoding."""
        if kind in self._types:
            return self.struct_hash(kind, value)
        if kind.endswith("]"):
            if not value:
                return _EMPTY_ARRAY_HASH
            inner = kind[: kind.rindex("[")]
            return keccak(b"".join(self._word(inner, item) for item in value))
        if kind == "string":
            return keccak(value.encode("utf-8"))
        if kind == "bytes":
            return keccak(value)
        if kind == "bool":
            return (1 if value else 0).to_bytes(32, "big")
        if kind == "address":
            return bytes(value).rjust(32, b"\0")
        if kind.startswith("bytes"):
            return bytes(value).ljust(32, b"\0")
        if kind.startswith(("int", "uint")):
            return (int(value) % 2**256).to_bytes(32, "big")  # two's complement for intN
        raise InvalidRequest(f"typed_data_json: unknown type {kind[:40]!r}")
