"""Pin the public names: adding one is a decision, removing one is a breaking change."""

import persona_mw

EXPECTED = {
    # the typed config sections (issue 18): a deployment built in code names them
    "BoundsConfig",
    "PersonaliseConfig",
    "SignalsConfig",
    "BoundsError",
    "CachedProfileStore",
    "CallContext",
    "Config",
    "ConfigError",
    "Consent",
    "Decision",
    "Exposure",
    "FinishStage",
    "InputBlocked",
    "InputStage",
    "Instruction",
    "LLMClient",
    "Limits",
    "MemoryProfileStore",
    "Middleware",
    "Notice",
    "OutputBlocked",
    "OutputFilter",
    "OutputStage",
    "PersonaError",
    "PolicyError",
    "Profile",
    "ProfileConflictError",
    "ProfileError",
    "ProfileStore",
    "ProfileValidationError",
    "RedisProfileStore",
    "Settings",
    "Span",
    "StatedPreferences",
    "StoreConfig",
    "StoreError",
    "Style",
    "UpstreamError",
    "UpstreamTimeout",
    "UserBounds",
    "UserHasher",
    "__version__",
    "build_middleware",
    "configure_logging",
    "load_config",
    "merge_patch",
    "open_store",
    "parse_profile",
    "update_profile",
}


#: Internals of the reply engine, public until issue 18; they live on in ``persona_mw.enforce``
#: for hosts that drive the engine themselves, not in the package's top level.
NO_LONGER_EXPORTED = {
    "FilterChain",
    "block_message",
    "blocked_ending",
    "notices_text",
    "with_notices",
}


def test_internals_are_not_exported() -> None:
    from persona_mw import enforce

    assert not NO_LONGER_EXPORTED & set(persona_mw.__all__)
    assert set(enforce.__all__) >= NO_LONGER_EXPORTED


def test_exported_names() -> None:
    assert set(persona_mw.__all__) == EXPECTED
    for name in persona_mw.__all__:
        assert hasattr(persona_mw, name), name


def test_every_error_derives_from_the_root() -> None:
    errors = [
        getattr(persona_mw, n)
        for n in persona_mw.__all__
        if n.endswith(("Error", "Blocked", "Timeout"))
    ]
    assert errors and all(issubclass(e, persona_mw.PersonaError) for e in errors)
