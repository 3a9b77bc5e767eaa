"""Robustness: OpenAI-format errors for every failure, size limits, upstream faults and
timeouts, a fail-closed store, content_filter, and a client that hangs up mid-stream."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from persona_mw_server import ServerConfig, create_app, load_server_config
from persona_mw_server.testing import ServerThread, free_port
from server_helpers import SlowUpstream, model_entry, write_config

from persona_mw import CallContext, Decision, Middleware, build_middleware, load_config
from persona_mw.testing import FakeOpenAIServer, Fault, capture_logs

MESSAGES = [{"role": "user", "content": "hello"}]


@pytest.fixture(scope="module")
def faulty(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ServerThread, FakeOpenAIServer]]:
    """A server of its own (faults must not disturb other tests), 0.5 s upstream timeout, a
    small body limit, and LiteLLM's retries and cooldowns off through router_settings."""
    with FakeOpenAIServer() as upstream:
        path = write_config(
            tmp_path_factory.mktemp("faulty") / "persona.yaml",
            model_list=[model_entry(upstream.base_url)],
            router_settings={"num_retries": 0, "disable_cooldowns": True},
            server={"upstream_timeout_s": 0.5, "max_body_bytes": 4096},
        )
        with ServerThread(create_app(load_server_config(path))) as server:
            yield server, upstream


def post(server: ServerThread, body: Any, **kw: Any) -> httpx.Response:
    return httpx.post(server.base_url + "/v1/chat/completions", json=body, timeout=10, **kw)


