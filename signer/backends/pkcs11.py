"""PKCS#11 HSM backend (python-pkcs11): CKM_ECDSA on secp256k1 keys that never leave the token.

Layers, bottom up (the first two in `pkcs11_cryptoki`, the others here):
- `_Cryptoki`: the few raw calls python-pkcs11 does not offer (initialize with OS locking, login,
  session state), through the library's own function list.
- `Library`: one loaded, thread-safe module per path; a reader/writer gate lets a fault handler
  finalize and re-initialize it (SoftHSM only sees re-created tokens after C_Initialize) while
  no call is inside the library.
- `TokenConnection`: one per (module, token label): one login for the life of the library, and a
  generation number bumped on every recovery so stale sessions and key handles are re-made.
- `Pkcs11Backend`: a pool of sessions per key, each with its key handle; the hot path is one
  C_SignInit + C_Sign on a session no other thread is using.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from signer import metrics
from signer.backends.pkcs11_cryptoki import (
    _RV_REFUSED,
    CryptokiFault,
    Library,
    _describe,
    _TokenMissing,
)
from signer.config import Pkcs11KeyConfig
from signer.errors import (
    BackendUnavailable,
    ConfigError,
    DeadlineExceeded,
    FailedPrecondition,
    PermissionDenied,
    SignerError,
)
from signer.eth.signature import SignatureFormat
from signer.secret_sources import read_secret

log = logging.getLogger(__name__)

# close() waits this long for sessions in use by signing calls, then leaves them to the exit.
CLOSE_TIMEOUT_SECONDS = 5.0

# DER of the namedCurve OID 1.3.132.0.10 (secp256k1), as CKA_EC_PARAMS holds it.
SECP256K1_EC_PARAMS = bytes.fromhex("06052b8104000a")


class _KeyMissing(BackendUnavailable):
    """The key is not on the token (any more): worth a recovery, it may have been re-created."""


# --- token connection: one login per (module, token) -------------------------------------------

class TokenConnection:
    """Holds the login. Sessions are opened without a PIN and share it; the anchor session
    that logged in stays open for the life of the connection, because closing a logged-in
    session logs out every session of the process."""

    def __init__(self, library: Library, token_label: str, pin: str) -> None:
        self.library = library
        self.token_label = token_label
        self._pin = pin
        self.users = 0
        self.generation = 0
        self.token: Any = None
        self._anchor: Any = None
        self._anchor_epoch = -1
        self._lock = threading.Lock()
        self._login()

    def __repr__(self) -> str:
        return f"TokenConnection({self.library.module!r}, {self.token_label!r}, <PIN redacted>)"

    def same_pin(self, pin: str) -> bool:
        return pin == self._pin

    def open_session(self, rw: bool = False) -> Any:
        """A new session sharing the login; caller holds `library.gate.shared()`."""
        return self.token.open(rw=rw)

    @contextmanager
    def session(self, *, rw: bool = False, during: str | None = None) -> Iterator[Any]:
        """A session sharing the login, for one piece of work: the library's gate is held
        while it is open, it is closed after, and python-pkcs11 errors raised inside become
        signer errors (`during` names what was being done)."""
        import pkcs11

        with self.library.gate.shared():
            session = self.open_session(rw=rw)
            try:
                yield session
            except pkcs11.PKCS11Error as exc:
                raise translate(exc, during or f"token {self.token_label!r}") from None
            finally:
                session.close()

    def recover(self, seen_generation: int) -> None:
        """After a fault: keep the login if it is alive, else log in again (re-initializing the
        library if the token is gone); bump the generation so every key is found again."""
        with self._lock:
            if self.generation != seen_generation:
                return  # another thread has recovered already
            if not self._anchor_alive():
                self._anchor = None
                try:
                    self._login()
                except _TokenMissing as missing:
                    self.library.reset(missing.epoch)
                    self._login()
            self.generation += 1

    def close(self) -> None:
        with self._lock, self.library.gate.shared():
            if self._anchor is not None and self._anchor_epoch == self.library.epoch:
                self.library.raw.logout(self._anchor.handle)
                self.library.raw.close_session(self._anchor.handle)
            self._anchor = None

    def _anchor_alive(self) -> bool:
        if self._anchor is None or self._anchor_epoch != self.library.epoch:
            return False
        with self.library.gate.shared():
            if self.library.raw.is_logged_in(self._anchor.handle):
                # Logged in, but a token deleted underneath still answers from memory: check
                # that the token is still listed as the same one.
                try:
                    token = self.library.find_token(self.token_label)
                except _TokenMissing:
                    return False
                return bool(token.serial == self.token.serial)
            # Logged out underneath: this session holds no login any more, closing it is safe.
            self.library.raw.close_session(self._anchor.handle)
            return False

    def _login(self) -> None:
        import pkcs11

        with self.library.gate.shared():
            epoch = self.library.epoch
            try:
                token = self.library.find_token(self.token_label)
                anchor = token.open()
                self.library.raw.login(anchor.handle, self._pin)
            except _TokenMissing as exc:
                exc.epoch = epoch
                raise
            except (pkcs11.TokenNotPresent, pkcs11.TokenNotRecognised, pkcs11.DeviceRemoved,
                    pkcs11.SlotIDInvalid, pkcs11.GeneralError) as exc:
                gone = _TokenMissing(f"token {self.token_label!r}: {_describe(exc)}")
                gone.epoch = epoch
                raise gone from None
            except pkcs11.PKCS11Error as exc:
                raise translate(exc, f"token {self.token_label!r}: login") from None
        self.token, self._anchor, self._anchor_epoch = token, anchor, epoch


# --- process-wide registry ---------------------------------------------------------------------

_registry_lock = threading.Lock()
_libraries: dict[str, Library] = {}
_connections: dict[tuple[str, str], TokenConnection] = {}


def connect(module: Path, token_label: str, pin: str) -> TokenConnection:
    """The shared connection to a token, logging in on first use; pair with `disconnect`."""
    path = str(module)
    with _registry_lock:
        library = _libraries.get(path)
        if library is None:
            library = _libraries[path] = Library(path)
        connection = _connections.get((path, token_label))
        try:
            if connection is None:
                connection = TokenConnection(library, token_label, pin)
                _connections[(path, token_label)] = connection
                library.users += 1
            elif not connection.same_pin(pin):
                raise ConfigError(f"token {token_label!r} is configured with two different PINs")
        except BaseException:
            if library.users == 0:
                del _libraries[path]
                library.unload()
            raise
        connection.users += 1
        return connection


@contextmanager
def open_session(module: Path, token_label: str, pin: str, *, rw: bool = False) -> Iterator[Any]:
    """One session on a token for one-off work (provisioning, set-up, tests): connects (logging
    in on first use), yields a session as `TokenConnection.session` does, then disconnects."""
    connection = connect(module, token_label, pin)
    try:
        with connection.session(rw=rw) as session:
            yield session
    finally:
        disconnect(connection)


def disconnect(connection: TokenConnection) -> None:
    """Drop one user; the last one logs out, and the library's last token finalizes it (so a
    later connect reads SOFTHSM2_CONF again)."""
    with _registry_lock:
        connection.users -= 1
        if connection.users > 0:
            return
        library = connection.library
        del _connections[(library.module, connection.token_label)]
        connection.close()
        library.users -= 1
        if library.users == 0:
            del _libraries[library.module]
            library.unload()


# --- error translation -------------------------------------------------------------------------

def translate(exc: Exception, during: str) -> SignerError:
    """A signer error for a python-pkcs11 exception; messages name the class, never a PIN."""
    import pkcs11

    what = f"pkcs11: {during}: {_describe(exc)}"
    if isinstance(exc, pkcs11.PinIncorrect | pkcs11.PinLocked | pkcs11.PinExpired |
                  pkcs11.PinInvalid | pkcs11.PinLenRange | pkcs11.FunctionRejected):
        return PermissionDenied(what)
    if isinstance(exc, pkcs11.MechanismInvalid | pkcs11.MechanismParamInvalid |
                  pkcs11.KeyTypeInconsistent):
        return FailedPrecondition(what)
    return BackendUnavailable(what)




# --- key lookup ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class KeySelector:
    label: str | None
    id: bytes | None

    def attrs(self) -> dict[Any, Any]:
        from pkcs11 import Attribute, KeyType

        found: dict[Any, Any] = {Attribute.KEY_TYPE: KeyType.EC}
        if self.label is not None:
            found[Attribute.LABEL] = self.label
        if self.id is not None:
            found[Attribute.ID] = self.id
        return found

    def __str__(self) -> str:
        parts = [f"label {self.label!r}"] if self.label is not None else []
        parts += [f"id {self.id.hex()}"] if self.id is not None else []
        return " and ".join(parts)


def find_one(session: Any, object_class: Any, attrs: dict[Any, Any]) -> Any | None:
    """The single object matching, None if absent; the search is always run to its end
    (an unfinished search keeps the session locked)."""
    from pkcs11 import Attribute

    found = list(session.get_objects({**attrs, Attribute.CLASS: object_class}))
    if len(found) > 1:
        raise FailedPrecondition(f"pkcs11: {len(found)} keys match {attrs_text(attrs)}")
    return found[0] if found else None


def attrs_text(attrs: dict[Any, Any]) -> str:
    from pkcs11 import Attribute

    label, key_id = attrs.get(Attribute.LABEL), attrs.get(Attribute.ID)
    return str(KeySelector(label, key_id))


def ec_point_to_sec1(value: bytes) -> bytes:
    """CKA_EC_POINT as a 65-byte uncompressed point: SoftHSM wraps it in a DER OCTET STRING
    (04 41 04...), PKCS#11 2.40 allows the raw point, which other tokens return."""
    if len(value) == 65 and value[0] == 0x04:
        return bytes(value)
    if len(value) == 67 and value[:2] == b"\x04\x41" and value[2] == 0x04:
        return bytes(value[2:])
    raise FailedPrecondition(
        f"pkcs11: CKA_EC_POINT is not an uncompressed secp256k1 point ({len(value)} bytes)"
    )


