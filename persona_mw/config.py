"""Configuration: validated, immutable, keyword-only. Bad config fails at start-up with the file,
the field and the fix.

A deployment's YAML file has these top-level sections (all optional)::

    settings:   {hash_secret, log_message_text, on_store_error, ...}   # Settings below
    store:      {url: redis://..., prefix: "pmw:"}                    # StoreConfig
    bounds:     {...}        # persona_mw.bounds.BoundsConfig
    personalise: {...}       # persona_mw.personalise.PersonaliseConfig
    signals:    {...}        # persona_mw.signals.SignalsConfig
    model_list: [...]        # LiteLLM Router model list (the server uses it)
    server:     {...}        # persona_mw_server's settings (keys, roles, limits)
    litellm_settings / router_settings / general_settings / environment_variables:
                             # accepted as in a LiteLLM proxy config, so one file serves both
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError

from .errors import ConfigError

__all__ = ["Config", "Settings", "StoreConfig", "load_config"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Settings(_Frozen):
    """How the middleware behaves, whatever the stages."""

    #: Key for the HMAC that pseudonymises user ids in logs; default: $PERSONA_MW_HASH_SECRET.
    hash_secret: SecretStr | None = None
    #: Log raw user ids instead of hashes. Only for deployments that may (it is personal data).
    log_raw_user_id: bool = False
    #: Put the prompt and the reply text in the request log event. Off by default.
    log_message_text: bool = False
    #: When the profile store is unreachable: answer with the cached/default profile, or refuse.
    on_store_error: Literal["fallback", "fail_closed"] = "fallback"
    #: Seconds a cached profile counts as fresh (invalidation usually evicts it much sooner).
    profile_cache_ttl_s: float = Field(default=60.0, ge=0)
    #: Fields applied to users who have no profile (e.g. a deployment-wide default language).
    default_profile: dict[str, Any] = Field(default_factory=dict)
    #: Where notices (AI disclosure, reminders, crisis resources) go: ``auto`` puts them in the
    #: reply's text, except for structured replies (``response_format`` json_object /
    #: json_schema, tools), where they go to the ``persona_notices`` field / the
    #: ``X-Persona-Notices`` header, which the app must show; ``in_band`` / ``out_of_band``
    #: force one place for every call.
    notices: Literal["auto", "in_band", "out_of_band"] = "auto"
    #: The model's ``reasoning_content``: checked by the output rules like the reply
    #: (``filter``), or never passed on (``drop``).
    reasoning_content: Literal["filter", "drop"] = "filter"
    #: Send the user's keyed hash as ``safety_identifier`` to models that accept it (OpenAI):
    #: never the raw id (:mod:`persona_mw.safety_identifier`).
    safety_identifier: bool = False


class StoreConfig(_Frozen):
    #: ``redis://host:port/db``; empty means the embedded in-memory store.
    url: str = ""
    prefix: str = "pmw:"


class Config(_Frozen):
    """A whole deployment's configuration (one YAML file)."""

    settings: Settings = Settings()
    store: StoreConfig = StoreConfig()
    bounds: dict[str, Any] = Field(default_factory=dict)
    personalise: dict[str, Any] = Field(default_factory=dict)
    signals: dict[str, Any] = Field(default_factory=dict)
    model_list: list[dict[str, Any]] = Field(default_factory=list)
    #: The proxy server's own section (persona_mw_server reads it).
    server: dict[str, Any] = Field(default_factory=dict)
    #: Sections of a LiteLLM proxy config, accepted so one file serves both (the server reads
    #: the ones it understands; see docs/proxy.md).
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    general_settings: dict[str, Any] = Field(default_factory=dict)
    environment_variables: dict[str, Any] = Field(default_factory=dict)
    #: The config file this came from; relative paths inside are resolved against its folder.
    source: str | None = None

    @property
    def base_dir(self) -> Path:
        return Path(self.source).parent if self.source else Path.cwd()


def load_config(path: str | os.PathLike[str] | None = None, **overrides: Any) -> Config:
    """Read a YAML config file (or none: the embedded defaults) into a :class:`Config`.

    Environment variables in ``${VAR}`` form inside string values are expanded, so secrets stay
    out of the file. Raises :class:`ConfigError` naming the file and the field.
    """
    data: dict[str, Any] = {}
    source = None
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the config file: {exc.strerror}", source=source
            ) from None
        try:
            loaded = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"not valid YAML: {exc}", source=source) from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError("the top level must be a mapping of sections", source=source)
        data = _expand_env(loaded, source)
    data.update(overrides)
    try:
        return Config.model_validate({**data, "source": source})
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        hint = (
            "unknown field; check the spelling"
            if first["type"] == "extra_forbidden"
            else first["msg"]
        )
        more = f" (and {exc.error_count() - 1} more problems)" if exc.error_count() > 1 else ""
        raise ConfigError(hint + more, source=source or "config", field=field) from None


def _expand_env(value: Any, source: str) -> Any:
    if isinstance(value, str):
        expanded = os.path.expandvars(value)
        if "${" in expanded:
            raise ConfigError(
                f"environment variable in {value!r} is not set; export it or remove the reference",
                source=source,
            )
        return expanded
    if isinstance(value, dict):
        return {k: _expand_env(v, source) for k, v in value.items()}
    if isinstance(value, list):
        return [_expand_env(v, source) for v in value]
    return value
