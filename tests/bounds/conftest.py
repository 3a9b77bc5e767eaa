"""A factory for call contexts, as the middleware makes them."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

import pytest

from persona_mw.profile import Profile
from persona_mw.types import CallContext

MakeContext = Callable[..., CallContext]


@pytest.fixture
def make_ctx() -> MakeContext:
    def make(
        text: str = "hi", profile: Profile | None = None, *, stream: bool = False
    ) -> CallContext:
        messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": text}]
        profile = profile or Profile(user_id="u")
        return CallContext(
            request_id="r",
            user_id=profile.user_id,
            user_hash="h",
            model="m",
            messages=messages,
            prompt_messages=list(messages),
            stream=stream,
            llm_kwargs={},
            profile=profile,
            profile_source="store",
            started_at=datetime.now(UTC),
        )

    return make
