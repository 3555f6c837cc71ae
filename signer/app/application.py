"""The application path: every request, from any door, passes here and only here.

    with app.signing(caller, "SignTransaction", key_id) as request:   # identify, key access,
        signed = request.sign_transaction(tx, timeout)                 # freeze; intent, sign
    # leaving the block writes the outcome record; only then may the door answer

Every signing request that reaches `signing` gets exactly one intent and one outcome record in
the audit log, whatever happens: denied, invalid, failed or signed. The intent is durable
before the backend is asked to sign; the outcome is durable before the door sends the
signature. If either cannot be written the request fails with StoreUnavailable, and a
signature produced before the outcome failed is never released.
"""

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from signer import metrics
from signer.app.access import AccessControl, Client
from signer.app.audit import AuditLog, Reservation
from signer.app.caller import Caller
from signer.app.freeze import FreezeState
from signer.app.records import Admin, BudgetLine, DryRun, Signing
from signer.app.sinks import AuditSink
from signer.app.versions import KeyVersions, Resolved
from signer.config import FORWARD, Config
from signer.errors import (
    AccessDenied,
    ConfigError,
    KeyDraining,
    KeyNotFound,
    PolicyDenied,
    SignerError,
    StoreUnavailable,
    Unauthenticated,
)
from signer.eth import messages, sweep, transactions
from signer.eth.fields import checksum
from signer.eth.hashing import keccak
from signer.ids import new_id
from signer.policy import Decision
from signer.service import KeyChanges, KeyRing, shown_key_id
from signer.store import BudgetClaim, BudgetExceeded, FrozenKey, KeyVersionRow, Store
from signer.wallet import SignedDigest, SignedTransaction, WalletSigner

log = logging.getLogger(__name__)

_DENIALS = (Unauthenticated, AccessDenied)

PolicyRequest = (
    transactions.UnsignedTransaction | bytes | messages.TypedData
    | transactions.UnsignedAuthorization
)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    name: str
    spent: int  # in the window now, before this request
    limit: int
    window_seconds: int
    request_spends: int


