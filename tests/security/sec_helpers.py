"""Helpers for the security tests: API keys, and a server with keys over a fake upstream."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from persona_mw_server import hash_key


@dataclass(frozen=True)
class Keys:
    app: str = "pmw-sec-app-key-00000000000000000000000000"
    ada: str = "pmw-sec-user-ada-0000000000000000000000000"
    admin: str = "pmw-sec-admin-key-000000000000000000000000"

    def config(self) -> list[dict[str, Any]]:
        return [
            {"name": "app", "role": "app", "key_hash": hash_key(self.app)},
            {"name": "ada", "role": "user", "user": "ada", "key_hash": hash_key(self.ada)},
            {"name": "ops", "role": "admin", "key_hash": hash_key(self.admin)},
        ]


KEYS = Keys()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def write_server_config(path: Path, upstream_base_url: str, **extra: Any) -> Path:
    sections = {
        "model_list": [
            {
                "model_name": "fake",
                "litellm_params": {
                    "model": "openai/fake",
                    "api_base": upstream_base_url,
                    "api_key": "x",
                    "max_retries": 0,
                },
            }
        ],
        "router_settings": {"num_retries": 0},
        "server": {"api_keys": KEYS.config(), "upstream_timeout_s": 5},
        **extra,
    }
    path.write_text(yaml.safe_dump(sections))
    return path
