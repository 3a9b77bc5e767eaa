"""One adapter from pydantic's ``ValidationError`` to our :class:`~persona_mw.errors.ConfigError`.

Every configuration model (the deployment config and its sections, policy files, packs,
jurisdictions, the server's config) is validated by pydantic; this turns the first problem into
one line that names the file, the field and the fix, e.g.::

    persona.yaml: signals.history_dayz: unknown field; check the spelling (fields here: ...)
    persona.yaml: personalise.budget_tokens: Input should be greater than or equal to 0 (got -1)
"""

from __future__ import annotations

import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from .errors import ConfigError

__all__ = ["config_error", "validate_config"]

_E = TypeVar("_E", bound=ConfigError)
_M = TypeVar("_M", bound=BaseModel)

#: Inputs longer than this are not repeated in the message (they may be whole sections).
_SHOWN_INPUT_CHARS = 60


def config_error(
    exc: ValidationError,
    *,
    source: str | None,
    prefix: str = "",
    model: type[BaseModel] | None = None,
    see: str = "",
    hints: Mapping[str, str] | None = None,
    error: type[_E] = ConfigError,  # type: ignore[assignment]  # the default is the bound
    **extra: Any,
) -> _E:
    """The first problem of ``exc`` as ``error`` (a :class:`ConfigError` or a subclass such as
    PolicyError; ``extra`` goes to its constructor, e.g. ``rule_id``).

    ``prefix`` is where the validated data sits in the file (``"signals"``); ``model`` is the
    class that was validated, so an unknown field's message can list the fields that exist;
    ``see`` names the page that documents them. ``hints`` replaces pydantic's message for an
    error type (e.g. ``union_tag_invalid``) with one that says the fix in the file's terms.
    """
    first = exc.errors()[0]
    loc = tuple(first["loc"])
    field = ".".join([*([prefix] if prefix else []), *(str(p) for p in loc)]) or None
    message = (hints or {}).get(first["type"]) or _fix(first, model, loc, see)
    if exc.error_count() > 1:
        message += f" (and {exc.error_count() - 1} more problems)"
    return error(message, source=source, field=field, **extra)


def validate_config(
    model: type[_M], data: Any, *, source: str | None, prefix: str = "", **options: Any
) -> _M:
    """``model.model_validate(data)``, raising :func:`config_error`'s error on failure
    (``options`` are its ``see``, ``hints``, ``error`` and the error's own arguments)."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise config_error(exc, source=source, prefix=prefix, model=model, **options) from None


def _fix(error: Any, model: type[BaseModel] | None, loc: tuple[Any, ...], see: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        known = _fields_at(model, loc[:-1]) if model is not None else None
        notes = [f"fields here: {', '.join(known)}"] if known else []
        notes += [f"see {see}"] if see else []
        return "unknown field; check the spelling" + (f" ({'; '.join(notes)})" if notes else "")
    if kind == "missing":
        return "required; add it"
    message = str(error["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
    shown = error.get("input")
    if isinstance(shown, str | int | float) and not isinstance(shown, bool):
        text = repr(shown)
        if len(text) <= _SHOWN_INPUT_CHARS and text not in message:
            message += f" (got {text})"
    return message


def _fields_at(model: type[BaseModel], loc: Sequence[Any]) -> list[str] | None:
    """The field names of the model found by following ``loc`` from ``model``, if it is one."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            continue
        models = _models_in(current)
        owner = next((m for m in models if part in m.model_fields), None)
        if owner is not None:
            current = owner.model_fields[part].annotation
        elif typing.get_origin(current) is dict:
            current = typing.get_args(current)[1]  # ``part`` is a key of a mapping of models
        else:
            return None  # a discriminated union's tag, or free data: no fixed fields to list
    models = _models_in(current)
    return sorted(models[0].model_fields) if len(models) == 1 else None


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, tuple, list, unions)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    origin = typing.get_origin(annotation)
    if origin is None:
        return []
    if origin is typing.Annotated:
        return _models_in(typing.get_args(annotation)[0])
    if origin in (dict, typing.Union, types.UnionType, tuple, list, frozenset, set) or (
        isinstance(origin, type) and issubclass(origin, Sequence)
    ):
        args = typing.get_args(annotation)
        if origin is dict:
            args = args[1:]
        found: list[type[BaseModel]] = []
        for arg in args:
            found += [m for m in _models_in(arg) if m not in found]
        return found
    return []
