"""Personalisation: rewrite the prompt from the user's profile, inside the bounds.

:class:`PersonaliseStage` is the input stage; :func:`build_instruction` the pure function that
decides what goes into the prompt; :func:`sanitise_user_text` makes user-written text safe to
quote; :func:`apply_instruction` / :func:`strip_personalisation` put it into (and take it out of)
OpenAI-format messages. See docs/personalisation.md.
"""

from .config import PersonaliseConfig, load_personalise_config
from .instruction import (
    DROP_ORDER,
    PRIORITY,
    REDUCED_INSTRUCTION,
    REDUCED_OPTION,
    PartName,
    PersonalInstruction,
    build_instruction,
    estimate_tokens,
)
from .messages import apply_instruction, strip_personalisation
from .model_info import supports_system_role, token_counter_for
from .sanitise import sanitise_user_text
from .stage import PersonaliseStage

__all__ = [
    "DROP_ORDER",
    "PRIORITY",
    "REDUCED_INSTRUCTION",
    "REDUCED_OPTION",
    "PartName",
    "PersonalInstruction",
    "PersonaliseConfig",
    "PersonaliseStage",
    "apply_instruction",
    "build_instruction",
    "estimate_tokens",
    "load_personalise_config",
    "sanitise_user_text",
    "strip_personalisation",
    "supports_system_role",
    "token_counter_for",
]