def assert_error(
    response: httpx.Response, status: int, code: str | None = None, param: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and len(error["message"]) > 10
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param
    return error  # type: ignore[no-any-return]


@pytest.mark.parametrize(
    ("body", "status", "code", "param"),
    [
        ({"model": "fake", "user": "u"}, 400, None, "messages"),
        ({"model": "fake", "user": "u", "messages": []}, 400, None, "messages"),
        (
            {"model": "fake", "user": "u", "messages": MESSAGES, "temperature": "hot"},
            400,
            None,
            "temperature",
        ),
        ({"model": "fake", "user": "u", "messages": MESSAGES, "n": 0}, 400, None, "n"),
        ({"model": "gpt-5", "user": "u", "messages": MESSAGES}, 404, "model_not_found", "model"),
        ({"model": "fake", "messages": MESSAGES}, 400, None, "user"),
        ({"model": "fake", "user": "u", "messages": ["hi"]}, 400, None, None),
    ],
)
def test_bad_requests(
    faulty: tuple[ServerThread, FakeOpenAIServer],
    body: Any,
    status: int,
    code: str | None,
    param: str | None,
) -> None:
    assert_error(post(faulty[0], body), status, code, param)


def test_body_size_limit(faulty: tuple[ServerThread, FakeOpenAIServer]) -> None:
    server, _ = faulty
    big = {"model": "fake", "user": "u", "messages": [{"role": "user", "content": "x" * 5000}]}
    assert_error(post(server, big), 413, "request_too_large")
    chunked = httpx.post(
        server.base_url + "/v1/chat/completions",
        content=iter([b"{" + b" " * 3000, b" " * 3000 + b"}"]),
    )
    assert_error(chunked, 413, "request_too_large")
    small_chunked = httpx.post(
        server.base_url + "/v1/chat/completions",
        content=iter([json.dumps({"model": "fake", "user": "u", "messages": MESSAGES}).encode()]),
        headers={"content-type": "application/json"},
    )
    assert small_chunked.status_code == 200, small_chunked.text


@pytest.mark.parametrize(
    ("fault", "status", "code"),
    [
        (Fault(status=500), 502, "upstream_error"),
        (Fault(status=401), 502, "upstream_error"),
        (Fault(status=429), 429, "upstream_error"),
        (Fault(delay=5.0), 504, "upstream_timeout"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_failures(
    faulty: tuple[ServerThread, FakeOpenAIServer],
    fault: Fault,
    status: int,
    code: str,
    stream: bool,
) -> None:
    """Failures before the first byte get a real status (so SDKs raise the right error)."""
    server, upstream = faulty
    upstream.inject(fault)
    started = time.monotonic()
    response = post(server, {"model": "fake", "user": "u", "messages": MESSAGES, "stream": stream})
    assert_error(response, status, code)
    # 0.5 s timeout vs a 5 s upstream: the margin absorbs a loaded machine, the cut stays visible
    assert time.monotonic() - started < 3.0, "the upstream timeout must cut a slow upstream short"


def test_openai_sdk_sees_typed_errors(faulty: tuple[ServerThread, FakeOpenAIServer]) -> None:
    server, upstream = faulty
    api = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="GET /v1/models"):
        api.chat.completions.create(model="nope", messages=MESSAGES, user="u")  # type: ignore[arg-type]
    upstream.inject(Fault(status=503))
    with pytest.raises(openai.InternalServerError):
        api.chat.completions.create(model="fake", messages=MESSAGES, user="u", stream=True)  # type: ignore[arg-type]


def test_fail_closed_store_is_503() -> None:
    """on_store_error: fail_closed and Redis unreachable: 503, and /readyz says not ready."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    config = ServerConfig(
        persona=load_config(None, store={"url": dead}, settings={"on_store_error": "fail_closed"})
    )
    with ServerThread(create_app(config)) as server:
        ready = httpx.get(server.base_url + "/readyz")
        assert ready.status_code == 503
        response = post(
            server, {"model": "persona-demo/offline", "user": "u", "messages": MESSAGES}
        )
        assert_error(response, 503, "store_unavailable")
        assert_error(httpx.get(server.base_url + "/v1/users/u/profile"), 503, "store_unavailable")


# -- a middleware with a blocking output stage and a recording finish stage -------------------


class BlockWord:
    """Output stage: stops the reply when the word appears (a stand-in for a real bound)."""

    name = "block_word"

    def __init__(self, word: str) -> None:
        self.word = word

    def open(self, ctx: CallContext) -> Any:
        word = self.word

        class Filter:
            stopped = False
            seen = ""

            def feed(self, text: str) -> str:
                self.seen += text
                if word in self.seen:
                    self.stopped = True
                    ctx.decisions.append(
                        Decision(
                            rule_id="test.word",
                            tier=2,
                            stage="output",
                            detector="substring",
                            action="block",
                            message="[withheld by test rule]",
                        )
                    )
                    return ""
                return text

            def finish(self) -> str:
                return ""

        return Filter()


class Recorder:
    """Finish stage: keeps each finished call's context (a usage sink)."""

    name = "recorder"

    def __init__(self) -> None:
        self.calls: list[CallContext] = []

    async def __call__(self, ctx: CallContext) -> None:
        self.calls.append(ctx)


def staged_server(upstream_url: str) -> tuple[ServerThread, Recorder]:
    persona = load_config(None, model_list=[model_entry(upstream_url)])
    recorder = Recorder()
    mw = Middleware(
        llm=build_middleware(persona).llm,
        output_stages=[BlockWord("forbidden")],
        finish_stages=[recorder],
    )
    return ServerThread(create_app(ServerConfig(persona=persona), middleware=mw)), recorder


def test_content_filter_plain_and_streamed(upstream: FakeOpenAIServer) -> None:
    server, _ = staged_server(upstream.base_url)
    with server:
        api = openai.OpenAI(base_url=server.base_url + "/v1", api_key="x", max_retries=0)
        ask = [{"role": "user", "content": "say the forbidden word"}]
        plain = api.chat.completions.create(model="fake", messages=ask, user="u")  # type: ignore[arg-type]
        assert plain.choices[0].finish_reason == "content_filter"
        assert plain.choices[0].message.content == "[withheld by test rule]"
        chunks = list(
            api.chat.completions.create(model="fake", messages=ask, user="u", stream=True)
        )  # type: ignore[arg-type]
        assert chunks[-1].choices[0].finish_reason == "content_filter"
        text = "".join(c.choices[0].delta.content or "" for c in chunks)
        assert "forbidden" not in text and text.endswith("[withheld by test rule]")


@pytest.mark.parametrize("include_usage", [False, True])
def test_stream_ends_at_the_finish_chunk_and_the_call_is_still_recorded(
    include_usage: bool,
) -> None:
    """The upstream lingers 1.5 s between its finish chunk and [DONE]. Without a usage chunk to
    wait for, the client has [DONE] at once; the call is recorded once the upstream ends. With
    include_usage the client waits for the upstream's usage."""
    with SlowUpstream(chunks=3, interval=0, linger=3.0) as slow:
        server, recorder = staged_server(slow.base_url)
        with server:
            body: dict[str, Any] = {"model": "fake", "user": "u", "messages": MESSAGES}
            body["stream"] = True
            if include_usage:
                body["stream_options"] = {"include_usage": True}
            started = time.monotonic()
            with httpx.stream(
                "POST", server.base_url + "/v1/chat/completions", json=body, timeout=10
            ) as response:
                lines = [line for line in response.iter_lines() if line.startswith("data: ")]
            took = time.monotonic() - started
            assert lines[-1] == "data: [DONE]"
            finish = [json.loads(x[6:]) for x in lines[:-1]]
            assert finish[-1 - include_usage]["choices"][0]["finish_reason"] == "stop"
            if include_usage:
                assert took >= 2.9 and finish[-1]["usage"]["completion_tokens"] == 3
                assert len(recorder.calls) == 1
            else:
                assert took < 2.0, took
                assert recorder.calls == []  # the upstream has not ended yet
                assert slow.finished.wait(3)
                deadline = time.monotonic() + 3
                while not recorder.calls and time.monotonic() < deadline:
                    time.sleep(0.02)
                assert len(recorder.calls) == 1
            ctx = recorder.calls[0]
            assert ctx.outcome == "ok" and ctx.output_text == "word word word "


def test_client_disconnect_cancels_upstream_and_usage_is_recorded() -> None:
    """The client reads a few chunks and hangs up: the upstream sees its reader go away long
    before the end, and the finish stage still records the call (outcome "cancelled")."""
    with SlowUpstream(chunks=200, interval=0.02) as slow:
        server, recorder = staged_server(slow.base_url)
        with server, capture_logs() as logs:
            body = {"model": "fake", "user": "u", "messages": MESSAGES, "stream": True}
            with httpx.stream(
                "POST", server.base_url + "/v1/chat/completions", json=body
            ) as response:
                assert response.status_code == 200
                lines = response.iter_lines()
                got = [
                    line
                    for line, _ in zip(lines, range(6), strict=False)
                    if line.startswith("data: ")
                ]
                assert len(got) >= 3
            assert slow.hung_up.wait(3), "the upstream connection was not closed"
            assert slow.sent < 100 and not slow.finished.is_set()
            deadline = time.monotonic() + 3
            while not recorder.calls and time.monotonic() < deadline:
                time.sleep(0.02)
        assert len(recorder.calls) == 1
        ctx = recorder.calls[0]
        assert (
            ctx.outcome == "cancelled"
            and ctx.completion_tokens > 0
            and ctx.output_text.startswith("word")
        )
        events = [e for e in logs if e["event"] == "request.completed"]
        assert [e["outcome"] for e in events] == ["cancelled"]
