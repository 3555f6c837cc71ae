"""The audit log's record schema: one typed record per kind, used by the application path (which
writes them), the operator commands (tail, export, prune) and `verify` (which reads them back).

A record is built once, in its final form, and encoded once by `encode`: canonical JSON (keys
sorted, no spaces, ASCII only), byte for byte what `json.dumps(fields, sort_keys=True,
separators=(",", ":"), ensure_ascii=True)` gives, so the chain hash of every record written
before these types existed still verifies and a reader can re-canonicalize a record and get the
same bytes. `encode` uses orjson (about ten times faster); orjson writes non-ASCII as UTF-8 and
refuses integers beyond 64 bits, so anything whose orjson form is not plain ASCII falls back to
json.dumps (tests/app/test_audit_records.py checks the two agree for every record type).

Optional fields that do not apply are left out of the JSON (not written as null), as before.
`parse` is lenient: a record of a kind it does not know, or with fields missing, still parses
(as `Other`, or with None), so `verify` never rejects what an older writer wrote.
"""

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import orjson

Fields = dict[str, Any]


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def _ascii_json(fields: Mapping[str, Any]) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def canonical(fields: Mapping[str, Any]) -> str:
    """The canonical JSON text of a record's fields (what its hash covers)."""
    try:
        data = orjson.dumps(fields, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # orjson.JSONEncodeError: ints beyond 64 bits, lone surrogates, ...
        return _ascii_json(fields)
    # json.dumps(ensure_ascii=True) also escapes DEL (0x7f), which orjson writes as it is
    if data.isascii() and b"\x7f" not in data:
        return data.decode("ascii")
    return _ascii_json(fields)  # \u escapes for non-ASCII, as json.dumps(ensure_ascii=True)


def _put(out: Fields, name: str, value: Any) -> None:
    if value is not None:
        out[name] = value


@dataclass(frozen=True, slots=True, kw_only=True)
class ChainStart:
    """A writer's first record: the heads of every other chain when it began."""

    at: str = field(default_factory=utc_now)
    role: str
    witness: Mapping[str, tuple[int, str]]
    mac: str | None = None  # "hmac-sha256": every record of this chain is keyed
    kind: Literal["chain_start"] = "chain_start"

    def fields(self) -> Fields:
        out: Fields = {"at": self.at, "kind": self.kind, "role": self.role,
                       "witness": {w: [s, h] for w, (s, h) in self.witness.items()}}
        _put(out, "mac", self.mac)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Witness:
    """The heads of the other chains, recorded by a running writer every few seconds and at
    stop: what a later deletion or rewrite of those chains is checked against."""

    at: str = field(default_factory=utc_now)
    witness: Mapping[str, tuple[int, str]]
    kind: Literal["witness"] = "witness"

    def fields(self) -> Fields:
        return {"at": self.at, "kind": self.kind,
                "witness": {w: [s, h] for w, (s, h) in self.witness.items()}}


@dataclass(frozen=True, slots=True, kw_only=True)
class BudgetLine:
    name: str
    spent: int
    limit: int
    window_seconds: int

    def fields(self) -> Fields:
        return {"name": self.name, "spent": str(self.spent), "limit": str(self.limit),
                "window_seconds": self.window_seconds}


@dataclass(frozen=True, slots=True, kw_only=True)
class Signing:
    """The intent (before the backend signs) or the outcome of one signing request."""

    kind: Literal["intent", "outcome"]
    at: str = field(default_factory=utc_now)
    event: str
    request_id: str | None
    peer: str | None
    method: str | None
    key_id: str | None
    client: str | None = None
    identity: str | None = None
    transaction: Mapping[str, Any] | None = None  # application._summary: never the calldata
    authorization: Mapping[str, Any] | None = None  # EIP-7702: the delegate and its chain
    policy: str | None = None  # set (with rule_id, which may be None) when a policy judged it
    rule_id: str | None = None
    digest: str | None = None
    budgets: tuple[BudgetLine, ...] | None = None
    result: str | None = None  # transaction hash, or keccak of the signature
    decision: str | None = None  # outcome: allow, deny, none
    status: str | None = None
    reason: str | None = None
    signed: bool | None = None  # outcome of a request that raised: was a signature made?
    notes: Mapping[str, str] = field(default_factory=dict)  # a door's facts (SigningRequest.note)

    def fields(self) -> Fields:
        out: Fields = {
            **self.notes,
            "at": self.at, "kind": self.kind, "event": self.event,
            "request_id": self.request_id, "peer": self.peer, "method": self.method,
            "key_id": self.key_id, "client": self.client, "identity": self.identity,
        }
        if self.policy is not None:
            out["policy"], out["rule_id"] = self.policy, self.rule_id
        _put(out, "transaction", self.transaction)
        _put(out, "authorization", self.authorization)
        _put(out, "digest", self.digest)
        if self.budgets is not None:
            out["budgets"] = [b.fields() for b in self.budgets]
        _put(out, "result", self.result)
        _put(out, "decision", self.decision)
        _put(out, "status", self.status)
        _put(out, "reason", self.reason)
        _put(out, "signed", self.signed)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class DryRun:
    """A policy evaluation that signed nothing (EvaluatePolicy, `policy check`)."""

    at: str = field(default_factory=utc_now)
    method: str | None
    client: str | None
    status: str | None
    reason: str | None
    request_id: str | None = None
    peer: str | None = None
    key_id: str | None = None
    identity: str | None = None
    source: str | None = None  # "policy check" for the CLI
    digest: str | None = None
    decision: str | None = None
    policy: str | None = None
    rule_id: str | None = None
    kind: Literal["dry_run"] = "dry_run"

    def fields(self) -> Fields:
        out: Fields = {"at": self.at, "kind": self.kind, "method": self.method,
                       "client": self.client, "status": self.status, "reason": self.reason}
        if self.source is None:  # the service's dry run names its caller
            out.update(request_id=self.request_id, peer=self.peer, key_id=self.key_id,
                       identity=self.identity)
        else:
            out["source"] = self.source
        _put(out, "digest", self.digest)
        if self.decision is not None:
            out.update(decision=self.decision, policy=self.policy, rule_id=self.rule_id)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Admin:
    """An operator's action: reload, freeze, unfreeze, prune."""

    at: str = field(default_factory=utc_now)
    action: str
    key_id: str | None = None
    operator: str | None = None
    details: Mapping[str, Any] = field(default_factory=dict)  # the action's own facts
    kind: Literal["admin"] = "admin"

    def fields(self) -> Fields:
        out: Fields = {**self.details, "at": self.at, "kind": self.kind, "action": self.action}
        _put(out, "key_id", self.key_id)
        _put(out, "operator", self.operator)
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Checkpoint:
    """Left by `audit prune`: what was removed before `before`, and the chain heads at the cut
    (writer -> [seq, hash] of its last pruned record, which the next record links to)."""

    at: str = field(default_factory=utc_now)
    before: str
    heads: Mapping[str, tuple[int, str]]
    records: int  # records removed
    export_sha256: str  # of the export file that holds them
    operator: str | None = None
    kind: Literal["checkpoint"] = "checkpoint"

    def fields(self) -> Fields:
        out: Fields = {"at": self.at, "kind": self.kind, "before": self.before,
                       "heads": {w: [s, h] for w, (s, h) in self.heads.items()},
                       "records": self.records, "export_sha256": self.export_sha256}
        _put(out, "operator", self.operator)
        return out


@dataclass(frozen=True, slots=True)
class Other:
    """A record of a kind this version does not type (kept as read)."""

    raw: Mapping[str, Any]

    @property
    def kind(self) -> str:
        return str(self.raw.get("kind"))

    @property
    def at(self) -> str:
        return str(self.raw.get("at"))

    def fields(self) -> Fields:
        return dict(self.raw)


AuditRecord = ChainStart | Witness | Signing | DryRun | Admin | Checkpoint | Other


def _heads(value: Any) -> dict[str, tuple[int, str]]:
    return {str(w): (int(s), str(h)) for w, (s, h) in dict(value or {}).items()}


def _str(raw: Mapping[str, Any], name: str) -> str | None:
    value = raw.get(name)
    return None if value is None else str(value)


def parse(raw: Mapping[str, Any]) -> AuditRecord:
    """The typed record for stored fields (raises KeyError/ValueError/TypeError on a malformed
    chain_start, witness or checkpoint, whose fields verify relies on)."""
    kind = raw.get("kind")
    at = str(raw.get("at"))
    if kind == "chain_start":
        return ChainStart(at=at, role=str(raw.get("role")), witness=_heads(raw.get("witness")),
                          mac=_str(raw, "mac"))
    if kind == "witness":
        return Witness(at=at, witness=_heads(raw["witness"]))
    if kind == "checkpoint":
        return Checkpoint(at=at, before=str(raw["before"]), heads=_heads(raw["heads"]),
                          records=int(raw["records"]), export_sha256=str(raw["export_sha256"]),
                          operator=_str(raw, "operator"))
    if kind == "dry_run":
        return DryRun(
            at=at, method=_str(raw, "method"), client=_str(raw, "client"),
            status=_str(raw, "status"), reason=_str(raw, "reason"),
            request_id=_str(raw, "request_id"), peer=_str(raw, "peer"),
            key_id=_str(raw, "key_id"), identity=_str(raw, "identity"),
            source=_str(raw, "source"), digest=_str(raw, "digest"),
            decision=_str(raw, "decision"), policy=_str(raw, "policy"),
            rule_id=_str(raw, "rule_id"),
        )
    if kind == "admin":
        return Admin(
            at=at, action=str(raw.get("action")), key_id=_str(raw, "key_id"),
            operator=_str(raw, "operator"),
            details={k: v for k, v in raw.items()
                     if k not in ("at", "kind", "action", "key_id", "operator")},
        )
    if kind in ("intent", "outcome"):
        try:
            return _signing(kind, at, raw)
        except (KeyError, TypeError, ValueError):
            return Other(raw)  # hash-valid but not of this schema: kept as read
    return Other(raw)


def _signing(kind: Literal["intent", "outcome"], at: str, raw: Mapping[str, Any]) -> Signing:
    known = set(Signing.__dataclass_fields__) - {"notes"}
    budgets = raw.get("budgets")
    return Signing(
        kind=kind, at=at, event=str(raw.get("event")),
        request_id=_str(raw, "request_id"), peer=_str(raw, "peer"),
        method=_str(raw, "method"), key_id=_str(raw, "key_id"),
        client=_str(raw, "client"), identity=_str(raw, "identity"),
        transaction=raw.get("transaction"), authorization=raw.get("authorization"),
        policy=_str(raw, "policy"),
        rule_id=_str(raw, "rule_id"), digest=_str(raw, "digest"),
        budgets=None if budgets is None else tuple(
            BudgetLine(name=str(b["name"]), spent=int(b["spent"]), limit=int(b["limit"]),
                       window_seconds=int(b["window_seconds"])) for b in budgets),
        result=_str(raw, "result"), decision=_str(raw, "decision"),
        status=_str(raw, "status"), reason=_str(raw, "reason"),
        signed=None if raw.get("signed") is None else bool(raw["signed"]),
        notes={k: str(v) for k, v in raw.items() if k not in known},
    )
