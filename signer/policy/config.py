"""`[policies.NAME]` as the service config holds it: the table as written
(signer.policy.schema), compiled once when it is validated, and that compilation kept for every
Policy built from it (signer.app.access, dry runs), so validation and evaluation cannot
disagree and nothing compiles a policy twice.
"""

from pydantic import PrivateAttr, model_validator
from pydantic_core import PydanticCustomError

from signer.policy.compiler import CompiledRules, compile_rules
from signer.policy.conditions import PolicyError
from signer.policy.schema import PolicySchema


class PolicyConfig(PolicySchema):
    """One `[policies.NAME]` table; validating it compiles it, errors name the rule and field."""

    _compiled: CompiledRules | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compiles(self) -> "PolicyConfig":
        try:
            self._compiled = compile_rules(self)
        except PolicyError as exc:
            # PydanticCustomError keeps the message as is ("Value error, " would prefix it).
            raise PydanticCustomError("policy", "{detail}", {"detail": str(exc)}) from None
        return self

    @property
    def compiled(self) -> CompiledRules:
        """The rules compiled at validation (a table built without validation, e.g. by
        model_construct, is compiled on first use and may raise PolicyError)."""
        if self._compiled is None:
            self._compiled = compile_rules(self)
        return self._compiled
