"""Upstream faults — 5xx, timeouts (before the first byte and mid-stream), a malformed body, a
truncated stream, a client that hangs up, a caller that cancels — through the Middleware and
through the server: each gives a clean, typed error (OpenAI-format JSON over HTTP), and nothing
leaks: open file descriptors, live asyncio tasks and the server's open streams are back to their
steady state after bursts of faulty requests.

Leaks are measured, not assumed: a warm-up burst first lets the connection pools and LiteLLM's
client cache reach their steady state; then the counts before and after five more bursts must
match (within a small allowance for pooled keep-alive sockets).
"""

from __future__ import annotations

import asyncio
import gc
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from rel_helpers import Books, fd_count, live_tasks

from persona_mw import Middleware, UpstreamError, UpstreamTimeout
from persona_mw.bounds import BoundsConfig, bounds_stages
from persona_mw.signals.recorder import UsageRecorder
from persona_mw.signals.usage_store import MemoryUsageStore
from persona_mw.testing import FakeOpenAIServer, Fault

MODEL = "openai/fake"
MESSAGES = [{"role": "user", "content": "tell me something long"}]
TIMEOUT = 0.3
#: Pooled keep-alive sockets may differ by a couple between two quiet moments.
FD_ALLOWANCE = 4


@dataclass(frozen=True)
class Case:
    name: str
    fault: Fault | None
    stream: bool
    expect: type[BaseException] | None
    #: "hangup": close the stream after the first chunk; "cancel": cancel the task mid-call
    client: str = ""


def cases() -> list[Case]:
    return [
        Case("500", Fault(status=500), False, UpstreamError),
        Case("503-stream", Fault(status=503), True, UpstreamError),
        Case("timeout", Fault(delay=0.6), False, UpstreamTimeout),
        Case("timeout-mid-stream", Fault(chunk_delay=0.6), True, UpstreamTimeout),
        Case("malformed", Fault(malformed=True), False, UpstreamError),
        Case("truncated-stream", Fault(truncate_after=2), True, UpstreamError),
        Case("client-hangs-up", Fault(chunk_delay=0.02), True, None, client="hangup"),
        Case("caller-cancels", Fault(delay=0.6), False, asyncio.CancelledError, client="cancel"),
        Case("ok", None, False, None),
        Case("ok-stream", None, True, None),
    ]


@pytest.fixture(scope="module")
def upstream() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(chunk_size=4, reply=lambda _: "word " * 40) as server:
        yield server


async def _one(mw: Middleware, upstream: FakeOpenAIServer, case: Case) -> str:
    """Run one case; return the outcome name ("ok", the error class, "cancelled")."""
    if case.fault is not None:
        upstream.inject(Fault(**{**case.fault.__dict__, "times": 1}))
    kw: dict[str, Any] = {
        "user": "fault-user",
        "model": MODEL,
        "messages": MESSAGES,
        "api_base": upstream.base_url,
        "api_key": "x",
        "timeout": TIMEOUT,
        "num_retries": 0,
        "max_retries": 0,
    }
    try:
        if case.client == "cancel":
            task = asyncio.create_task(mw.acompletion(**kw))
            await asyncio.sleep(0.1)
            task.cancel()
            await task
        elif case.stream:
            stream = mw.astream(**kw)
            async for _ in stream:
                if case.client == "hangup":
                    break
            await stream.aclose()  # type: ignore[attr-defined]
        else:
            response = await mw.acompletion(**kw)
            assert response.choices[0].message.content
    except (UpstreamError, asyncio.CancelledError) as exc:
        return type(exc).__name__
    return "ok"


async def test_middleware_faults_give_typed_errors_and_leak_nothing(
    upstream: FakeOpenAIServer,
) -> None:
    books = Books()
    check_input, check_output = bounds_stages(BoundsConfig())
    recorder = UsageRecorder(MemoryUsageStore())
    mw = Middleware(
        input_stages=[check_input],
        output_stages=[check_output],
        finish_stages=[recorder, books],
    )
    expected = {c.name: c.expect.__name__ if c.expect else "ok" for c in cases()}

    async def burst() -> None:
        got = {case.name: await _one(mw, upstream, case) for case in cases()}
        assert got == expected

    async def quiet() -> tuple[int, set[asyncio.Task[Any]]]:
        await asyncio.sleep(1.0)  # the fake upstream's sleeping handlers finish and close
        gc.collect()
        await recorder.flush(timeout_s=5)
        return fd_count(), live_tasks()

    await burst()  # warm-up: pools, LiteLLM's client cache, the recorder's writer task
    fds_before, tasks_before = await quiet()
    for _ in range(5):
        await burst()
    fds_after, tasks_after = await quiet()
    print(
        f"\nmiddleware faults: fds {fds_before} -> {fds_after}, tasks {len(tasks_before)} -> "
        f"{len(tasks_after)} over {5 * len(cases())} calls"
    )
    assert fds_after - fds_before <= FD_ALLOWANCE, (fds_before, fds_after)
    assert tasks_after <= tasks_before, tasks_after - tasks_before
    # every call was finished (recorded) whatever happened to it
    assert len(books.records) == 6 * len(cases())
    outcomes = {r.outcome for r in books.records}
    assert outcomes == {"ok", "error", "cancelled"}
    assert recorder.produced == recorder.stored + recorder.dropped and recorder.dropped == 0
    await mw.aclose()


