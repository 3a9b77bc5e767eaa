"""The server's configuration: persona_mw's own sections plus the server's, in one YAML file.

The file is a persona_mw config (``settings``, ``store``, ``bounds``, ``personalise``,
``signals``, ``model_list``) with a ``server`` section added, and it accepts the other top-level
sections of a LiteLLM proxy ``config.yaml`` so a deployer can reuse theirs::

    model_list:                       # LiteLLM Router format, as in LiteLLM's proxy
      - model_name: gpt-4o-mini
        litellm_params: {model: openai/gpt-4o-mini, api_key: os.environ/OPENAI_API_KEY}
    litellm_settings: {drop_params: true, num_retries: 2}   # a known subset is applied
    router_settings: {routing_strategy: simple-shuffle}     # passed to litellm.Router
    general_settings: {master_key: os.environ/LITELLM_MASTER_KEY}  # becomes an admin key
    environment_variables: {OPENAI_API_KEY: ...}            # exported at start-up
    server:
      api_keys:
        - {name: my-app, role: app, key_hash: "sha256:..."}
        - {name: ada, role: user, user: ada, key_hash: "sha256:..."}
      max_body_bytes: 1048576
      upstream_timeout_s: 60

String values may name environment variables as ``${VAR}`` (persona_mw style) or, as a whole
value, ``os.environ/VAR`` (LiteLLM style); a variable that is not set is an error at start-up.
The rule is the library's own (:mod:`persona_mw.config`), so the plugin reads files alike.
"""

from __future__ import annotations

import os
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from persona_mw import Config, ConfigError
from persona_mw.config import expand_env, read_config_file
from persona_mw.validation import validate_config

from .keys import hash_key

__all__ = [
    "GENERAL_SETTINGS_APPLIED",
    "LITELLM_SECTIONS_IGNORED",
    "LITELLM_SETTINGS_APPLIED",
    "ApiKey",
    "Role",
    "ServerConfig",
    "ServerSettings",
    "load_server_config",
]

Role = Literal["app", "user", "admin"]

#: ``litellm_settings`` keys the server applies to litellm (others are logged and ignored: the
#: LiteLLM proxy's callbacks, caches and budgets are its own features, not ours).
LITELLM_SETTINGS_APPLIED = frozenset(
    {"drop_params", "modify_params", "num_retries", "request_timeout"}
)

_PERSONA_SECTIONS = ("settings", "store", "bounds", "personalise", "signals", "model_list")
_LITELLM_SECTIONS = (
    "litellm_settings",
    "general_settings",
    "router_settings",
    "environment_variables",
)
#: Sections of a LiteLLM proxy config the server does not use: accepted, each with one warning
#: (so a LiteLLM proxy's whole ``config.yaml`` can be served as it is).
LITELLM_SECTIONS_IGNORED = {
    "guardrails": "the server applies persona_mw's bounds itself; LiteLLM guardrails run only "
    "inside a LiteLLM proxy",
    "callbacks": "LiteLLM proxy callbacks are not run by the server",
    "credential_list": "give credentials in model_list's litellm_params",
    "mcp_servers": "the server does not host MCP tools",
    "search_tools": "the server does not host search tools",
    "vector_store_registry": "the server does not host vector stores",
    "files_settings": "the server does not serve the files API",
    "finetune_settings": "the server does not serve fine-tuning",
    "assistant_settings": "the server does not serve the assistants API",
    "callback_settings": "LiteLLM proxy callbacks are not run by the server",
    "prompts": "personalisation builds the system prompt; LiteLLM prompt management is not used",
}
#: ``general_settings`` keys the server uses; every other one gets a warning.
GENERAL_SETTINGS_APPLIED = frozenset({"master_key"})
_ALL_SECTIONS = (*_PERSONA_SECTIONS, *_LITELLM_SECTIONS, "server", *LITELLM_SECTIONS_IGNORED)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ApiKey(_Frozen):
    """One API key, as its hash. ``user`` binds a ``user``-role key to one user id."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    role: Role
    key_hash: Annotated[str, StringConstraints(pattern=r"^sha256:[0-9a-f]{64}$")] = Field(
        description="sha256:<hex>; make one with `persona-mw serve --hash-key`"
    )
    user: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = None

    @model_validator(mode="after")
    def _user_binding(self) -> ApiKey:
        if self.role == "user" and self.user is None:
            raise ValueError(
                "a key with role 'user' needs `user:` (the one user id it may act for)"
            )
        if self.role != "user" and self.user is not None:
            raise ValueError(f"`user:` only applies to role 'user', not {self.role!r}")
        return self


class ServerSettings(_Frozen):
    """The ``server`` section."""

    #: Without keys the server runs without auth and binds only to loopback.
    api_keys: tuple[ApiKey, ...] = ()
    #: Larger request bodies are refused with 413.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Seconds to wait for the model before answering 504.
    upstream_timeout_s: float = Field(default=60.0, gt=0)
    #: On shutdown, seconds to let open streams finish before they are cut.
    drain_timeout_s: float = Field(default=30.0, ge=0)
    #: Accept the ``X-Persona-Jurisdiction`` header (comma-separated law codes) from callers:
    #: only behind a gateway that sets it and strips it from end users (docs/compliance.md).
    trust_jurisdiction_header: bool = False

    @model_validator(mode="after")
    def _unique_names(self) -> ServerSettings:
        names = [k.name for k in self.api_keys]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"api key names must be unique; repeated: {', '.join(dupes)}")
        return self


class ServerConfig(_Frozen):
    """Everything ``persona-mw serve`` reads: :class:`persona_mw.Config` plus the server's own."""

    persona: Config = Config()
    server: ServerSettings = ServerSettings()
    litellm_settings: dict[str, Any] = Field(default_factory=dict)
    router_settings: dict[str, Any] = Field(default_factory=dict)
    general_settings: dict[str, Any] = Field(default_factory=dict)
    environment_variables: dict[str, str] = Field(default_factory=dict)
    #: One line per section (or ``general_settings`` key) of the file the server does not use:
    #: logged as ``config.section_ignored`` at start-up, printed by ``--check-config``.
    ignored: tuple[str, ...] = ()

    @model_validator(mode="before")
    @classmethod
    def _master_key_to_hash(cls, data: Any) -> Any:
        """LiteLLM's ``general_settings.master_key`` becomes an admin key; only its hash is kept."""
        if not isinstance(data, dict):
            return data
        general = dict(data.get("general_settings") or {})
        master = general.pop("master_key", None)
        if not master:
            return data
        server = data.get("server") or {}
        server = dict(server) if isinstance(server, dict) else server.model_dump()
        server["api_keys"] = [
            *server.get("api_keys", ()),
            {"name": "master_key", "role": "admin", "key_hash": hash_key(str(master))},
        ]
        return {**data, "general_settings": general, "server": server}

    @property
    def api_keys(self) -> tuple[ApiKey, ...]:
        return self.server.api_keys

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)


