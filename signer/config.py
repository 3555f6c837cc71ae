"""One typed, validated configuration: a TOML file, with environment variables on top.

Overrides: `WALLET_SIGNER_<PATH>` where `__` separates levels, e.g.
`WALLET_SIGNER_SERVER__LISTEN=0.0.0.0:50051` or `WALLET_SIGNER_KEYS__HOT__PRIVATE_KEY_FILE=/run/x`.
Values are parsed as TOML values when they can be (numbers, booleans), else taken as strings.
Secrets (private keys, PINs) are never config values: the config only names where they live.
"""

import ipaddress
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from signer.errors import ConfigError

ENV_PREFIX = "WALLET_SIGNER_"
DEFAULT_LISTEN = "127.0.0.1:50051"
SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
KEY_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ServerConfig(_Strict):
    listen: str = DEFAULT_LISTEN
    # TLS: the server's certificate chain and key (PEM); with client_ca_file, clients must
    # present a certificate from that CA (mTLS). Re-read on SIGHUP.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    client_ca_file: Path | None = None
    # Threads serving requests; a KMS call holds one for its whole round trip.
    max_workers: int = Field(default=32, ge=1, le=1024)
    max_request_bytes: int = Field(default=256 * 1024, ge=1024, le=16 * 1024 * 1024)
    # Seconds in-flight calls get to finish after SIGTERM.
    shutdown_grace_seconds: float = Field(default=10.0, ge=0, le=300)

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        split_listen(value)
        return value

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
        host, _ = split_listen(self.listen)
        if host == "localhost":
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False


class EnvKeyConfig(_Strict):
    backend: Literal["env"]
    private_key_env: str | None = None
    private_key_file: Path | None = None

    @model_validator(mode="after")
    def _one_source(self) -> "EnvKeyConfig":
        if (self.private_key_env is None) == (self.private_key_file is None):
            raise ValueError("set exactly one of private_key_env or private_key_file")
        return self


class Pkcs11KeyConfig(_Strict):
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


class KmsKeyConfig(_Strict):
    backend: Literal["kms"]
    kms_key_id: str = Field(min_length=1, max_length=2048)
    region: str = Field(min_length=1)
    endpoint_url: str | None = None
    connect_timeout_seconds: float = Field(default=2.0, gt=0, le=60)
    read_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # Total attempts per call (botocore `total_max_attempts`), first try included.
    max_attempts: int = Field(default=3, ge=1, le=10)


KeyConfig = Annotated[EnvKeyConfig | Pkcs11KeyConfig | KmsKeyConfig, Field(discriminator="backend")]

# The SignerService methods a client may be allowed (`[clients.NAME] methods`).
Method = Literal["ListKeys", "GetAddress", "SignTransaction", "SignMessage", "SignTypedData"]
METHODS: tuple[Method, ...] = (
    "ListKeys", "GetAddress", "SignTransaction", "SignMessage", "SignTypedData"
)


class ClientConfig(_Strict):
    # Matched against the client certificate: URI SAN, else DNS SAN, else subject CN.
    identity: str = Field(min_length=1, max_length=1024)
    # key_ids this client may use; ["*"] for all.
    keys: list[str] = Field(min_length=1)
    methods: list[Method] = Field(default_factory=lambda: list(METHODS), min_length=1)


DEFAULT_STORE_URL = "sqlite://.wallet-signer/state.db"


class StoreConfig(_Strict):
    # sqlite:///ABSOLUTE/PATH, sqlite://RELATIVE/PATH, or postgresql://USER@HOST[:PORT]/DB
    url: str = DEFAULT_STORE_URL
    password_file: Path | None = None  # PostgreSQL password (else libpq's PGPASSFILE)
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=60)

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str) -> str:
        if not value.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("expected sqlite://PATH or postgresql://USER@HOST/DB")
        if value.startswith("sqlite://") and not value.removeprefix("sqlite://"):
            raise ValueError("sqlite:// needs a path, e.g. sqlite:///var/lib/wallet-signer/state.db")
        if "@" in value.partition("://")[2] and ":" in value.partition("://")[2].rpartition("@")[0]:
            raise ValueError("no password in the URL: use password_file or PGPASSFILE")
        return value


class Config(_Strict):
    environment: Literal["development", "production"] = "development"
    server: ServerConfig = ServerConfig()
    keys: dict[Annotated[str, Field(pattern=KEY_ID_PATTERN)], KeyConfig] = Field(
        default_factory=dict
    )
    clients: dict[Annotated[str, Field(pattern=KEY_ID_PATTERN)], ClientConfig] = Field(
        default_factory=dict
    )
    store: StoreConfig = StoreConfig()

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
            if unknown:
                raise ValueError(f"clients.{name}.keys: no such keys {unknown}")
            if "*" in client.keys and len(client.keys) > 1:
                raise ValueError(f'clients.{name}.keys: "*" already means every key')
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
                    "env backend; move them to pkcs11 or kms"
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
        return self


def split_listen(listen: str) -> tuple[str, int]:
    match = re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^:\[\]]+):(\d{1,5})", listen)
    if not match or not 0 <= int(match.group(2)) < 65536:
        raise ValueError(f"expected HOST:PORT (IPv6 as [::1]:PORT), got {listen!r}")
    return match.group(1).strip("[]"), int(match.group(2))


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
    _apply_overrides(raw, os.environ if environ is None else environ)
    return validate(raw, str(path) if path else "configuration")


def validate(raw: dict[str, Any], where: str) -> Config:
    try:
        return Config.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors(include_url=False, include_input=False)
        )
        raise ConfigError(f"invalid {where}: {problems}") from None


def _apply_overrides(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name in sorted(environ):
        if not name.startswith(ENV_PREFIX):
            continue
        path = name[len(ENV_PREFIX) :].lower().split("__")
        if path[0] not in _TOP_LEVEL or not all(path):
            continue  # e.g. WALLET_SIGNER_PIN: a secret's variable, not an override
        node = raw
        for depth, part in enumerate(path):
            # key ids are case-sensitive; environment names are not: match an existing key
            part = next((k for k in node if k.lower() == part), part)
            if depth == len(path) - 1:
                node[part] = _parse_value(environ[name])
                break
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {part} is not a table in the config")
            node = child


_TOP_LEVEL = {"environment", "server", "keys", "clients", "store"}


def _parse_value(text: str) -> Any:
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
