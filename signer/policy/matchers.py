"""Compiled rules and how each one matches: transaction, typed-data, message and authorization
rules.

Allow semantics (`match`): the budget spends if the rule allows the request, else a Miss that
says how far the rule got (the steps below; the denial shows the rule that got furthest
first). Deny semantics (`hit`): why the rule denies the request, else None. A new rule kind
gets a class here, its steps below, its compilation in signer.policy.compiler and its place in
signer.policy.evaluation.
"""

import re
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from signer.eth.abi import FunctionSignature, named
from signer.eth.messages import TypedData
from signer.eth.transactions import UnsignedAuthorization
from signer.policy.conditions import Check, resolve, show
from signer.policy.reasons import Miss, delegate_reason

# How far an allow rule got before it failed (Miss.progress): each step a rule passes ranks its
# miss above the misses of rules that failed earlier. `where` checks count one step each, in
# the order written, and the spends come after the last check.
TX_TO = 0  # to (or contract creation)
TX_DELEGATES = 1  # the type 4 authorizations' delegates, and blobs_max (type 3)
TX_VALUE = 2  # value_max
TX_SELECTOR = 3  # calldata against the call's selector
TX_DECODE = 4  # calldata decoding exactly as the call
TX_WHERE = 5  # + the index of the failing `where` check
TYPED_CONTRACT = 0  # domain.verifying_contract
TYPED_CHAIN = 1  # domain.chain_id
TYPED_PRIMARY_TYPE = 2  # primary_type
TYPED_WHERE = 3  # + the index of the failing `where` check
MESSAGE_MATCH = 0  # the message does not match the pattern
MESSAGE_SPENDS = 1  # the pattern matched; the spends (literal counts, so they never miss)
AUTH_DELEGATE = 0  # the delegate is not named
AUTH_CHAIN = 1  # the chain id (0 needs allow_any_chain)
AUTH_SPENDS = 2  # the spends (literal counts)


@dataclass(frozen=True, slots=True)
class Target:
    label: str
    addresses: frozenset[bytes]
    create: bool
    self_: bool

    def matches(self, to: bytes, self_address: bytes) -> bool:
        if not to:
            return self.create
        return to in self.addresses or (self.self_ and to == self_address)


@dataclass(frozen=True, slots=True)
class Spend:
    budget: str
    amount: int | None = None  # a literal count
    native: bool = False  # "value"
    path: tuple[str, ...] = ()
    label: str = ""


@dataclass(slots=True)
class Call:
    """One call being judged: the transaction itself, or a call inside a batch."""

    to: bytes
    value: int
    data: bytes
    authorizations: tuple[bytes, ...] = ()  # delegate addresses (type 4, top level only)
    blobs: int = 0  # EIP-4844 blobs (type 3, top level only)
    # decoded once per argument types; rules may name the same arguments differently
    decoded: dict[str, tuple[Any, ...] | None] = field(default_factory=dict)

    def args(self, signature: FunctionSignature) -> dict[str, Any] | None:
        key = signature.canonical
        if key not in self.decoded:
            self.decoded[key] = signature.decode_arguments(self.data[4:])
        values = self.decoded[key]
        return None if values is None else named(signature.params, values)


