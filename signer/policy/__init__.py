"""Default-deny signing policy (issue 9): what each client may sign, decided on what is signed.

`config.PolicyConfig` is one `[policies.NAME]` table, compiled once when validated;
`evaluation.Policy` judges a request; `dry_run` does it without a server or a store, for
`wallet-signer policy check`.

By job, each module importing only those before it:
  conditions  `where` literals, paths into decoded values, comparisons; PolicyError
  schema      the TOML model (pydantic shapes only)
  reasons     outcomes, how far a rule got (Miss), the reason a denial shows
  matchers    compiled rules and how each kind matches (allow) or hits (deny)
  compiler    schema -> CompiledRules, every meaning checked at start-up
  config      PolicyConfig: the schema, compiled at validation and kept
  evaluation  Policy, Decision: judging a request with the kept rules
"""

from collections.abc import Mapping

from signer.policy.config import PolicyConfig
from signer.policy.evaluation import BudgetDef, Decision, Policy, PolicyError, Request

__all__ = [
    "BudgetDef",
    "Decision",
    "Policy",
    "PolicyConfig",
    "PolicyError",
    "Request",
    "check_policy_references",
    "dry_run",
    "dry_run_for_client",
    "format_dry_run",
]


def check_policy_references(
    client_policies: Mapping[str, str | None], policies: Mapping[str, PolicyConfig]
) -> None:
    """Every client's `policy` names a configured policy; ValueError names the client."""
    for client, policy in client_policies.items():
        if policy is not None and policy not in policies:
            known = ", ".join(sorted(policies)) or "none defined"
            raise ValueError(
                f"clients.{client}.policy: unknown policy {policy!r} (policies: {known})"
            )


def dry_run(
    policies: Mapping[str, PolicyConfig],
    policy_name: str | None,
    request: Request,
    self_address: bytes,
) -> Decision:
    """The decision for `request` without a store: budgets are taken as empty.

    Only what this one request spends is compared with each budget's limit; what the window
    already holds is unknown here, so an allowed dry run may still be refused by a server
    whose budget is partly spent.
    """
    if policy_name is None:
        return Decision(True, "", None, "client has no policy: everything may be signed")
    if policy_name not in policies:
        raise ValueError(f"unknown policy {policy_name!r}")
    return Policy.compile(policy_name, policies[policy_name]).evaluate(request, self_address)


def dry_run_for_client(
    client_policies: Mapping[str, str | None],
    policies: Mapping[str, PolicyConfig],
    client: str,
    request: Request,
    self_address: bytes,
) -> Decision:
    """`wallet-signer policy check --client NAME`: `client_policies` maps each configured
    client to its `policy` (None: none); ValueError for an unknown client."""
    if client not in client_policies:
        known = ", ".join(sorted(client_policies)) or "none configured"
        raise ValueError(f"--client: no client named {client!r} (clients: {known})")
    return dry_run(policies, client_policies[client], request, self_address)


def format_dry_run(decision: Decision) -> str:
    """The decision as `policy check` prints it; budgets are shown as unknown (no store)."""
    lines = [
        ("allowed" if decision.allowed else "denied")
        + (f" (rule {decision.rule_id})" if decision.rule_id else ""),
        decision.reason,
    ]
    for budget in decision.budgets:
        amount = dict(decision.spends)[budget.name]
        lines.append(
            f"budget {budget.name}: this request spends {amount} of {budget.limit} per "
            f"{budget.window_seconds} s; already spent in the window: unknown without a "
            "store (taken as 0)"
        )
    return "\n".join(lines)
