"""Engine semantics beyond the red-team table: creation, chain-less domains, deny rules that
fail closed, budgets, nesting bounds, bounded reasons, the dry run."""

import json
from typing import Any

import pytest

from signer.errors import InvalidRequest
from signer.eth.messages import load_typed_data
from signer.policy import Policy, PolicyConfig, dry_run, dry_run_for_client, format_dry_run
from tests.support import policy_cases as pc
from tests.support.policy_cases import (
    ETHER,
    ROUTER,
    SELF,
    TREASURY,
    USDC,
    calldata,
    cs,
    transfer,
    tx,
)


def compile_policy(**table: Any) -> Policy:
    base: dict[str, Any] = {"chains": [1], "max_gas_fee_wei": str(10**17)}
    base.update(table)
    return Policy.compile("p", PolicyConfig.model_validate(base))


def test_contract_creation_only_with_to_create():
    policy = compile_policy(allow=[{"id": "deploy", "to": "create", "value_max": "5"}])
    initcode = bytes.fromhex("6080604052348015600f57600080fd5b50")
    decision = policy.evaluate(tx(b"", 5, initcode), SELF)
    assert (decision.allowed, decision.reason) == (True, "policy p: allowed by rule deploy")
    denied = policy.evaluate(tx(TREASURY, 0), SELF)
    assert denied.reason == f"policy p: no allow rule matches: to {cs(TREASURY)} not in create (rule deploy)"


def test_a_rule_without_call_allows_no_calldata():
    policy = compile_policy(allow=[{"id": "pay", "to": cs(TREASURY), "value_max": "10"}])
    decision = policy.evaluate(tx(TREASURY, 1, b"\x12\x34\x56\x78"), SELF)
    assert decision.reason == ("policy p: no allow rule matches: calldata (selector 0x12345678) "
                               "but no call (rule pay)")


def test_a_rule_without_value_max_allows_no_value():
    policy = compile_policy(allow=[{"id": "pay", "to": cs(TREASURY)}])
    assert policy.evaluate(tx(TREASURY, 0), SELF).allowed
    assert policy.evaluate(tx(TREASURY, 1), SELF).reason == (
        "policy p: no allow rule matches: value 1 exceeds value_max 0 (rule pay)")


def _permit(chain_id: int | None) -> Any:
    return pc.typed(pc.permit2_single(ROUTER, 5, chain_id=chain_id))


def test_a_domain_without_chain_id_needs_an_explicit_rule():
    policy = compile_policy(allow=[{
        "id": "chainless", "kind": "typed_data",
        "domain": {"verifying_contract": cs(pc.PERMIT2), "chain_id": "none"}}])
    assert policy.evaluate(_permit(None), SELF).allowed
    assert policy.evaluate(_permit(1), SELF).reason == (
        "policy p: no allow rule matches: domain chainId 1: rule allows only none "
        "(rule chainless)")


def test_a_rule_pinned_to_one_chain():
    policy = compile_policy(chains=[1, 10], allow=[{
        "id": "on-10", "kind": "typed_data", "domain": {"chain_id": 10}}])
    assert policy.evaluate(_permit(10), SELF).allowed
    assert policy.evaluate(_permit(1), SELF).reason == (
        "policy p: no allow rule matches: domain chainId 1 is not 10 (rule on-10)")


def test_deny_rules_match_if_any_array_element_matches():
    policy = compile_policy(
        allow=[{"id": "permits", "kind": "typed_data", "primary_type": "PermitBatch"}],
        deny=[{"id": "cap", "kind": "typed_data",
               "where": {"message.details.amount": {"gt": "1000"}}}])
    assert policy.evaluate(pc.typed(pc.permit2_batch(ROUTER, [1, 2, 3])), SELF).allowed
    decision = policy.evaluate(pc.typed(pc.permit2_batch(ROUTER, [1, 1001])), SELF)
    assert (decision.allowed, decision.rule_id, decision.reason) == (
        False, "cap", "policy p: denied by rule cap: message.details.amount 1001 > 1000")


