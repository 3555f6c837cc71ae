"""The policy engine: may this key sign exactly this request, and why.

`Policy.compile(name, config)` turns a validated `[policies.NAME]` table into lookup tables
(selectors, sets of 20-byte addresses, compiled regexes); `evaluate(request, self_address)`
judges the object the signing core signs: an UnsignedTransaction, the EIP-191 message bytes,
the TypedData whose digest is signed, or an UnsignedAuthorization (EIP-7702). Deny wins;
nothing an allow rule does not match is signed. The engine has no state: budgets are returned
as amounts to reserve, the store decides whether they fit the window.
"""

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from signer.eth import batch
from signer.eth.abi import AbiType, FunctionSignature, named, parse_signature
from signer.eth.messages import TypedData
from signer.eth.transactions import (
    BLOB,
    FEE_MARKET_TYPES,
    GAS_PER_BLOB,
    UnsignedAuthorization,
    UnsignedTransaction,
)
from signer.policy.conditions import (
    SELF,
    Check,
    Lit,
    Members,
    PolicyError,
    abi_leaf,
    literal,
    parse_address,
    resolve,
    show,
)
from signer.policy.config import Condition, PolicyConfig, Rule

__all__ = ["BudgetDef", "Decision", "Policy", "PolicyError", "Request"]

Request = UnsignedTransaction | bytes | TypedData | UnsignedAuthorization
# Batches inside batches are judged this deep, then refused.
MAX_BATCH_DEPTH = 3
# A denial lists the closest rule first, then others, up to about this many characters.
MAX_REASON_LENGTH = 600
_INTEGER_LITERAL = re.compile(r"[0-9]{1,78}")


@dataclass(frozen=True, slots=True)
class BudgetDef:
    name: str
    limit: int
    window_seconds: int


@dataclass(frozen=True, slots=True)
class Decision:
    allowed: bool
    policy: str
    rule_id: str | None  # the allow rule(s), or the deny rule; None for default deny
    reason: str
    spends: tuple[tuple[str, int], ...] = ()  # (budget, amount) to reserve, one per budget
    budgets: tuple[BudgetDef, ...] = ()  # the definitions of the budgets in `spends`


# --- compiled pieces ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Target:
    label: str
    addresses: frozenset[bytes]
    create: bool
    self_: bool

    def matches(self, to: bytes, self_address: bytes) -> bool:
        if not to:
            return self.create
        return to in self.addresses or (self.self_ and to == self_address)


@dataclass(frozen=True, slots=True)
class _Spend:
    budget: str
    amount: int | None = None  # a literal count
    native: bool = False  # "value"
    path: tuple[str, ...] = ()
    label: str = ""


@dataclass(frozen=True, slots=True)
class _Outcome:
    allowed: bool
    rule_id: str | None
    reason: str
    spends: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class _Miss:
    """How far a rule got before it failed; the reason is formatted only if it is shown."""

    rule_id: str
    progress: int
    reason: Callable[[], str]


