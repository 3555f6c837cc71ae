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


# The kinds of name a certificate carries, as a client's `identity` prefix names them.
IDENTITY_KINDS = ("uri", "dns", "cn")


def identity_keys(identity: str) -> tuple[tuple[str, str], ...]:
    """The typed names a configured identity matches: `uri:X` only a URI SAN X, `dns:X` only a
    DNS SAN X, `cn:X` only the subject CN X; an untyped X a URI or a DNS SAN, never the CN
    (a CN is whatever the CA let the requester write, so it must be asked for by name)."""
    kind, sep, value = identity.partition(":")
    if sep and kind in IDENTITY_KINDS:
        return ((kind, value),)
    return (("uri", identity), ("dns", identity))


@functools.lru_cache(maxsize=1024)
def certificate_names(pem: bytes) -> tuple[tuple[str, str], ...]:
    """Every typed name a certificate carries: (kind, value) for its URI SANs, DNS SANs, CNs."""
    certificate = x509.load_pem_x509_certificate(pem)
    try:
        san = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        san = None
    names: list[tuple[str, str]] = []
    if san is not None:
        names += [("uri", str(n)) for n in san.get_values_for_type(x509.UniformResourceIdentifier)]
        names += [("dns", str(n)) for n in san.get_values_for_type(x509.DNSName)]
    names += [
        ("cn", str(a.value))
        for a in certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    ]
    return tuple(names)


def certificate_identities(pem: bytes) -> tuple[str, ...]:
    """The identities a certificate claims, for the record: its URI SANs, else its DNS SANs,
    else its CN."""
    names = certificate_names(pem)
    for kind in IDENTITY_KINDS:
        values = tuple(value for k, value in names if k == kind)
        if values:
            return values
    return ()


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
        self._by_name = {
            key: client
            for client in self._by_identity.values()
            for key in identity_keys(client.identity)
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
        names: tuple[tuple[str, str], ...] = ()
        claimed: tuple[str, ...] = ()
        if caller.certificate_pem:
            names = certificate_names(caller.certificate_pem)
            claimed = certificate_identities(caller.certificate_pem)
            identity = claimed[0] if claimed else None
        if self.open:
            return None, identity
        if not caller.certificate_pem:
            raise Unauthenticated("a client certificate is required")
        matches = [self._by_name[n] for n in names if n in self._by_name]
        if not matches:
            shown = ", ".join(repr(c[:128]) for c in claimed[:4]) or "no identity"
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
