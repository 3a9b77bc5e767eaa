"""A second guardrail for the plugin tests, loaded INSIDE the LiteLLM proxy process after
persona-mw (``guardrails:`` order is the order the proxy runs their pre-call hooks).

It takes :data:`HOLD_S` before the request goes on, as a remote guardrail or a rate limiter on
Redis would: the window between persona-mw's pre-call hook and the request going upstream, in
which an input classifier that started at once would already be asking its provider.
"""

from __future__ import annotations

import asyncio
from typing import Any

from litellm.integrations.custom_guardrail import CustomGuardrail

__all__ = ["HOLD_S", "LaterGuardrail"]

HOLD_S = 0.3


class LaterGuardrail(CustomGuardrail):
    async def async_pre_call_hook(
        self, user_api_key_dict: Any, cache: Any, data: dict[str, Any], call_type: Any
    ) -> dict[str, Any]:
        await asyncio.sleep(HOLD_S)
        return data
