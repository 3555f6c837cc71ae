"""Policy validation at start-up: every mistake is an error naming the rule and the field.

Errors are formatted the way signer.config.validate formats them (loc: msg), under a root
model shaped like the service config's `policies` table.
"""

import copy
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from signer import config as service_config
from signer.app.access import AccessControl
from signer.policy import PolicyConfig, check_policy_references
from signer.policy import config as policy_config
from signer.policy.schema import parse_window
from tests.support import policy_cases as pc


class _Root(BaseModel):
    model_config = ConfigDict(extra="forbid")
    policies: dict[str, PolicyConfig]


def _errors(policy: dict[str, Any]) -> str:
    with pytest.raises(ValidationError) as info:
        _Root.model_validate({"policies": {"trader": policy}})
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
        for e in info.value.errors(include_url=False, include_input=False)
    )


def _with(**changes: Any) -> dict[str, Any]:
    """The trader policy with changes: "allow.1.where" = {...} replaces a nested value."""
    policy = copy.deepcopy(pc.trader_config())
    for path, value in changes.items():
        node: Any = policy
        *parents, last = path.split("__")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node[part]
        if value is None:
            del node[int(last) if last.isdigit() else last]
        else:
            node[int(last) if last.isdigit() else last] = value
    return policy


def test_the_trader_policy_is_valid():
    _Root.model_validate({"policies": {"trader": pc.trader_config()}})


