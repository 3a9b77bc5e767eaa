"""The machine-readable marker on every reply (EU AI Act Art. 50(2)), outside the text.

Every host puts the same JSON object in the same-named place: ``response.persona_provenance``
(Python API; the first chunk of a stream), the ``persona_provenance`` field and the
``X-Persona-Provenance`` header (server), ``response_metadata["persona_provenance"]``
(LangChain; on the chunk that ends a choice). It says the reply came from an AI system, which
model produced it (None when no model ran: a block or a crisis interrupt answered), and which
policy version and laws were in force.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..types import CallContext

__all__ = ["PROVENANCE_FIELD", "PROVENANCE_HEADER", "Provenance", "provenance"]

PROVENANCE_FIELD = "persona_provenance"
PROVENANCE_HEADER = "X-Persona-Provenance"

try:
    _GENERATOR = f"persona_mw/{version('persona-mw')}"
except PackageNotFoundError:  # a source checkout that was never installed
    _GENERATOR = "persona_mw"


@dataclass(frozen=True, slots=True)
class Provenance:
    """What the marker says about one reply."""

    model: str | None
    policy_version: str | None
    jurisdictions: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "ai_generated": True,
            "generator": _GENERATOR,
            "model": self.model,
            "policy_version": self.policy_version,
            "jurisdictions": list(self.jurisdictions),
        }


def provenance(ctx: CallContext) -> Provenance:
    """The marker of the call's reply, from its context."""
    policy = ctx.policy
    return Provenance(
        model=None if ctx.reply is not None else ctx.model,
        policy_version=policy.policy_version if policy is not None else None,
        jurisdictions=policy.compliance.laws if policy is not None else ctx.jurisdictions,
    )
