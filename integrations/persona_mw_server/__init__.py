"""persona_mw's OpenAI-compatible personalising proxy server (``pip install 'persona-mw[server]'``).

    persona-mw serve --config persona.yaml          # the command
    app = create_app(load_server_config("persona.yaml"))   # or any ASGI server, programmatically

Any OpenAI client switches by changing its base URL to ``http://HOST:PORT/v1``. See docs/proxy.md.
"""

from .app import USER_HEADER, create_app
from .auth import DEPLOYER_FIELDS, Principal, deny_reason
from .cli import check_bind
from .config import ApiKey, ServerConfig, ServerSettings, load_server_config
from .errors import ApiError
from .keys import hash_key, new_key

__all__ = [
    "DEPLOYER_FIELDS",
    "USER_HEADER",
    "ApiError",
    "ApiKey",
    "Principal",
    "ServerConfig",
    "ServerSettings",
    "check_bind",
    "create_app",
    "deny_reason",
    "hash_key",
    "load_server_config",
    "new_key",
]
