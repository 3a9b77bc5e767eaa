"""What a model-backed detector answers: a :class:`Verdict`, or :class:`ClassifierFailed` when
it gives none. A leaf, so the callers of each model (:mod:`.moderation`, :mod:`.judge`) and the
module that asks them (:mod:`.classifiers`) share it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ClassifierFailed", "Verdict"]


class ClassifierFailed(Exception):
    """A model-backed detector gave no verdict (error, timeout, unreadable answer)."""

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


@dataclass(frozen=True, slots=True)
class Verdict:
    """What a classifier said about one text: the labels it flagged (moderation categories,
    judge category codes); none means safe."""

    labels: tuple[str, ...] = ()
