"""Every error persona_mw raises on purpose derives from :class:`PersonaError`.

The tree::

    PersonaError
    ├── ConfigError                 invalid settings or policy file (names file, field, fix)
    │   └── PolicyError             a policy file that cannot be loaded (file, rule id, reason)
    ├── ProfileError
    │   ├── ProfileValidationError  a profile that breaks the schema (names each field)
    │   └── ProfileConflictError    an optimistic update lost a race; re-read and retry
    ├── StoreError                  the profile or usage store could not be reached
    ├── BoundsError                 a bound stopped the call
    │   ├── InputBlocked            input refused (raised only where a caller asked for raising)
    │   └── OutputBlocked           output withheld (raised only where a reply cannot be replaced)
    └── UpstreamError               the model call failed (wraps LiteLLM's exception)
        └── UpstreamTimeout

Cancellation is never wrapped: ``asyncio.CancelledError`` propagates as it is.
Each error carries the data a caller needs (field, tier, rule id, user-facing message) as
attributes, and its ``str()`` says what was wrong and how to fix it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "BoundsError",
    "ConfigError",
    "InputBlocked",
    "OutputBlocked",
    "PersonaError",
    "PolicyError",
    "ProfileConflictError",
    "ProfileError",
    "ProfileValidationError",
    "StoreError",
    "UpstreamError",
    "UpstreamTimeout",
    "http_status",
]

#: Upstream statuses a client can act on are passed on; others (401 from the provider, 404 for a
#: misconfigured model, 5xx) are the deployment's problem and become 502.
_PASSED_UPSTREAM_STATUSES = frozenset({400, 413, 422, 429})


class PersonaError(Exception):
    """Root of every error persona_mw raises on purpose."""


class ConfigError(PersonaError):
    """Settings that cannot be used. ``source`` is the file (or "argument"), ``field`` the key."""

    def __init__(self, message: str, *, source: str | None = None, field: str | None = None):
        self.source = source
        self.field = field
        where = ": ".join(p for p in (source, field) if p)
        super().__init__(f"{where}: {message}" if where else message)


class PolicyError(ConfigError):
    """A policy file that cannot be loaded; ``rule_id`` names the rule when one is at fault."""

    def __init__(
        self,
        message: str,
        *,
        source: str | None = None,
        field: str | None = None,
        rule_id: str | None = None,
    ):
        self.rule_id = rule_id
        if rule_id:
            message = f"rule {rule_id!r}: {message}"
        super().__init__(message, source=source, field=field)


class ProfileError(PersonaError):
    """Something is wrong with a user profile."""


class ProfileValidationError(ProfileError):
    """A profile that breaks the schema. ``problems`` is a list of (field path, problem)."""

    def __init__(self, problems: Sequence[tuple[str, str]]):
        self.problems = list(problems)
        lines = "; ".join(f"{field}: {problem}" for field, problem in self.problems)
        super().__init__(f"invalid profile: {lines}")


class ProfileConflictError(ProfileError):
    """An update was based on an old version: someone else wrote the profile in between."""

    def __init__(self, user_hash: str, expected: int, actual: int | None):
        self.user_hash = user_hash
        self.expected = expected
        self.actual = actual
        super().__init__(
            f"profile was changed concurrently (expected version {expected}, found {actual}); "
            "re-read the profile and apply the change again (persona_mw.update_profile retries)"
        )


class StoreError(PersonaError):
    """A store could not be reached or answered with something unusable."""


class BoundsError(PersonaError):
    """A bound stopped the call. ``tier``, ``rule_id`` and ``user_message`` say which and why."""

    def __init__(self, user_message: str, *, tier: int, rule_id: str):
        self.user_message = user_message
        self.tier = tier
        self.rule_id = rule_id
        super().__init__(f"blocked by tier-{tier} rule {rule_id!r}: {user_message}")


class InputBlocked(BoundsError):
    """The input broke a bound and the caller asked for an exception instead of a reply."""


class OutputBlocked(BoundsError):
    """The model's output broke a bound where it could not be replaced by the rule's message
    (e.g. a LangChain callback, which can only abort the call)."""


class UpstreamError(PersonaError):
    """The model call failed. ``status_code`` is the upstream HTTP status when there was one."""

    def __init__(self, message: str, *, model: str, status_code: int | None = None):
        self.model = model
        self.status_code = status_code
        super().__init__(f"model {model!r} failed: {message}")


class UpstreamTimeout(UpstreamError):
    """The model did not answer in time; raise ``timeout=`` or check the provider."""


def http_status(exc: BaseException) -> int:
    """The HTTP status an error answers with (the server's, and ``http_status`` in the
    ``request.completed`` event of every host): the caller's fault 4xx, the deployment's 5xx."""
    if isinstance(exc, ConfigError | ProfileValidationError | BoundsError):
        return 400
    if isinstance(exc, ProfileConflictError):
        return 409
    if isinstance(exc, UpstreamTimeout):
        return 504
    if isinstance(exc, UpstreamError):
        passed = exc.status_code in _PASSED_UPSTREAM_STATUSES
        return exc.status_code if passed and exc.status_code else 502
    if isinstance(exc, StoreError):
        return 503
    return 500