@dataclass(slots=True)
class _Call:
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
class _TxRule:
    id: str
    to: _Target | None
    value_max: int | None
    signature: FunctionSignature | None
    selector: bytes
    checks: tuple[Check, ...]
    delegates: frozenset[bytes] | None
    spends: tuple[_Spend, ...]
    blobs_max: int = 0

    def match(self, call: _Call, self_address: bytes) -> _Miss | tuple[tuple[str, int], ...]:
        """Allow semantics: the spends if this rule allows `call`, else how far it got."""
        if not call.to:
            if self.to is None or not self.to.create:
                return _Miss(
                    self.id, 0, lambda: 'contract creation needs a rule with to = "create"'
                )
        elif self.to is not None and not self.to.matches(call.to, self_address):
            label = self.to.label
            return _Miss(self.id, 0, lambda: f"to {show(call.to)} not in {label}")
        if call.authorizations:
            if self.delegates is None:
                return _Miss(self.id, 1, lambda: "type 4 (EIP-7702) needs a rule with delegates")
            for i, address in enumerate(call.authorizations):
                if address not in self.delegates:
                    return _Miss(
                        self.id,
                        1,
                        partial(_delegate_reason, i, address),
                    )
        if call.blobs > self.blobs_max:
            return _Miss(
                self.id, 1, lambda: f"{call.blobs} blobs exceed blobs_max {self.blobs_max}"
            )
        if call.value > (self.value_max or 0):
            return _Miss(
                self.id, 2, lambda: f"value {call.value} exceeds value_max {self.value_max or 0}"
            )
        args: dict[str, Any] = {}
        if self.signature is None:
            if call.data and call.to:
                return _Miss(
                    self.id, 3, lambda: f"calldata (selector 0x{call.data[:4].hex()}) but no call"
                )
        else:
            wanted = self.signature.canonical
            if call.data[:4] != self.selector:
                return _Miss(
                    self.id, 3, lambda: f"selector 0x{call.data[:4].hex()} is not {wanted}"
                )
            decoded = call.args(self.signature)
            if decoded is None:
                return _Miss(self.id, 4, lambda: f"calldata does not decode exactly as {wanted}")
            args = decoded
        for i, check in enumerate(self.checks):
            failure = check.all_hold(args, self_address)
            if failure is not None:
                return _Miss(self.id, 5 + i, failure)
        return _spend_amounts(self.id, self.spends, args, call.value, 5 + len(self.checks))

    def hit(self, call: _Call, self_address: bytes) -> str | None:
        """Deny semantics: why this rule denies `call`, else None."""
        what = []
        if self.to is not None:
            if not self.to.matches(call.to, self_address):
                return None
            what.append(f"to {show(call.to) if call.to else 'contract creation'}")
        if self.signature is not None:
            if call.data[:4] != self.selector:
                return None
            what.append(self.signature.canonical)
            args = call.args(self.signature)
            if args is None:
                return f"{self.signature.canonical} with calldata that does not decode exactly"
            for check in self.checks:
                matched = check.any_matches(args, self_address)
                if matched is None:
                    return None
                what.append(matched)
        return ", ".join(what) or "every transaction"


@dataclass(frozen=True, slots=True)
class _TypedRule:
    id: str
    contracts: frozenset[bytes] | None
    contracts_label: str
    chain_id: int | str | None
    primary_type: str | None
    checks: tuple[Check, ...]
    spends: tuple[_Spend, ...]

    def match(self, typed: TypedData, self_address: bytes) -> _Miss | tuple[tuple[str, int], ...]:
        domain = typed.domain
        if self.contracts is not None:
            contract = domain.get("verifyingContract")
            if contract is None:
                return _Miss(self.id, 0, lambda: "domain has no verifyingContract")
            if contract not in self.contracts:
                return _Miss(
                    self.id,
                    0,
                    lambda: f"verifyingContract {show(contract)} not in {self.contracts_label}",
                )
        chain = domain.get("chainId")
        if self.chain_id == "none":
            if chain is not None:
                return _Miss(self.id, 1, lambda: f"domain chainId {chain}: rule allows only none")
        elif chain is None:
            return _Miss(
                self.id,
                1,
                lambda: 'domain has no chainId (valid on every chain); needs chain_id = "none"',
            )
        elif self.chain_id is not None and chain != self.chain_id:
            return _Miss(self.id, 1, lambda: f"domain chainId {chain} is not {self.chain_id}")
        if self.primary_type is not None and typed.primary_type != self.primary_type:
            return _Miss(
                self.id,
                2,
                lambda: f"primaryType {show(typed.primary_type)} is not {self.primary_type}",
            )
        tree = {"message": typed.message}
        for i, check in enumerate(self.checks):
            failure = check.all_hold(tree, self_address)
            if failure is not None:
                return _Miss(self.id, 3 + i, failure)
        return _spend_amounts(self.id, self.spends, tree, 0, 3 + len(self.checks))

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
        for check in self.checks:
            matched = check.any_matches(tree, self_address)
            if matched is None:
                return None
            what.append(matched)
        return ", ".join(what) or "all typed data"


