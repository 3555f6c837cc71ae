"""Reading the audit log back in tests: signing records grouped by request, and a config whose
store the operator commands (freeze, unfreeze) open."""

import json
from pathlib import Path

from signer.config import Config
from signer.store import Store


def records(store: Store) -> list[dict]:
    out = []
    for writer in store.writers():
        out += [json.loads(r.body) for r in store.audit_rows(writer)]
    return [r for r in out if r["kind"] in ("intent", "outcome")]


def by_request(store: Store) -> dict[str, dict[str, dict]]:
    grouped: dict[str, dict[str, dict]] = {}
    for record in records(store):
        kinds = grouped.setdefault(record["request_id"], {})
        assert record["kind"] not in kinds, f"two {record['kind']} records for one request"
        kinds[record["kind"]] = record
    return grouped


def state_config(tmp_path: Path) -> Config:
    """A config whose store is tmp_path/state.db: what the operator commands open."""
    return Config.model_validate({
        "store": {"url": f"sqlite://{tmp_path / 'state.db'}"},
        "keys": {"hot": {"backend": "env", "private_key_env": "UNUSED"}},
    })
