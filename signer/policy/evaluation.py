"""Evaluation: may this key sign exactly this request, and why.

`Policy.compile(name, config)` names the rules `config` was compiled to when it was validated
(signer.policy.config); `evaluate(request, self_address)` judges the object the signing core
signs: an UnsignedTransaction, the EIP-191 message bytes, the TypedData whose digest is
signed, or an UnsignedAuthorization (EIP-7702). Deny wins; nothing an allow rule does not
match is signed. The evaluation has no state: budgets are returned as amounts to reserve, the
store decides whether they fit the window.
"""

from dataclasses import dataclass
from functools import partial
from typing import Any

from signer.eth import batch
from signer.eth.messages import TypedData
from signer.eth.transactions import (
    BLOB,
    FEE_MARKET_TYPES,
    GAS_PER_BLOB,
    UnsignedAuthorization,
    UnsignedTransaction,
)
from signer.policy.compiler import CompiledRules
from signer.policy.conditions import PolicyError, show
from signer.policy.config import PolicyConfig
from signer.policy.matchers import MESSAGE_MATCH, MESSAGE_SPENDS, Call, spend_amounts
from signer.policy.reasons import Miss, Outcome, deny, message_reason, no_match, pattern_label
from signer.policy.schema import PolicySchema

__all__ = ["BudgetDef", "Decision", "Policy", "PolicyError", "Request"]

Request = UnsignedTransaction | bytes | TypedData | UnsignedAuthorization
# Batches inside batches are judged this deep, then refused.
MAX_BATCH_DEPTH = 3


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