@dataclass(frozen=True, slots=True)
class _AuthRule:
    """kind = "authorization": which delegates the key's account may be handed to, where."""

    id: str
    delegates: frozenset[bytes]
    label: str
    chains: frozenset[int]
    allow_any_chain: bool
    spends: tuple[_Spend, ...]

    def match(self, auth: UnsignedAuthorization) -> _Miss | tuple[tuple[str, int], ...]:
        if auth.address not in self.delegates:
            return _Miss(
                self.id, 0, lambda: f"delegate {show(auth.address)} not in {self.label}"
            )
        if auth.chain_id == 0:
            if not self.allow_any_chain:
                return _Miss(
                    self.id, 1,
                    lambda: "chain_id 0 (valid on every chain) needs allow_any_chain = true",
                )
        elif auth.chain_id not in self.chains:
            return _Miss(
                self.id, 1,
                lambda: f"chain_id {auth.chain_id} not in chains {sorted(self.chains)}",
            )
        return _spend_amounts(self.id, self.spends, {}, 0, 2)

    def hit(self, auth: UnsignedAuthorization) -> str | None:
        """Deny semantics: a deny rule names delegates refused on every chain."""
        if auth.address not in self.delegates:
            return None
        return f"delegate {show(auth.address)}"


@dataclass(frozen=True, slots=True)
class _MessageRule:
    id: str
    pattern: re.Pattern[str]
    spends: tuple[_Spend, ...]


def _spend_amounts(
    rule_id: str, spends: tuple[_Spend, ...], tree: Any, value: int, progress: int
) -> _Miss | tuple[tuple[str, int], ...]:
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
                return _Miss(
                    rule_id,
                    progress,
                    partial(str, f"spend {spend.budget}: {spend.label} is not an amount"),
                )
            amount = sum(values)
        amounts.append((spend.budget, amount))
    return tuple(amounts)


# --- the policy -----------------------------------------------------------------------------


