"""Helpers for the server tests: real upstreams, real keys, config files.

The middleware's upstream is :class:`persona_mw.testing.FakeOpenAIServer` (a real HTTP server);
:class:`SlowUpstream` is a paced SSE upstream that records how many chunks it managed to send and
whether the reader hung up, to see cancellation from the upstream's side.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml
from persona_mw_server import hash_key


@dataclass(frozen=True)
class Keys:
    app: str = "pmw-test-app-key-0000000000000000000000000"
    ada: str = "pmw-test-user-ada-00000000000000000000000"
    admin: str = "pmw-test-admin-key-000000000000000000000"

    def config(self) -> list[dict[str, Any]]:
        return [
            {"name": "app", "role": "app", "key_hash": hash_key(self.app)},
            {"name": "ada", "role": "user", "user": "ada", "key_hash": hash_key(self.ada)},
            {"name": "ops", "role": "admin", "key_hash": hash_key(self.admin)},
        ]


KEYS = Keys()


def model_entry(base_url: str, name: str = "fake") -> dict[str, Any]:
    return {
        "model_name": name,
        "litellm_params": {"model": "openai/fake", "api_base": base_url, "api_key": "x"},
    }


def write_config(path: Path, **sections: Any) -> Path:
    """Write a server config. Unless a test sets ``bounds``, the policy is the crisis pack alone:
    these tests are about transport, and the default baseline's AI-disclosure notice would
    change every first reply of the day."""
    if "bounds" not in sections:
        policy = path.with_name(path.stem + "-policy.yaml")
        policy.write_text("version: transport-tests\npacks: [crisis]\n")
        sections["bounds"] = {"policies": [str(policy)]}
    path.write_text(yaml.safe_dump(sections))
    return path


class SlowUpstream:
    """An OpenAI-style SSE upstream that sends ``chunks`` pieces ``interval`` seconds apart, then
    the finish chunk, then, ``linger`` seconds later, ``[DONE]`` (and the usage chunk if asked)."""

    def __init__(self, *, chunks: int = 200, interval: float = 0.02, linger: float = 0.0) -> None:
        self.chunks = chunks
        self.interval = interval
        self.linger = linger
        self.sent = 0
        self.hung_up = threading.Event()
        self.finished = threading.Event()
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def do_POST(self) -> None:
                request = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)))
                usage_asked = bool((request.get("stream_options") or {}).get("include_usage"))
                self.send_response(200)
                self.send_header("content-type", "text/event-stream")
                self.send_header("connection", "close")
                self.end_headers()
                base = {
                    "id": "chatcmpl-slow",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": "fake",
                }
                try:
                    for _ in range(upstream.chunks):
                        piece = {
                            **base,
                            "choices": [
                                {"index": 0, "delta": {"content": "word "}, "finish_reason": None}
                            ],
                        }
                        self.wfile.write(b"data: " + json.dumps(piece).encode() + b"\n\n")
                        self.wfile.flush()
                        upstream.sent += 1
                        time.sleep(upstream.interval)
                    end = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}
                    self.wfile.write(b"data: " + json.dumps(end).encode() + b"\n\n")
                    self.wfile.flush()
                    time.sleep(upstream.linger)
                    if usage_asked:
                        counts = {"prompt_tokens": 3, "completion_tokens": upstream.chunks}
                        usage = {**base, "choices": [], "usage": {**counts, "total_tokens": 9}}
                        self.wfile.write(b"data: " + json.dumps(usage).encode() + b"\n\n")
                    self.wfile.write(b"data: [DONE]\n\n")
                    self.wfile.flush()
                    upstream.finished.set()
                except (BrokenPipeError, ConnectionResetError):
                    upstream.hung_up.set()
                self.close_connection = True

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> SlowUpstream:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}