def test_deny_rules_fail_closed_on_missing_fields_and_wrong_kinds():
    policy = compile_policy(
        allow=[{"id": "any", "kind": "typed_data"}],
        deny=[{"id": "no-such", "kind": "typed_data", "primary_type": "PermitSingle",
               "where": {"message.value": {"gt": "0"}}},
              {"id": "kind", "kind": "typed_data", "primary_type": "PermitBatch",
               "where": {"message.spender": {"gt": "0"}}}])
    assert policy.evaluate(_permit(1), SELF).reason == (
        "policy p: denied by rule no-such: primaryType PermitSingle, message.value: no such "
        "field (deny rules fail closed)")
    batch = pc.typed(pc.permit2_batch(ROUTER, [1]))
    assert policy.evaluate(batch, SELF).reason == (
        f"policy p: denied by rule kind: primaryType PermitBatch, message.spender {cs(ROUTER)} "
        "is not an integer (deny rules fail closed)")


def test_allow_rules_fail_on_missing_fields():
    policy = compile_policy(allow=[{"id": "a", "kind": "typed_data",
                                    "where": {"message.value": {"lte": "5"}}}])
    assert policy.evaluate(_permit(1), SELF).reason == (
        "policy p: no allow rule matches: message.value: no such field (rule a)")


def test_deny_on_undecodable_calldata_under_its_selector():
    policy = compile_policy(
        allow=[{"id": "t", "to": cs(USDC), "call": "transfer(address to,uint256 amount)"}],
        deny=[{"id": "big", "call": "transfer(address to,uint256 amount)",
               "where": {"amount": {"gt": "5"}}}])
    decision = policy.evaluate(tx(USDC, 0, transfer(TREASURY, 1) + b"\0"), SELF)
    assert decision.reason == ("policy p: denied by rule big: transfer(address,uint256) with "
                               "calldata that does not decode exactly")


def test_a_request_that_alone_exceeds_a_budget_is_denied():
    policy = compile_policy(
        budgets={"daily": {"limit": "100", "window": "24h"}},
        allow=[{"id": "pay", "to": cs(TREASURY), "value_max": str(ETHER), "spend": {"daily": "value"}}])
    assert policy.evaluate(tx(TREASURY, 100), SELF).spends == (("daily", 100),)
    assert policy.evaluate(tx(TREASURY, 101), SELF).reason == (
        "policy p: budget daily: this request alone spends 101, more than its limit 100 "
        "(rule pay)")


def test_batch_spends_are_summed_and_array_amounts_are_summed():
    policy = compile_policy(
        chains=[1, 8453],
        budgets={"usdc": {"limit": "1000", "window": "1h"}},
        allow=[{"id": "t", "to": cs(USDC), "call": "transfer(address to,uint256 amount)",
                "spend": {"usdc": "amount"}},
               {"id": "permits", "kind": "typed_data", "primary_type": "PermitBatchTransferFrom",
                "spend": {"usdc": "message.permitted.amount"}}])
    wrapped = pc._multicall3("aggregate", [(USDC, 0, transfer(TREASURY, 300)),
                                           (USDC, 0, transfer(TREASURY, 400))])
    assert policy.evaluate(wrapped, SELF).spends == (("usdc", 700),)
    permits = pc.typed(pc.permit2_batch_transfer(ROUTER, [300, 400]))
    assert policy.evaluate(permits, SELF).spends == (("usdc", 700),)
    too_much = pc._multicall3("aggregate", [(USDC, 0, transfer(TREASURY, 600))] * 2)
    assert policy.evaluate(too_much, SELF).reason == (
        "policy p: budget usdc: this request alone spends 1200, more than its limit 1000 "
        "(rule t)")


