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

Every section is validated when the file is loaded, so a typo anywhere fails at start-up.

**Environment variables** (one rule for every file persona_mw reads: the library's, the
server's and the LiteLLM plugin's): a string may contain ``${VAR}``, or be ``os.environ/VAR``
as a whole (LiteLLM's form). The file's own ``environment_variables`` section counts as set. A
variable that is not set is an error naming the file and the field. The bare ``$VAR`` form the
library once expanded still is, with a ``FutureWarning``: write ``${VAR}``.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal, cast

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr

from .bounds.stages import BoundsConfig
from .errors import ConfigError
from .personalise.config import PersonaliseConfig
from .signals.config import SignalsConfig
from .validation import validate_config

__all__ = [
    "BoundsConfig",
    "Config",
    "PersonaliseConfig",
    "Settings",
    "SignalsConfig",
    "StoreConfig",
    "expand_env",
    "load_config",
    "read_config_file",
]


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
    bounds: BoundsConfig = BoundsConfig()
    personalise: PersonaliseConfig = PersonaliseConfig()
    signals: SignalsConfig = SignalsConfig()
    #: LiteLLM's Router format, passed to LiteLLM as it is (LiteLLM validates it).
    model_list: list[dict[str, Any]] = Field(default_factory=list)
    #: The proxy server's own section (persona_mw_server validates it: the core cannot know it).
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

    Environment variables are expanded by the rule in this module's docstring, so secrets stay
    out of the file. ``overrides`` replace whole sections. Raises :class:`ConfigError` naming the
    file, the field and the fix.
    """
    source = None if path is None else str(path)
    data = expand_env(read_config_file(path), source=source) if path is not None else {}
    data.update(overrides)
    return validate_config(Config, {**data, "source": source}, source=source or "config")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The top-level mapping of a YAML config file, as written (no variables expanded).

    Raises :class:`ConfigError` naming the file when it cannot be read, is not YAML or is not a
    mapping of sections.
    """
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the config file: {exc.strerror}", source=source) from None
    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"not valid YAML: {exc}", source=source) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError("the top level must be a mapping of sections", source=source)
    return loaded


#: ``${VAR}`` (group 1) or the deprecated bare ``$VAR`` (group 2).
_REFERENCE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
_LITELLM_PREFIX = "os.environ/"


def expand_env(
    data: dict[str, Any], *, source: str | None, env: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """``data`` with environment variables expanded in every string (the rule in this module's
    docstring). ``env`` defaults to the process environment plus the ``environment_variables``
    section of ``data``."""
    if env is None:
        declared = data.get("environment_variables")
        env = {
            **os.environ,
            **({str(k): str(v) for k, v in declared.items()} if isinstance(declared, dict) else {}),
        }
    return cast(dict[str, Any], _expand(data, env, source or "config", ""))


def _expand(value: Any, env: Mapping[str, str], source: str, where: str) -> Any:
    if isinstance(value, dict):
        return {
            k: _expand(v, env, source, f"{where}.{k}" if where else str(k))
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_expand(v, env, source, f"{where}.{i}") for i, v in enumerate(value)]
    if not isinstance(value, str) or ("$" not in value and not value.startswith(_LITELLM_PREFIX)):
        return value

    def lookup(name: str) -> str:
        if name not in env:
            raise ConfigError(
                f"environment variable {name} is not set; export it, or give it under "
                "environment_variables",
                source=source,
                field=where or None,
            )
        return env[name]

    if value.startswith(_LITELLM_PREFIX):
        return lookup(value.removeprefix(_LITELLM_PREFIX))

    def substitute(match: re.Match[str]) -> str:
        braced, bare = match.groups()
        if braced is not None:
            return lookup(braced)
        if bare not in env:
            return match.group(0)  # a literal "$word", as the library always left it
        warnings.warn(
            f"{source}: {where}: ${bare} is expanded, but the bare $VAR form is deprecated; "
            f"write ${{{bare}}}",
            FutureWarning,
            stacklevel=4,
        )
        return env[bare]

    return _REFERENCE.sub(substitute, value)