def load_server_config(path: str | os.PathLike[str] | None = None) -> ServerConfig:
    """Read the server's YAML file (or none: embedded defaults). Raises ConfigError naming the
    file, the field and the fix. Files are read, and environment variables expanded, as
    :func:`persona_mw.load_config` does (one rule: :mod:`persona_mw.config`)."""
    if path is None:
        return ServerConfig()
    source = str(path)
    loaded = read_config_file(path)
    unknown = sorted(set(loaded) - set(_ALL_SECTIONS))
    if unknown:
        raise ConfigError(
            f"unknown section(s) {', '.join(map(repr, unknown))}; "
            f"accepted: {', '.join(_ALL_SECTIONS)}",
            source=source,
            field=unknown[0],
        )
    ignored = [
        f"{name}: ignored ({why})"
        for name, why in LITELLM_SECTIONS_IGNORED.items()
        if name in loaded
    ]
    # Sections the server ignores are not expanded either: their variables need not be set.
    loaded = {k: v for k, v in loaded.items() if k not in LITELLM_SECTIONS_IGNORED}
    general = loaded.get("general_settings") or {}
    ignored += [
        f"general_settings.{key}: ignored (a LiteLLM proxy setting; the server uses only "
        f"{', '.join(sorted(GENERAL_SETTINGS_APPLIED))}"
        + ("; persona_mw keeps its data in the `store` section)" if key == "database_url" else ")")
        for key in sorted(general)
        if key not in GENERAL_SETTINGS_APPLIED
    ]
    data = expand_env(loaded, source=source)
    _check_model_list(data.get("model_list") or [], source)
    persona_part = {k: data[k] for k in _PERSONA_SECTIONS if k in data and data[k] is not None}
    persona = validate_config(Config, {**persona_part, "source": source}, source=source)
    return validate_config(
        ServerConfig,
        {
            "persona": persona,
            "ignored": tuple(ignored),
            **{k: data[k] for k in (*_LITELLM_SECTIONS, "server") if data.get(k) is not None},
        },
        source=source,
    )


def _check_model_list(model_list: Any, source: str) -> None:
    if not isinstance(model_list, list):
        raise ConfigError(
            "must be a list of {model_name, litellm_params}", source=source, field="model_list"
        )
    for i, entry in enumerate(model_list):
        params = entry.get("litellm_params") if isinstance(entry, dict) else None
        if (
            not isinstance(entry, dict)
            or not entry.get("model_name")
            or not isinstance(params, dict)
            or not params.get("model")
        ):
            raise ConfigError(
                "each entry needs `model_name` (what clients ask for) and `litellm_params.model` "
                "(the LiteLLM model, e.g. openai/gpt-4o-mini)",
                source=source,
                field=f"model_list.{i}",
            )