@pytest.mark.xfail(
    strict=True,
    reason="GAP: a streamed request whose upstream answers 200 with a malformed (non-SSE JSON) "
    "body ends as an empty reply with finish_reason 'stop' instead of an error: LiteLLM's "
    "stream wrapper turns the unparseable body into one empty chunk and raises nothing. Fix "
    "belongs in LiteLLM; persona_mw.llm.LiteLLMClient.astream could refuse a stream that "
    "carried no content, tool call or usage at all.",
)
async def test_malformed_stream_body_is_an_error(upstream: FakeOpenAIServer) -> None:
    mw = Middleware()
    upstream.inject(Fault(malformed=True))
    with pytest.raises(UpstreamError):
        async for _ in mw.astream(
            user="u",
            model=MODEL,
            messages=MESSAGES,
            api_base=upstream.base_url,
            api_key="x",
            num_retries=0,
            max_retries=0,
        ):
            pass


# -- through the server -------------------------------------------------------------------------


@dataclass(frozen=True)
class HttpCase:
    name: str
    fault: Fault | None
    stream: bool
    status: int
    #: for streams that fail after the 200: the in-band error's type
    in_band: str | None = None
    hangup: bool = False


HTTP_CASES = [
    HttpCase("500", Fault(status=500), False, 502),
    HttpCase("500-stream", Fault(status=500), True, 502),
    HttpCase("timeout", Fault(delay=0.6), False, 504),
    HttpCase("timeout-stream", Fault(delay=0.6), True, 504),
    HttpCase("malformed", Fault(malformed=True), False, 502),
    HttpCase("truncated-stream", Fault(truncate_after=2), True, 200, in_band="upstream_error"),
    HttpCase("timeout-mid-stream", Fault(chunk_delay=0.6), True, 200, in_band="timeout_error"),
    HttpCase("client-hangs-up", Fault(chunk_delay=0.02), True, 200, hangup=True),
    HttpCase("ok", None, False, 200),
    HttpCase("ok-stream", None, True, 200),
]


def _server_fds_and_threads() -> tuple[int, int]:
    gc.collect()
    return fd_count(), threading.active_count()


def test_server_faults_give_openai_errors_and_leak_nothing(
    upstream: FakeOpenAIServer, tmp_path: Any
) -> None:
    import time

    import yaml
    from persona_mw_server import create_app, load_server_config
    from persona_mw_server.testing import ServerThread

    path = tmp_path / "persona.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "fake",
                        "litellm_params": {
                            "model": MODEL,
                            "api_base": upstream.base_url,
                            "api_key": "x",
                            "max_retries": 0,
                        },
                    }
                ],
                "router_settings": {"num_retries": 0, "disable_cooldowns": True},
                "server": {"upstream_timeout_s": TIMEOUT},
            }
        )
    )
    app = create_app(load_server_config(path))
    open_streams = app.state.persona.streams

    def one(client: httpx.Client, case: HttpCase) -> None:
        if case.fault is not None:
            upstream.inject(Fault(**{**case.fault.__dict__, "times": 1}))
        body = {"model": "fake", "user": "fault-user", "messages": MESSAGES, "stream": case.stream}
        with client.stream("POST", "/v1/chat/completions", json=body) as response:
            assert response.status_code == case.status, (case.name, response.read())
            if case.status != 200:
                error = json.loads(response.read())["error"]
                assert set(error) == {"message", "type", "param", "code"}, case.name
                return
            if not case.stream:
                assert json.loads(response.read())["choices"][0]["message"]["content"]
                return
            lines = []
            for line in response.iter_lines():
                if line:
                    lines.append(line)
                if case.hangup and len(lines) >= 2:
                    return  # closing the response hangs up mid-stream
            if case.in_band:
                error = json.loads(lines[-1].removeprefix("data: "))["error"]
                assert error["type"] == case.in_band, (case.name, error)
            else:
                assert lines[-1] == "data: [DONE]", case.name

    with ServerThread(app) as server, httpx.Client(base_url=server.base_url, timeout=10) as client:

        def burst() -> None:
            for case in HTTP_CASES:
                one(client, case)

        def quiet() -> tuple[int, int]:
            deadline = time.monotonic() + 5
            while open_streams and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(1.0)
            return _server_fds_and_threads()

        burst()
        before = quiet()
        for _ in range(5):
            burst()
        after = quiet()
        print(f"\nserver faults: fds, threads {before} -> {after} over {5 * len(HTTP_CASES)}")
        assert not open_streams, "stream tasks left running in the server"
        assert after[0] - before[0] <= FD_ALLOWANCE, (before, after)
        assert after[1] <= before[1] + 1, ("threads", before, after)
