"""The moderation detector: an OpenAI-style moderation endpoint through ``litellm.amoderation``.

The endpoint scores the text per category (:data:`~.policy.MODERATION_CATEGORIES`); a category
counts when the endpoint flags it, or — with the rule's ``threshold`` — when its score reaches
the threshold. Which categories fire which rule is :func:`~.classifiers.hits_for`'s business.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .policy import MODERATION_CATEGORIES, ModerationSpec
from .verdict import ClassifierFailed, Verdict

__all__ = ["moderate", "read_moderation"]


def read_moderation(result: Mapping[str, Any], spec: ModerationSpec) -> Verdict:
    """Pure: the verdict in one moderation result (``{"categories": {...}, "category_scores":
    {...}}``). Raises ClassifierFailed when the result carries neither."""
    flags = result.get("categories")
    scores = result.get("category_scores")
    if not isinstance(flags, Mapping) and not isinstance(scores, Mapping):
        raise ClassifierFailed("the moderation result has no categories nor category_scores")
    flags = flags if isinstance(flags, Mapping) else {}
    scores = scores if isinstance(scores, Mapping) else {}
    labels = []
    for category in MODERATION_CATEGORIES:
        if spec.threshold is not None:
            score = scores.get(category)
            hit = isinstance(score, int | float) and score >= spec.threshold
        else:
            hit = flags.get(category) is True
        if hit:
            labels.append(category)
    return Verdict(tuple(labels))


async def moderate(
    text: str, spec: ModerationSpec, *, model: str, kwargs: Mapping[str, Any]
) -> Verdict:
    """Ask the endpoint about ``text``. Errors of the call propagate."""
    from ..llm import import_litellm

    litellm = import_litellm()
    response = await litellm.amoderation(input=text, model=model, **dict(kwargs))
    results = getattr(response, "results", None) or []
    if not results:
        raise ClassifierFailed("the moderation response has no results")
    first = results[0]
    data = first.model_dump() if hasattr(first, "model_dump") else dict(first)
    return read_moderation(data, spec)