class Policy:
    def __init__(
        self,
        name: str,
        config: PolicyConfig,
        allow_tx: tuple[_TxRule, ...],
        deny_tx: tuple[_TxRule, ...],
        allow_typed: tuple[_TypedRule, ...],
        deny_typed: tuple[_TypedRule, ...],
        allow_messages: tuple[_MessageRule, ...],
        deny_messages: tuple[_MessageRule, ...],
        allow_auth: tuple[_AuthRule, ...] = (),
        deny_auth: tuple[_AuthRule, ...] = (),
    ) -> None:
        self.name = name
        self.config = config
        self.chains = frozenset(config.chains)
        self.max_gas_fee_wei = config.max_gas_fee_wei
        self.budgets = {
            n: BudgetDef(n, b.limit, b.window_seconds) for n, b in config.budgets.items()
        }
        self._allow_tx, self._deny_tx = allow_tx, deny_tx
        self._allow_typed, self._deny_typed = allow_typed, deny_typed
        self._allow_messages, self._deny_messages = allow_messages, deny_messages
        self._allow_auth, self._deny_auth = allow_auth, deny_auth

    @classmethod
    def compile(cls, name: str, config: PolicyConfig) -> "Policy":
        """Compile a validated config; PolicyError names the rule and field at fault."""
        return _Compiler(config).policy(name)

    def evaluate(self, request: Request, self_address: bytes) -> Decision:
        """Judge `request` for the key whose 20-byte address is `self_address`."""
        if isinstance(request, UnsignedTransaction):
            outcome = self._transaction(request, self_address)
        elif isinstance(request, TypedData):
            outcome = self._typed_data(request, self_address)
        elif isinstance(request, bytes):
            outcome = self._message(request)
        elif isinstance(request, UnsignedAuthorization):
            outcome = self._authorization(request)
        else:
            raise TypeError(f"cannot judge a {type(request).__name__}")
        return self._decision(outcome)

    # --- transactions ---

    def _transaction(self, tx: UnsignedTransaction, self_address: bytes) -> _Outcome:
        if not self._allow_tx:
            return _deny(_no_match("transactions", []))
        if tx.chain_id not in self.chains:
            return _deny(f"chain_id {tx.chain_id} not in chains {sorted(self.chains)}")
        fee = tx.max_fee_wei  # blob gas included (EIP-4844)
        # compilation ensures a cap whenever there are transaction allow rules
        if self.max_gas_fee_wei is not None and fee > self.max_gas_fee_wei:
            what = "max_fee_per_gas" if tx.type in FEE_MARKET_TYPES else "gas_price"
            if tx.type == BLOB:
                what += f" + {len(tx.blob_versioned_hashes)} blobs * {GAS_PER_BLOB} * " + (
                    "max_fee_per_blob_gas")
            return _deny(
                f"gas_limit * {what} = {fee} wei exceeds max_gas_fee_wei {self.max_gas_fee_wei}"
            )
        for i, auth in enumerate(tx.authorization_list):
            if auth.chain_id == 0:
                return _deny(
                    f"authorization_list[{i}].chain_id is 0: valid on every chain, never signed"
                )
            if auth.chain_id != tx.chain_id:
                return _deny(
                    f"authorization_list[{i}].chain_id {auth.chain_id} is not the "
                    f"transaction's chain {tx.chain_id}"
                )
        call = _Call(tx.to, tx.value, tx.data, tuple(a.address for a in tx.authorization_list),
                     len(tx.blob_versioned_hashes))
        return self._judge_call(call, self_address, 0)

    def _judge_call(self, call: _Call, self_address: bytes, depth: int) -> _Outcome:
        for rule in self._deny_tx:
            hit = rule.hit(call, self_address)
            if hit is not None:
                return _Outcome(False, rule.id, f"denied by rule {rule.id}: {hit}")
        if not call.authorizations and not call.blobs:
            try:
                inner = batch.inner_calls(call.to, call.value, call.data)
            except batch.BatchRefused as exc:
                return _deny(f"batch to {show(call.to)}: {exc}")
            if inner is not None:
                return self._judge_batch(call, inner, self_address, depth)
        misses = []
        for rule in self._allow_tx:
            result = rule.match(call, self_address)
            if isinstance(result, _Miss):
                misses.append(result)
            else:
                return _Outcome(True, rule.id, f"allowed by rule {rule.id}", result)
        return _deny(_no_match("transactions", misses))

    def _judge_batch(
        self,
        call: _Call,
        inner: tuple[batch.InnerCall, ...],
        self_address: bytes,
        depth: int,
    ) -> _Outcome:
        wrapper = batch.batch_signature(call.to, call.data)
        assert wrapper is not None
        if depth >= MAX_BATCH_DEPTH:
            return _deny(f"batches nested deeper than {MAX_BATCH_DEPTH}")
        rule_ids: list[str] = []
        spends: list[tuple[str, int]] = []
        for i, item in enumerate(inner):
            outcome = self._judge_call(
                _Call(item.to, item.value, item.data), self_address, depth + 1
            )
            if not outcome.allowed:
                return _Outcome(
                    False,
                    outcome.rule_id,
                    f"{wrapper.name} call {i} to {show(item.to)}: {outcome.reason}",
                )
            assert outcome.rule_id is not None
            rule_ids.append(outcome.rule_id)
            spends.extend(outcome.spends)
        ids = ",".join(dict.fromkeys(rule_ids))
        return _Outcome(
            True,
            ids,
            f"every call in {wrapper.name} is allowed ({', '.join(rule_ids) or 'empty batch'})",
            tuple(spends),
        )

    # --- typed data and messages ---

    def _typed_data(self, typed: TypedData, self_address: bytes) -> _Outcome:
        if not self._allow_typed:
            return _deny(_no_match("typed data", []))
        chain = typed.domain.get("chainId")
        if chain is not None and chain not in self.chains:
            return _deny(f"domain chainId {chain} not in chains {sorted(self.chains)}")
        for rule in self._deny_typed:
            hit = rule.hit(typed, self_address)
            if hit is not None:
                return _Outcome(False, rule.id, f"denied by rule {rule.id}: {hit}")
        misses = []
        for rule in self._allow_typed:
            result = rule.match(typed, self_address)
            if isinstance(result, _Miss):
                misses.append(result)
            else:
                return _Outcome(True, rule.id, f"allowed by rule {rule.id}", result)
        return _deny(_no_match("typed data", misses))

    def _message(self, message: bytes) -> _Outcome:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            return _deny("message is not UTF-8 text; no message rule matches it")
        for rule in self._deny_messages:
            if rule.pattern.match(text):
                return _Outcome(
                    False, rule.id, f"denied by rule {rule.id}: message matches {_pattern(rule)}"
                )
        misses = []
        for rule in self._allow_messages:
            if rule.pattern.match(text):
                amounts = _spend_amounts(rule.id, rule.spends, {}, 0, 1)
                assert not isinstance(amounts, _Miss)  # message spends are literal counts
                return _Outcome(True, rule.id, f"allowed by rule {rule.id}", amounts)
            misses.append(_Miss(rule.id, 0, partial(_message_reason, rule)))
        return _deny(_no_match("messages", misses))

    def _authorization(self, auth: UnsignedAuthorization) -> _Outcome:
        """Default deny: only a delegate an allow rule names, on a chain it names."""
        if not self._allow_auth:
            return _deny(_no_match("authorizations", []))
        for rule in self._deny_auth:
            hit = rule.hit(auth)
            if hit is not None:
                return _Outcome(False, rule.id, f"denied by rule {rule.id}: {hit}")
        misses = []
        for rule in self._allow_auth:
            result = rule.match(auth)
            if isinstance(result, _Miss):
                misses.append(result)
            else:
                return _Outcome(
                    True, rule.id,
                    f"allowed by rule {rule.id}: delegate {show(auth.address)} on chain_id "
                    f"{auth.chain_id}",
                    result,
                )
        return _deny(_no_match("authorizations", misses))

    def _decision(self, outcome: _Outcome) -> Decision:
        prefix = f"policy {self.name}: "
        if not outcome.allowed:
            return Decision(False, self.name, outcome.rule_id, prefix + outcome.reason)
        totals: dict[str, int] = {}
        for budget, amount in outcome.spends:
            totals[budget] = totals.get(budget, 0) + amount
        for budget, amount in totals.items():
            limit = self.budgets[budget].limit
            if amount > limit:
                return Decision(
                    False,
                    self.name,
                    outcome.rule_id,
                    f"{prefix}budget {budget}: this request alone spends {amount}, "
                    f"more than its limit {limit} (rule {outcome.rule_id})",
                )
        return Decision(
            True,
            self.name,
            outcome.rule_id,
            prefix + outcome.reason,
            tuple(totals.items()),
            tuple(self.budgets[b] for b in totals),
        )