@dataclass(frozen=True, slots=True)
class TxRule:
    id: str
    to: Target | None
    value_max: int | None
    signature: FunctionSignature | None
    selector: bytes
    checks: tuple[Check, ...]
    delegates: frozenset[bytes] | None
    spends: tuple[Spend, ...]
    blobs_max: int = 0

    def match(self, call: Call, self_address: bytes) -> Miss | tuple[tuple[str, int], ...]:
        """Allow semantics: the spends if this rule allows `call`, else how far it got."""
        if not call.to:
            if self.to is None or not self.to.create:
                return Miss(
                    self.id, TX_TO, lambda: 'contract creation needs a rule with to = "create"'
                )
        elif self.to is not None and not self.to.matches(call.to, self_address):
            label = self.to.label
            return Miss(self.id, TX_TO, lambda: f"to {show(call.to)} not in {label}")
        if call.authorizations:
            if self.delegates is None:
                return Miss(
                    self.id, TX_DELEGATES, lambda: "type 4 (EIP-7702) needs a rule with delegates"
                )
            for i, address in enumerate(call.authorizations):
                if address not in self.delegates:
                    return Miss(
                        self.id,
                        TX_DELEGATES,
                        partial(delegate_reason, i, address),
                    )
        if call.blobs > self.blobs_max:
            return Miss(
                self.id, TX_DELEGATES,
                lambda: f"{call.blobs} blobs exceed blobs_max {self.blobs_max}",
            )
        if call.value > (self.value_max or 0):
            return Miss(
                self.id,
                TX_VALUE,
                lambda: f"value {call.value} exceeds value_max {self.value_max or 0}",
            )
        args: dict[str, Any] = {}
        if self.signature is None:
            if call.data and call.to:
                return Miss(
                    self.id,
                    TX_SELECTOR,
                    lambda: f"calldata (selector 0x{call.data[:4].hex()}) but no call",
                )
        else:
            wanted = self.signature.canonical
            if call.data[:4] != self.selector:
                return Miss(
                    self.id,
                    TX_SELECTOR,
                    lambda: f"selector 0x{call.data[:4].hex()} is not {wanted}",
                )
            decoded = call.args(self.signature)
            if decoded is None:
                return Miss(
                    self.id, TX_DECODE, lambda: f"calldata does not decode exactly as {wanted}"
                )
            args = decoded
        for i, check in enumerate(self.checks):
            failure = check.all_hold(args, self_address)
            if failure is not None:
                return Miss(self.id, TX_WHERE + i, failure)
        return spend_amounts(self.id, self.spends, args, call.value, TX_WHERE + len(self.checks))

    def hit(self, call: Call, self_address: bytes) -> str | None:
        """Deny semantics: why this rule denies `call`, else None."""
        what = []
        args: dict[str, Any] = {}  # `where` needs a call signature (the compiler checks)
        if self.to is not None:
            if not self.to.matches(call.to, self_address):
                return None
            what.append(f"to {show(call.to) if call.to else 'contract creation'}")
        if self.signature is not None:
            if call.data[:4] != self.selector:
                return None
            what.append(self.signature.canonical)
            decoded = call.args(self.signature)
            if decoded is None:
                return f"{self.signature.canonical} with calldata that does not decode exactly"
            args = decoded
        return describe_hit(what, self.checks, args, self_address, "every transaction")


@dataclass(frozen=True, slots=True)
class TypedRule:
    id: str
    contracts: frozenset[bytes] | None
    contracts_label: str
    chain_id: int | str | None
    primary_type: str | None
    checks: tuple[Check, ...]
    spends: tuple[Spend, ...]

    def match(self, typed: TypedData, self_address: bytes) -> Miss | tuple[tuple[str, int], ...]:
        domain = typed.domain
        if self.contracts is not None:
            contract = domain.get("verifyingContract")
            if contract is None:
                return Miss(self.id, TYPED_CONTRACT, lambda: "domain has no verifyingContract")
            if contract not in self.contracts:
                return Miss(
                    self.id,
                    TYPED_CONTRACT,
                    lambda: f"verifyingContract {show(contract)} not in {self.contracts_label}",
                )
        chain = domain.get("chainId")
        if self.chain_id == "none":
            if chain is not None:
                return Miss(
                    self.id, TYPED_CHAIN, lambda: f"domain chainId {chain}: rule allows only none"
                )
        elif chain is None:
            return Miss(
                self.id,
                TYPED_CHAIN,
                lambda: 'domain has no chainId (valid on every chain); needs chain_id = "none"',
            )
        elif self.chain_id is not None and chain != self.chain_id:
            return Miss(
                self.id, TYPED_CHAIN, lambda: f"domain chainId {chain} is not {self.chain_id}"
            )
        if self.primary_type is not None and typed.primary_type != self.primary_type:
            return Miss(
                self.id,
                TYPED_PRIMARY_TYPE,
                lambda: f"primaryType {show(typed.primary_type)} is not {self.primary_type}",
            )
        tree = {"message": typed.message}
        for i, check in enumerate(self.checks):
            failure = check.all_hold(tree, self_address)
            if failure is not None:
                return Miss(self.id, TYPED_WHERE + i, failure)
        return spend_amounts(self.id, self.spends, tree, 0, TYPED_WHERE + len(self.checks))

    def hit(self, typed: TypedData, self_address: bytes) -> str | None:
        what = []
        if self.contracts is not None:
            contract = typed.domain.get("verifyingContract")
            if contract not in self.contracts:
                return None
            what.append(f"verifyingContract {show(contract)}")
        chain = typed.domain.get("chainId")
        if self.chain_id == "none" and chain is not None:
            return None
        if isinstance(self.chain_id, int) and chain != self.chain_id:
            return None
        if self.primary_type is not None:
            if typed.primary_type != self.primary_type:
                return None
            what.append(f"primaryType {self.primary_type}")
        tree = {"message": typed.message}
        return describe_hit(what, self.checks, tree, self_address, "all typed data")