def read_public_key(session: Any, selector: KeySelector) -> bytes:
    """The key's public point from its public key object, after checking the curve."""
    from pkcs11 import Attribute, ObjectClass

    public = find_one(session, ObjectClass.PUBLIC_KEY, selector.attrs())
    if public is None:
        raise FailedPrecondition(
            f"pkcs11: no public key object with {selector} (import keys with "
            "`wallet-signer keys import`, which stores one)"
        )
    if bytes(public[Attribute.EC_PARAMS]) != SECP256K1_EC_PARAMS:
        raise FailedPrecondition(f"pkcs11: key with {selector} is not on secp256k1")
    return ec_point_to_sec1(bytes(public[Attribute.EC_POINT]))


# --- the backend ---------------------------------------------------------------------------------

@dataclass
class _Slot:
    session: Any
    key: Any
    generation: int
    epoch: int


class Pkcs11Backend:
    name: ClassVar[str] = "pkcs11"
    signature_format: ClassVar[SignatureFormat] = "raw"

    def __init__(self, key_id: str, connection: TokenConnection, selector: KeySelector,
                 public_key: bytes, pool_size: int) -> None:
        self.key_id = key_id
        self._connection = connection
        self._selector = selector
        self._public_key = public_key
        # One entry per session this key may have; None means "not opened yet / discarded".
        self._pool: queue.LifoQueue[_Slot | None] = queue.LifoQueue()
        for _ in range(pool_size):
            self._pool.put(None)
        self._pool_size = pool_size
        self._closed = False
        self._closed_sessions = 0  # close() may time out and be called again to finish
        metrics.HSM_SESSIONS.labels(key_id).set(pool_size)
        self._in_use = metrics.HSM_SESSIONS_IN_USE.labels(key_id)
        self._waiters = metrics.HSM_SESSION_WAITERS.labels(key_id)

    @classmethod
    def open(cls, key_id: str, cfg: Pkcs11KeyConfig) -> Pkcs11Backend:
        pin = read_pin(key_id, cfg.pin_env, cfg.pin_file)
        selector = KeySelector(cfg.key_label, bytes.fromhex(cfg.key_id) if cfg.key_id else None)
        # Errors keep their kind (a wrong PIN is PERMISSION_DENIED, a missing token
        # UNAVAILABLE, as KmsBackend.open's are) and name the key.
        try:
            connection = connect(cfg.module, cfg.token_label, pin)
        except SignerError as exc:
            raise type(exc)(f"keys.{key_id}: {exc}") from None
        try:
            public_key = cls._startup_public_key(connection, selector)
        except SignerError as exc:
            disconnect(connection)
            raise type(exc)(f"keys.{key_id}: {exc}") from None
        log.info("key %r: pkcs11 token %r, key %s", key_id, cfg.token_label, selector)
        return cls(key_id, connection, selector, public_key, cfg.pool_size)

    @staticmethod
    def _startup_public_key(connection: TokenConnection, selector: KeySelector) -> bytes:
        from pkcs11 import Attribute, ObjectClass

        with connection.session(during="reading the key") as session:
            private = find_one(session, ObjectClass.PRIVATE_KEY, selector.attrs())
            if private is None:
                raise FailedPrecondition(f"no private key with {selector} on the token")
            if not private[Attribute.SIGN]:
                raise FailedPrecondition(f"private key with {selector} may not sign")
            return read_public_key(session, selector)

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign_digest(self, digest: bytes, timeout: float | None) -> bytes:
        """One C_Sign on a pooled session; after a fault, recover and retry once."""
        import pkcs11

        if len(digest) != 32:  # SoftHSM signs any length: never let a non-digest through
            raise ValueError("sign_digest takes exactly 32 bytes")
        if timeout is not None and timeout <= 0:
            raise self._too_late("before signing")
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in (1, 2):
            slot = self._acquire(deadline)
            if deadline is not None and time.monotonic() >= deadline:
                self._release(slot)  # never sign for a caller who has given up
                raise self._too_late("while waiting for an HSM session")
            library = self._connection.library
            generation = self._connection.generation
            try:
                with library.gate.shared():
                    slot = self._fresh(slot)
                    generation = slot.generation
                    signature = library.raw.sign_ecdsa(slot.session.handle, slot.key.handle, digest)
            except (pkcs11.PKCS11Error, CryptokiFault, _KeyMissing) as exc:
                self._discard(slot)
                error = self._signer_error(exc)
                if not isinstance(error, BackendUnavailable) or attempt == 2:
                    raise error from None
                log.warning("key %r: %s; recovering", self.key_id, error)
                self._recover(generation, deadline)
                continue
            except BaseException:
                self._discard(slot)
                raise
            self._release(slot)
            return signature
        raise AssertionError("unreachable")  # pragma: no cover

    def _too_late(self, when: str) -> DeadlineExceeded:
        return DeadlineExceeded(
            f"key {self.key_id!r}: the caller's deadline passed {when}; nothing was signed"
        )

    def _signer_error(self, exc: Exception) -> SignerError:
        if isinstance(exc, _KeyMissing):
            return exc
        if isinstance(exc, CryptokiFault):
            what = f"pkcs11: key {self.key_id!r}: {exc}"
            return FailedPrecondition(what) if exc.rv in _RV_REFUSED else BackendUnavailable(what)
        return translate(exc, f"key {self.key_id!r}: sign")

    def close(self, timeout: float = CLOSE_TIMEOUT_SECONDS) -> None:
        """Close the sessions and drop the login, waiting at most `timeout` seconds for calls
        in flight; sessions still busy then are left open (closing one inside C_Sign would
        crash SoftHSM) and so is the login, until the process exits or close() is called
        again."""
        if self._closed_sessions == self._pool_size:
            return
        self._closed = True  # no new call takes a session
        library = self._connection.library
        deadline = time.monotonic() + timeout
        # Wait for in-flight calls outside the gate: one of them may need it to recover.
        slots: list[_Slot | None] = []
        try:
            while self._closed_sessions + len(slots) < self._pool_size:
                slots.append(self._pool.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            log.warning("key %r: %d HSM session(s) still signing after %.1fs; leaving them open",
                        self.key_id, self._pool_size - self._closed_sessions - len(slots),
                        timeout)
        with library.gate.shared():
            for slot in slots:
                if slot is not None and slot.epoch == library.epoch:
                    library.raw.close_session(slot.session.handle)
        self._closed_sessions += len(slots)
        if self._closed_sessions == self._pool_size:
            disconnect(self._connection)

    def __repr__(self) -> str:
        return f"Pkcs11Backend({self.key_id!r}, token {self._connection.token_label!r})"

    def _acquire(self, deadline: float | None) -> _Slot | None:
        if self._closed:
            raise BackendUnavailable(f"key {self.key_id!r}: backend is closed")
        self._waiters.inc()
        try:
            if deadline is None:
                slot = self._pool.get()
            else:
                slot = self._pool.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise DeadlineExceeded(
                f"key {self.key_id!r}: all {self._pool_size} HSM sessions busy until the "
                "deadline; nothing was signed"
            ) from None
        finally:
            self._waiters.dec()
        self._in_use.inc()
        return slot

    def _release(self, slot: _Slot | None) -> None:
        self._in_use.dec()
        self._pool.put(slot)

    def _fresh(self, slot: _Slot | None) -> _Slot:
        """The slot itself if its session and key handle are current, else a new session with
        the key found again; a key whose public key changed is refused. Holds the gate."""
        connection, library = self._connection, self._connection.library
        if slot is not None and slot.generation == connection.generation and \
                slot.epoch == library.epoch:
            return slot
        if slot is not None and slot.epoch == library.epoch:
            library.raw.close_session(slot.session.handle)
            slot.epoch = -1  # closed: _discard must not close the handle again
        generation = connection.generation
        session = connection.open_session()
        try:
            from pkcs11 import ObjectClass

            key = find_one(session, ObjectClass.PRIVATE_KEY, self._selector.attrs())
            if key is None:
                raise _KeyMissing(
                    f"pkcs11: key {self.key_id!r} ({self._selector}) is not on the token"
                )
            if slot is not None or generation > 0:
                self._check_same_key(session)
        except BaseException:
            library.raw.close_session(session.handle)
            raise
        return _Slot(session, key, generation, library.epoch)

    def _check_same_key(self, session: Any) -> None:
        """After any recovery: a signer must never silently change its address."""
        from pkcs11 import ObjectClass

        if find_one(session, ObjectClass.PUBLIC_KEY, self._selector.attrs()) is None:
            # e.g. a key being imported: its private object exists, its public one not yet
            raise _KeyMissing(f"pkcs11: key {self.key_id!r}: no public key object (yet)")
        public_key = read_public_key(session, self._selector)
        if public_key != self._public_key:
            log.error(
                "key %r: the token now holds a DIFFERENT key under %s; refusing to sign",
                self.key_id, self._selector,
            )
            raise FailedPrecondition(
                f"key {self.key_id!r}: the token's key ({self._selector}) is not the key this "
                "service started with; refusing to sign (restart after checking the token)"
            )

    def _discard(self, slot: _Slot | None) -> None:
        """Return an empty entry: the next caller opens a fresh session."""
        if slot is not None:
            library = self._connection.library
            if slot.epoch == library.epoch:
                with library.gate.shared():
                    library.raw.close_session(slot.session.handle)
        self._release(None)

    def _recover(self, generation: int, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded(f"key {self.key_id!r}: deadline passed during HSM recovery")
        self._connection.recover(generation)


def read_pin(key_id: str, pin_env: str | None, pin_file: Path | None) -> str:
    """The user PIN from an environment variable or a file; errors name the source only."""
    return read_secret(f"keys.{key_id}", "PIN", pin_env, pin_file)
