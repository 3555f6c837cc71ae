"""Who may do what: client identities from certificates, each client's keys and methods, and
the compiled signing policy that decides what it may sign.

With no `[clients]` configured the service is open (every caller may use every key): the
development default on loopback. With clients, every call must come with a verified client
certificate whose identity names exactly one client.
"""

import functools
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography import x509
from cryptography.x509.oid import NameOID

from signer.app.caller import Caller
from signer.config import ClientConfig
from signer.errors import AccessDenied, Unauthenticated
from signer.policy import Policy, PolicyConfig

log = logging.getLogger(__name__)

ALL_KEYS = "*"


@dataclass(frozen=True, slots=True)
class Client:
    name: str
    identity: str
    keys: frozenset[str]  # contains "*" for every key
    methods: frozenset[str]
    policy: Policy | None = None  # None: anything its keys and methods allow

    def may_use(self, key_id: str) -> bool:
        return ALL_KEYS in self.keys or key_id in self.keys


@functools.lru_cache(maxsize=1024)
def certificate_identities(pem: bytes) -> tuple[str, ...]:
    """The identities a certificate claims: its URI SANs, else its DNS SANs, else its CN."""
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    if san is not None:
        for kind in (x509.UniformResourceIdentifier, x509.DNSName):
            names = san.get_values_for_type(kind)
            if names:
                return tuple(str(n) for n in names)
    return tuple(
        str(a.value) for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    )


class AccessControl:
    """Immutable once built: a reload builds a new one and swaps it in whole."""

    def __init__(
        self,
        clients: Mapping[str, ClientConfig],
        policies: Mapping[str, PolicyConfig] | None = None,
    ) -> None:
        # Each policy was compiled when its config was validated; this only names them.
        compiled = {name: Policy.compile(name, p) for name, p in (policies or {}).items()}
        self.policies = compiled
        self._by_identity = {
            c.identity: Client(
                name,
                c.identity,
                frozenset(c.keys),
                frozenset(c.methods),
                compiled[c.policy] if c.policy else None,
            )
            for name, c in clients.items()
        }

    @property
    def clients(self) -> list[Client]:
        return list(self._by_identity.values())

    @property
    def open(self) -> bool:
        """No clients configured: every caller may use every key (development on loopback)."""
        return not self._by_identity

    def identify(self, caller: Caller) -> tuple[Client | None, str | None]:
        """(client, identity): the client is None only when access is open."""
        identity = None
        candidates: tuple[str, ...] = ()
        if caller.certificate_pem:
            candidates = certificate_identities(caller.certificate_pem)
            identity = candidates[0] if candidates else None
        if self.open:
            return None, identity
        if not caller.certificate_pem:
            raise Unauthenticated("a client certificate is required")
        matches = [self._by_identity[c] for c in candidates if c in self._by_identity]
        if not matches:
            shown = ", ".join(repr(c[:128]) for c in candidates[:4]) or "no identity"
            raise Unauthenticated(f"client certificate ({shown}) matches no configured client")
        if len({m.name for m in matches}) > 1:
            raise Unauthenticated(
                "client certificate matches several clients: "
                + ", ".join(sorted({m.name for m in matches}))
            )
        return matches[0], matches[0].identity

    def check(self, client: Client | None, method: str, key_id: str | None) -> None:
        if client is None:
            return
        if method not in client.methods:
            raise AccessDenied(
                f"client {client.name!r} may not call {method}"
                + (f" (key {key_id!r})" if key_id else "")
            )
        if key_id is not None and not client.may_use(key_id):
            raise AccessDenied(f"client {client.name!r} may not use key {key_id!r} for {method}")

    def may_use(self, client: Client | None, key_id: str) -> bool:
        return client is None or client.may_use(key_id)