def test_batches_nest_only_so_deep():
    policy = compile_policy(allow=[{"id": "t", "to": cs(ROUTER),
                                    "call": "transfer(address to,uint256 amount)"}])
    data = transfer(TREASURY, 1)
    for depth in range(4):
        data = calldata("multicall", [data])
        decision = policy.evaluate(tx(ROUTER, 0, data), SELF)
        assert decision.allowed is (depth < 3), decision.reason
    assert decision.reason == (
        f"policy p: multicall call 0 to {cs(ROUTER)}: multicall call 0 to {cs(ROUTER)}: "
        f"multicall call 0 to {cs(ROUTER)}: batches nested deeper than 3")


def test_denial_reasons_are_bounded():
    rules = [{"id": f"r{i}", "to": cs(bytes([i + 1]) * 20)} for i in range(40)]
    decision = compile_policy(allow=rules).evaluate(tx(TREASURY, 0), SELF)
    assert len(decision.reason) < 700
    fifth = cs(bytes([5]) * 20)
    assert decision.reason.endswith(f"not in {fifth} (rule r4); and 35 more")


def test_message_deny_rules_and_anchoring():
    policy = compile_policy(
        allow=[{"id": "hello", "kind": "message", "match": "hello"}],
        deny=[{"id": "no-transfers", "kind": "message", "match": "(?s).*transfer"}])
    assert policy.evaluate(b"hello world", SELF).allowed
    assert policy.evaluate(b"say hello", SELF).reason == (
        "policy p: no allow rule matches: message does not match 'hello' (rule hello)")
    assert policy.evaluate(b"hello\nplease transfer", SELF).reason == (
        "policy p: denied by rule no-transfers: message matches '(?s).*transfer'")


def test_self_is_the_signing_key():
    policy = compile_policy(allow=[{"id": "permit", "kind": "typed_data",
                                    "where": {"message.owner": {"eq": "$self"}}}])
    permit = pc.typed(pc.eip2612_permit(SELF, ROUTER, 1))
    assert policy.evaluate(permit, SELF).allowed
    assert not policy.evaluate(permit, TREASURY).allowed


def test_a_policy_without_transaction_rules_denies_every_transaction():
    monitor = compile_policy(allow=[{"id": "login", "kind": "message", "match": "^login: [0-9]+"}])
    assert monitor.evaluate(tx(TREASURY, 0), SELF).reason == (
        "policy p: no allow rule for transactions")
    assert monitor.evaluate(pc.typed(pc.permit2_single(ROUTER, 1)), SELF).reason == (
        "policy p: no allow rule for typed data")
    assert not monitor.evaluate(b"login: x", SELF).allowed
    nothing = Policy.compile("nothing", PolicyConfig.model_validate({}))
    assert nothing.evaluate(b"hello", SELF).reason == "policy nothing: no allow rule for messages"


def test_evaluate_refuses_unknown_request_types():
    with pytest.raises(TypeError):
        compile_policy().evaluate("a string", SELF)  # type: ignore[arg-type]


def test_dry_run():
    policies = {"trader": PolicyConfig.model_validate(pc.trader_config())}
    assert dry_run(policies, "trader", tx(TREASURY, 1), SELF).allowed
    assert dry_run(policies, None, tx(pc.ATTACKER, 1), SELF).allowed
    with pytest.raises(ValueError, match="unknown policy 'x'"):
        dry_run(policies, "x", tx(TREASURY, 1), SELF)


# --- typed data: one parse for the digest and the policy -------------------------------------


def _permit_json(**message: Any) -> str:
    data = pc.permit2_single(ROUTER, 5)
    data["message"]["details"].update(message)
    return json.dumps(data)


def test_typed_data_values_are_canonical():
    typed = load_typed_data(_permit_json(amount="0x10", nonce=3))
    assert typed.primary_type == "PermitSingle"
    assert typed.domain == {"name": "Permit2", "chainId": 1, "verifyingContract": pc.PERMIT2}
    assert typed.message["details"] == {"token": USDC, "amount": 16, "expiration": 1900000000,
                                        "nonce": 3}


