"""`where` conditions: literals, paths into decoded values, and how each one fails.

Decoded calldata and typed data share one canonical form (signer.eth.abi.named,
signer.eth.messages.TypedData): int for integers, bytes for addresses and byte strings, bool,
str, list for arrays, dict for tuples/structs. A path walks names; an array on the way means
every element. Allow rules need every element to hold; deny rules match if any element does
(or if the value is missing or of the wrong kind: a deny rule fails closed).
"""

import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from functools import lru_cache, partial
from typing import Any

from signer.errors import InvalidRequest
from signer.eth import fields
from signer.eth.abi import AbiType
from signer.eth.fields import checksum

_DECIMAL = re.compile(r"-?[0-9]{1,78}")
_HEX = re.compile(r"0x(?:[0-9a-fA-F]{2})*")
SELF = "$self"


class PolicyError(ValueError):
    """A policy that does not compile; the message names the rule and field."""


@dataclass(frozen=True, slots=True)
class Lit:
    """A configured literal with every reading it admits; the value's kind picks one."""

    text: str | None = None
    integer: int | None = None
    raw: bytes | None = None
    boolean: bool | None = None
    is_self: bool = False

    def equals(self, value: Any, self_address: bytes) -> bool:
        if isinstance(value, bool):
            return self.boolean == value
        if isinstance(value, int):
            return self.integer == value
        if isinstance(value, bytes):
            return value == (self_address if self.is_self else self.raw)
        return bool(self.text == value)

    def __str__(self) -> str:
        if self.is_self:
            return SELF
        if self.raw is not None:
            return show(self.raw)
        if self.integer is not None:
            return str(self.integer)
        if self.boolean is not None and self.text is None:
            return str(self.boolean).lower()
        return repr(self.text)


def literal(value: str | bool | int, where: str) -> Lit:
    if isinstance(value, bool):
        return Lit(boolean=value)
    if isinstance(value, int):
        return Lit(integer=value)
    if value == SELF:
        return Lit(is_self=True)
    if value.startswith("@"):
        raise PolicyError(f"{where}: a set ({value}) goes with `in`, not `eq`")
    integer = int(value) if _DECIMAL.fullmatch(value) else None
    raw = None
    if _HEX.fullmatch(value):
        raw = bytes.fromhex(value[2:])
        if len(raw) == 20:
            raw = parse_address(value, where)
    boolean = {"true": True, "false": False}.get(value)
    return Lit(text=value, integer=integer, raw=raw, boolean=boolean)


def parse_address(text: str, where: str) -> bytes:
    """signer.eth.fields.parse_address (EIP-55 checked), as a PolicyError."""
    try:
        return fields.parse_address(text, where)
    except InvalidRequest as exc:
        raise PolicyError(str(exc)) from None


@dataclass(frozen=True, slots=True)
class Members:
    """An `in` list or set, split by kind so membership is one hash lookup."""

    label: str
    raws: frozenset[bytes] = frozenset()
    integers: frozenset[int] = frozenset()
    texts: frozenset[str] = frozenset()
    booleans: frozenset[bool] = frozenset()
    has_self: bool = False

    def contains(self, value: Any, self_address: bytes) -> bool:
        if isinstance(value, bool):
            return value in self.booleans
        if isinstance(value, int):
            return value in self.integers
        if isinstance(value, bytes):
            return value in self.raws or (self.has_self and value == self_address)
        return value in self.texts


class Verdict(Enum):
    HOLDS = 1
    FAILS = 2
    WRONG_KIND = 3  # e.g. lte on an address: fails an allow rule, matches a deny rule


