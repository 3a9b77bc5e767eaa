"""Helpers for the LiteLLM-proxy plugin tests: a real ``litellm --config ...`` proxy process.

They need LiteLLM's proxy extras, which live in a separate venv (``.ci/proxy-env.sh`` makes
``.venv-proxy``); each test module skips with that instruction when they are missing.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_CONFIG = ROOT / "examples" / "litellm_proxy" / "config.yaml"
HERE = Path(__file__).resolve().parent
MASTER_KEY_ENV = "PMW_TEST_LITELLM_MASTER_KEY"
#: A module only litellm[proxy] installs: its absence means "not the proxy venv".
PROXY_EXTRA_MODULE = "apscheduler"
NEEDS_PROXY = (
    "litellm's proxy extras are not installed in this venv; run `.ci/proxy-env.sh` and then "
    "`.venv-proxy/bin/pytest -m litellm_proxy tests/integrations/litellm_proxy`"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LiteLLMProxy:
    """``litellm --config CONFIG`` on a free loopback port, from the running venv."""

    def __init__(self, config: Path, env: dict[str, str], workdir: Path) -> None:
        self.port = free_port()
        self.log_path = workdir / "proxy.log"
        binary = Path(sys.executable).parent / "litellm"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [str(binary), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port)],
            env={**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=workdir,
        )
        self._wait_ready()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _wait_ready(self, timeout: float | None = None) -> None:
        # Generous: the proxy imports all of LiteLLM, which can take over a minute on a loaded box
        # (PMW_TEST_PROXY_READY_S raises it further on a very loaded one).
        timeout = timeout or float(os.environ.get("PMW_TEST_PROXY_READY_S") or 180.0)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litellm proxy exited ({self.proc.returncode}):\n{self.log()}")
            try:
                if httpx.get(f"{self.base_url}/health/liveliness", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        log = self.log()  # before stop() closes the log file
        self.stop()
        raise RuntimeError(f"litellm proxy not ready after {timeout} s:\n{log}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def proxy_env(
    *, master_key: str, upstream: str, persona_config: Path, **extra: Any
) -> dict[str, str]:
    """What the example config reads from the environment."""
    return {
        "LITELLM_MASTER_KEY": master_key,
        "OPENAI_API_KEY": "test-upstream-key",
        "OPENAI_API_BASE": upstream,
        "PERSONA_MW_CONFIG": str(persona_config),
        "PERSONA_MW_HASH_SECRET": "test-hash-secret",
        **{k: str(v) for k, v in extra.items()},
    }


def ask(client: httpx.Client, model: str, text: str, *, stream: bool) -> tuple[str, str | None]:
    """One user message through the proxy: the whole text the client received (streamed: every
    chunk's, joined) and the finish reason."""
    body = {"model": model, "messages": [{"role": "user", "content": text}], "user": "ada"}
    if not stream:
        response = client.post("/v1/chat/completions", json=body)
        assert response.status_code == 200, response.text
        choice = response.json()["choices"][0]
        return choice["message"]["content"] or "", choice["finish_reason"]
    pieces, reason = [], None
    with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as response:
        assert response.status_code == 200, response.read()
        for line in response.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                for choice in json.loads(line[6:]).get("choices") or []:
                    pieces.append(choice["delta"].get("content") or "")
                    reason = choice.get("finish_reason") or reason
    return "".join(pieces), reason
