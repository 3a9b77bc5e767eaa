"""The server run by uvicorn directly (no ``persona-mw serve``): the app factory reads
``$PERSONA_MW_CONFIG``, as docs/proxy.md shows."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
from server_helpers import KEYS, model_entry, write_config

from persona_mw.testing import FakeOpenAIServer


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_uvicorn_factory_serves_the_config(tmp_path: Path, upstream: FakeOpenAIServer) -> None:
    path = write_config(
        tmp_path / "persona.yaml",
        model_list=[model_entry(upstream.base_url)],
        server={"api_keys": KEYS.config()},
    )
    port = free_port()
    env = {**os.environ, "PERSONA_MW_CONFIG": str(path), "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "persona_mw_server.cli:app_from_env",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.2)
        reply = openai.OpenAI(
            base_url=base + "/v1", api_key=KEYS.app, max_retries=0
        ).chat.completions.create(
            model="fake", messages=[{"role": "user", "content": "hi"}], user="u"
        )
        assert reply.choices[0].message.content == "echo: hi"
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
    assert b"request.completed" in err and b"request.completed" not in out, "logs on stderr"