@pytest.mark.parametrize(("change", "error"), [
    ({"amount": " 16"}, "message.details.amount: expected an integer"),
    ({"amount": "1_0"}, "message.details.amount: expected an integer"),
    ({"amount": True}, "message.details.amount: expected an integer"),
    ({"amount": 2**160}, f"message.details.amount: {2**160} out of range for uint160"),
    ({"token": "0xa0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48"}, "EIP-55 checksum mismatch"),
    ({"token": 5}, "message.details.token: expected a 0x-prefixed 20-byte hex address"),
    ({"nonce": None}, "message.details.nonce: expected an integer"),
])
def test_typed_data_ambiguous_values_are_refused(change: dict[str, Any], error: str):
    with pytest.raises(InvalidRequest, match=error):
        load_typed_data(_permit_json(**change))


def test_typed_data_missing_fields_are_refused_not_zeroed():
    data = pc.permit2_single(ROUTER, 5)
    del data["message"]["spender"]
    with pytest.raises(InvalidRequest, match=r"typed_data_json: message\.spender: missing"):
        load_typed_data(json.dumps(data))


def test_typed_data_fixed_arrays_need_their_length():
    data = {"types": {"EIP712Domain": [], "T": [{"name": "xs", "type": "uint8[2]"}]},
            "primaryType": "T", "domain": {}, "message": {"xs": [1]}}
    with pytest.raises(InvalidRequest, match=r"message\.xs: uint8\[2\] needs 2 items, got 1"):
        load_typed_data(json.dumps(data))


def test_typed_data_bools_are_json_bools():
    data = {"types": {"EIP712Domain": [], "T": [{"name": "ok", "type": "bool"}]},
            "primaryType": "T", "domain": {}, "message": {"ok": "false"}}
    with pytest.raises(InvalidRequest, match=r"message\.ok: expected true or false"):
        load_typed_data(json.dumps(data))


def test_rules_may_name_the_same_arguments_differently():
    policy = compile_policy(
        allow=[{"id": "t", "to": cs(USDC), "call": "transfer(address recipient,uint256 wad)",
                "where": {"wad": {"lte": "10"}}}],
        deny=[{"id": "d", "call": "transfer(address to,uint256 amount)",
               "where": {"to": {"eq": cs(pc.ATTACKER)}}}])
    assert policy.evaluate(tx(USDC, 0, transfer(TREASURY, 5)), SELF).allowed
    assert policy.evaluate(tx(USDC, 0, transfer(pc.ATTACKER, 5)), SELF).rule_id == "d"


def test_dry_run_for_a_client_and_its_printout():
    policies = {"trader": PolicyConfig.model_validate(pc.trader_config())}
    clients = {"trader": "trader", "dev": None}
    decision = dry_run_for_client(clients, policies, "trader", tx(TREASURY, ETHER // 10), SELF)
    assert format_dry_run(decision).splitlines() == [
        "allowed (rule eth-to-treasury)",
        "policy trader: allowed by rule eth-to-treasury",
        f"budget eth_daily: this request spends {ETHER // 10} of {2 * ETHER} per 86400 s; "
        "already spent in the window: unknown without a store (taken as 0)",
        "budget signatures: this request spends 1 of 200 per 3600 s; already spent in the "
        "window: unknown without a store (taken as 0)",
    ]
    denied = dry_run_for_client(clients, policies, "trader", tx(pc.ATTACKER, 1), SELF)
    assert format_dry_run(denied).splitlines()[0] == "denied"
    assert dry_run_for_client(clients, policies, "dev", tx(pc.ATTACKER, 1), SELF).allowed
    with pytest.raises(ValueError, match=r"--client: no client named 'x' \(clients: dev, trader\)"):
        dry_run_for_client(clients, policies, "x", tx(TREASURY, 1), SELF)
