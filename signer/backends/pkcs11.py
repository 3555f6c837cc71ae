"""PKCS#11 HSM backend (python-pkcs11): CKM_ECDSA on secp256k1 keys that never leave the token.

Layers, bottom up:
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

import ctypes
import logging
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

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

# DER of the namedCurve OID 1.3.132.0.10 (secp256k1), as CKA_EC_PARAMS holds it.
SECP256K1_EC_PARAMS = bytes.fromhex("06052b8104000a")
_CKF_OS_LOCKING_OK = 0x2
_CKU_USER = 1
_CKR_USER_ALREADY_LOGGED_IN = 0x100
_CKR_CRYPTOKI_ALREADY_INITIALIZED = 0x191
_LOGGED_IN_STATES = {1, 3}  # CKS_RO_USER_FUNCTIONS, CKS_RW_USER_FUNCTIONS
# A fault handler re-initializes a library at most this often: a token that is gone stays gone
# for a while, and every re-initialization stalls all keys of the library.
MIN_RESET_INTERVAL = 0.25


# --- raw Cryptoki: the calls python-pkcs11 0.10 does not expose -------------------------------

_RV = ctypes.c_ulong
_ULONG = ctypes.c_ulong


class _InitArgs(ctypes.Structure):
    _fields_ = [
        ("CreateMutex", ctypes.c_void_p),
        ("DestroyMutex", ctypes.c_void_p),
        ("LockMutex", ctypes.c_void_p),
        ("UnlockMutex", ctypes.c_void_p),
        ("flags", _ULONG),
        ("pReserved", ctypes.c_void_p),
    ]


class _SessionInfo(ctypes.Structure):
    _fields_ = [("slotID", _ULONG), ("state", _ULONG), ("flags", _ULONG), ("error", _ULONG)]


_FN_PTR = ctypes.CFUNCTYPE(_RV, ctypes.c_void_p)
_FN_HANDLE = ctypes.CFUNCTYPE(_RV, _ULONG)
_FN_SESSION_INFO = ctypes.CFUNCTYPE(_RV, _ULONG, ctypes.POINTER(_SessionInfo))
_FN_LOGIN = ctypes.CFUNCTYPE(_RV, _ULONG, _ULONG, ctypes.c_char_p, _ULONG)


class _Mechanism(ctypes.Structure):
    _fields_ = [("mechanism", _ULONG), ("pParameter", ctypes.c_void_p), ("ulParameterLen", _ULONG)]


_FN_SIGN_INIT = ctypes.CFUNCTYPE(_RV, _ULONG, ctypes.POINTER(_Mechanism), _ULONG)
_FN_SIGN = ctypes.CFUNCTYPE(_RV, _ULONG, ctypes.c_char_p, _ULONG, ctypes.c_void_p,
                            ctypes.POINTER(_ULONG))
_CKM_ECDSA = 0x1041
_SIGNATURE_LENGTH = 64  # r || s on a 256-bit curve


class _FunctionList(ctypes.Structure):
    # CK_FUNCTION_LIST up to C_Logout, in the order of the PKCS#11 2.40 header.
    _fields_ = [
        ("version", ctypes.c_ubyte * 2),
        ("C_Initialize", _FN_PTR),
        ("C_Finalize", _FN_PTR),
        *[(name, ctypes.c_void_p) for name in (
            "C_GetInfo", "C_GetFunctionList", "C_GetSlotList", "C_GetSlotInfo", "C_GetTokenInfo",
            "C_GetMechanismList", "C_GetMechanismInfo", "C_InitToken", "C_InitPIN", "C_SetPIN",
            "C_OpenSession")],
        ("C_CloseSession", _FN_HANDLE),
        ("C_CloseAllSessions", ctypes.c_void_p),
        ("C_GetSessionInfo", _FN_SESSION_INFO),
        ("C_GetOperationState", ctypes.c_void_p),
        ("C_SetOperationState", ctypes.c_void_p),
        ("C_Login", _FN_LOGIN),
        ("C_Logout", _FN_HANDLE),
        *[(name, ctypes.c_void_p) for name in (
            "C_CreateObject", "C_CopyObject", "C_DestroyObject", "C_GetObjectSize",
            "C_GetAttributeValue", "C_SetAttributeValue", "C_FindObjectsInit", "C_FindObjects",
            "C_FindObjectsFinal", "C_EncryptInit", "C_Encrypt", "C_EncryptUpdate",
            "C_EncryptFinal", "C_DecryptInit", "C_Decrypt", "C_DecryptUpdate", "C_DecryptFinal",
            "C_DigestInit", "C_Digest", "C_DigestUpdate", "C_DigestKey", "C_DigestFinal")],
        ("C_SignInit", _FN_SIGN_INIT),
        ("C_Sign", _FN_SIGN),
    ]


class _Cryptoki:
    """The module's function list, loaded by the dynamic linker alongside python-pkcs11's copy
    (dlopen of one path yields one instance, so both act on the same library state)."""

    def __init__(self, module: str) -> None:
        self._dll = ctypes.CDLL(module)
        table = ctypes.POINTER(_FunctionList)()
        rv = self._dll.C_GetFunctionList(ctypes.byref(table))
        if rv != 0:
            raise ConfigError(f"pkcs11 module {module}: C_GetFunctionList failed (0x{rv:x})")
        self._fn = table.contents

    def reinitialize_with_os_locking(self) -> None:
        """python-pkcs11 calls C_Initialize(NULL), which tells the library no thread will call
        it concurrently (SoftHSM then drops its locks, and parallel C_Sign corrupts its heap).
        Finalize and initialize again with CKF_OS_LOCKING_OK, before any session exists."""
        self._check(self._fn.C_Finalize(None), "C_Finalize")
        args = _InitArgs(flags=_CKF_OS_LOCKING_OK)
        self._check(self._fn.C_Initialize(ctypes.addressof(args)), "C_Initialize")

    def finalize(self) -> None:
        self._fn.C_Finalize(None)

    def login(self, session_handle: int, pin: str) -> None:
        data = pin.encode("utf-8")
        rv = self._fn.C_Login(session_handle, _CKU_USER, data, len(data))
        if rv in (0, _CKR_USER_ALREADY_LOGGED_IN):
            return
        if rv in _PIN_REFUSED:
            raise PermissionDenied(f"pkcs11: login refused: {_PIN_REFUSED[rv]}")
        if rv in _TOKEN_GONE:
            raise _TokenMissing(f"pkcs11: login failed: token gone (0x{rv:x})")
        raise BackendUnavailable(f"pkcs11: login failed (0x{rv:x})")

    def logout(self, session_handle: int) -> int:
        return int(self._fn.C_Logout(session_handle))

    def is_logged_in(self, session_handle: int) -> bool:
        info = _SessionInfo()
        rv = self._fn.C_GetSessionInfo(session_handle, ctypes.byref(info))
        return rv == 0 and info.state in _LOGGED_IN_STATES

    def sign_ecdsa(self, session_handle: int, key_handle: int, digest: bytes) -> bytes:
        """C_SignInit + one C_Sign into a buffer already large enough. python-pkcs11 would ask
        for the length first (a second C_Sign) and take a per-session lock that the pool makes
        redundant. ctypes releases the GIL for both calls."""
        mechanism = _Mechanism(_CKM_ECDSA, None, 0)
        rv = self._fn.C_SignInit(session_handle, ctypes.byref(mechanism), key_handle)
        if rv != 0:
            raise CryptokiFault(rv, "C_SignInit")
        out = ctypes.create_string_buffer(_SIGNATURE_LENGTH)
        length = _ULONG(_SIGNATURE_LENGTH)
        rv = self._fn.C_Sign(session_handle, digest, len(digest), ctypes.addressof(out),
                             ctypes.byref(length))
        if rv != 0:
            raise CryptokiFault(rv, "C_Sign")
        return out.raw[: length.value]

    def close_session(self, session_handle: int) -> None:
        """C_CloseSession without python-pkcs11's C_Logout first (which would log out every
        session of the process); errors are ignored: the session may already be gone."""
        self._fn.C_CloseSession(session_handle)

    @staticmethod
    def _check(rv: int, call: str) -> None:
        if rv != 0:
            raise BackendUnavailable(f"pkcs11: {call} failed (0x{rv:x})")


class CryptokiFault(Exception):
    """A CK_RV other than CKR_OK from a raw call."""

    def __init__(self, rv: int, call: str) -> None:
        super().__init__(f"{call}: {_RV_NAMES.get(rv, f'CKR_0x{rv:x}')}")
        self.rv = rv


# Faults after which a fresh session, a new login or a re-initialized library may succeed.
_RV_TRANSIENT = {
    0x2: "CKR_HOST_MEMORY", 0x3: "CKR_SLOT_ID_INVALID", 0x5: "CKR_GENERAL_ERROR",
    0x6: "CKR_FUNCTION_FAILED", 0x30: "CKR_DEVICE_ERROR", 0x31: "CKR_DEVICE_MEMORY",
    0x32: "CKR_DEVICE_REMOVED", 0x60: "CKR_KEY_HANDLE_INVALID", 0x82: "CKR_OBJECT_HANDLE_INVALID",
    0x90: "CKR_OPERATION_ACTIVE", 0xB0: "CKR_SESSION_CLOSED", 0xB3: "CKR_SESSION_HANDLE_INVALID",
    0xE0: "CKR_TOKEN_NOT_PRESENT", 0xE1: "CKR_TOKEN_NOT_RECOGNIZED",
    0x101: "CKR_USER_NOT_LOGGED_IN", 0x190: "CKR_CRYPTOKI_NOT_INITIALIZED",
}
# The key may not do this: no retry will help.
_RV_REFUSED = {0x63: "CKR_KEY_TYPE_INCONSISTENT", 0x68: "CKR_KEY_FUNCTION_NOT_PERMITTED",
               0x70: "CKR_MECHANISM_INVALID", 0x71: "CKR_MECHANISM_PARAM_INVALID"}
_RV_NAMES = {**_RV_TRANSIENT, **_RV_REFUSED}


_PIN_REFUSED = {0xA0: "PIN incorrect", 0xA3: "PIN expired", 0xA4: "PIN locked"}
# CKR_GENERAL_ERROR, DEVICE_REMOVED, SESSION_HANDLE_INVALID, TOKEN_NOT_PRESENT, SLOT_ID_INVALID,
# and USER_PIN_NOT_INITIALIZED: a token being (re-)initialized has no user PIN for a moment.
_TOKEN_GONE = {0x5, 0x32, 0xB3, 0xE0, 0x3, 0x102}


# --- library: loaded once per module path ------------------------------------------------------

class _Gate:
    """Many callers inside the library, or one re-initializer alone; the re-initializer goes
    first once it asks, so a stream of signing calls cannot starve it."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._inside = 0
        self._exclusive = False
        self._waiting = 0

    @contextmanager
    def shared(self) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                self._cond.wait()
            self._inside += 1
        try:
            yield
        finally:
            with self._cond:
                self._inside -= 1
                if self._inside == 0:
                    self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._inside:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()


