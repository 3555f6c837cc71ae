"""The policy engine against a red-team table: every drain attempt is denied with its precise
reason, next to the legitimate flows of the same agent, which pass with the spends they owe."""

import json

import pytest
from eth_account import Account

from signer.eth.transactions import UnsignedTransaction
from signer.grpc.convert import transaction_from_request
from signer.policy import Decision, Policy, PolicyConfig
from tests.support import policy_cases as pc
from tests.support.policy_cases import ATTACKS, LEGITIMATE, Case


@pytest.fixture(scope="module")
def trader() -> Policy:
    return Policy.compile("trader", PolicyConfig.model_validate(pc.trader_config()))


def _evaluate(policy: Policy, case: Case) -> Decision:
    request = pc.typed(case.request) if isinstance(case.request, dict) else case.request
    return policy.evaluate(request, pc.SELF)


@pytest.mark.parametrize("case", LEGITIMATE, ids=lambda c: c.name)
def test_legitimate_flows_pass(trader: Policy, case: Case):
    decision = _evaluate(trader, case)
    assert (decision.allowed, decision.reason) == (True, case.reason)
    assert decision.rule_id == case.rule_id
    assert decision.spends == case.spends
    assert [b.name for b in decision.budgets] == [name for name, _ in case.spends]


@pytest.mark.parametrize("case", ATTACKS, ids=lambda c: c.name)
def test_drain_attempts_are_denied_with_their_reason(trader: Policy, case: Case):
    decision = _evaluate(trader, case)
    assert (decision.allowed, decision.reason) == (False, case.reason)
    assert decision.rule_id == case.rule_id
    assert decision.spends == () and decision.budgets == ()


def test_the_table_signs_as_self():
    assert Account.from_key(pc.SELF_KEY).address == pc.cs(pc.SELF)


@pytest.mark.parametrize("case", LEGITIMATE + ATTACKS, ids=lambda c: c.name)
def test_grpc_requests_carry_exactly_the_judged_request(case: Case):
    method, request = pc.signing_request(case, "hot")
    if isinstance(case.request, UnsignedTransaction):
        assert method == "SignTransaction"
        assert transaction_from_request(request) == case.request
    elif isinstance(case.request, bytes):
        assert (method, request.message) == ("SignMessage", case.request)
    else:
        assert method == "SignTypedData"
        assert json.loads(request.typed_data_json) == case.request