@dataclass(frozen=True, slots=True)
class AuthRule:
    """kind = "authorization": which delegates the key's account may be handed to, where."""

    id: str
    delegates: frozenset[bytes]
    label: str
    chains: frozenset[int]
    allow_any_chain: bool
    spends: tuple[Spend, ...]

    def match(self, auth: UnsignedAuthorization) -> Miss | tuple[tuple[str, int], ...]:
        if auth.address not in self.delegates:
            return Miss(
                self.id, AUTH_DELEGATE,
                lambda: f"delegate {show(auth.address)} not in {self.label}",
            )
        if auth.chain_id == 0:
            if not self.allow_any_chain:
                return Miss(
                    self.id, AUTH_CHAIN,
                    lambda: "chain_id 0 (valid on every chain) needs allow_any_chain = true",
                )
        elif auth.chain_id not in self.chains:
            return Miss(
                self.id, AUTH_CHAIN,
                lambda: f"chain_id {auth.chain_id} not in chains {sorted(self.chains)}",
            )
        return spend_amounts(self.id, self.spends, {}, 0, AUTH_SPENDS)

    def hit(self, auth: UnsignedAuthorization) -> str | None:
        """Deny semantics: a deny rule names delegates refused on every chain."""
        if auth.address not in self.delegates:
            return None
        return f"delegate {show(auth.address)}"


@dataclass(frozen=True, slots=True)
class MessageRule:
    id: str
    pattern: re.Pattern[str]
    spends: tuple[Spend, ...]


def spend_amounts(
    rule_id: str, spends: tuple[Spend, ...], tree: Any, value: int, progress: int
) -> Miss | tuple[tuple[str, int], ...]:
    amounts = []
    for spend in spends:
        if spend.native:
            amount = value
        elif spend.amount is not None:
            amount = spend.amount
        else:
            values = resolve(tree, spend.path)
            if values is None or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values
            ):
                return Miss(
                    rule_id,
                    progress,
                    partial(str, f"spend {spend.budget}: {spend.label} is not an amount"),
                )
            amount = sum(values)
        amounts.append((spend.budget, amount))
    return tuple(amounts)


def describe_hit(
    what: list[str], checks: tuple[Check, ...], tree: Any, self_address: bytes, everything: str
) -> str | None:
    """Deny semantics, one for transaction and typed-data rules: after the rule's own fields
    matched (described in `what`), every `where` check must match some value. Why the rule
    denies (what matched; `everything` for a rule without conditions), else None."""
    for check in checks:
        matched = check.any_matches(tree, self_address)
        if matched is None:
            return None
        what.append(matched)
    return ", ".join(what) or everything
