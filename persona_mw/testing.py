"""Testing helpers, public API: a local OpenAI-style server and a log capture.

:class:`FakeOpenAIServer` is a real HTTP server on loopback that speaks the OpenAI chat
completions wire format (plain and SSE streaming). Point LiteLLM, the ``openai`` client or
LangChain at ``server.base_url`` and the only thing replaced is the remote model. It records
every request it receives, so a test can read the prompt that persona_mw really sent.

    with FakeOpenAIServer(reply=lambda request: "hello") as server:
        await mw.acompletion(user="u", model="openai/fake", messages=[...],
                             api_base=server.base_url, api_key="test")
        server.requests[-1]["messages"]   # what the model saw
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog.testing

__all__ = ["FakeOpenAIServer", "Fault", "capture_logs", "echo_reply"]


def echo_reply(request: dict[str, Any]) -> str:
    """The default reply: echoes the last user message."""
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            return f"echo: {content if isinstance(content, str) else json.dumps(content)}"
    return "echo:"


@dataclass
class Fault:
    """Make the next ``times`` requests fail: an HTTP ``status``, a ``delay`` in seconds before
    answering, or a stream cut off after ``truncate_after`` chunks (no [DONE])."""

    status: int | None = None
    delay: float = 0.0
    truncate_after: int | None = None
    malformed: bool = False
    #: Seconds to wait before each streamed chunk (to test cancellation mid-stream).
    chunk_delay: float = 0.0
    times: int = 1


@dataclass
class _State:
    reply: Callable[[dict[str, Any]], str]
    chunk_size: int
    requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    chunks_sent: int = 0
    hang_ups: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self) -> Fault | None:
        with self.lock:
            if not self.faults:
                return None
            fault = self.faults[0]
            fault.times -= 1
            if fault.times <= 0:
                self.faults.pop(0)
            return fault


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"
    # Without this, Nagle's algorithm holds small bodies back ~40 ms.
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return

    def do_GET(self) -> None:
        if self.path.rstrip("/").endswith("/models"):
            self._json(
                200,
                {"object": "list", "data": [{"id": "fake", "object": "model", "owned_by": "test"}]},
            )
        else:
            self._json(404, {"error": {"message": "not found", "type": "invalid_request_error"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length)
        state = self.server.state
        try:
            request = json.loads(body or b"{}")
        except json.JSONDecodeError:
            self._json(400, {"error": {"message": "invalid JSON", "type": "invalid_request_error"}})
            return
        with state.lock:
            state.requests.append(request)
        fault = state.next_fault()
        if fault and fault.delay:
            time.sleep(fault.delay)
        if fault and fault.status:
            self._json(
                fault.status,
                {"error": {"message": f"injected {fault.status}", "type": "server_error"}},
            )
            return
        if fault and fault.malformed:
            self._raw(200, b"{not json", "application/json")
            return
        text = state.reply(request)
        prompt_tokens = (
            sum(len(str(m.get("content", ""))) for m in request.get("messages", [])) // 4
        )
        completion_tokens = max(1, len(text) // 4)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        ident = f"chatcmpl-{uuid.uuid4().hex[:12]}"
        model = request.get("model", "fake")
        if not request.get("stream"):
            self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": text},
                            "finish_reason": "stop",
                        }
                    ],
                    "usage": usage,
                },
            )
            return
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        self.send_header("connection", "close")
        self.end_headers()
        base = {
            "id": ident,
            "object": "chat.completion.chunk",
            "created": int(time.time()),
            "model": model,
        }
        pieces = [
            text[i : i + state.chunk_size] for i in range(0, len(text), state.chunk_size)
        ] or [""]
        try:
            self._event(
                {
                    **base,
                    "choices": [
                        {
                            "index": 0,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                    ],
                }
            )
            for n, piece in enumerate(pieces):
                if fault and fault.truncate_after is not None and n >= fault.truncate_after:
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if fault and fault.chunk_delay:
                    time.sleep(fault.chunk_delay)
                self._event(
                    {
                        **base,
                        "choices": [
                            {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                        ],
                    }
                )
                with state.lock:
                    state.chunks_sent += 1
            self._event({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
            if (request.get("stream_options") or {}).get("include_usage"):
                self._event({**base, "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with state.lock:
                state.hang_ups += 1
        self.close_connection = True

    def _event(self, payload: dict[str, Any]) -> None:
        self.wfile.write(b"data: " + json.dumps(payload).encode() + b"\n\n")
        self.wfile.flush()

    def _json(self, status: int, payload: dict[str, Any]) -> None:
        self._raw(status, json.dumps(payload).encode(), "application/json")

    def _raw(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections at 50 in flight
    state: _State


class FakeOpenAIServer:
    """A local OpenAI-compatible chat server on 127.0.0.1 (a free port), run in a thread.

    ``reply`` maps the request JSON to the reply text (default: echo the last user message);
    ``chunk_size`` is how many characters each streamed chunk carries.
    """

    def __init__(
        self, *, reply: Callable[[dict[str, Any]], str] = echo_reply, chunk_size: int = 4
    ) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(reply=reply, chunk_size=chunk_size)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """The OpenAI ``base_url`` / LiteLLM ``api_base``: ``http://127.0.0.1:PORT/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def requests(self) -> list[dict[str, Any]]:
        return self._server.state.requests

    @property
    def chunks_sent(self) -> int:
        """Streamed content chunks written so far (all requests)."""
        return self._server.state.chunks_sent

    @property
    def hang_ups(self) -> int:
        """Streams the client closed before the end."""
        return self._server.state.hang_ups

    def set_reply(self, reply: Callable[[dict[str, Any]], str]) -> None:
        self._server.state.reply = reply

    def inject(self, fault: Fault) -> None:
        """Queue a fault for the next request(s)."""
        with self._server.state.lock:
            self._server.state.faults.append(fault)

    def clear_faults(self) -> None:
        """Drop the faults not yet used."""
        with self._server.state.lock:
            self._server.state.faults.clear()

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextmanager
def capture_logs() -> Iterator[list[MutableMapping[str, Any]]]:
    """Collect persona_mw's structlog events as dicts (``structlog.testing.capture_logs``)."""
    with structlog.testing.capture_logs() as events:
        yield events
