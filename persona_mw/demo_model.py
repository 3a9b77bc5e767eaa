"""An offline stand-in model, registered as a LiteLLM custom provider: ``persona-demo/offline``.

It is not a language model. It reads the style hints in the system prompt (language, verbosity,
expertise, tone, format) and assembles a canned answer, so the demo can show how two profiles
change the reply without any network or weights. Every reply starts with ``[offline demo
model]`` so nobody mistakes it for a real answer. Pass ``--model`` to the demo (or set
``PERSONA_MW_MODEL``) to use a real model instead.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

from .llm import import_litellm
from .types import content_text

__all__ = ["DEMO_MODEL", "compose_reply", "register_demo_model"]

PROVIDER = "persona-demo"
DEMO_MODEL = f"{PROVIDER}/offline"
LABEL = "[offline demo model]"

_ANSWERS: dict[str, dict[str, str]] = {
    "sleep": {
        "en-short": "Keep a fixed wake-up time, get daylight in the morning, and stop screens an hour before bed.",
        "en-long": (
            "Sleep improves most from regularity. Wake at the same time every day, even at weekends; "
            "get outside light in the first hour; keep caffeine to the morning; and give yourself a "
            "screen-free wind-down of about an hour. If you lie awake for more than 20 minutes, get up "
            "and do something calm until you feel sleepy."
        ),
        "es-short": "Levántate siempre a la misma hora, busca luz por la mañana y deja las pantallas una hora antes de dormir.",
        "es-long": (
            "El sueño mejora sobre todo con regularidad. Levántate a la misma hora cada día, también el "
            "fin de semana; sal a la luz en la primera hora; toma café solo por la mañana; y date una hora "
            "sin pantallas antes de acostarte. Si llevas más de 20 minutos despierto, levántate y haz algo "
            "tranquilo hasta tener sueño."
        ),
    },
    "python": {
        "en-short": "Profile first (cProfile), then fix the hot loop: better algorithm, built-ins, or vectorise.",
        "en-long": (
            "Start by measuring: run cProfile or py-spy to find where the time goes. Then, in order of "
            "pay-off: pick a better algorithm or data structure (a set instead of a list for lookups), "
            "move work into built-ins and comprehensions, cache repeated results, and only then reach "
            "for NumPy, multiprocessing or a compiled extension."
        ),
        "es-short": "Mide primero (cProfile) y luego arregla el bucle caliente: mejor algoritmo, funciones integradas o vectorizar.",
        "es-long": (
            "Empieza midiendo con cProfile o py-spy para ver dónde se va el tiempo. Después, por orden de "
            "beneficio: un algoritmo o estructura de datos mejor (un set en vez de una lista para buscar), "
            "funciones integradas y comprensiones, caché de resultados repetidos, y solo al final NumPy, "
            "multiprocessing o una extensión compilada."
        ),
    },
}
_GENERIC = {
    "en-short": "Here is a short answer to your question.",
    "en-long": "Here is a fuller answer to your question, with the reasoning spelled out step by step.",
    "es-short": "Aquí tienes una respuesta breve.",
    "es-long": "Aquí tienes una respuesta más completa, con el razonamiento paso a paso.",
}


def compose_reply(messages: list[dict[str, Any]]) -> str:
    """The canned reply for these messages, shaped by the hints in the system prompt."""
    system = " ".join(
        content_text(m.get("content"), " ") for m in messages if m.get("role") == "system"
    ).lower()
    question = ""
    for message in reversed(messages):
        if message.get("role") == "user":
            question = content_text(message.get("content"), " ").lower()
            break
    lang = "es" if re.search(r"\b(spanish|español|language[^.\n]*\bes\b)", system) else "en"
    short = bool(re.search(r"\b(terse|brief|concise|short)\b", system))
    topic = next((t for t in _ANSWERS if t in question), None)
    if topic is None and re.search(r"\b(code|program|slow)\b", question):
        topic = "python"
    if topic is None and re.search(r"\b(sleep|tired|insomnia|dormir)\b", question):
        topic = "sleep"
    answers = _ANSWERS.get(topic or "", _GENERIC)
    body = answers[f"{lang}-{'short' if short else 'long'}"]
    if re.search(r"\b(novice|beginner)\b", system):
        body += (
            " (En pocas palabras: empieza por lo más sencillo.)"
            if lang == "es"
            else " (In plain words: start with the simplest step.)"
        )
    if re.search(r"\bexpert\b", system):
        body += " Detalles técnicos a petición." if lang == "es" else " Happy to go into internals."
    if re.search(r"\bbullet", system):
        body = "\n".join(f"- {s.strip()}" for s in re.split(r"(?<=[.;])\s+", body) if s.strip())
    if re.search(r"\b(friendly|playful|warm)\b", system):
        body = ("¡Buena pregunta! " if lang == "es" else "Great question! ") + body
    return f"{LABEL} {body}"


def _handler_class() -> type:
    litellm = import_litellm()
    from litellm.types.utils import GenericStreamingChunk

    class OfflineDemoLLM(litellm.CustomLLM):  # type: ignore[misc, name-defined]
        def completion(self, *args: Any, **kwargs: Any) -> Any:
            return self._respond(kwargs)

        async def acompletion(self, *args: Any, **kwargs: Any) -> Any:
            return self._respond(kwargs)

        def _respond(self, kwargs: dict[str, Any]) -> Any:
            text = compose_reply(kwargs.get("messages") or [])
            response = kwargs["model_response"]
            response.choices[0].message.content = text
            response.choices[0].finish_reason = "stop"
            response.model = DEMO_MODEL
            response.created = int(time.time())
            response.usage = litellm.Usage(
                prompt_tokens=_count(kwargs.get("messages") or []),
                completion_tokens=max(1, len(text) // 4),
                total_tokens=_count(kwargs.get("messages") or []) + max(1, len(text) // 4),
            )
            return response

        def streaming(self, *args: Any, **kwargs: Any) -> Iterator[GenericStreamingChunk]:
            yield from _chunks(compose_reply(kwargs.get("messages") or []))

        async def astreaming(
            self, *args: Any, **kwargs: Any
        ) -> AsyncIterator[GenericStreamingChunk]:
            for chunk in _chunks(compose_reply(kwargs.get("messages") or [])):
                yield chunk

    return OfflineDemoLLM


def _count(messages: list[dict[str, Any]]) -> int:
    return sum(len(content_text(m.get("content"), " ")) for m in messages) // 4


def _chunks(text: str) -> Iterator[Any]:
    words = re.findall(r"\S+\s*", text)
    for i, word in enumerate(words):
        last = i == len(words) - 1
        yield {
            "text": word,
            "is_finished": last,
            "finish_reason": "stop" if last else "",
            "usage": None,
            "index": 0,
            "tool_use": None,
        }


def register_demo_model() -> str:
    """Register ``persona-demo/offline`` with LiteLLM (idempotent) and return its name."""
    litellm = import_litellm()
    if not any(p.get("provider") == PROVIDER for p in litellm.custom_provider_map):
        litellm.custom_provider_map.append(
            {"provider": PROVIDER, "custom_handler": _handler_class()()}
        )
        from litellm.utils import custom_llm_setup

        custom_llm_setup()  # type: ignore[no-untyped-call]
    return DEMO_MODEL