class Policy:
    def __init__(self, name: str, config: PolicySchema, rules: CompiledRules) -> None:
        self.name = name
        self.config = config
        self.chains = frozenset(config.chains)
        self.max_gas_fee_wei = config.max_gas_fee_wei
        self.budgets = {
            n: BudgetDef(n, b.limit, b.window_seconds) for n, b in config.budgets.items()
        }
        self._allow_tx, self._deny_tx = rules.allow_tx, rules.deny_tx
        self._allow_typed, self._deny_typed = rules.allow_typed, rules.deny_typed
        self._allow_messages, self._deny_messages = rules.allow_messages, rules.deny_messages
        self._allow_auth, self._deny_auth = rules.allow_auth, rules.deny_auth

    @classmethod
    def compile(cls, name: str, config: PolicyConfig) -> "Policy":
        """The policy `config` states, named `name`: its rules as compiled when `config` was
        validated (PolicyConfig compiles once, at validation; this never compiles again)."""
        return cls(name, config, config.compiled)

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

    def _transaction(self, tx: UnsignedTransaction, self_address: bytes) -> Outcome:
        if not self._allow_tx:
            return deny(no_match("transactions", []))
        if tx.chain_id not in self.chains:
            return deny(f"chain_id {tx.chain_id} not in chains {sorted(self.chains)}")
        fee = tx.max_fee_wei  # blob gas included (EIP-4844)
        # compilation ensures a cap whenever there are transaction allow rules
        if self.max_gas_fee_wei is not None and fee > self.max_gas_fee_wei:
            what = "max_fee_per_gas" if tx.type in FEE_MARKET_TYPES else "gas_price"
            if tx.type == BLOB:
                what += f" + {len(tx.blob_versioned_hashes)} blobs * {GAS_PER_BLOB} * " + (
                    "max_fee_per_blob_gas")
            return deny(
                f"gas_limit * {what} = {fee} wei exceeds max_gas_fee_wei {self.max_gas_fee_wei}"
            )
        for i, auth in enumerate(tx.authorization_list):
            if auth.chain_id == 0:
                return deny(
                    f"authorization_list[{i}].chain_id is 0: valid on every chain, never signed"
                )
            if auth.chain_id != tx.chain_id:
                return deny(
                    f"authorization_list[{i}].chain_id {auth.chain_id} is not the "
                    f"transaction's chain {tx.chain_id}"
                )
        call = Call(tx.to, tx.value, tx.data, tuple(a.address for a in tx.authorization_list),
                    len(tx.blob_versioned_hashes))
        return self._judge_call(call, self_address, 0)

    def _judge_call(self, call: Call, self_address: bytes, depth: int) -> Outcome:
        for rule in self._deny_tx:
            hit = rule.hit(call, self_address)
            if hit is not None:
                return Outcome(False, rule.id, f"denied by rule {rule.id}: {hit}")
        if not call.authorizations and not call.blobs:
            try:
                inner = batch.inner_calls(call.to, call.value, call.data)
            except batch.BatchRefused as exc:
                return deny(f"batch to {show(call.to)}: {exc}")
            if inner is not None:
                return self._judge_batch(call, inner, self_address, depth)
        return _first_allowed(self._allow_tx, call, self_address, "transactions")

    def _judge_batch(
        self,
        call: Call,
        inner: tuple[batch.InnerCall, ...],
        self_address: bytes,
        depth: int,
    ) -> Outcome:
        wrapper = batch.batch_signature(call.to, call.data)
        assert wrapper is not None
        if depth >= MAX_BATCH_DEPTH:
            return deny(f"batches nested deeper than {MAX_BATCH_DEPTH}")
        rule_ids: list[str] = []
        spends: list[tuple[str, int]] = []
        for i, item in enumerate(inner):
            outcome = self._judge_call(
                Call(item.to, item.value, item.data), self_address, depth + 1
            )
            if not outcome.allowed:
                return Outcome(
                    False,
                    outcome.rule_id,
                    f"{wrapper.name} call {i} to {show(item.to)}: {outcome.reason}",
                )
            assert outcome.rule_id is not None
            rule_ids.append(outcome.rule_id)
            spends.extend(outcome.spends)
        ids = ",".join(dict.fromkeys(rule_ids))
        return Outcome(
            True,
            ids,
            f"every call in {wrapper.name} is allowed ({', '.join(rule_ids) or 'empty batch'})",
            tuple(spends),
        )

    # --- typed data and messages ---

    def _typed_data(self, typed: TypedData, self_address: bytes) -> Outcome:
        if not self._allow_typed:
            return deny(no_match("typed data", []))
        chain = typed.domain.get("chainId")
        if chain is not None and chain not in self.chains:
            return deny(f"domain chainId {chain} not in chains {sorted(self.chains)}")
        for rule in self._deny_typed:
            hit = rule.hit(typed, self_address)
            if hit is not None:
                return Outcome(False, rule.id, f"denied by rule {rule.id}: {hit}")
        return _first_allowed(self._allow_typed, typed, self_address, "typed data")

    def _message(self, message: bytes) -> Outcome:
        try:
            text = message.decode("utf-8")
        except UnicodeDecodeError:
            return deny("message is not UTF-8 text; no message rule matches it")
        for rule in self._deny_messages:
            if rule.pattern.match(text):
                return Outcome(
                    False,
                    rule.id,
                    f"denied by rule {rule.id}: message matches {pattern_label(rule.pattern)}",
                )
        misses = []
        for rule in self._allow_messages:
            if rule.pattern.match(text):
                amounts = spend_amounts(rule.id, rule.spends, {}, 0, MESSAGE_SPENDS)
                assert not isinstance(amounts, Miss)  # message spends are literal counts
                return Outcome(True, rule.id, f"allowed by rule {rule.id}", amounts)
            misses.append(Miss(rule.id, MESSAGE_MATCH, partial(message_reason, rule.pattern)))
        return deny(no_match("messages", misses))

    # --- authorizations ---

    def _authorization(self, auth: UnsignedAuthorization) -> Outcome:
        """Default deny: only a delegate an allow rule names, on a chain it names."""
        if not self._allow_auth:
            return deny(no_match("authorizations", []))
        for rule in self._deny_auth:
            hit = rule.hit(auth)
            if hit is not None:
                return Outcome(False, rule.id, f"denied by rule {rule.id}: {hit}")
        misses = []
        for rule in self._allow_auth:
            result = rule.match(auth)
            if isinstance(result, Miss):
                misses.append(result)
            else:
                return Outcome(
                    True, rule.id,
                    f"allowed by rule {rule.id}: delegate {show(auth.address)} on chain_id "
                    f"{auth.chain_id}",
                    result,
                )
        return deny(no_match("authorizations", misses))

    def _decision(self, outcome: Outcome) -> Decision:
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


def _first_allowed(rules: Any, request: Any, self_address: bytes, what: str) -> Outcome:
    """The first allow rule (transaction or typed data) that matches `request`, or a denial
    that says how far each rule got."""
    misses = []
    for rule in rules:
        result = rule.match(request, self_address)
        if isinstance(result, Miss):
            misses.append(result)
        else:
            return Outcome(True, rule.id, f"allowed by rule {rule.id}", result)
    return deny(no_match(what, misses))
