"""The policy engine against a red-team table: every drain attempt is denied with its precise
reason, next to the legitimate flows of the same agent, which pass with the spends they owe."""

import pytest

from signer.policy import Decision, Policy, PolicyConfig
from tests import policy_cases as pc
from tests.policy_cases import ATTACKS, LEGITIMATE, Case


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
