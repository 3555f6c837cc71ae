"""One typed, validated configuration: a TOML file, with environment variables on top.

Overrides: `WALLET_SIGNER_<PATH>` where `__` separates levels, e.g.
`WALLET_SIGNER_SERVER__LISTEN=0.0.0.0:50051` or `WALLET_SIGNER_KEYS__HOT__PRIVATE_KEY_FILE=/run/x`.
Each is resolved against the model's own fields and validated like the file (see
`apply_overrides`). Secrets (private keys, PINs) are never config values: the config only names
where they live.
"""

import json
import os
import tomllib
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, Union

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from signer.errors import ConfigError
from signer.jsonrpc.config import JsonRpcConfig
from signer.listen import ListenAddress, is_loopback, split_listen
from signer.policy import PolicyConfig, check_policy_references
from signer.secret_sources import inline_password

ENV_PREFIX = "WALLET_SIGNER_"
DEFAULT_LISTEN = "127.0.0.1:50051"
SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    listen: ListenAddress = DEFAULT_LISTEN
    # TLS: the server's certificate chain and key (PEM); with client_ca_file, clients must
    # present a certificate from that CA (mTLS). Re-read on SIGHUP.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    client_ca_file: Path | None = None
    # Threads serving requests; a KMS call holds one for its whole round trip.
    max_workers: int = Field(default=32, ge=1, le=1024)
    max_request_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Calls accepted at once (running or waiting for a worker); beyond it grpc answers
    # RESOURCE_EXHAUSTED at once instead of queueing without limit.
    max_concurrent_calls: int = Field(default=256, ge=1, le=65536)
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=300)
    # Seconds between self-tests of a key that failed or has not signed in that long.
    health_check_interval_seconds: float = Field(default=30.0, ge=0.05, le=3600)
    # A SignTransactions stream holds a worker thread while open: a stream waiting longer than
    # this for its next message is cancelled, and a client may hold at most
    # max_streams_per_client streams (default: a quarter of max_workers, at least 1).
    stream_idle_seconds: float = Field(default=60.0, gt=0, le=86400)
    max_streams_per_client: int | None = Field(default=None, ge=1, le=1024)
    # Keys decrypted or fetched at once at start-up (keystore, vault, aws-secret): a keystore at
    # the standard scrypt cost takes about 1 s of CPU and 256 MiB of memory while it decrypts.
    key_load_concurrency: int = Field(default=2, ge=1, le=64)
    # Optional plaintext listener serving only grpc.health.v1 (no signing, no reflection), for
    # probes that cannot present a client certificate (Kubernetes' native gRPC probe).
    health_listen: ListenAddress | None = None

    @property
    def streams_per_client(self) -> int:
        if self.max_streams_per_client is not None:
            return self.max_streams_per_client
        return max(1, self.max_workers // 4)

    @model_validator(mode="after")
    def _distinct_ports(self) -> "ServerConfig":
        if self.health_listen is not None:
            port = split_listen(self.health_listen)[1]
            if port != 0 and port == split_listen(self.listen)[1]:
                raise ValueError(
                    f"health_listen {self.health_listen} uses the port of listen {self.listen}: "
                    "give the health-only listener a port of its own"
                )
        return self

    @model_validator(mode="after")
    def _tls_files(self) -> "ServerConfig":
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ValueError("set both tls_cert_file and tls_key_file, or neither")
        if self.client_ca_file is not None and self.tls_cert_file is None:
            raise ValueError("client_ca_file (mTLS) needs tls_cert_file and tls_key_file")
        return self

    @property
    def tls(self) -> bool:
        return self.tls_cert_file is not None

    def is_loopback(self) -> bool:
        return is_loopback(self.listen)


class MetricsConfig(_Strict):
    # Prometheus exposition (HTTP, /metrics); a non-loopback address is allowed and logged.
    listen: ListenAddress

    def is_loopback(self) -> bool:
        return is_loopback(self.listen)


# What a draining version of a key (one that a rotation replaced) may still sign:
# "sweep" (default): value and tokens sent to the active version's address, and replacements
# of nonces it already used; "any": whatever the caller's policy allows; "none": nothing.
DrainRule = Literal["sweep", "any", "none"]

ADDRESS_PATTERN = r"^0x[0-9a-fA-F]{40}$"


class _KeyConfig(_Strict):
    """What every `[keys.NAME]` table has, whatever its backend."""

    # Address pinning: the key must have this address at start-up and at every self-test (an
    # alias moved in KMS, a token replaced, a secret overwritten is refused). `keys list` prints
    # the line to paste.
    address: str | None = Field(default=None, pattern=ADDRESS_PATTERN)
    drain: DrainRule = "sweep"


def _exactly_one(what: str, **sources: object) -> None:
    given = [name for name, value in sources.items() if value is not None]
    if len(given) != 1:
        raise ValueError(f"set exactly one of {' or '.join(sources)} ({what})")


class EnvKeyConfig(_KeyConfig):
    backend: Literal["env"]
    private_key_env: str | None = None
    private_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "EnvKeyConfig":
        if (self.private_key_env is None) == (self.private_key_file is None):
            raise ValueError("set exactly one of private_key_env or private_key_file")
        return self


class Pkcs11KeyConfig(_KeyConfig):
    backend: Literal["pkcs11"]
    module: Path = SOFTHSM_MODULE
    token_label: str = Field(min_length=1, max_length=32)
    pin_env: str | None = None
    pin_file: Path | None = None
    key_label: str | None = Field(default=None, min_length=1)
    key_id: str | None = Field(default=None, pattern=r"^([0-9a-fA-F]{2})+$")
    # Sessions for this key; each serves one signing call at a time.
    pool_size: int = Field(default=4, ge=1, le=256)

    @model_validator(mode="after")
    def _sources(self) -> "Pkcs11KeyConfig":
        if (self.pin_env is None) == (self.pin_file is None):
            raise ValueError("set exactly one of pin_env or pin_file (never the PIN itself)")
        if self.key_label is None and self.key_id is None:
            raise ValueError("set key_label, key_id (hex CKA_ID) or both")
        return self


class KmsKeyConfig(_KeyConfig):
    backend: Literal["kms"]
    kms_key_id: str = Field(min_length=1, max_length=2048)
    region: str = Field(min_length=1)
    endpoint_url: str | None = None
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # Total attempts per call (botocore `total_max_attempts`), first try included.
    max_attempts: int = Field(default=3, ge=1, le=10)


class KeystoreKeyConfig(_KeyConfig):
    """A Web3 Secret Storage (V3) JSON file, scrypt or pbkdf2; its password from a file or an
    environment variable."""

    backend: Literal["keystore"]
    keystore_file: Path
    password_file: Path | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _password(self) -> "KeystoreKeyConfig":
        _exactly_one("the keystore's password", password_file=self.password_file,
                     password_env=self.password_env)
        return self


class VaultAuth(_Strict):
    """How to log in to Vault / OpenBao: a token file, AppRole or Kubernetes auth."""

    url: str = Field(pattern=r"^https?://")
    ca_file: Path | None = None  # CA bundle for https:// (default: the system's)
    token_file: Path | None = None
    role_id_file: Path | None = None
    secret_id_file: Path | None = None
    approle_mount: str = "approle"
    kubernetes_role: str | None = None
    kubernetes_jwt_file: Path = Path("/var/run/secrets/kubernetes.io/serviceaccount/token")
    kubernetes_mount: str = "kubernetes"
    namespace: str | None = None  # Vault Enterprise / OpenBao namespace
    timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @model_validator(mode="after")
    def _one_login(self) -> "VaultAuth":
        logins = [self.token_file is not None, self.role_id_file is not None,
                  self.kubernetes_role is not None]
        if sum(logins) != 1:
            raise ValueError("log in with exactly one of token_file, role_id_file + "
                             "secret_id_file (AppRole) or kubernetes_role")
        if (self.role_id_file is None) != (self.secret_id_file is None):
            raise ValueError("AppRole needs both role_id_file and secret_id_file")
        return self

    @property
    def login(self) -> str:
        if self.token_file is not None:
            return "token"
        return "approle" if self.role_id_file is not None else "kubernetes"


class VaultKeyConfig(VaultAuth, _KeyConfig):
    """A KV v2 secret whose `field` holds a hex key, or a V3 keystore with its password in
    `password_field` of the same secret."""

    backend: Literal["vault"]
    mount: str = Field(default="secret", min_length=1)
    path: str = Field(min_length=1)
    field: str = Field(default="private_key", min_length=1)
    password_field: str | None = None
    version: int | None = Field(default=None, ge=1)  # default: the latest at load


class AwsSecretKeyConfig(_KeyConfig):
    """An AWS Secrets Manager secret: a hex key, or a V3 keystore whose password is the value
    of `password_secret_id`."""

    backend: Literal["aws-secret"]
    secret_id: str = Field(min_length=1, max_length=2048)
    region: str = Field(min_length=1)
    endpoint_url: str | None = None
    version_stage: str = Field(default="AWSCURRENT", min_length=1)
    # Pin one version of the secret (its VersionId); when set, version_stage is not used.
    # `keys rotate` pins each version it records this way.
    version_id: str | None = Field(default=None, min_length=1, max_length=64)
    password_secret_id: str | None = Field(default=None, min_length=1, max_length=2048)
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    max_attempts: int = Field(default=3, ge=1, le=10)


KeyConfig = Annotated[
    EnvKeyConfig | Pkcs11KeyConfig | KmsKeyConfig | KeystoreKeyConfig | VaultKeyConfig
    | AwsSecretKeyConfig,
    Field(discriminator="backend"),
]


class KeystoreSourceConfig(_Strict):
    """Every `*.json` file in `folder` (not recursive), one shared password source; each key
    is named after its file name without `.json`."""

    backend: Literal["keystore"]
    folder: Path
    password_file: Path | None = None
    password_env: str | None = None

    @model_validator(mode="after")
    def _password(self) -> "KeystoreSourceConfig":
        _exactly_one("the keystores' password", password_file=self.password_file,
                     password_env=self.password_env)
        return self


class VaultSourceConfig(VaultAuth):
    """Every secret directly under the KV v2 folder `path`; each key is named after its
    secret's name."""

    backend: Literal["vault"]
    mount: str = Field(default="secret", min_length=1)
    path: str = Field(min_length=1)
    field: str = Field(default="private_key", min_length=1)
    password_field: str | None = None


class AwsSecretSourceConfig(_Strict):
    """Every Secrets Manager secret whose name starts with `name_prefix` and/or that carries
    the tag `tag` ("KEY" or "KEY=VALUE"); each key is named after the secret's name with the
    prefix removed."""

    backend: Literal["aws-secret"]
    region: str = Field(min_length=1)
    endpoint_url: str | None = None
    name_prefix: str | None = Field(default=None, min_length=1)
    tag: str | None = Field(default=None, min_length=1)
    version_stage: str = Field(default="AWSCURRENT", min_length=1)
    password_secret_id: str | None = Field(default=None, min_length=1)
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    max_attempts: int = Field(default=3, ge=1, le=10)

    @model_validator(mode="after")
    def _selector(self) -> "AwsSecretSourceConfig":
        if self.name_prefix is None and self.tag is None:
            raise ValueError("select the secrets with name_prefix, tag or both")
        return self


KeySourceConfig = Annotated[
    KeystoreSourceConfig | VaultSourceConfig | AwsSecretSourceConfig,
    Field(discriminator="backend"),
]

# The SignerService methods a client may be allowed (`[clients.NAME] methods`);
# "Forward": the JSON-RPC door may relay its node-bound calls (the read allowlist and
# eth_sendRawTransaction) to the upstream node; "Reload" (re-read the config, as SIGHUP does) is
# an operator's method.
Method = Literal[
    "ListKeys", "GetAddress", "SignTransaction", "SignMessage", "SignTypedData",
    "SignAuthorization", "Forward", "Reload",
]
METHODS: tuple[Method, ...] = (
    "ListKeys", "GetAddress", "SignTransaction", "SignMessage", "SignTypedData",
    "SignAuthorization", "Reload",
)
FORWARD: Method = "Forward"
# What a client gets when its `methods` is left out: every method but SignAuthorization, which
# hands the whole account to another contract's code, Forward, and Reload, an operator's: each
# must be asked for by name.
DEFAULT_METHODS: tuple[Method, ...] = tuple(
    m for m in METHODS if m not in ("SignAuthorization", "Forward", "Reload"))


_KEY_CONFIG: TypeAdapter[KeyConfig] = TypeAdapter(KeyConfig)


def key_config_json(config: KeyConfig) -> str:
    """A key's config as the store keeps a rotated version's source (no secrets: a config only
    names where they live)."""
    return json.dumps(config.model_dump(mode="json", exclude_defaults=True,
                                        exclude={"drain"}) | {"backend": config.backend},
                      sort_keys=True)


def key_config_from_json(text: str, where: str) -> KeyConfig:
    """The inverse of key_config_json; ConfigError naming `where` when it does not validate."""
    try:
        return _KEY_CONFIG.validate_json(text)
    except ValidationError as exc:
        raise ConfigError(f"{where}: stored key source does not validate: "
                          f"{exc.errors()[0].get('msg', 'invalid')}") from None


class ClientConfig(_Strict):
    # Matched against the client certificate by kind: "uri:X" only a URI SAN, "dns:X" only a
    # DNS SAN, "cn:X" only the subject CN; an untyped "X" a URI or DNS SAN, never the CN.
    identity: str = Field(min_length=1, max_length=1024)
    # key_ids this client may use; ["*"] for all.
    keys: list[str] = Field(min_length=1)
    methods: list[Method] = Field(default_factory=lambda: list(DEFAULT_METHODS), min_length=1)
    # The [policies.NAME] that decides what this client may sign; None: anything (development).
    policy: str | None = None

    @property
    def may_sign(self) -> bool:
        return any(m.startswith("Sign") for m in self.methods)


DEFAULT_STORE_URL = "sqlite://.wallet-signer/state.db"
AUDIT_KEY_MIN_BYTES = 32


class StoreConfig(_Strict):
    # sqlite:///ABSOLUTE/PATH, sqlite://RELATIVE/PATH, or postgresql://USER@HOST[:PORT]/DB
    url: str = DEFAULT_STORE_URL
    password_file: Path | None = None  # PostgreSQL password (else libpq's PGPASSFILE)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)
    # HMAC-SHA256 key of the audit chains (at least 32 bytes; whitespace around it ignored):
    # without it, rewriting records needs store access; with it, the key too. Never logged.
    audit_key_file: Path | None = None
    # how often each serving writer records the heads of the other chains (a witness record)
    audit_witness_seconds: float = Field(default=10.0, gt=0, le=3600)

    def audit_key(self) -> bytes | None:
        """The audit HMAC key read from `audit_key_file`, or None when not configured."""
        if self.audit_key_file is None:
            return None
        try:
            key = self.audit_key_file.read_bytes().strip()
        except OSError as exc:
            raise ConfigError(
                f"store.audit_key_file: cannot read {self.audit_key_file}: {type(exc).__name__}"
            ) from None
        if len(key) < AUDIT_KEY_MIN_BYTES:
            raise ConfigError(f"store.audit_key_file: {self.audit_key_file} holds fewer than "
                              f"{AUDIT_KEY_MIN_BYTES} bytes (e.g. `openssl rand -hex 32`)")
        return key

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("expected sqlite://PATH or postgresql://USER@HOST/DB")
        if value.startswith("sqlite://") and not value.removeprefix("sqlite://"):
            raise ValueError("sqlite:// needs a path, e.g. sqlite:///var/lib/wallet-signer/state.db")
        where = inline_password(value) if value.startswith("postgres") else None
        if where is not None:
            raise ValueError(f"no password in the URL ({where}): use password_file or PGPASSFILE")
        return value


class Config(_Strict):
    environment: Literal["development", "production"] = "development"
    server: ServerConfig = ServerConfig()
    metrics: MetricsConfig | None = None  # off when absent
    keys: dict[Annotated[str, Field(pattern=KEY_ID_PATTERN)], KeyConfig] = Field(
        default_factory=dict
    )
    # Bulk loading: every key a folder, Vault path or Secrets Manager selection holds.
    key_sources: dict[Annotated[str, Field(pattern=KEY_ID_PATTERN)], KeySourceConfig] = Field(
        default_factory=dict
    )
    clients: dict[Annotated[str, Field(pattern=KEY_ID_PATTERN)], ClientConfig] = Field(
        default_factory=dict
    )
    store: StoreConfig = StoreConfig()
    policies: dict[Annotated[str, Field(pattern=KEY_ID_PATTERN)], PolicyConfig] = Field(
        default_factory=dict
    )
    jsonrpc: JsonRpcConfig | None = None

    @model_validator(mode="after")
    def _clients(self) -> "Config":
        seen: dict[str, str] = {}
        for name, client in self.clients.items():
            if client.identity in seen:
                raise ValueError(
                    f"clients.{name}.identity: {client.identity!r} is also the identity of "
                    f"clients.{seen[client.identity]}"
                )
            seen[client.identity] = name
            unknown = sorted(k for k in client.keys if k != "*" and k not in self.keys)
            # A [key_sources] entry's keys are known only once it is read (at start-up).
            if unknown and not self.key_sources:
                raise ValueError(f"clients.{name}.keys: no such keys {unknown}")
            if "*" in client.keys and len(client.keys) > 1:
                raise ValueError(f'clients.{name}.keys: "*" already means every key')
        check_policy_references({n: c.policy for n, c in self.clients.items()}, self.policies)
        if self.clients and self.server.client_ca_file is None:
            raise ValueError(
                "clients are identified by their TLS certificate: set server.client_ca_file "
                "(and server.tls_cert_file, server.tls_key_file)"
            )
        return self

    @model_validator(mode="after")
    def _production_rules(self) -> "Config":
        if self.environment == "production":
            env_keys = sorted(k for k, v in self.keys.items() if v.backend == "env")
            if env_keys:
                raise ValueError(
                    f"environment is production but keys {env_keys} use the development-only "
                    "env backend; move them to pkcs11, kms, keystore, vault or aws-secret"
                )
            missing = [
                what
                for what, absent in (
                    ("server.tls_cert_file and server.tls_key_file", not self.server.tls),
                    ("server.client_ca_file (mTLS)", self.server.client_ca_file is None),
                    ("at least one [clients.NAME] entry", not self.clients),
                )
                if absent
            ]
            if missing:
                raise ValueError(
                    "environment is production, which requires every caller to be identified: "
                    "missing " + ", ".join(missing)
                )
            unbounded = sorted(n for n, c in self.clients.items() if c.may_sign and not c.policy)
            if unbounded:
                raise ValueError(
                    f"environment is production but clients {unbounded} may sign and have no "
                    "policy: give each a `policy` (default deny), or take the Sign* methods away"
                )
        return self


def load(path: Path | None, environ: Mapping[str, str] | None = None) -> Config:
    """Read `path` (None: no file), apply overrides, validate; ConfigError names the bad field."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    sources = apply_overrides(raw, os.environ if environ is None else environ)
    return validate(raw, str(path) if path else "configuration", sources)


def validate(
    raw: dict[str, Any], where: str, sources: Mapping[tuple[str, ...], str] | None = None
) -> Config:
    """`sources`: config path -> the environment variable that set it, named in errors."""
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            _problem(err["loc"], err["msg"], sources or {})
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid {where}: {problems}") from None


def _problem(loc: tuple[int | str, ...], msg: str, sources: Mapping[tuple[str, ...], str]) -> str:
    text = f"{'.'.join(str(p) for p in loc) or '(top level)'}: {msg}"
    # A discriminated union adds its tag to the location (keys.hot.pkcs11.key_id): an
    # override's path matches when it is a subsequence of the location.
    names = [name for path, name in sources.items() if _subsequence(path, loc)]
    return f"{text} (from {', '.join(sorted(names))})" if names else text


def _subsequence(path: tuple[str, ...], loc: tuple[int | str, ...]) -> bool:
    rest = iter(str(p) for p in loc)
    return all(part in rest for part in path)


# --- environment overrides ---------------------------------------------------------------------
#
# WALLET_SIGNER_<A>__<B>__... sets config path a.b...; each segment is resolved against the
# model (field names and table keys match case-insensitively), so a misspelt name is an error
# as it is in the file, and the value reaches pydantic as the raw string for scalar fields
# (pydantic parses int, float, bool and paths; a str field such as a hex key_id keeps "10")
# and as a TOML value for list fields (`["hot", "ops"]`). A variable is an override when its
# name contains "__" or its whole name is a top-level field (WALLET_SIGNER_ENVIRONMENT); other
# names (WALLET_SIGNER_PIN, WALLET_SIGNER_CONFIG) are left to whoever reads them.


def apply_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> dict[tuple[str, ...], str]:
    """Overlay the overrides in `environ` on `raw` (in place); returns path -> variable name."""
    sources: dict[tuple[str, ...], str] = {}
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        segments = name[len(ENV_PREFIX) :].split("__")
        if len(segments) == 1 and segments[0].lower() not in Config.model_fields:
            continue  # a secret's or the config path's variable, not an override
        if not all(segments):
            raise ConfigError(f"{name}: empty name between '__' separators")
        path = _overlay(raw, Config, segments, environ[name], name)
        sources[path] = name
    return sources


def _overlay(
    node: dict[str, Any], model: type[BaseModel], segments: list[str], text: str, name: str
) -> tuple[str, ...]:
    path: list[str] = []
    annotation: Any = model
    for depth, segment in enumerate(segments):
        last = depth == len(segments) - 1
        where = ".".join(path) or "the top level"
        kind, inner = _shape(annotation, node)
        if kind == "model":
            fields = inner
            key = segment.lower()
            if key not in fields:
                raise ConfigError(
                    f"{name}: {where} has no field {key!r} (fields: {', '.join(sorted(fields))})"
                )
            annotation = fields[key]
        elif kind == "table":
            key = _table_key(node, segment, name, where)
            annotation = inner
        else:
            raise ConfigError(f"{name}: {where} is a value, not a table")
        path.append(key)
        if last:
            node[key] = _leaf_value(annotation, text, name, ".".join(path))
            break
        child = node.setdefault(key, {})
        if not isinstance(child, dict):
            raise ConfigError(f"{name}: {'.'.join(path)} is a value, not a table")
        node = child
    return tuple(path)


def _table_key(node: dict[str, Any], segment: str, name: str, where: str) -> str:
    """The existing entry this segment names, ignoring case (environment names are usually
    upper case, table keys such as key ids are not); two entries differing only by case are
    ambiguous, never a guess."""
    matches = sorted(k for k in node if k.lower() == segment.lower())
    if len(matches) > 1:
        raise ConfigError(
            f"{name}: ambiguous: {where} has entries {matches} differing only by case; "
            "rename one to override it from the environment"
        )
    return matches[0] if matches else segment.lower()


def _leaf_value(annotation: Any, text: str, name: str, path: str) -> Any:
    kind, _ = _shape(annotation, None)
    if kind in ("model", "table"):
        raise ConfigError(f"{name}: {path} is a table: set its fields ({name}__FIELD)")
    if kind == "list":
        try:
            return tomllib.loads(f"v = {text}")["v"]
        except tomllib.TOMLDecodeError:
            raise ConfigError(
                f"{name}: {path} is a list: write it as a TOML array, e.g. [\"a\", \"b\"]"
            ) from None
    return text  # pydantic parses numbers, booleans and paths from the string, as from TOML


def _shape(annotation: Any, node: dict[str, Any] | None) -> tuple[str, Any]:
    """("model", {field: annotation}), ("table", value annotation), ("list", None) or
    ("scalar", None). Optional and Annotated wrappers are looked through; a union of models is
    resolved by its discriminator value in `node` when present, else to all members' fields
    (pydantic then checks the real member: another backend's field is an extra input)."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        return _shape(typing.get_args(annotation)[0], node)
    if origin in (Union, types.UnionType):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        models = [m for m in members if isinstance(m, type) and issubclass(m, BaseModel)]
        if models and len(models) == len(members):
            return "model", _union_fields(models, node)
        return _shape(members[0], node) if len(members) == 1 else ("scalar", None)
    if origin is dict:
        return "table", typing.get_args(annotation)[1]
    if origin in (list, tuple, set, frozenset):
        return "list", None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "model", _fields(annotation)
    return "scalar", None


def _fields(model: type[BaseModel]) -> dict[str, Any]:
    return {name: field.annotation for name, field in model.model_fields.items()}


def _union_fields(models: list[type[BaseModel]], node: dict[str, Any] | None) -> dict[str, Any]:
    for model in models:
        for name, annotation in _fields(model).items():
            if typing.get_origin(annotation) is Literal and node is not None and \
                    node.get(name) in typing.get_args(annotation):
                return _fields(model)
    merged: dict[str, Any] = {}
    for model in models:
        for name, annotation in _fields(model).items():
            merged.setdefault(name, annotation)
    return merged
