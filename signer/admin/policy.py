"""`wallet-signer policy check` and `policy budgets`: operators trying a policy against the
config file and the store, without a server. A check is audited as a dry run."""

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from signer.admin.state import configured_store
from signer.app.access import AccessControl, Client
from signer.app.application import Evaluation, PolicyRequest, digest_of, evaluate_policy
from signer.app.audit import AuditLog
from signer.app.records import DryRun
from signer.config import Config
from signer.errors import InvalidRequest
from signer.eth import messages
from signer.eth.fields import parse_address
from signer.eth.transactions import UnsignedAuthorization


@dataclass(frozen=True)
class BudgetRow:
    client: str
    policy: str
    budget: str
    spent: int
    limit: int
    window_seconds: int


def _client(config: Config, name: str) -> Client:
    access = AccessControl(config.clients, config.policies)
    for client in access.clients:
        if client.name == name:
            return client
    known = ", ".join(sorted(config.clients)) or "none configured"
    raise InvalidRequest(f"--client: no client named {name!r} (clients: {known})")


def check(
    config: Config, client_name: str, method: str, request: PolicyRequest, self_address: bytes
) -> Evaluation:
    """What `client_name`'s policy says about `request` now, with the store's budgets."""
    client = _client(config, client_name)
    with configured_store(config) as store:
        evaluation = evaluate_policy(store, time.time(), client, self_address, request)
        AuditLog(store, role="cli").write([DryRun(
            source="policy check", client=client.name, method=method,
            digest="0x" + digest_of(request).hex(),
            decision="allow" if evaluation.allowed else "deny", status="OK",
            policy=evaluation.policy, rule_id=evaluation.rule_id, reason=evaluation.reason,
        )])
    return evaluation


def budgets(config: Config, client_name: str | None = None) -> list[BudgetRow]:
    """Every budget of every client with a policy (or of one client), as spent now."""
    clients = [_client(config, client_name)] if client_name else AccessControl(
        config.clients, config.policies).clients
    rows = []
    now = time.time()
    with configured_store(config) as store:
        for client in sorted(clients, key=lambda c: c.name):
            if client.policy is None:
                continue
            for budget in client.policy.budgets.values():
                spent = store.budget_spent(
                    f"{client.name}/{budget.name}", budget.window_seconds, now
                )
                rows.append(BudgetRow(client.name, client.policy.name, budget.name, spent,
                                      budget.limit, budget.window_seconds))
    return rows


def load_request(
    tx: Path | None, message: str | None, typed_data: Path | None,
    authorization: Path | None = None,
) -> tuple[str, PolicyRequest, Any]:
    """(method, request, `from` if the transaction names one) from the command's options;
    the transaction JSON is what `wallet-signer sign --tx` takes; an authorization's is
    {"chainId", "address", "nonce"} (what RemoteAccount.sign_authorization takes)."""
    from signer.client import transaction_to_proto
    from signer.grpc.convert import transaction_from_proto

    if message is not None:
        return "SignMessage", message.encode(), None
    try:
        if typed_data is not None:
            text = typed_data.read_text(encoding="utf-8")
            return "SignTypedData", messages.load_typed_data(text), None
        if authorization is not None:
            auth = json.loads(authorization.read_text(encoding="utf-8"))
            if not isinstance(auth, dict):
                raise ValueError("expected a JSON object {chainId, address, nonce}")
            request = UnsignedAuthorization(
                _integer(auth["chainId"], "chainId"),
                parse_address(str(auth["address"]), "address"),
                _integer(auth["nonce"], "nonce"),
            )
            return "SignAuthorization", request, auth.get("from")
        assert tx is not None
        body = json.loads(tx.read_text(encoding="utf-8"))
        if not isinstance(body, dict):
            raise ValueError("expected a JSON object")
        return "SignTransaction", transaction_from_proto(transaction_to_proto(body)), body.get(
            "from")
    except (OSError, UnicodeDecodeError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRequest(f"{tx or typed_data or authorization}: {exc}") from None


def _integer(value: Any, field: str) -> int:
    """A JSON integer, or a decimal or 0x-hex string."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"{field}: expected an integer")
    if isinstance(value, int):
        return value
    return int(value, 16) if value.lower().startswith("0x") else int(value)
