"""``PersonaliseStage``: the input stage that rewrites ``ctx.prompt_messages`` from the profile.

It runs last among the input stages (after the bounds check has put its tier instructions in
``ctx.instructions`` and the signals ladder has set ``ctx.exposure.reduced``). Per call it:

1. removes any block an earlier personalisation left in the messages (replayed conversations);
2. builds the instruction (:func:`build_instruction`) within the token budget;
3. merges it with the application's system message, or folds it into the first user turn for a
   model without a system role;
4. records the exposure: the profile parts used, the tokens they took, reduced mode.

It holds only its configuration and a cache of built instructions; everything per call lives
on the context. The cache is keyed by the profile object itself (a cached profile is the same
object until it changes; profiles are frozen), the model, the tier instructions and reduced
mode: :func:`build_instruction` is pure, and renders and sanitises every part (~0.1 ms).
"""

from __future__ import annotations

from persona_mw.profile import Profile
from persona_mw.types import CallContext, Instruction

from .config import PersonaliseConfig
from .instruction import PersonalInstruction, build_instruction
from .messages import apply_instruction, strip_personalisation
from .model_info import supports_system_role, token_counter_for

__all__ = ["PersonaliseStage"]

#: Built instructions kept (about one per active user, a few kB each) before starting afresh.
_CACHE_SIZE = 4096


class PersonaliseStage:
    """Input stage "personalise". Without ``consent.personalisation`` no profile data is used
    and no exposure recorded; tier instructions are still placed, since they are bounds."""

    name = "personalise"

    def __init__(self, *, config: PersonaliseConfig | None = None) -> None:
        self.config = config or PersonaliseConfig()
        #: (id of the profile, model, tier instructions, reduced) -> (that profile, its
        #: instruction); the profile is kept so its id cannot be reused by another one.
        #: A plain dict, emptied when full: its operations are atomic, and a sync bridge may
        #: call the stage from another thread.
        self._built: dict[
            tuple[int, str, tuple[Instruction, ...], bool], tuple[Profile, PersonalInstruction]
        ] = {}

    async def __call__(self, ctx: CallContext) -> None:
        cfg = self.config
        messages = strip_personalisation(ctx.prompt_messages)
        profile = ctx.profile
        personalise = cfg.enabled and profile.consent.personalisation
        if not (personalise or ctx.instructions or ctx.exposure.reduced):
            if len(messages) != len(ctx.prompt_messages) or any(
                a is not b for a, b in zip(messages, ctx.prompt_messages, strict=True)
            ):
                ctx.prompt_messages = messages
            return
        key = (id(profile), ctx.model, tuple(ctx.instructions), ctx.exposure.reduced)
        built = self._built.get(key)
        if built is not None and built[0] is profile:
            instruction = built[1]
        else:
            instruction = build_instruction(
                profile,
                instructions=ctx.instructions,
                reduced=ctx.exposure.reduced,
                budget_tokens=cfg.budget_tokens,
                max_user_chars=cfg.max_user_text_chars,
                strong_preference=cfg.strong_preference,
                personalise=cfg.enabled,
                count_tokens=token_counter_for(ctx.model),
            )
            if len(self._built) >= _CACHE_SIZE:
                self._built.clear()
            self._built[key] = (profile, instruction)
        ctx.prompt_messages = apply_instruction(
            messages, instruction, system_role=supports_system_role(ctx.model)
        )
        ctx.exposure.parts.update(instruction.parts)
        ctx.exposure.reduced = instruction.reduced
        ctx.exposure.instruction_tokens = instruction.personal_tokens
        ctx.state[self.name] = instruction
