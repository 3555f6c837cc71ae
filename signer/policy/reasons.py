"""Why a request is allowed or denied: the outcome of judging it, how far each allow rule got
before it failed, and the one reason a denial shows (the closest rule first, then others)."""

import re
from collections.abc import Callable
from dataclasses import dataclass

from signer.policy.conditions import show

# A denial lists the closest rule first, then others, up to about this many characters.
MAX_REASON_LENGTH = 600


@dataclass(frozen=True, slots=True)
class Outcome:
    allowed: bool
    rule_id: str | None
    reason: str
    spends: tuple[tuple[str, int], ...] = ()


@dataclass(frozen=True, slots=True)
class Miss:
    """How far a rule got before it failed (signer.policy.matchers names the steps); the
    reason is formatted only if it is shown."""

    rule_id: str
    progress: int
    reason: Callable[[], str]


def deny(reason: str) -> Outcome:
    return Outcome(False, None, reason)


def no_match(kind: str, misses: list[Miss]) -> str:
    if not misses:
        return f"no allow rule for {kind}"
    ordered = sorted(misses, key=lambda m: -m.progress)  # stable: config order among equals
    parts = [f"{m.reason()} (rule {m.rule_id})" for m in ordered]
    text = "no allow rule matches: " + parts[0]
    for i, part in enumerate(parts[1:], start=1):
        if len(text) + len(part) > MAX_REASON_LENGTH:
            return f"{text}; and {len(parts) - i} more"
        text += "; " + part
    return text


def delegate_reason(index: int, address: bytes) -> str:
    return f"authorization_list[{index}].address {show(address)} not in delegates"


def message_reason(pattern: re.Pattern[str]) -> str:
    return f"message does not match {pattern_label(pattern)}"


def pattern_label(pattern: re.Pattern[str]) -> str:
    text = pattern.pattern
    return repr(text if len(text) <= 60 else text[:60] + "…")