BAD = {
    "unknown set in to": (
        _with(allow__0__to="@tresury"),
        "policies.trader: allow[eth-to-treasury].to: unknown set @tresury "
        "(sets: @treasury, @routers)"),
    "unknown set in where": (
        _with(allow__1__where={"to": {"in": "@nope"}}),
        "policies.trader: allow[usdc-to-treasury].where.to.in: unknown set @nope "
        "(sets: @treasury, @routers)"),
    "unknown budget in spend": (
        _with(allow__0__spend={"eth_weekly": "value"}),
        "policies.trader: allow[eth-to-treasury].spend.eth_weekly: unknown budget "
        "(budgets: eth_daily, usdc_daily, signatures)"),
    "where path not in the signature": (
        _with(allow__1__where={"amont": {"lte": "1"}}),
        "policies.trader: allow[usdc-to-treasury].where.amont: no argument 'amont' "
        "(arguments: to, amount)"),
    "where path into a tuple member that does not exist": (
        _with(allow__3__where={"params.recipent": {"eq": "$self"}}),
        "policies.trader: allow[swap].where.params.recipent: no argument 'recipent' of params "
        "(arguments: tokenIn, tokenOut, fee, recipient, deadline, amountIn, amountOutMinimum, "
        "sqrtPriceLimitX96)"),
    "where on a whole tuple": (
        _with(allow__3__where={"params": {"eq": "1"}}),
        "policies.trader: allow[swap].where.params: is a tuple; name one of its members "
        "(tokenIn, tokenOut, fee, recipient, deadline, amountIn, amountOutMinimum, "
        "sqrtPriceLimitX96)"),
    "where without a call": (
        _with(allow__0__where={"amount": {"lte": "1"}}),
        "policies.trader: allow[eth-to-treasury].where: needs a call signature to name "
        "arguments"),
    "lte on an address": (
        _with(allow__1__where={"to": {"lte": "1"}}),
        "policies.trader: allow[usdc-to-treasury].where.to: lte/lt/gte/gt compare integers; "
        "this is address"),
    "eq of a number on an address": (
        _with(allow__1__where={"to": {"eq": "12"}}),
        "policies.trader: allow[usdc-to-treasury].where.to.eq: 12 is not of type address"),
    "eq of an address on an amount": (
        _with(allow__1__where={"amount": {"eq": pc.cs(pc.ATTACKER)}}),
        f"policies.trader: allow[usdc-to-treasury].where.amount.eq: {pc.cs(pc.ATTACKER)} "
        "is not of type uint256"),
    "bad regex": (
        _with(allow__5__match="^app(\\.example"),
        "policies.trader: allow[siwe].match: not a valid regular expression "
        "(missing ), unterminated subpattern at position 4)"),
    "bad checksum in a set": (
        _with(sets={"treasury": ["0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"], "routers": []}),
        "policies.trader: sets.treasury[0]: EIP-55 checksum mismatch in "
        "0x5AAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"),
    "malformed address in to": (
        _with(allow__1__to="0x1234"),
        "policies.trader: allow[usdc-to-treasury].to: expected a 0x-prefixed 20-byte hex "
        "address, got '0x1234'"),
    "bad checksum in delegates": (
        _with(allow__4__delegates=["0x63C0c19a282a1B52b07dD5a65b58948A07DAE32B"]),
        "policies.trader: allow[delegate-to-batcher].delegates[0]: EIP-55 checksum mismatch "
        "in 0x63C0c19a282a1B52b07dD5a65b58948A07DAE32B"),
    "bad checksum in verifying_contract": (
        _with(allow__6__domain={"verifying_contract": "0x000000000022d473030F116dDEE9F6B43aC78BA3"}),
        "policies.trader: allow[permit2-to-router].domain.verifying_contract: EIP-55 checksum "
        "mismatch in 0x000000000022d473030F116dDEE9F6B43aC78BA3"),
    "a float amount": (
        _with(allow__0__value_max=0.5),
        "policies.trader.allow.0.value_max: Value error, expected an integer as a decimal "
        'string, e.g. "1000000"'),
    "a negative budget": (
        _with(budgets={"eth_daily": {"limit": "-1", "window": "24h"}}),
        "policies.trader.budgets.eth_daily.limit: Value error, -1 is outside uint256"),
    "an amount over 256 bits": (
        _with(max_gas_fee_wei=str(2**256)),
        f"policies.trader.max_gas_fee_wei: Value error, {2**256} is outside uint256"),
    "a window without a unit": (
        _with(budgets={"eth_daily": {"limit": "1", "window": "24"}}),
        'policies.trader.budgets.eth_daily: Value error, window: expected a number and a unit '
        '(s, m, h, d) like "24h", got \'24\''),
    "a window longer than the store keeps reservations": (
        _with(budgets={"eth_daily": {"limit": "1", "window": "32d"}}),
        "policies.trader.budgets.eth_daily: Value error, window: 32d is longer than 31 days"),
    "unknown field": (
        _with(allow__0__value_maximum="1"),
        "policies.trader.allow.0.value_maximum: Extra inputs are not permitted"),
    "a call that does not parse": (
        _with(allow__1__call="transfer(address to uint256 amount)"),
        "policies.trader: allow[usdc-to-treasury].call: expected ',' or ')', got 'uint256'"),
    "a call with an unknown type": (
        _with(allow__1__call="transfer(address to,uint257 amount)"),
        "policies.trader: allow[usdc-to-treasury].call: unknown type 'uint257'"),
    "an argument named value": (
        _with(allow__1__call="transfer(address to,uint256 value)", allow__1__where={}),
        "policies.trader: allow[usdc-to-treasury].call: argument name 'value' is reserved for "
        "the native value in spend; rename it (names do not change the selector)"),
    "an allow rule on a batching wrapper": (
        _with(allow__1__call="aggregate3((address,bool,bytes)[] calls)", allow__1__where={},
              allow__1__spend={}),
        "policies.trader: allow[usdc-to-treasury].call: aggregate3((address,bool,bytes)[]) is "
        "a batching wrapper; its inner calls are each judged by the allow rules, write rules "
        "for those"),
    "spend of a non-amount argument": (
        _with(allow__1__spend={"usdc_daily": "to"}),
        "policies.trader: allow[usdc-to-treasury].spend.usdc_daily: to is address, "
        "not an amount"),
    "duplicate rule id": (
        _with(deny__0__id="siwe"),
        "policies.trader: deny[siwe]: duplicate rule id"),
    "message field on a transaction rule": (
        _with(allow__0__match="x"),
        "policies.trader: allow[eth-to-treasury].match: not a field of kind = 'transaction' "
        "rules"),
    "message rule without match": (
        _with(allow__5__match=None),
        "policies.trader: allow[siwe].match: required for kind = 'message' rules"),
    "message rule spending a path": (
        _with(allow__5__spend={"signatures": "message.x"}),
        "policies.trader: allow[siwe].spend.signatures: message rules spend a count, e.g. \"1\""),
    "typed-data path outside message": (
        _with(allow__6__where={"domain.name": {"eq": "Permit2"}}),
        "policies.trader: allow[permit2-to-router].where.domain.name: typed-data paths start "
        "with message. (the domain is matched by domain.verifying_contract and chain id, never "
        "by name)"),
    "typed-data domain chain not in chains": (
        _with(allow__9__domain={"verifying_contract": pc.cs(pc.USDC), "chain_id": "10"}),
        "policies.trader: allow[usdc-permit-to-router].domain.chain_id: 10 is not in chains"),
    "value_max on a deny rule": (
        _with(deny__0__value_max="1"),
        "policies.trader: deny[no-unlimited-approvals].value_max: only allow rules have "
        "value_max"),
    "eq with a set": (
        _with(allow__1__where={"to": {"eq": "@treasury"}}),
        "policies.trader: allow[usdc-to-treasury].where.to.eq: a set (@treasury) goes with "
        "`in`, not `eq`"),
    "in with a bare string": (
        _with(allow__1__where={"to": {"in": pc.cs(pc.TREASURY)}}),
        f"policies.trader: allow[usdc-to-treasury].where.to.in: a list of values or a @set, "
        f"got '{pc.cs(pc.TREASURY)}'"),
    "an empty condition": (
        _with(allow__1__where={"to": {}}),
        "policies.trader.allow.1.where.to: Value error, a condition needs at least one of eq, "
        "in, lte, lt, gte, gt"),
    "create with a call": (
        _with(allow__1__to="create"),
        'policies.trader: allow[usdc-to-treasury].call: to = "create" deploys code; '
        "it has no call"),
    "transactions allowed without a fee cap": (
        _with(max_gas_fee_wei=None),
        "policies.trader: max_gas_fee_wei: required when the policy allows transactions "
        "(caps gas_limit * fee per gas, against fee griefing)"),
    "transactions allowed without chains": (
        _with(chains=[], allow__9__domain={"verifying_contract": pc.cs(pc.USDC)}),
        "policies.trader: chains: required when the policy allows transactions or typed data"),
    "a bad rule id": (
        _with(allow__0__id="eth to treasury"),
        "policies.trader.allow.0.id: String should match pattern "
        "'^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'"),
}


