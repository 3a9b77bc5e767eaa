"""The LLM judge: a Llama-Guard-style safety prompt sent through LiteLLM (input stage only).

Only this module talks to a model, so only it imports litellm (lazily, on first use). A judge
that errors, times out or answers something unreadable raises :class:`JudgeFailed`; the input
stage then follows the rule's fail mode (tier 1 fails closed).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from ..types import Span
from .policy import JudgeSpec

__all__ = ["JudgeFailed", "judge", "judge_prompt"]

_PROMPT = """Task: Check if there is unsafe content in 'User' messages in conversations according \
to our safety policy with the below categories.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

User: {text}

<END CONVERSATION>

Provide your safety assessment for ONLY THE LAST User message in the above conversation:
- First line must read 'safe' or 'unsafe'.
- If unsafe, a second line must include a comma-separated list of violated categories."""


class JudgeFailed(Exception):
    """The judge could not give a verdict (error, timeout, unreadable answer)."""


def judge_prompt(text: str, categories: tuple[str, ...]) -> str:
    return _PROMPT.format(categories="\n".join(categories), text=text)


async def judge(
    text: str,
    spec: JudgeSpec,
    *,
    model: str,
    timeout_s: float,
    completion_kwargs: Mapping[str, Any] | None = None,
) -> list[Span]:
    """One span over the whole text when the judge says unsafe (labelled with the categories it
    names), none when safe. ``completion_kwargs`` go to ``litellm.acompletion`` (api_base,
    api_key, or ``mock_response`` in tests)."""
    from ..llm import import_litellm

    litellm = import_litellm()
    try:
        response = await asyncio.wait_for(
            litellm.acompletion(
                model=spec.model or model,
                messages=[{"role": "user", "content": judge_prompt(text, spec.categories)}],
                temperature=0,
                max_tokens=20,
                timeout=spec.timeout_s or timeout_s,
                **dict(completion_kwargs or {}),
            ),
            timeout=spec.timeout_s or timeout_s,
        )
    except TimeoutError:
        raise JudgeFailed(f"no verdict within {spec.timeout_s or timeout_s} s") from None
    except Exception as exc:
        raise JudgeFailed(f"{type(exc).__name__}: {exc}") from exc
    answer = (response.choices[0].message.content or "").strip()
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    verdict = lines[0].lower() if lines else ""
    if verdict == "safe":
        return []
    if verdict == "unsafe":
        label = lines[1] if len(lines) > 1 else "unsafe"
        return [Span(0, len(text), label[:100])]
    raise JudgeFailed(f"unreadable verdict {answer[:80]!r}; expected 'safe' or 'unsafe'")
