"""The codes of the laws this package ships: one YAML file each in
``persona_mw/compliance/jurisdictions/``, its code its file name (docs/compliance.md).

A leaf below :mod:`persona_mw.profile`, so that a profile can check the codes it names without
loading a law; :mod:`persona_mw.compliance` hands :func:`known_codes` on with the laws.
"""

from __future__ import annotations

from functools import cache
from importlib import resources

__all__ = ["known_codes"]


@cache
def known_codes() -> tuple[str, ...]:
    """The codes of every shipped jurisdiction file, sorted."""
    folder = resources.files(__package__).joinpath("compliance", "jurisdictions")
    return tuple(
        sorted(
            entry.name.removesuffix(".yaml")
            for entry in folder.iterdir()
            if entry.name.endswith(".yaml")
        )
    )