class Library:
    """A PKCS#11 module initialized for concurrent use; `epoch` counts re-initializations."""

    def __init__(self, module: str) -> None:
        import pkcs11

        self.module = module
        self.gate = _Gate()
        self.epoch = 0
        self.users = 0
        self._last_reset = 0.0
        if not Path(module).is_file():
            raise ConfigError(f"pkcs11 module {module} does not exist (is softhsm2 installed?)")
        try:
            self.lib: Any = pkcs11.lib(module)
        except pkcs11.PKCS11Error as exc:
            raise ConfigError(f"pkcs11 module {module}: cannot load: {_describe(exc)}") from None
        self.raw = _Cryptoki(module)
        self.raw.reinitialize_with_os_locking()

    def find_token(self, label: str) -> Any:
        import pkcs11

        # get_tokens() gives up on the first slot whose token vanished; look at each slot.
        found = []
        for slot in self.lib.get_slots(token_present=True):
            try:
                token = slot.get_token()
            except pkcs11.PKCS11Error:
                continue
            if token.label == label:
                found.append(token)
        if not found:
            raise _TokenMissing(f"no token labelled {label!r} in {self.module}")
        if len(found) > 1:
            raise ConfigError(f"{len(found)} tokens are labelled {label!r} in {self.module}")
        return found[0]

    def reset(self, seen_epoch: int) -> None:
        """Finalize and re-initialize, unless another thread already did since `seen_epoch`."""
        with self.gate.exclusive():
            if self.epoch != seen_epoch:
                return
            if time.monotonic() - self._last_reset < MIN_RESET_INTERVAL:
                raise BackendUnavailable("pkcs11: token unavailable (re-initialized just now)")
            log.warning("pkcs11 module %s: re-initializing after a token fault", self.module)
            self.raw.reinitialize_with_os_locking()
            self._last_reset = time.monotonic()
            self.epoch += 1

    def unload(self) -> None:
        import pkcs11

        pkcs11.unload(self.module)


