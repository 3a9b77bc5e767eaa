"""Wiring: a whole deployment's :class:`~persona_mw.config.Config` → a ready :class:`Middleware`.

This is the one place that knows which stage goes where; the integrations (LangChain, the
server, the LiteLLM-proxy plugin) and the CLI all build their middleware here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .bounds import bounds_stages
from .config import Config, load_config
from .llm import LiteLLMClient
from .metrics import MetricsStage
from .observability import UserHasher
from .personalise import PersonaliseStage
from .pipeline import Middleware
from .safety_identifier import SafetyIdentifierStage
from .signals import (
    DependenceStage,
    MemoryActionStateStore,
    RedisActionStateStore,
    SignalsMetrics,
    SignalsMetricsStage,
    UsageRecorder,
    analyse_text,
    open_usage_store,
)
from .stores import open_store
from .types import FinishStage, InputStage, LLMClient, OutputStage

__all__ = ["build_middleware"]


def build_middleware(
    config: Config | None = None, *, llm: LLMClient | None = None, **overrides: Any
) -> Middleware:
    """The middleware a deployment's config describes, with every stage in its place.

    Input stages run as: bounds (check input) → dependence (signals ladder) → personalise.
    ``llm`` replaces the LiteLLM client (e.g. in tests); with a ``model_list`` in the config the
    default client routes through a LiteLLM ``Router`` built from it and ``router_settings``
    (single deployments with nothing to route are called directly, see :mod:`persona_mw.llm`).
    """
    config = config or load_config(**overrides)
    store = open_store(config.store.url, prefix=config.store.prefix)
    if llm is None:
        llm = (
            LiteLLMClient.from_model_list(config.model_list, config.router_settings)
            if config.model_list
            else LiteLLMClient()
        )

    check_input, check_output = bounds_stages(config.bounds, base_dir=config.base_dir)
    signals_config = config.signals
    usage = open_usage_store(
        config.store.url,
        prefix=config.store.prefix,
        retention_days=signals_config.history_days,
        signals=signals_config,
    )
    action_state = (
        RedisActionStateStore(config.store.url, prefix=config.store.prefix)
        if config.store.url
        else MemoryActionStateStore()
    )
    metrics = SignalsMetrics.default()
    input_stages: list[InputStage] = [
        check_input,
        DependenceStage(usage, config=signals_config, state_store=action_state, metrics=metrics),
        PersonaliseStage(config=config.personalise),
    ]
    if config.settings.safety_identifier:
        input_stages.append(SafetyIdentifierStage(_keyed_hasher(config), config.model_list))
    output_stages: list[OutputStage] = [check_output]
    recorder = UsageRecorder(usage, analyse=analyse_text)
    finish_stages: list[FinishStage] = [
        recorder,
        SignalsMetricsStage(metrics, counters=action_state),
        MetricsStage(usage=recorder),  # last: it times the finish stages before it
    ]
    return Middleware(
        store=store,
        llm=llm,
        input_stages=input_stages,
        output_stages=output_stages,
        finish_stages=finish_stages,
        settings=config.settings,
    )


def _keyed_hasher(config: Config) -> UserHasher:
    secret = config.settings.hash_secret
    return UserHasher(secret.get_secret_value() if secret is not None else None)


def demo_config_sections() -> dict[str, Any]:
    """The configuration the demo runs with: the built-in packs a deployer would switch on."""
    return {
        "settings": {"hash_secret": "demo-only-secret"},
        "bounds": {"policies": [str(_DEMO_POLICY)]},
    }


_DEMO_POLICY = Path(__file__).parent / "demo_policy.yaml"