def _delegate_reason(index: int, address: bytes) -> str:
    return f"authorization_list[{index}].address {show(address)} not in delegates"


def _message_reason(rule: _MessageRule) -> str:
    return f"message does not match {_pattern(rule)}"


def _deny(reason: str) -> _Outcome:
    return _Outcome(False, None, reason)


def _pattern(rule: _MessageRule) -> str:
    text = rule.pattern.pattern
    return repr(text if len(text) <= 60 else text[:60] + "…")


def _no_match(kind: str, misses: list[_Miss]) -> str:
    if not misses:
        return f"no allow rule for {kind}"
    ordered = sorted(misses, key=lambda m: -m.progress)  # stable: config order among equals
    parts = [f"{m.reason()} (rule {m.rule_id})" for m in ordered]
    text = "no allow rule matches: " + parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if len(text) + len(part) > MAX_REASON_LENGTH:
            return f"{text}; and {len(parts) - i} more"
        text += "; " + part
    return text


# --- compilation ----------------------------------------------------------------------------


_FIELDS_BY_KIND = {
    "transaction": {"to", "value_max", "call", "delegates", "blobs_max", "where", "spend"},
    "message": {"match", "spend"},
    "typed_data": {"domain", "primary_type", "where", "spend"},
    "authorization": {"delegates", "chains", "allow_any_chain", "spend"},
}
_ALLOW_ONLY = ("value_max", "blobs_max", "chains", "allow_any_chain", "spend")
_RULE_FIELDS = (
    "to", "value_max", "call", "delegates", "blobs_max", "chains", "allow_any_chain", "match",
    "domain", "primary_type",
)