class _TokenMissing(BackendUnavailable):
    """The token is not (or no longer) visible to this process; `epoch`: the library epoch in
    which it was looked for (a re-initialization after that one may show it again)."""

    epoch = -1


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


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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

    @classmethod
    def open(cls, key_id: str, cfg: Pkcs11KeyConfig) -> Pkcs11Backend:
        pin = read_pin(key_id, cfg.pin_env, cfg.pin_file)
        selector = KeySelector(cfg.key_label, bytes.fromhex(cfg.key_id) if cfg.key_id else None)
        try:
            connection = connect(cfg.module, cfg.token_label, pin)
        except SignerError as exc:
            raise ConfigError(f"keys.{key_id}: {exc}") from None
        try:
            public_key = cls._startup_public_key(connection, selector)
        except SignerError as exc:
            disconnect(connection)
            raise ConfigError(f"keys.{key_id}: {exc}") from None
        log.info("key %r: pkcs11 token %r, key %s", key_id, cfg.token_label, selector)
        return cls(key_id, connection, selector, public_key, cfg.pool_size)

    @staticmethod
    def _startup_public_key(connection: TokenConnection, selector: KeySelector) -> bytes:
        import pkcs11
        from pkcs11 import Attribute, ObjectClass

        with connection.library.gate.shared():
            session = connection.open_session()
            try:
                private = find_one(session, ObjectClass.PRIVATE_KEY, selector.attrs())
                if private is None:
                    raise FailedPrecondition(f"no private key with {selector} on the token")
                if not private[Attribute.SIGN]:
                    raise FailedPrecondition(f"private key with {selector} may not sign")
                return read_public_key(session, selector)
            except pkcs11.PKCS11Error as exc:
                raise translate(exc, "reading the key") from None
            finally:
                session.close()

    @property
    def public_key(self) -> bytes:
        return self._public_key

    def sign_digest(self, digest: bytes, timeout: float | None) -> bytes:
        """One C_Sign on a pooled session; after a fault, recover and retry once."""
        import pkcs11

        if len(digest) != 32:  # SoftHSM signs any length: never let a non-digest through
            raise ValueError("sign_digest takes exactly 32 bytes")
        deadline = None if timeout is None else time.monotonic() + timeout
        for attempt in (1, 2):
            slot = self._acquire(deadline)
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
            self._pool.put(slot)
            return signature
        raise AssertionError("unreachable")  # pragma: no cover

    def _signer_error(self, exc: Exception) -> SignerError:
        if isinstance(exc, _KeyMissing):
            return exc
        if isinstance(exc, CryptokiFault):
            what = f"pkcs11: key {self.key_id!r}: {exc}"
            return FailedPrecondition(what) if exc.rv in _RV_REFUSED else BackendUnavailable(what)
        return translate(exc, f"key {self.key_id!r}: sign")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        library = self._connection.library
        # Wait for in-flight calls outside the gate: one of them may need it to recover.
        slots = [self._pool.get() for _ in range(self._pool_size)]
        with library.gate.shared():
            for slot in slots:
                if slot is not None and slot.epoch == library.epoch:
                    library.raw.close_session(slot.session.handle)
        disconnect(self._connection)

    def __repr__(self) -> str:
        return f"Pkcs11Backend({self.key_id!r}, token {self._connection.token_label!r})"

    def _acquire(self, deadline: float | None) -> _Slot | None:
        if self._closed:
            raise BackendUnavailable(f"key {self.key_id!r}: backend is closed")
        try:
            if deadline is None:
                return self._pool.get()
            return self._pool.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise DeadlineExceeded(
                f"key {self.key_id!r}: all {self._pool_size} HSM sessions busy until the deadline"
            ) from None

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
        self._pool.put(None)

    def _recover(self, generation: int, deadline: float | None) -> None:
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded(f"key {self.key_id!r}: deadline passed during HSM recovery")
        self._connection.recover(generation)


def read_pin(key_id: str, pin_env: str | None, pin_file: Path | None) -> str:
    """The user PIN from an environment variable or a file; errors name the source only."""
    return read_secret(f"keys.{key_id}", "PIN", pin_env, pin_file)
