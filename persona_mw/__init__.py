"""persona_mw: personalisation within bounds, between an application and any LLM.

The public API is what ``__all__`` lists; everything else is internal and may change.
"""

from .app import build_middleware
from .config import (
    BoundsConfig,
    Config,
    PersonaliseConfig,
    Settings,
    SignalsConfig,
    StoreConfig,
    load_config,
)
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
from .pipeline import Middleware
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
    "BoundsConfig",
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
    "PersonaliseConfig",
    "PolicyError",
    "Profile",
    "ProfileConflictError",
    "ProfileError",
    "ProfileStore",
    "ProfileValidationError",
    "RedisProfileStore",
    "Settings",
    "SignalsConfig",
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
]