@pytest.mark.parametrize("name", BAD)
def test_invalid_policy_is_refused_naming_rule_and_field(name: str):
    policy, expected = BAD[name]
    assert _errors(policy) == expected


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("1h", 3600), ("24h", 86400),
                                               ("7d", 604800), ("90s", 90),
                                               ("31d", 31 * 86400)])
def test_windows(text: str, seconds: int):
    assert parse_window(text) == seconds


def test_integers_accept_toml_integers_and_decimal_strings_only():
    policy = _with(max_gas_fee_wei=5 * 10**15)
    assert PolicyConfig.model_validate(policy).max_gas_fee_wei == 5 * 10**15
    assert "max_gas_fee_wei" in _errors(_with(max_gas_fee_wei="5e15"))
    assert "max_gas_fee_wei" in _errors(_with(max_gas_fee_wei=True))


def test_client_policy_references():
    policies = {"trader": PolicyConfig.model_validate(pc.trader_config())}
    check_policy_references({"a": "trader", "b": None}, policies)
    with pytest.raises(ValueError, match=r"^clients\.b\.policy: unknown policy 'trade' "
                                         r"\(policies: trader\)$"):
        check_policy_references({"a": "trader", "b": "trade"}, policies)


def test_fingerprint_is_canonical():
    policy = PolicyConfig.model_validate(pc.trader_config())
    reordered = dict(reversed(list(pc.trader_config().items())))
    reordered["max_gas_fee_wei"] = 5 * 10**15  # the same integer, spelled as a TOML integer
    assert PolicyConfig.model_validate(reordered).fingerprint() == policy.fingerprint()
    changed = _with(allow__0__value_max="500000000000000001")
    assert PolicyConfig.model_validate(changed).fingerprint() != policy.fingerprint()
    assert len(policy.fingerprint()) == 64


def test_a_policy_is_compiled_once_when_validated_and_access_uses_that(monkeypatch):
    """The config validator compiles each policy and keeps it; access control reuses it."""
    compiled: list[PolicyConfig] = []
    compile_rules = policy_config.compile_rules  # spied on, not replaced: it still compiles

    def counting(table: Any) -> Any:
        compiled.append(table)
        return compile_rules(table)

    monkeypatch.setattr(policy_config, "compile_rules", counting)
    cfg = service_config.validate({
        "server": {"tls_cert_file": "c.pem", "tls_key_file": "k.pem", "client_ca_file": "ca.pem"},
        "keys": {"hot": {"backend": "env", "private_key_env": "HOT_KEY"}},
        "clients": {"t": {"identity": "t", "keys": ["hot"], "policy": "trader"}},
        "policies": {"trader": pc.trader_config()},
    }, "test")
    access = AccessControl(cfg.clients, cfg.policies)
    assert compiled == [cfg.policies["trader"]]
    kept = cfg.policies["trader"].compiled
    assert access.policies["trader"].name == "trader"
    assert access.policies["trader"]._allow_tx is kept.allow_tx
    assert access.clients[0].policy is access.policies["trader"]
    # the kept compilation does not change what equal tables are
    assert PolicyConfig.model_validate(pc.trader_config()) == cfg.policies["trader"]
    assert len(compiled) == 2
