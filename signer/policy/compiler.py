"""Compilation: a validated `[policies.NAME]` table -> lookup tables (selectors, sets of
20-byte addresses, compiled regexes, `where` checks typed against the call signature).

Everything a table means beyond its shapes is checked here, at start-up, so evaluation never
meets a rule it cannot judge. Errors name the rule by its id:
`allow[eth-to-treasury].where.amount: ...`.
"""

import re
from dataclasses import dataclass
from typing import Any

from signer.eth import batch
from signer.eth.abi import AbiType, parse_signature
from signer.policy.conditions import (
    SELF,
    Check,
    Lit,
    Members,
    PolicyError,
    abi_leaf,
    literal,
    parse_address,
)
from signer.policy.matchers import AuthRule, MessageRule, Spend, Target, TxRule, TypedRule
from signer.policy.schema import Condition, PolicySchema, Rule

_INTEGER_LITERAL = re.compile(r"[0-9]{1,78}")
_FIELDS_BY_KIND = {
    "transaction": {"to", "value_max", "call", "delegates", "blobs_max", "where", "spend"},
    "message": {"match", "spend"},
    "typed_data": {"domain", "primary_type", "where", "spend"},
    "authorization": {"delegates", "chains", "allow_any_chain", "spend"},
}
_ALLOW_ONLY = ("value_max", "delegates", "blobs_max", "chains", "allow_any_chain", "spend")
# A deny rule of kind = "authorization" names the delegates it refuses.
_DENY_TOO = {"authorization": frozenset({"delegates"})}
_RULE_FIELDS = (
    "to", "value_max", "call", "delegates", "blobs_max", "chains", "allow_any_chain", "match",
    "domain", "primary_type",
)


@dataclass(frozen=True, slots=True)
class CompiledRules:
    """A policy's rules as lookup tables, by section and kind, in the order written."""

    allow_tx: tuple[TxRule, ...]
    deny_tx: tuple[TxRule, ...]
    allow_typed: tuple[TypedRule, ...]
    deny_typed: tuple[TypedRule, ...]
    allow_messages: tuple[MessageRule, ...]
    deny_messages: tuple[MessageRule, ...]
    allow_auth: tuple[AuthRule, ...] = ()
    deny_auth: tuple[AuthRule, ...] = ()


def compile_rules(config: PolicySchema) -> CompiledRules:
    """Compile a table whose shapes pydantic checked; PolicyError names the rule and field at
    fault. signer.policy.config.PolicyConfig calls it once, at validation, and keeps it."""
    return _Compiler(config).rules()


class _Compiler:
    def __init__(self, config: PolicySchema) -> None:
        self.config = config
        self.sets: dict[str, frozenset[bytes]] = {}
        for name, members in config.sets.items():
            self.sets[name] = frozenset(
                parse_address(m, f"sets.{name}[{i}]") for i, m in enumerate(members)
            )

    def rules(self) -> CompiledRules:
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

        return CompiledRules(
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
                if getattr(rule, name) and name not in _DENY_TOO.get(rule.kind, ()):
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
        return MessageRule(rule.id, pattern, self._spends(rule, where, None, typed=False))

    def _tx_rule(self, rule: Rule, section: str, where: str) -> TxRule:
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
        return TxRule(
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

    def _auth_rule(self, rule: Rule, where: str) -> AuthRule:
        assert rule.delegates is not None  # _check_fields
        items = [rule.delegates] if isinstance(rule.delegates, str) else rule.delegates
        if "*" in items:
            raise PolicyError(f"{where}.delegates: no wildcard; name each delegate contract")
        delegates, label = self._addresses(rule.delegates, f"{where}.delegates")
        if rule.chains is not None and not rule.chains:
            raise PolicyError(f"{where}.chains: empty")
        chains = frozenset(self.config.chains if rule.chains is None else rule.chains)
        return AuthRule(
            rule.id, delegates, label, chains, bool(rule.allow_any_chain),
            self._spends(rule, where, None, typed=False),
        )

    def _typed_rule(self, rule: Rule, where: str) -> TypedRule:
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
        return TypedRule(
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

    def _target(self, value: str | list[str], where: str) -> Target:
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
        return Target(label, addresses, create, self_)

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
    ) -> tuple[Spend, ...]:
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
                spends.append(Spend(budget, amount=int(text), label=text))
            elif text == "value" and rule.kind == "transaction":
                spends.append(Spend(budget, native=True, label=text))
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
                spends.append(Spend(budget, path=parts, label=text))
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
