"""Raw Cryptoki for the PKCS#11 backend, and one initialized `Library` per module path.

It exists because python-pkcs11 0.10 does not expose what the backend needs: initializing the
module with CKF_OS_LOCKING_OK, a session's login state, or a single-call C_Sign. These calls go
through the module's own function list; python-pkcs11 still does everything else.
"""

from __future__ import annotations

import ctypes
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from signer.errors import BackendUnavailable, ConfigError, PermissionDenied

log = logging.getLogger(__name__)

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


def _describe(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