@dataclass(frozen=True, slots=True)
class Evaluation:
    """A dry run's answer: what a signing request would be told, and the budgets it touches."""

    allowed: bool
    policy: str | None
    rule_id: str | None
    reason: str
    budgets: tuple[BudgetStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class KeyStatus:
    signer: WalletSigner  # the active version
    frozen: FrozenKey | None
    versions: tuple[KeyVersionRow, ...] = ()  # empty until the key is first rotated


class Application:
    def __init__(
        self,
        keyring: KeyRing,
        store: Store,
        *,
        access: AccessControl,
        audit: AuditSink | None = None,
        freeze: FreezeState | None = None,
        versions: KeyVersions | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.keyring = keyring
        self.store = store
        self.access = access  # replaced whole on reload: a request keeps the one it started with
        self.audit: AuditSink = audit or AuditLog(store)
        self.freeze = freeze or FreezeState(store)
        self.versions = versions or KeyVersions(store)
        self.clock = clock
        self.last_reload: KeyChanges | None = None  # what the last reload did to the keys

    def close(self) -> None:
        self.audit.stop()  # a last witness of the other chains, while the store is open
        self.versions.close()
        self.store.close()

    def reload_from(self, path: Path, operator: str = "SIGHUP") -> bool:
        """SIGHUP (or the Reload RPC): re-read the config file; swap in its keys (see
        KeyRing.reload: what fails to load keeps its previous version), then its clients and
        policies atomically. A file that does not load or validate keeps everything as it is
        (logged, not raised); server and store settings need a restart."""
        from signer import config as config_module

        try:
            config = config_module.load(path)
        except SignerError as exc:
            log.error("config reload failed, keeping the current clients and policies (and "
                      "keys): %s", exc)
            return False
        try:
            self.reload_keys(config, operator)
            self.reload_access(config)
        except SignerError as exc:
            log.error("config reload failed, keeping the current clients and policies: %s", exc)
            return False
        log.info(
            "config reloaded: %d clients, policies %s",
            len(config.clients),
            ", ".join(f"{n}={p.fingerprint()[:12]}" for n, p in sorted(config.policies.items()))
            or "none",
        )
        return True

    def reload_keys(self, config: Config, operator: str = "SIGHUP") -> KeyChanges:
        """Swap in the keys of a new, validated config (KeyRing.reload); audited with every
        key added, changed (both addresses), removed and failed."""
        changes = self.keyring.reload(config)
        self.last_reload = changes
        self.audit.write([Admin(action="reload_keys", operator=operator,
                                details=changes.record())])
        log.info("keys reloaded: %d added, %d changed, %d removed, %d failed to load (kept)",
                 len(changes.added), len(changes.changed), len(changes.removed),
                 len(changes.failed))
        return changes

    def authorize_reload(self, caller: Caller) -> str:
        """The Reload RPC's caller must hold the `Reload` method; returns who asked."""
        client = self._identify_for_read(caller, "Reload", None)
        return f"client {client.name}" if client is not None else f"peer {caller.peer}"

    def reload_access(self, config: Config) -> None:
        """Swap in the clients and policies of a new, already validated config; audited with
        each policy's fingerprint. Keys and the store are not reloaded (restart for those)."""
        access = AccessControl(config.clients, config.policies)
        if access.open != self.access.open:
            # identified -> open would serve anyone; open -> identified is a restart, too
            before, after = ("open", "identified") if self.access.open else ("identified", "open")
            reason = (
                f"the reload would change access from {before} to {after} "
                f"({len(self.access.clients)} -> {len(config.clients)} clients); a reload never "
                "changes the access mode: restart to change it (to shut every client out while "
                "running, keep one [clients] entry whose identity no certificate carries)"
            )
            self.audit.write([Admin(action="reload", details={
                "status": "REFUSED", "reason": reason, "clients": sorted(config.clients),
            })])
            raise ConfigError(reason)
        self.audit.write([Admin(action="reload", details={
            "clients": sorted(config.clients),
            "policies": {name: p.fingerprint() for name, p in sorted(config.policies.items())},
        })])
        self.access = access

    # -- reads ----------------------------------------------------------------------------

    def list_keys(self, caller: Caller) -> list[KeyStatus]:
        """The keys this caller may use, with their freeze state ("ListKeys")."""
        client = self._identify_for_read(caller, "ListKeys", None)
        frozen = self.freeze.current()
        return [
            KeyStatus(self._listed(s), frozen.get(s.key_id), self.versions.of(s.key_id))
            for s in self.keyring
            if self.access.may_use(client, s.key_id)
        ]

    def _listed(self, signer: WalletSigner) -> WalletSigner:
        """The active version, or the configured one if the active cannot be opened here now
        (its versions still say which is active; signing with it reports why it fails)."""
        try:
            return self._active(signer).signer
        except SignerError as exc:
            if isinstance(exc, StoreUnavailable):
                raise
            log.warning("key %r: active version unavailable for ListKeys: %s", signer.key_id, exc)
            return signer

    def get_key(self, caller: Caller, key_id: str) -> WalletSigner:
        """One key's identity ("GetAddress"); a key the caller may not use is not found."""
        client = self._identify_for_read(caller, "GetAddress", key_id)
        return self._key_for(client, "GetAddress", key_id).signer

    def record_submission(self, caller: Caller, method: str, address: bytes, unsent: list[str],
                          status: str, sent: str | None, reason: str) -> None:
        """The JSON-RPC door's submission outcome: the transactions signed for one request
        that never reached the chain through the node (`unsent`), and the one it took."""
        record = Admin(action="submission", details={
            "request_id": caller.request_id, "peer": caller.peer, "method": method,
            "address": checksum(address), "status": status, "unsent": unsent, "sent": sent,
            "reason": reason[:1024],
        })
        try:
            self.audit.write([record])
        except SignerError as exc:
            log.error("audit: submission of request %s could not be recorded: %s",
                      caller.request_id, exc)

    def check_forward(self, caller: Caller) -> None:
        """May this caller have a call relayed to the upstream node (JSON-RPC)? Needs the
        "Forward" permission; AccessDenied (audited) if not."""
        self._identify_for_read(caller, FORWARD, None)

    def open_stream(self, caller: Caller, method: str) -> str:
        """A stream of `method` calls is opening: identify the caller and check it may use
        `method` at all (each message is still checked in full). Returns the client's name
        ("" when access is open), which bounds how many streams it may hold."""
        client = self._identify_for_read(caller, method, None)
        return client.name if client is not None else ""

    def _identify_for_read(self, caller: Caller, method: str, key_id: str | None) -> Client | None:
        try:
            client, _ = self.access.identify(caller)
            if client is not None:
                metrics.annotate_call(client=client.name)
            self.access.check(client, method, key_id)
        except _DENIALS as exc:
            self._audit_denied_read(caller, method, key_id, exc)
            raise
        return client

    def _key_for(self, client: Client | None, method: str, key_id: str) -> Resolved:
        """The key's active version (a request by key id)."""
        signer = self.keyring.get(key_id)
        self.access.check(client, method, signer.key_id)
        return self._active(signer)

    def _active(self, signer: WalletSigner) -> Resolved:
        return self.versions.active(signer, self.keyring.drain_rule(signer.key_id))

    # -- signing --------------------------------------------------------------------------

    @contextmanager
    def signing(
        self,
        caller: Caller,
        method: str,
        key_id: str | None = None,
        *,
        address: bytes | None = None,
    ) -> Iterator["SigningRequest"]:
        """One signing request by `key_id` (gRPC) or by the key's `address` (JSON-RPC)."""
        request = SigningRequest(self, caller, method, key_id)
        try:
            client, identity = self.access.identify(caller)
            request.client, request.identity = client, identity
            if client is not None:
                metrics.annotate_call(client=client.name)
            resolved = (
                self._key_for(client, method, key_id or "")
                if address is None
                else self._key_by_address(client, method, address)
            )
            signer = request.signer = resolved.signer
            request.resolved = resolved
            request.key_id = signer.key_id
            if resolved.row is not None:  # a rotated key: which version, which address
                request.note(key_version=str(signer.version), address=signer.address)
            if address is not None:  # named by address (JSON-RPC): label the call's key
                metrics.annotate_call(key_id=signer.key_id)
            self.freeze.check(signer.key_id)
            yield request
        except BaseException as exc:
            request.fail(exc)
            raise
        request.succeed()

    def _key_by_address(self, client: Client | None, method: str, address: bytes) -> Resolved:
        """Any version of a key that is not retired (a retired one is refused by name)."""
        row = self.versions.by_address(address)
        if row is not None:
            try:
                base = self.keyring.get(row.key_id)
            except KeyNotFound:
                base = None
            if base is not None and self.access.may_use(client, base.key_id):
                self.access.check(client, method, base.key_id)
                return self.versions.resolve(base, row, self.keyring.drain_rule(base.key_id))
        for signer in self.keyring:  # keys never rotated: the configured key is the only one
            if signer.address_bytes == address and self.access.may_use(client, signer.key_id) \
                    and not self.versions.of(signer.key_id):
                self.access.check(client, method, signer.key_id)
                return self._active(signer)
        raise KeyNotFound(f"no key for {checksum(address)} is available to this client")

    def evaluate(
        self, caller: Caller, method: str, key_id: str, build: Callable[[], PolicyRequest]
    ) -> Evaluation:
        """Dry run ("EvaluatePolicy"): judge what `build` returns (a transaction, message or
        typed data, parsed as the signing method would) with the caller's policy and its
        budgets as they stand; signs nothing, reserves nothing. Audited as a dry run."""
        identity = client_name = digest = None
        try:
            client, identity = self.access.identify(caller)
            client_name = client.name if client else None
            signer = self._key_for(client, method, key_id).signer
            request = build()
            digest = "0x" + digest_of(request).hex()
            evaluation = self._evaluate(client, signer, request)
        except SignerError as exc:
            self.audit.write([DryRun(
                request_id=caller.request_id, peer=caller.peer, method=method,
            key_id=shown_key_id(key_id),
                identity=identity, client=client_name, digest=digest, status=exc.code,
                reason=str(exc)[:1024],
            )])
            raise
        self.audit.write([DryRun(
            request_id=caller.request_id, peer=caller.peer, method=method,
            key_id=shown_key_id(key_id),
            identity=identity, client=client_name, digest=digest, status="OK",
            decision="allow" if evaluation.allowed else "deny", policy=evaluation.policy,
            rule_id=evaluation.rule_id, reason=evaluation.reason,
        )])
        return evaluation

    def _evaluate(
        self, client: Client | None, signer: WalletSigner, request: PolicyRequest
    ) -> Evaluation:
        return evaluate_policy(self.store, self.clock(), client, signer.address_bytes, request)

    def _audit_denied_read(
        self, caller: Caller, method: str, key_id: str | None, exc: SignerError
    ) -> None:
        request = SigningRequest(self, caller, method, key_id)
        request.fail(exc)


class SigningRequest:
    """One request on its way through the path; the door holds it inside `Application.signing`."""

    def __init__(self, app: Application, caller: Caller, method: str, key_id: str | None) -> None:
        self._app = app
        self.client: Client | None = None
        self.identity: str | None = None
        self.signer: WalletSigner
        self.resolved: Resolved
        self._intent_written = False
        self._reserved = False
        self._signed = False
        self._decision: Decision | None = None
        self._claims: list[BudgetClaim] = []
        # the facts its intent and outcome records carry, gathered on the way
        self.event = new_id()
        self.request_id = caller.request_id
        self._peer = caller.peer
        self._method = method
        self.key_id = None if key_id is None else shown_key_id(key_id)
        self._transaction: dict[str, Any] | None = None
        self._authorization: dict[str, Any] | None = None
        self._policy: str | None = None
        self._rule_id: str | None = None
        self._digest: str | None = None
        self._budgets: tuple[BudgetLine, ...] | None = None
        self._result: str | None = None
        self._notes: dict[str, str] = {}

    @property
    def client_name(self) -> str | None:
        return self.client.name if self.client else None

    def sign_transaction(
        self, tx: transactions.UnsignedTransaction, timeout: float | None
    ) -> SignedTransaction:
        self._transaction = _summary(tx)
        self._check_drain(tx)
        with self._judged(tx, lambda: transactions.signing_hash(tx)):
            signed = self.signer.sign_transaction(tx, timeout, self._write_intent)
            self._signed_result(signed.transaction_hash)
        return signed

    def sign_authorization(
        self, auth: transactions.UnsignedAuthorization, timeout: float | None
    ) -> transactions.Authorization:
        """EIP-7702: audited with the delegate and chain it hands the account to."""
        self._authorization = _authorization_summary(auth)
        self._check_drain(None)
        with self._judged(auth, lambda: transactions.authorization_digest(auth)):
            signed = self.signer.sign_authorization(auth, timeout, self._write_intent)
            self._signed_result(keccak(
                signed.r.to_bytes(32, "big") + signed.s.to_bytes(32, "big")
                + bytes([signed.y_parity])))
        return signed

    def sign_message(self, message: bytes, timeout: float | None) -> SignedDigest:
        self._check_drain(None)
        with self._judged(message, lambda: messages.personal_message_digest(message)):
            signed = self.signer.sign_message(message, timeout, self._write_intent)
            self._signed_result(keccak(signed.signature))
        return signed

    def sign_typed_data(self, typed_data_json: str, timeout: float | None) -> SignedDigest:
        typed = messages.load_typed_data(typed_data_json)  # one parse: policy and digest
        self._check_drain(None)
        with self._judged(typed, lambda: typed.digest):
            signed = self.signer.sign_prepared(typed.digest, timeout, self._write_intent)
            self._signed_result(keccak(signed.signature))
        return signed

    @contextmanager
    def _judged(self, request: PolicyRequest, digest: Callable[[], bytes]) -> Iterator[None]:
        """The client's policy on exactly what will be signed. The budgets it spends are
        reserved with the intent record, in one commit, right before the backend signs
        (`_write_intent`); settled or released with the outcome."""
        policy = self.client.policy if self.client else None
        if policy is None:
            yield
            return
        decision = policy.evaluate(request, self.signer.address_bytes)
        self._policy, self._rule_id = policy.name, decision.rule_id
        labels = (self.client_name or "", policy.name)
        if not decision.allowed:
            metrics.POLICY_DECISIONS.labels(*labels, "deny").inc()
            self._digest = "0x" + digest().hex()
            raise PolicyDenied(decision.reason, policy=policy.name,
                               rule_id=decision.rule_id or "")
        metrics.POLICY_DECISIONS.labels(*labels, "allow").inc()
        self._decision = decision
        self._claims = _claims(self.client_name or "", decision)
        yield

    def _check_drain(self, tx: transactions.UnsignedTransaction | None) -> None:
        """A draining version signs only what its key's `drain` rule allows (then the
        caller's policy and budgets still apply)."""
        resolved = self.resolved
        if not resolved.draining:
            return
        assert resolved.row is not None
        row, active, rule = resolved.row, resolved.active, resolved.drain
        if rule == "any":
            self.note(drain="any")
            return
        head = (f"key {row.key_id!r} version {row.version} ({row.address}) is draining since "
                f"{row.changed_at}")
        if rule == "none" or active is None:
            raise KeyDraining(f"{head} and signs nothing ([keys.{row.key_id}] drain = "
                              f"\"{rule}\")")
        target = f"the active version {active.version} ({active.address})"
        if tx is None:
            raise KeyDraining(f"{head}: it signs only transactions that sweep to {target}, "
                              "not messages, typed data or authorizations")
        why = sweep.sweep_reason(tx, self.signer.address_bytes, bytes.fromhex(active.address[2:]))
        if why is None:
            issued = self._app.store.issued_nonce(tx.chain_id, self.signer.address_bytes)
            if issued is not None and tx.nonce < issued:
                why = f"replacement of nonce {tx.nonce} (issued up to {issued - 1})"
        if why is None:
            raise KeyDraining(
                f"{head}: it signs only the sweep to {target} (native value to it, ERC-20 "
                "transfer or ERC-721/1155 safeTransferFrom to it) and replacements of nonces it "
                "already used")
        self.note(drain=why)

    def note(self, **fields: str) -> None:
        """Add facts to the outcome record (e.g. the JSON-RPC door's submission result)."""
        self._notes.update(fields)

    def _write_intent(self, digest: bytes) -> None:
        """Committed (visible to every replica, budgets reserved) before the backend signs;
        not flushed on its own: the outcome's flush carries it to disk before any signature
        leaves (docs/audit-durability.md)."""
        # again here, right before the backend signs: a freeze issued while the request
        # waited (the JSON-RPC door fills and estimates at the node first) stops it; so does
        # a retirement of this version
        self._app.freeze.check(self.signer.key_id)
        self._app.versions.check_still_signs(self.resolved)
        self._digest = "0x" + digest.hex()
        reserve = None
        if self._claims:
            reserve = Reservation(self.event, self._claims, self._app.clock())
        try:
            uses = self._app.audit.write([self._body("intent")], reserve=reserve, durable=False)
        except BudgetExceeded as exc:
            self._intent_written = True  # written, saying what was asked; nothing reserved
            assert self._decision is not None
            metrics.POLICY_DECISIONS.labels(
                self.client_name or "", self._decision.policy, "budget").inc()
            raise PolicyDenied(_budget_denial(self._decision, exc), policy=self._decision.policy,
                               rule_id=self._decision.rule_id or "") from None
        self._intent_written = True
        self._reserved = bool(self._claims)
        for use in uses:
            metrics.BUDGET_SPENT.labels(self.client_name or "", use.scope.split("/", 1)[-1]).set(
                use.spent / use.limit if use.limit else 1.0)
        if uses:
            self._budgets = tuple(
                BudgetLine(name=u.scope.split("/", 1)[-1], spent=u.spent, limit=u.limit,
                           window_seconds=u.window_seconds)
                for u in uses
            )

    def _signed_result(self, result: bytes) -> None:
        self._signed = True
        self._result = "0x" + result.hex()

    def _body(
        self, kind: Literal["intent", "outcome"], *, decision: str | None = None,
        status: str | None = None, reason: str | None = None, signed: bool | None = None,
    ) -> Signing:
        return Signing(
            kind=kind, event=self.event, request_id=self.request_id, peer=self._peer,
            method=self._method, key_id=self.key_id, client=self.client_name,
            identity=self.identity, transaction=self._transaction,
            authorization=self._authorization, policy=self._policy,
            rule_id=self._rule_id, digest=self._digest,
            budgets=self._budgets if kind == "outcome" else None,
            result=self._result if kind == "outcome" else None, decision=decision,
            status=status, reason=reason, signed=signed,
            notes=dict(self._notes),
        )

    def succeed(self) -> None:
        outcome = self._body("outcome", decision="allow", status="OK", reason="")
        settle = self.event if self._reserved else None
        try:
            self._app.audit.write(self._bodies_with(outcome), settle=settle)
        except StoreUnavailable:
            raise StoreUnavailable(
                "audit log unavailable: a signature was made but is not released because its "
                "record could not be written; retry"
            ) from None

    def fail(self, exc: BaseException) -> None:
        """Record the outcome of a request that raised; never masks the original error."""
        if isinstance(exc, SignerError):
            status, reason = exc.code, str(exc)
        else:
            status, reason = "UNAVAILABLE", "signer fault"
        decision = "deny" if isinstance(exc, _DENIALS) or status == "FAILED_PRECONDITION" else (
            "allow" if self._intent_written else "none"
        )
        outcome = self._body(
            "outcome", decision=decision, status=status, reason=reason[:1024],
            signed=self._signed,
        )
        # a reservation whose signature was never made is given back; one that was is kept
        reserved = self._reserved
        release = self.event if reserved and not self._signed else None
        settle = self.event if reserved and self._signed else None
        try:
            self._app.audit.write(self._bodies_with(outcome), release=release, settle=settle)
        except SignerError:
            log.error(
                "audit: outcome of request %s (%s) could not be recorded",
                self.request_id, status,
            )

    def _bodies_with(self, outcome: Signing) -> list[Signing]:
        if self._intent_written:
            return [outcome]
        return [self._body("intent"), outcome]


def evaluate_policy(
    store: Store, now: float, client: Client | None, self_address: bytes, request: PolicyRequest
) -> Evaluation:
    """The dry run's decision: the client's policy on `request`, then its budgets as the store
    holds them at `now` (the same test a signing request's reservation makes)."""
    policy = client.policy if client else None
    if client is None or policy is None:
        return Evaluation(True, None, None, "no policy: anything the caller's keys and "
                          "methods allow may be signed")
    decision = policy.evaluate(request, self_address)
    budgets = tuple(
        BudgetStatus(
            budget.name,
            store.budget_spent(f"{client.name}/{budget.name}", budget.window_seconds, now),
            budget.limit,
            budget.window_seconds,
            amount,
        )
        for (_, amount), budget in zip(decision.spends, decision.budgets, strict=True)
    )
    for b in budgets:
        if decision.allowed and b.request_spends and b.spent + b.request_spends > b.limit:
            return Evaluation(
                False, policy.name, decision.rule_id,
                _budget_message(decision, b.name, b.spent, b.limit, b.window_seconds,
                                b.request_spends),
                budgets,
            )
    return Evaluation(decision.allowed, policy.name, decision.rule_id, decision.reason, budgets)


def digest_of(request: PolicyRequest) -> bytes:
    if isinstance(request, transactions.UnsignedTransaction):
        return transactions.signing_hash(request)
    if isinstance(request, messages.TypedData):
        return request.digest
    if isinstance(request, transactions.UnsignedAuthorization):
        return transactions.authorization_digest(request)
    return messages.personal_message_digest(request)


def _budget_denial(decision: Decision, exc: BudgetExceeded) -> str:
    use = exc.use
    return _budget_message(decision, use.scope.split("/", 1)[-1], use.spent, use.limit,
                           use.window_seconds, exc.amount)


def _budget_message(
    decision: Decision, budget: str, spent: int, limit: int, window_seconds: int, amount: int
) -> str:
    """One wording for a budget that would go over, whether signing or dry-running."""
    return (
        f"policy {decision.policy}: budget {budget} exhausted: {spent} of {limit} spent in "
        f"the last {_window(window_seconds)}, this request needs {amount} "
        f"(rule {decision.rule_id})"
    )


def _claims(client: str, decision: Decision) -> list[BudgetClaim]:
    """The budgets this allowed request spends, scoped to the client (each agent its own)."""
    return [
        BudgetClaim(f"{client}/{budget.name}", amount, budget.limit, budget.window_seconds)
        for (_, amount), budget in zip(decision.spends, decision.budgets, strict=True)
        if amount > 0
    ]


def _window(seconds: int) -> str:
    """24h, 7d, 30m: as an operator writes a window."""
    if seconds % 86400 == 0 and seconds >= 2 * 86400:
        return f"{seconds // 86400}d"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _summary(tx: transactions.UnsignedTransaction) -> dict[str, Any]:
    """What an operator reads in the audit log: never the calldata itself."""
    return {
        "type": tx.type,
        "chain_id": tx.chain_id,
        "nonce": tx.nonce,
        "to": checksum(tx.to) if tx.to else None,
        "value": str(tx.value),
        "data_bytes": len(tx.data),
        "data_keccak": "0x" + keccak(tx.data).hex() if tx.data else None,
        **({"blobs": len(tx.blob_versioned_hashes)} if tx.blob_versioned_hashes else {}),
        **({"delegates": [checksum(a.address) for a in tx.authorization_list]}
           if tx.authorization_list else {}),
    }


def _authorization_summary(auth: transactions.UnsignedAuthorization) -> dict[str, Any]:
    return {"delegate": checksum(auth.address), "chain_id": auth.chain_id, "nonce": auth.nonce}
