"""Policy decision benchmark: `Policy.evaluate` alone (no store, no signature), 20-rule policy.

The trader policy of the tests, padded to 20 rules with realistic neighbours (more tokens,
more routers, a second message rule), judged on the requests an agent sends most, plus the
worst case: a denial that walks every rule to explain itself. Issue 9's aim: p50 < 100 µs.
"""

import os
import time
from typing import Any

from signer.policy import Policy, PolicyConfig
from tests.support import policy_cases as pc

ITERATIONS = int(os.environ.get("BENCH_POLICY_ITERATIONS", "3000"))


def twenty_rule_policy() -> Policy:
    return Policy.compile("trader", PolicyConfig.model_validate(twenty_rule_config()))


def twenty_rule_config() -> dict[str, Any]:
    """The trader policy of the tests padded to 20 rules (as a [policies.NAME] table)."""
    config = pc.trader_config()
    extra_tokens = [bytes([0x70 + i]) * 20 for i in range(5)]
    for i, token in enumerate(extra_tokens):
        config["allow"].insert(
            0,
            {
                "id": f"token{i}-to-treasury",
                "to": pc.cs(token),
                "call": "transfer(address to,uint256 amount)",
                "where": {"to": {"in": "@treasury"}, "amount": {"lte": "1000000000"}},
                "spend": {"signatures": "1"},
            },
        )
    config["allow"].append({"id": "login", "kind": "message", "match": "^login: [0-9a-f]{32}$"})
    config["deny"] += [
        {"id": "no-increase-allowance", "call": "increaseAllowance(address spender,uint256 n)"},
        {"id": "no-approval-for-all", "call": "setApprovalForAll(address operator,bool ok)"},
        {"id": "no-transfer-from", "call": "transferFrom(address a,address b,uint256 n)"},
    ]
    rules = len(config["allow"]) + len(config["deny"])
    assert rules == 20, rules
    return config


def requests() -> dict[str, Any]:
    return {
        "ETH to the treasury (rule 6 of 20)": pc.tx(pc.TREASURY, 10**17),
        "USDC transfer (decode + where)": pc.tx(pc.USDC, 0, pc.transfer(pc.TREASURY, 10**6)),
        "swap with a tuple argument": pc.tx(pc.ROUTER, 0, pc.swap(pc.SELF)),
        "aggregate3 of two USDC transfers": pc._multicall3(
            "aggregate3",
            [(pc.USDC, 0, pc.transfer(pc.TREASURY, 1)), (pc.USDC, 0, pc.transfer(pc.TREASURY, 2))],
        ),
        "Permit2 PermitSingle (typed data)": pc.typed(pc.permit2_single(pc.ROUTER, 10**6)),
        "SIWE message": pc.SIWE,
        "denied: ETH to a stranger (explains 15 rules)": pc.tx(pc.ATTACKER, 10**18),
        "denied: unlimited approve (deny rule)": pc.tx(
            pc.USDC, 0, pc.calldata("approve", pc.cs(pc.ATTACKER), pc.MAX)
        ),
    }


def main() -> None:
    policy = twenty_rule_policy()
    print(f"\n## Policy decision (Policy.evaluate, 20 rules, {ITERATIONS} runs each)\n")
    print("| request | allowed | p50 µs | p99 µs |")
    print("|---|---|---|---|")
    for label, request in requests().items():
        decision = policy.evaluate(request, pc.SELF)
        times = []
        for _ in range(ITERATIONS):
            start = time.perf_counter_ns()
            policy.evaluate(request, pc.SELF)
            times.append(time.perf_counter_ns() - start)
        times.sort()
        p50, p99 = times[len(times) // 2] / 1000, times[int(len(times) * 0.99)] / 1000
        print(f"| {label} | {decision.allowed} | {p50:.1f} | {p99:.1f} |")


if __name__ == "__main__":
    main()
