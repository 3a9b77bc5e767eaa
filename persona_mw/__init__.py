"""persona_mw: personalisation within bounds, between an application and any LLM.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from .app import build_middleware
from .config import Config, Settings, StoreConfig, load_config
from .errors import (
    BoundsError,
    ConfigError,
    InputBlocked,
    OutputBlocked,
    PersonaError,
    PolicyError,
    ProfileConflictError,
    ProfileError,
    ProfileValidationError,
    StoreError,
    UpstreamError,
    UpstreamTimeout,
)
from .observability import UserHasher, configure_logging
from .pipeline import (
    FilterChain,
    Middleware,
    block_message,
    blocked_ending,
    notices_text,
    with_notices,
)
from .profile import (
    Consent,
    Limits,
    Profile,
    StatedPreferences,
    Style,
    UserBounds,
    parse_profile,
)
from .stores import (
    CachedProfileStore,
    MemoryProfileStore,
    RedisProfileStore,
    merge_patch,
    open_store,
    update_profile,
)
from .types import (
    CallContext,
    Decision,
    Exposure,
    FinishStage,
    InputStage,
    Instruction,
    LLMClient,
    Notice,
    OutputFilter,
    OutputStage,
    ProfileStore,
    Span,
)

__version__ = "0.1.0"

__all__ = [
    "BoundsError",
    "CachedProfileStore",
    "CallContext",
    "Config",
    "ConfigError",
    "Consent",
    "Decision",
    "Exposure",
    "FilterChain",
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
    "block_message",
    "blocked_ending",
    "build_middleware",
    "configure_logging",
    "load_config",
    "merge_patch",
    "notices_text",
    "open_store",
    "parse_profile",
    "update_profile",
    "with_notices",
]
