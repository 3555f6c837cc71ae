"""The typed audit records and their one encoder: byte for byte the canonical form every stored
chain was hashed with (`json.dumps(sort_keys=True, separators=(",", ":"), ensure_ascii=True)`),
for every record type and any field values, and parsed back to the same record."""

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from signer.app.audit import AuditLog, record_hash, verify
from signer.app.records import (
    Admin,
    BudgetLine,
    ChainStart,
    Checkpoint,
    DryRun,
    Other,
    Signing,
    canonical,
    parse,
)
from signer.store import Store


def reference(fields: dict[str, Any]) -> str:
    """The form stores written before the typed records were hashed with."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


text = st.text(max_size=40)  # any code point: non-ASCII, controls, lone surrogates
opt_text = st.none() | text
hexes = st.text("0123456789abcdef", min_size=64, max_size=64)
big = st.integers(min_value=0, max_value=2**256)  # beyond orjson's 64 bits too
heads = st.dictionaries(st.text("0123456789abcdef", min_size=32, max_size=32),
                        st.tuples(st.integers(1, 2**63 - 1), hexes), max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
budget = st.builds(BudgetLine, name=text, spent=big, limit=big,
                   window_seconds=st.integers(1, 31 * 86400))
transaction = st.fixed_dictionaries({
    "type": st.integers(0, 4), "chain_id": big, "nonce": big, "to": opt_text, "value": text,
    "data_bytes": st.integers(0, 2**20), "data_keccak": opt_text,
})
records = st.one_of(
    st.builds(ChainStart, at=text, role=text, witness=heads),
    st.builds(
        Signing, kind=st.sampled_from(["intent", "outcome"]), at=text, event=text,
        request_id=opt_text, peer=opt_text, method=opt_text, key_id=opt_text, client=opt_text,
        identity=opt_text, transaction=st.none() | transaction,
        authorization=st.none() | st.dictionaries(text, json_values, max_size=3),
        policy=opt_text,
        rule_id=opt_text, digest=opt_text,
        budgets=st.none() | st.lists(budget, max_size=3).map(tuple), result=opt_text,
        decision=opt_text, status=opt_text, reason=opt_text, signed=st.none() | st.booleans(),
        notes=st.dictionaries(st.sampled_from(["door", "jsonrpc_method", "submitted"]), text),
    ),
    st.builds(DryRun, at=text, method=opt_text, client=opt_text, status=opt_text,
              reason=opt_text, request_id=opt_text, peer=opt_text, key_id=opt_text,
              identity=opt_text, source=opt_text, digest=opt_text, decision=opt_text,
              policy=opt_text, rule_id=opt_text),
    st.builds(Admin, at=text, action=text, key_id=opt_text, operator=opt_text,
              details=st.dictionaries(st.sampled_from(["reason", "was_frozen", "clients"]),
                                      json_values)),
    st.builds(Checkpoint, at=text, before=text, heads=heads, records=st.integers(0, 2**40),
              export_sha256=hexes, operator=opt_text),
)


@given(records)
def test_the_encoder_is_the_canonical_form(record):  # type: ignore[no-untyped-def]
    fields = record.fields()
    assert canonical(fields) == reference(fields)


@given(st.dictionaries(text, json_values, max_size=6))
def test_the_encoder_is_the_canonical_form_for_bare_fields(fields):  # type: ignore[no-untyped-def]
    assert canonical(fields) == reference(fields)


def test_the_encoder_escapes_every_character_as_json_dumps_does():
    # hypothesis once found DEL (0x7f): orjson writes it as it is, json.dumps escapes it
    for code in [*range(0x80), 0xA0, 0x2028, 0xFFFF, 0x1F600]:
        fields = {"reason": f"a{chr(code)}b", chr(code): 1}
        assert canonical(fields) == reference(fields), hex(code)


@given(records)
def test_a_record_parses_back_to_itself(record):  # type: ignore[no-untyped-def]
    fields = json.loads(canonical(record.fields()))
    parsed = parse(fields)
    assert parsed.fields() == fields
    assert type(parsed) is type(record)


def test_unknown_and_malformed_records_parse_as_read():
    assert parse({"kind": "future", "x": 1}) == Other({"kind": "future", "x": 1})
    odd = {"kind": "outcome", "at": "t", "budgets": [{"name": "b"}]}  # hash-valid, not ours
    assert parse(odd) == Other(odd)


def test_a_store_written_before_typed_records_still_verifies(store: Store):
    """Rows as the dict-and-json.dumps writer stored them (its exact bytes), then new typed
    records on the same store: every chain verifies."""
    writer, prev = "a" * 32, "0" * 64
    old = [
        {"at": "2026-01-01T00:00:00.000000+00:00", "kind": "chain_start", "role": "serve",
         "witness": {}},
        {"at": "2026-01-01T00:00:01.000000+00:00", "kind": "intent", "event": "e",
         "request_id": "r", "peer": "ipv4:1", "method": "SignMessage", "key_id": "hot",
         "client": None, "identity": None, "digest": "0x" + "ab" * 32,
         "reason": "caf\u00e9 \u2603"},
    ]
    with store.batch(lock=True) as batch:
        batch.register_writer(writer, old[0]["at"])
        rows = []
        for seq, body in enumerate(old, 1):
            body_text = reference(body)
            digest = record_hash(writer, seq, prev, body_text)
            rows.append((seq, body["at"], body_text, prev, digest))
            prev = digest
        from signer.store import AuditRow
        batch.append([AuditRow(writer, s, a, b, p, h) for s, a, b, p, h in rows])
    log = AuditLog(store)
    log.write([Admin(action="freeze", key_id="hot", operator="op",
                     details={"reason": "caf\u00e9"})])
    report = verify(store)
    assert report.ok, report.problem
    assert report.records == 2 + 2 and report.incomplete == ["r"]
