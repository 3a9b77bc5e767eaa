"""A fake OpenAI model over loopback HTTP: :class:`FakeOpenAIServer` (public API through
:mod:`persona_mw.testing`).

A real HTTP server on 127.0.0.1 that speaks the OpenAI chat completions wire format (whole and
SSE-streamed replies, several choices, tool calls, ``reasoning_content``, logprobs) and the
moderations endpoint (``/v1/moderations``, scored by the test's ``moderate`` function). Point
LiteLLM, the ``openai`` client or LangChain at ``server.base_url`` and the only thing replaced is
the remote model. It records every request it receives, so a test can read the prompt that
persona_mw really sent; :class:`Fault` makes the next requests fail, stall or break off.

Why one module over 400 lines: it is one job, the fake model's side of the OpenAI wire format;
the request handler and the payloads it writes (whole replies, interleaved stream deltas, tool
calls, logprobs, faults) are read side by side when a test needs one more field of the format.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Literal

from .bounds.policy import MODERATION_CATEGORIES

__all__ = [
    "FakeChoice",
    "FakeOpenAIServer",
    "FakeToolCall",
    "Fault",
    "Moderate",
    "Reply",
    "echo_reply",
]


def echo_reply(request: dict[str, Any]) -> str:
    """The default reply: echoes the last user message."""
    for message in reversed(request.get("messages", [])):
        if message.get("role") == "user":
            content = message.get("content")
            return f"echo: {content if isinstance(content, str) else json.dumps(content)}"
    return "echo:"


@dataclass(frozen=True)
class FakeToolCall:
    """A tool call the fake model makes; ``arguments`` is sent as given (JSON or not)."""

    name: str
    arguments: str
    id: str = "call_1"


@dataclass(frozen=True)
class FakeChoice:
    """One choice of a reply: its text, ``reasoning_content``, tool calls, and whether it
    carries logprobs (one entry per streamed piece of the content)."""

    content: str = ""
    reasoning: str | None = None
    tool_calls: tuple[FakeToolCall, ...] = ()
    logprobs: bool = False
    finish_reason: str | None = None

    @property
    def finish(self) -> str:
        return self.finish_reason or ("tool_calls" if self.tool_calls else "stop")


#: Scores a moderation input: category → score (0-1); a category at 0.5 or more is flagged.
Moderate = Callable[[str], Mapping[str, float]]

#: What a ``reply`` function returns: a text (the same for each of ``n`` choices), one
#: :class:`FakeChoice`, or one FakeChoice per choice.
Reply = str | FakeChoice | list[FakeChoice]


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
    #: Only requests to this endpoint ("chat" completions or "moderations"); None: any.
    route: Literal["chat", "moderations"] | None = None
    #: Only chat requests for this model (the request's ``model``); None: any.
    model: str | None = None

    def applies(self, route: str, model: str | None) -> bool:
        return (self.route is None or self.route == route) and (
            self.model is None or self.model == model
        )


@dataclass
class _State:
    reply: Callable[[dict[str, Any]], Reply]
    chunk_size: int
    moderate: Moderate | None = None
    requests: list[dict[str, Any]] = field(default_factory=list)
    moderation_requests: list[dict[str, Any]] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    chunks_sent: int = 0
    hang_ups: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def next_fault(self, route: str = "chat", model: str | None = None) -> Fault | None:
        with self.lock:
            fault = next((f for f in self.faults if f.applies(route, model)), None)
            if fault is None:
                return None
            fault.times -= 1
            if fault.times <= 0:
                self.faults.remove(fault)
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
        if self.path.rstrip("/").endswith("/moderations"):
            self._moderations(request)
            return
        with state.lock:
            state.requests.append(request)
        fault = state.next_fault("chat", request.get("model"))
        if self._answered_by_fault(fault):
            return
        choices = _choices(state.reply(request), request)
        text = "".join(c.content for c in choices)
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
        size = state.chunk_size
        if not request.get("stream"):
            self._json(
                200,
                {
                    "id": ident,
                    "object": "chat.completion",
                    "created": int(time.time()),
                    "model": model,
                    "choices": [_whole(i, c, size) for i, c in enumerate(choices)],
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
        # every choice's deltas, interleaved: choice 0's first piece, choice 1's first piece, ...
        streams = [_deltas(c, size) for c in choices]
        rounds = max(len(d) for d in streams)
        try:
            self._event(
                {
                    **base,
                    "choices": [
                        {
                            "index": i,
                            "delta": {"role": "assistant", "content": ""},
                            "finish_reason": None,
                        }
                        for i in range(len(choices))
                    ],
                }
            )
            for n in range(rounds):
                if fault and fault.truncate_after is not None and n >= fault.truncate_after:
                    self.wfile.flush()
                    self.close_connection = True
                    return
                if fault and fault.chunk_delay:
                    time.sleep(fault.chunk_delay)
                for i, deltas in enumerate(streams):
                    if n < len(deltas):
                        delta, logprobs = deltas[n]
                        choice: dict[str, Any] = {"index": i, "delta": delta, "finish_reason": None}
                        if logprobs is not None:
                            choice["logprobs"] = logprobs
                        self._event({**base, "choices": [choice]})
                        with state.lock:
                            state.chunks_sent += 1
            for i, c in enumerate(choices):
                self._event(
                    {**base, "choices": [{"index": i, "delta": {}, "finish_reason": c.finish}]}
                )
            if (request.get("stream_options") or {}).get("include_usage"):
                self._event({**base, "choices": [], "usage": usage})
            self.wfile.write(b"data: [DONE]\n\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            with state.lock:
                state.hang_ups += 1
        self.close_connection = True

    def _answered_by_fault(self, fault: Fault | None) -> bool:
        """Apply an injected fault: wait its delay, then answer its error status or a malformed
        body. True when the fault wrote the response (the route answers nothing more)."""
        if fault is None:
            return False
        if fault.delay:
            time.sleep(fault.delay)
        if fault.status:
            self._json(
                fault.status,
                {"error": {"message": f"injected {fault.status}", "type": "server_error"}},
            )
            return True
        if fault.malformed:
            self._raw(200, b"{not json", "application/json")
            return True
        return False

    def _moderations(self, request: dict[str, Any]) -> None:
        """``POST /v1/moderations``: one result per input, scored by the server's ``moderate``
        (every category 0 without one); faults routed to "moderations" apply."""
        state = self.server.state
        with state.lock:
            state.moderation_requests.append(request)
        if self._answered_by_fault(state.next_fault("moderations")):
            return
        inputs = request.get("input")
        texts = inputs if isinstance(inputs, list) else [inputs]
        results = []
        for text in texts:
            scores = {c: 0.0 for c in MODERATION_CATEGORIES}
            if state.moderate is not None:
                scores.update(state.moderate(str(text)))
            results.append(
                {
                    "flagged": any(v >= 0.5 for v in scores.values()),
                    "categories": {c: v >= 0.5 for c, v in scores.items()},
                    "category_scores": scores,
                }
            )
        self._json(
            200,
            {
                "id": f"modr-{uuid.uuid4().hex[:12]}",
                "model": request.get("model") or "omni-moderation-latest",
                "results": results,
            },
        )

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


def _choices(reply: Reply, request: dict[str, Any]) -> list[FakeChoice]:
    if isinstance(reply, str):
        n = request.get("n") or 1
        return [FakeChoice(content=reply)] * max(1, int(n))
    return [reply] if isinstance(reply, FakeChoice) else list(reply)


def _pieces(text: str, size: int) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def _logprobs(pieces: list[str]) -> dict[str, Any]:
    return {
        "content": [
            {"token": p, "logprob": -0.25, "bytes": list(p.encode()), "top_logprobs": []}
            for p in pieces
        ]
    }


def _tool_call(call: FakeToolCall, *, index: int | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }
    if index is not None:
        out["index"] = index
    return out


def _whole(index: int, choice: FakeChoice, size: int) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": choice.content or None}
    if choice.reasoning is not None:
        message["reasoning_content"] = choice.reasoning
    if choice.tool_calls:
        message["tool_calls"] = [_tool_call(c) for c in choice.tool_calls]
    out: dict[str, Any] = {"index": index, "message": message, "finish_reason": choice.finish}
    if choice.logprobs:
        out["logprobs"] = _logprobs(_pieces(choice.content, size))
    return out


def _deltas(choice: FakeChoice, size: int) -> list[tuple[dict[str, Any], Any]]:
    """One choice's stream: reasoning, then content (with logprobs), then each tool call
    (id and name first, then its arguments in pieces)."""
    out: list[tuple[dict[str, Any], Any]] = []
    for piece in _pieces(choice.reasoning or "", size):
        out.append(({"reasoning_content": piece}, None))
    for piece in _pieces(choice.content, size) or ([""] if not choice.tool_calls else []):
        out.append(({"content": piece}, _logprobs([piece]) if choice.logprobs else None))
    for i, call in enumerate(choice.tool_calls):
        head = {**_tool_call(call, index=i), "function": {"name": call.name, "arguments": ""}}
        out.append(({"tool_calls": [head]}, None))
        for piece in _pieces(call.arguments, size):
            out.append(({"tool_calls": [{"index": i, "function": {"arguments": piece}}]}, None))
    return out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256  # the default backlog of 5 drops connections at 50 in flight
    state: _State

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (a timeout under test) closes its end while the reply is being
        # written: expected, and socketserver's traceback would land in whatever sys.stderr is
        # then (another test's captured CLI output). Anything else is still reported.
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)


class FakeOpenAIServer:
    """A local OpenAI-compatible chat server on 127.0.0.1 (a free port), run in a thread.

    ``reply`` maps the request JSON to the reply text (default: echo the last user message;
    the same text for each of the request's ``n`` choices), or to :class:`FakeChoice` s (one per
    choice: tool calls, ``reasoning_content``, logprobs);
    ``chunk_size`` is how many characters each streamed chunk carries; ``moderate`` scores what
    ``/v1/moderations`` is asked (:data:`Moderate`).
    """

    def __init__(
        self,
        *,
        reply: Callable[[dict[str, Any]], Reply] = echo_reply,
        chunk_size: int = 4,
        moderate: Moderate | None = None,
    ) -> None:
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.state = _State(reply=reply, chunk_size=chunk_size, moderate=moderate)
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
    def moderation_requests(self) -> list[dict[str, Any]]:
        """The bodies ``/v1/moderations`` received."""
        return self._server.state.moderation_requests

    def set_moderate(self, moderate: Moderate | None) -> None:
        self._server.state.moderate = moderate

    @property
    def chunks_sent(self) -> int:
        """Streamed content chunks written so far (all requests)."""
        return self._server.state.chunks_sent

    @property
    def hang_ups(self) -> int:
        """Streams the client closed before the end."""
        return self._server.state.hang_ups

    def set_reply(self, reply: Callable[[dict[str, Any]], Reply]) -> None:
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