class _Compiler:
    def __init__(self, config: PolicyConfig) -> None:
        self.config = config
        self.sets: dict[str, frozenset[bytes]] = {}
        for name, members in config.sets.items():
            self.sets[name] = frozenset(
                parse_address(m, f"sets.{name}[{i}]") for i, m in enumerate(members)
            )

    def policy(self, name: str) -> Policy:
        config = self.config
        seen: set[str] = set()
        compiled: dict[tuple[str, str], list[Any]] = {}
        for section, section_rules in (("allow", config.allow), ("deny", config.deny)):
            for rule in section_rules:
                where = f"{section}[{rule.id}]"
                if rule.id in seen:
                    raise PolicyError(f"{where}: duplicate rule id")
                seen.add(rule.id)
                self._check_fields(rule, section, where)
                compiled.setdefault((section, rule.kind), []).append(
                    self._rule(rule, section, where)
                )
        allows = {kind for section, kind in compiled if section == "allow"}
        if "transaction" in allows and config.max_gas_fee_wei is None:
            raise PolicyError(
                "max_gas_fee_wei: required when the policy allows transactions "
                "(caps gas_limit * fee per gas, against fee griefing)"
            )
        if allows & {"transaction", "typed_data"} and not config.chains:
            raise PolicyError("chains: required when the policy allows transactions or typed data")
        for rule in config.allow:
            if rule.kind == "authorization" and rule.chains is None and not config.chains:
                raise PolicyError(
                    f"allow[{rule.id}].chains: required when the policy has no chains"
                )

        def rules(section: str, kind: str) -> tuple[Any, ...]:
            return tuple(compiled.get((section, kind), ()))

        return Policy(
            name,
            config,
            rules("allow", "transaction"),
            rules("deny", "transaction"),
            rules("allow", "typed_data"),
            rules("deny", "typed_data"),
            rules("allow", "message"),
            rules("deny", "message"),
            rules("allow", "authorization"),
            rules("deny", "authorization"),
        )

    def _check_fields(self, rule: Rule, section: str, where: str) -> None:
        allowed = _FIELDS_BY_KIND[rule.kind]
        for name in _RULE_FIELDS:
            if getattr(rule, name) is not None and name not in allowed:
                raise PolicyError(f"{where}.{name}: not a field of kind = {rule.kind!r} rules")
        if rule.where and "where" not in allowed:
            raise PolicyError(f"{where}.where: not a field of kind = {rule.kind!r} rules")
        if section == "deny":
            for name in _ALLOW_ONLY:
                if getattr(rule, name):
                    raise PolicyError(f"{where}.{name}: only allow rules have {name}")
        if rule.kind == "message" and rule.match is None:
            raise PolicyError(f"{where}.match: required for kind = 'message' rules")
        if rule.kind == "authorization" and rule.delegates is None:
            raise PolicyError(
                f"{where}.delegates: required for kind = 'authorization' rules (an "
                "authorization hands the whole account to the delegate's code)"
            )

    def _rule(self, rule: Rule, section: str, where: str) -> Any:
        if rule.kind == "transaction":
            return self._tx_rule(rule, section, where)
        if rule.kind == "typed_data":
            return self._typed_rule(rule, where)
        if rule.kind == "authorization":
            return self._auth_rule(rule, where)
        try:
            pattern = re.compile(rule.match or "")
        except re.error as exc:
            raise PolicyError(f"{where}.match: not a valid regular expression ({exc})") from None
        return _MessageRule(rule.id, pattern, self._spends(rule, where, None, typed=False))

    def _tx_rule(self, rule: Rule, section: str, where: str) -> _TxRule:
        signature = None
        params: dict[str, AbiType] = {}
        if rule.call is not None:
            try:
                signature = parse_signature(rule.call)
            except ValueError as exc:
                raise PolicyError(f"{where}.call: {exc}") from None
            if section == "allow" and signature.selector in batch.BATCH_SELECTORS:
                raise PolicyError(
                    f"{where}.call: {signature.canonical} is a batching wrapper; its inner "
                    "calls are each judged by the allow rules, write rules for those"
                )
            params = {p.name: p.type for p in signature.params if p.name}
            if "value" in params:
                raise PolicyError(
                    f"{where}.call: argument name 'value' is reserved for the native value "
                    "in spend; rename it (names do not change the selector)"
                )
        elif rule.where:
            raise PolicyError(f"{where}.where: needs a call signature to name arguments")
        target = None if rule.to is None else self._target(rule.to, f"{where}.to")
        if target is not None and target.create and signature is not None:
            raise PolicyError(f'{where}.call: to = "create" deploys code; it has no call')
        checks = tuple(
            self._check(path, cond, f"{where}.where.{path}", params, typed=False)
            for path, cond in rule.where.items()
        )
        delegates = None
        if rule.delegates is not None:
            delegates = self._addresses(rule.delegates, f"{where}.delegates")[0]
        return _TxRule(
            rule.id,
            target,
            rule.value_max if section == "allow" else None,
            signature,
            signature.selector if signature else b"",
            checks,
            delegates,
            self._spends(rule, where, params, typed=False),
            rule.blobs_max or 0,
        )

    def _auth_rule(self, rule: Rule, where: str) -> _AuthRule:
        assert rule.delegates is not None  # _check_fields
        items = [rule.delegates] if isinstance(rule.delegates, str) else rule.delegates
        if "*" in items:
            raise PolicyError(f"{where}.delegates: no wildcard; name each delegate contract")
        delegates, label = self._addresses(rule.delegates, f"{where}.delegates")
        chains = frozenset(self.config.chains if rule.chains is None else rule.chains)
        if rule.chains is not None and not rule.chains:
            raise PolicyError(f"{where}.chains: empty")
        return _AuthRule(
            rule.id, delegates, label, chains, bool(rule.allow_any_chain),
            self._spends(rule, where, None, typed=False),
        )

    def _typed_rule(self, rule: Rule, where: str) -> _TypedRule:
        contracts, label = None, ""
        chain_id: int | str | None = None
        if rule.domain is not None:
            if rule.domain.verifying_contract is not None:
                contracts, label = self._addresses(
                    rule.domain.verifying_contract, f"{where}.domain.verifying_contract"
                )
            chain_id = rule.domain.chain_id
            if isinstance(chain_id, int) and chain_id not in self.config.chains:
                raise PolicyError(f"{where}.domain.chain_id: {chain_id} is not in chains")
        checks = tuple(
            self._check(path, cond, f"{where}.where.{path}", None, typed=True)
            for path, cond in rule.where.items()
        )
        return _TypedRule(
            rule.id,
            contracts,
            label,
            chain_id,
            rule.primary_type,
            checks,
            self._spends(rule, where, None, typed=True),
        )

    # --- pieces ---

    def _set(self, ref: str, where: str) -> frozenset[bytes]:
        members = self.sets.get(ref[1:])
        if members is None:
            known = ", ".join("@" + n for n in self.sets) or "none defined"
            raise PolicyError(f"{where}: unknown set {ref} (sets: {known})")
        return members

    def _addresses(self, value: str | list[str], where: str) -> tuple[frozenset[bytes], str]:
        items = [value] if isinstance(value, str) else value
        if not items:
            raise PolicyError(f"{where}: empty")
        found: set[bytes] = set()
        for i, item in enumerate(items):
            at = where if isinstance(value, str) else f"{where}[{i}]"
            if item.startswith("@"):
                found |= self._set(item, at)
            else:
                found.add(parse_address(item, at))
        return frozenset(found), value if isinstance(value, str) else "[" + ", ".join(items) + "]"

    def _target(self, value: str | list[str], where: str) -> _Target:
        items = [value] if isinstance(value, str) else value
        create = "create" in items
        self_ = SELF in items
        rest = [i for i in items if i not in ("create", SELF)]
        if rest:
            addresses = self._addresses(value if isinstance(value, str) else rest, where)[0]
        else:
            addresses = frozenset()
        if not items:
            raise PolicyError(f"{where}: empty")
        label = value if isinstance(value, str) else "[" + ", ".join(items) + "]"
        return _Target(label, addresses, create, self_)

    def _check(
        self,
        path: str,
        cond: Condition,
        where: str,
        params: dict[str, AbiType] | None,
        typed: bool,
    ) -> Check:
        parts = tuple(path.split("."))
        if not all(parts):
            raise PolicyError(f"{where}: empty path segment")
        if typed and (len(parts) < 2 or parts[0] != "message"):
            raise PolicyError(
                f"{where}: typed-data paths start with message. (the domain is matched by "
                "domain.verifying_contract and chain id, never by name)"
            )
        leaf = None if params is None else abi_leaf(params, parts, where)
        eq = None if cond.eq is None else literal(cond.eq, f"{where}.eq")
        members = None if cond.in_ is None else self._members(cond.in_, f"{where}.in")
        check = Check(path, parts, eq, members, cond.lte, cond.lt, cond.gte, cond.gt)
        if leaf is not None:
            _check_kinds(check, leaf, where)
        return check

    def _members(self, value: list[str | bool | int] | str, where: str) -> Members:
        if isinstance(value, str):
            if not value.startswith("@"):
                raise PolicyError(f"{where}: a list of values or a @set, got {value[:80]!r}")
            return Members(value, raws=self._set(value, where))
        lits: list[Lit] = []
        raws: set[bytes] = set()
        for i, item in enumerate(value):
            if isinstance(item, str) and item.startswith("@"):
                raws |= self._set(item, f"{where}[{i}]")
            else:
                lits.append(literal(item, f"{where}[{i}]"))
        label = "[" + ", ".join(str(v) for v in value) + "]"
        if len(label) > 80:
            label = label[:80] + "…]"
        return Members(
            label,
            raws=frozenset(raws | {lit.raw for lit in lits if lit.raw is not None}),
            integers=frozenset(lit.integer for lit in lits if lit.integer is not None),
            texts=frozenset(lit.text for lit in lits if lit.text is not None),
            booleans=frozenset(lit.boolean for lit in lits if lit.boolean is not None),
            has_self=any(lit.is_self for lit in lits),
        )

    def _spends(
        self, rule: Rule, where: str, params: dict[str, AbiType] | None, typed: bool
    ) -> tuple[_Spend, ...]:
        spends = []
        for budget, source in rule.spend.items():
            at = f"{where}.spend.{budget}"
            if budget not in self.config.budgets:
                known = ", ".join(self.config.budgets) or "none defined"
                raise PolicyError(f"{at}: unknown budget (budgets: {known})")
            text = str(source)
            if isinstance(source, bool):
                raise PolicyError(f'{at}: expected "value", an argument path or a count')
            if isinstance(source, int) or _INTEGER_LITERAL.fullmatch(text):
                spends.append(_Spend(budget, amount=int(text), label=text))
            elif text == "value" and rule.kind == "transaction":
                spends.append(_Spend(budget, native=True, label=text))
            elif rule.kind in ("message", "authorization"):
                raise PolicyError(f'{at}: {rule.kind} rules spend a count, e.g. "1"')
            else:
                parts = tuple(text.split("."))
                if typed:
                    if len(parts) < 2 or parts[0] != "message" or not all(parts):
                        raise PolicyError(f"{at}: a typed-data amount is a message.* path")
                else:
                    if params is None or rule.call is None:
                        raise PolicyError(f"{at}: an argument path needs a call signature")
                    leaf = abi_leaf(params, parts, at)
                    if not leaf.base.startswith("uint"):
                        raise PolicyError(f"{at}: {text} is {leaf.canonical}, not an amount")
                spends.append(_Spend(budget, path=parts, label=text))
        return tuple(spends)


