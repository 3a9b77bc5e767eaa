"""The judge: any chat model as a classifier, asked through LiteLLM with a Llama-Guard-style
prompt.

The contract (docs/policies.md, "Model-backed detectors"): the model gets one user message —
the prompt below, or the rule's own ``prompt`` with ``{categories}``, ``{role}`` and ``{text}``
filled in — and answers with ``safe``, or ``unsafe`` and on the next line the violated
categories' codes, comma-separated (``S11`` for ``"S11: Suicide & Self-Harm"``). Anything else
is no verdict (:class:`JudgeFailed`), and the rule's fail mode decides. A guard model such as
Llama Guard answers this format as trained; a general chat model is told it in the prompt.

Only this module and :mod:`.moderation` talk to a model, so only they import litellm (lazily).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..types import Stage
from .policy import JudgeSpec, category_code

__all__ = ["JudgeFailed", "judge", "judge_prompt", "read_verdict"]

_PROMPT = """Task: Check if there is unsafe content in '{role}' messages in conversations \
according to our safety policy with the below categories.

<BEGIN UNSAFE CONTENT CATEGORIES>
{categories}
<END UNSAFE CONTENT CATEGORIES>

<BEGIN CONVERSATION>

{role}: {text}

<END CONVERSATION>

Provide your safety assessment for ONLY THE LAST {role} message in the above conversation:
- First line must read 'safe' or 'unsafe'.
- If unsafe, a second line must include a comma-separated list of violated categories."""

#: Who wrote the judged text, as the prompt names it: the user on input, the assistant on
#: output (Llama Guard's "User" / "Agent").
_ROLES: dict[Stage, str] = {"input": "User", "output": "Agent"}


class JudgeFailed(Exception):
    """The judge could not give a verdict (an unreadable answer)."""


def judge_prompt(text: str, spec: JudgeSpec, stage: Stage = "input") -> str:
    template = spec.prompt or _PROMPT
    return (
        template.replace("{categories}", "\n".join(spec.categories))
        .replace("{role}", _ROLES[stage])
        .replace("{text}", text)
    )


def read_verdict(answer: str, spec: JudgeSpec) -> tuple[str, ...]:
    """Pure: the category codes an answer flags; () for ``safe``. Raises JudgeFailed for an
    answer outside the contract. An ``unsafe`` without readable codes flags every category."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    verdict = lines[0].lower().rstrip(".") if lines else ""
    if verdict == "safe":
        return ()
    if verdict != "unsafe":
        raise JudgeFailed(f"unreadable verdict {answer[:80]!r}; expected 'safe' or 'unsafe'")
    known = [category_code(c) for c in spec.categories]
    named = [p.strip() for p in lines[1].split(",")] if len(lines) > 1 else []
    codes = tuple(dict.fromkeys(code for code in named if code in known))
    return codes or tuple(known)


async def judge(
    text: str,
    spec: JudgeSpec,
    *,
    model: str,
    stage: Stage,
    timeout_s: float,
    kwargs: Mapping[str, Any] | None = None,
) -> tuple[str, ...]:
    """Ask the judge about ``text``; the flagged category codes (() when safe). Errors of the
    call propagate (the caller maps them to the fail mode). ``kwargs`` go to
    ``litellm.acompletion`` (api_base, api_key, ...)."""
    from ..llm import import_litellm

    litellm = import_litellm()
    response = await litellm.acompletion(
        model=model,
        messages=[{"role": "user", "content": judge_prompt(text, spec, stage)}],
        temperature=0,
        max_tokens=40,
        timeout=timeout_s,
        num_retries=0,
        **dict(kwargs or {}),
    )
    return read_verdict(response.choices[0].message.content or "", spec)