@dataclass(frozen=True, slots=True)
class Check:
    """One `where` entry: a path and the comparisons that must all hold."""

    label: str
    path: tuple[str, ...]
    eq: Lit | None = None
    members: Members | None = None
    lte: int | None = None
    lt: int | None = None
    gte: int | None = None
    gt: int | None = None

    def judge(self, value: Any, self_address: bytes, explain: bool = False) -> tuple[Verdict, str]:
        """Whether `value` satisfies every comparison; with `explain`, why not."""
        if self.eq is not None and not self.eq.equals(value, self_address):
            text = f"{self.label} {show(value)} is not {self.eq}" if explain else ""
            return Verdict.FAILS, text
        if self.members is not None and not self.members.contains(value, self_address):
            text = f"{self.label} {show(value)} not in {self.members.label}" if explain else ""
            return Verdict.FAILS, text
        if self.lte is None and self.lt is None and self.gte is None and self.gt is None:
            return Verdict.HOLDS, ""
        if not isinstance(value, int) or isinstance(value, bool):
            return Verdict.WRONG_KIND, f"{self.label} {show(value)} is not an integer"
        if self.lte is not None and value > self.lte:
            return Verdict.FAILS, f"{self.label} {value} exceeds {self.lte}"
        if self.lt is not None and value >= self.lt:
            return Verdict.FAILS, f"{self.label} {value} is not below {self.lt}"
        if self.gte is not None and value < self.gte:
            return Verdict.FAILS, f"{self.label} {value} is below {self.gte}"
        if self.gt is not None and value <= self.gt:
            return Verdict.FAILS, f"{self.label} {value} does not exceed {self.gt}"
        return Verdict.HOLDS, ""

    def explain(self, value: Any, self_address: bytes) -> str:
        return self.judge(value, self_address, explain=True)[1]

    def _holds_text(self) -> str:
        parts = []
        if self.eq is not None:
            parts.append(f"is {self.eq}")
        if self.members is not None:
            parts.append(f"in {self.members.label}")
        for op, bound in (("<=", self.lte), ("<", self.lt), (">=", self.gte), (">", self.gt)):
            if bound is not None:
                parts.append(f"{op} {bound}")
        return ", ".join(parts)

    def all_hold(self, tree: Any, self_address: bytes) -> Callable[[], str] | None:
        """Allow semantics: None if every value at the path holds, else why not (lazily:
        an allowed request never pays for explaining the rules it did not match)."""
        values = resolve(tree, self.path)
        if values is None:
            return lambda: f"{self.label}: no such field"
        for value in values:
            if self.judge(value, self_address)[0] is not Verdict.HOLDS:
                return partial(self.explain, value, self_address)
        return None

    def any_matches(self, tree: Any, self_address: bytes) -> str | None:
        """Deny semantics: why it matches (some value holds, or fails closed), else None."""
        values = resolve(tree, self.path)
        if values is None:
            return f"{self.label}: no such field (deny rules fail closed)"
        for value in values:
            verdict, text = self.judge(value, self_address)
            if verdict is Verdict.HOLDS:
                return f"{self.label} {show(value)} {self._holds_text()}"
            if verdict is Verdict.WRONG_KIND:
                return f"{text} (deny rules fail closed)"
        return None


_MISSING = object()


def resolve(tree: Any, path: tuple[str, ...]) -> list[Any] | None:
    """Every value at `path`, arrays fanned out; None if the path does not exist."""
    current = [tree]
    for name in path:
        following = []
        for node in _flatten(current):
            if not isinstance(node, dict):
                return None
            child = node.get(name, _MISSING)
            if child is _MISSING:
                return None
            following.append(child)
        current = following
    return _flatten(current)


def _flatten(values: list[Any]) -> list[Any]:
    if not any(isinstance(v, list) for v in values):
        return values
    flat: list[Any] = []
    for value in values:
        if isinstance(value, list):
            flat.extend(_flatten(value))
        else:
            flat.append(value)
    return flat


def abi_leaf(params: dict[str, AbiType], path: tuple[str, ...], where: str) -> AbiType:
    """The type a `where`/`spend` path reaches in a call's arguments; PolicyError if none."""
    scope = params
    leaf: AbiType | None = None
    for i, name in enumerate(path):
        if name not in scope:
            known = ", ".join(scope) or "none named"
            prefix = ".".join(path[:i])
            inside = f" of {prefix}" if prefix else ""
            raise PolicyError(f"{where}: no argument {name!r}{inside} (arguments: {known})")
        leaf = scope[name]
        scope = {c.name: c.type for c in leaf.components if c.name}
    assert leaf is not None
    if leaf.is_tuple:
        members = ", ".join(c.name for c in leaf.components if c.name)
        raise PolicyError(f"{where}: is a tuple; name one of its members ({members})")
    return leaf


@lru_cache(maxsize=4096)
def _checksum(address: bytes) -> str:
    """EIP-55 costs a keccak; denials name the same few addresses over and over."""
    return checksum(address)


def show(value: Any) -> str:
    """A decoded value as an operator reads it, bounded in length."""
    if isinstance(value, bytes):
        if len(value) == 20:
            return _checksum(value)
        text = "0x" + value.hex()
        return text if len(text) <= 42 else text[:42] + "…"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return repr(value) if len(value) <= 40 else repr(value[:40]) + "…"
    return str(value)