def _check_kinds(check: Check, leaf: AbiType, where: str) -> None:
    """Refuse at start-up a comparison that can never hold for the argument's type."""
    base = leaf.base
    integer = base.startswith(("uint", "int"))
    if not integer and any(b is not None for b in (check.lte, check.lt, check.gte, check.gt)):
        raise PolicyError(f"{where}: lte/lt/gte/gt compare integers; this is {leaf.canonical}")

    def fits(lit: Lit) -> bool:
        if base == "address":
            return lit.is_self or (lit.raw is not None and len(lit.raw) == 20)
        if integer:
            return lit.integer is not None
        if base == "bool":
            return lit.boolean is not None
        if base == "string":
            return lit.text is not None
        if base == "bytes":
            return lit.raw is not None
        return lit.raw is not None and len(lit.raw) == int(base[5:])  # bytesN

    if check.eq is not None and not fits(check.eq):
        raise PolicyError(f"{where}.eq: {check.eq} is not of type {leaf.canonical}")
    members = check.members
    if members is not None:
        if base == "address" and (members.integers or members.booleans):
            raise PolicyError(f"{where}.in: {leaf.canonical} values are addresses")
        if integer and (members.raws or members.has_self):
            raise PolicyError(f"{where}.in: {leaf.canonical} values are integers")
