"""persona_mw as a guardrail plugin for an existing LiteLLM proxy.

``PersonaGuardrail`` is loaded by the proxy from its ``config.yaml`` (``guardrails:`` section,
``guardrail: persona_mw_litellm.PersonaGuardrail``). It needs ``litellm[proxy]``: install the
``persona-mw[litellm-proxy]`` extra in the proxy's environment. See docs/proxy.md.
"""

from .guardrail import CONFIG_ENV, PersonaGuardrail

__all__ = ["CONFIG_ENV", "PersonaGuardrail"]
