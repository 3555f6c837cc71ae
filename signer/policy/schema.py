"""What operators write under `[policies.NAME]`: the shapes of the TOML, nothing more.

Pydantic checks the shapes here; the meaning (addresses and their checksums, set and budget
names, `where` paths against the `call` signature, regular expressions) is checked by compiling
the policy (signer.policy.compiler), which signer.policy.config.PolicyConfig does once, at
validation, so validation and evaluation cannot disagree. This module knows nothing of the
compiler or the evaluation.
"""

import hashlib
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from signer.eth.fields import UINT256_MAX

RULE_ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]{0,63}$"
_DECIMAL = re.compile(r"-?[0-9]{1,78}")
_WINDOW = re.compile(r"([1-9][0-9]{0,6})([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
# The store keeps reservations 32 days (signer.store.sql.BUDGET_RETENTION_SECONDS).
MAX_WINDOW_SECONDS = 31 * 86400


def _integer(value: Any, *, signed: bool = False) -> int:
    """A 256-bit integer from a decimal string or a TOML integer; never a float or a bool."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError('expected an integer as a decimal string, e.g. "1000000"')
    if isinstance(value, str):
        if not _DECIMAL.fullmatch(value):
            raise ValueError(f"expected a decimal integer string, got {value[:80]!r}")
        value = int(value)
    assert isinstance(value, int)
    low = -(2**255) if signed else 0
    if not low <= value <= UINT256_MAX:
        raise ValueError(f"{value} is outside {'int256/' if signed else ''}uint256")
    return value


def _unsigned(value: Any) -> int:
    return _integer(value)


def _signed(value: Any) -> int:
    return _integer(value, signed=True)


Uint256 = Annotated[int, BeforeValidator(_unsigned)]
Int256 = Annotated[int, BeforeValidator(_signed)]
# An `eq`/`in` literal: its meaning depends on the argument's type, so it stays as written.
Scalar = str | bool | int


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Budget(_Strict):
    limit: Uint256
    window: str

    @property
    def window_seconds(self) -> int:
        return parse_window(self.window)

    @model_validator(mode="after")
    def _window(self) -> "Budget":
        parse_window(self.window)
        return self


def parse_window(text: str) -> int:
    """ "30m", "1h", "24h", "7d" -> seconds."""
    match = _WINDOW.fullmatch(text)
    if match is None:
        raise ValueError(
            f'window: expected a number and a unit (s, m, h, d) like "24h", got {text[:40]!r}'
        )
    seconds = int(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    if seconds > MAX_WINDOW_SECONDS:
        raise ValueError(f"window: {text} is longer than 31 days")
    return seconds


class Condition(_Strict):
    """All the comparisons given must hold (`gte` and `lte` together make a range)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    eq: Scalar | None = None
    in_: list[Scalar] | str | None = Field(default=None, alias="in")
    lte: Int256 | None = None
    lt: Int256 | None = None
    gte: Int256 | None = None
    gt: Int256 | None = None

    @model_validator(mode="after")
    def _not_empty(self) -> "Condition":
        if all(getattr(self, f) is None for f in ("eq", "in_", "lte", "lt", "gte", "gt")):
            raise ValueError("a condition needs at least one of eq, in, lte, lt, gte, gt")
        return self


class DomainMatch(_Strict):
    """Typed-data domain: keyed on the contract and chain, never on the claimable name."""

    verifying_contract: str | list[str] | None = None
    # An integer pins one chain (it must also be in `chains`); "none" allows only domains
    # without a chainId, which are valid on every chain and so denied unless asked for.
    chain_id: Uint256 | Literal["none"] | None = None


class Rule(_Strict):
    id: str = Field(pattern=RULE_ID_PATTERN)
    kind: Literal["transaction", "message", "typed_data", "authorization"] = "transaction"
    # transactions
    to: str | list[str] | None = None
    value_max: Uint256 | None = None
    call: str | None = None
    # EIP-4844 blobs one transaction may carry (allow rules; absent: 0, no blob transactions)
    blobs_max: Annotated[int, Field(ge=0, le=64)] | None = None
    # transactions (type 4 authorization lists) and authorizations (required there)
    delegates: str | list[str] | None = None
    # authorizations: the chains they may name (default: the policy's chains) and whether
    # chain id 0 (valid on every chain) may be signed
    chains: list[Annotated[int, Field(ge=1, le=2**63)]] | None = None
    allow_any_chain: bool | None = None
    # messages
    match: str | None = None
    # typed data
    domain: DomainMatch | None = None
    primary_type: str | None = Field(default=None, min_length=1, max_length=256)
    # any kind
    where: dict[str, Condition] = Field(default_factory=dict)
    spend: dict[str, str | int] = Field(default_factory=dict)


class PolicySchema(_Strict):
    """One `[policies.NAME]` table as written; PolicyConfig adds its compilation."""

    chains: list[Annotated[int, Field(ge=1, le=2**63)]] = Field(default_factory=list)
    max_gas_fee_wei: Uint256 | None = None
    sets: dict[Annotated[str, Field(pattern=NAME_PATTERN)], list[str]] = Field(default_factory=dict)
    budgets: dict[Annotated[str, Field(pattern=NAME_PATTERN)], Budget] = Field(default_factory=dict)
    allow: list[Rule] = Field(default_factory=list)
    deny: list[Rule] = Field(default_factory=list)

    def fingerprint(self) -> str:
        """sha256 of the policy's canonical JSON: what a reload audits; equal for equal
        policies whatever the TOML's order or spelling of integers."""
        canonical = json.dumps(
            self.model_dump(mode="json", by_alias=True),
            sort_keys=True,
            separators=(",", ":"),
            ensure_ascii=True,
        )
        return hashlib.sha256(canonical.encode()).hexdigest()
