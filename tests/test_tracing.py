"""OpenTelemetry traces (persona_mw.tracing) with the SDK's in-memory exporter: the spans of a
call through the real server (in process, real HTTP, real LiteLLM to a fake upstream), their
GenAI attributes, the parent taken from ``traceparent``, and no text or raw id anywhere."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from persona_mw import build_middleware, load_config, tracing
from persona_mw.observability import UserHasher
from persona_mw.testing import FakeOpenAIServer

USER = "trace-user-ada"
TEXT = "please summarise my secret diary entry"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"
SECRET = "tracing-test-secret"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.instrument(provider)
    try:
        yield exporter
    finally:
        tracing.uninstrument()
        provider.shutdown()


def _config(tmp_path: Path, upstream: FakeOpenAIServer) -> Path:
    policy = tmp_path / "policy.yaml"
    policy.write_text("version: tracing-tests\npacks: [crisis]\n")
    path = tmp_path / "persona.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "model_list": [
                    {
                        "model_name": "fake",
                        "litellm_params": {
                            "model": "openai/fake",
                            "api_base": upstream.base_url,
                            "api_key": "x",
                        },
                    }
                ],
                "settings": {"hash_secret": SECRET},
                "bounds": {"policies": [str(policy)]},
            }
        )
    )
    return path


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in finished}


def _no_text_or_ids(finished: tuple[ReadableSpan, ...]) -> None:
    for span in finished:
        for key, value in (span.attributes or {}).items():
            shown = str(value)
            assert USER not in shown and "diary" not in shown, (span.name, key, shown)


@pytest.mark.parametrize("stream", [False, True])
def test_server_request_spans_follow_the_incoming_traceparent(
    spans: InMemorySpanExporter, tmp_path: Path, stream: bool
) -> None:
    from persona_mw_server import create_app, load_server_config
    from persona_mw_server.testing import ServerThread

    with FakeOpenAIServer() as upstream:
        app = create_app(load_server_config(_config(tmp_path, upstream)))
        with ServerThread(app) as server:
            response = httpx.post(
                server.base_url + "/v1/chat/completions",
                json={
                    "model": "fake",
                    "user": USER,
                    "stream": stream,
                    **({"stream_options": {"include_usage": True}} if stream else {}),
                    "temperature": 0.2,
                    "messages": [{"role": "user", "content": TEXT}],
                },
                headers={"traceparent": f"00-{TRACE_ID}-{PARENT_ID}-01"},
                timeout=30,
            )
            assert response.status_code == 200, response.text
    finished = spans.get_finished_spans()
    named = _by_name(finished)
    call = named["persona_mw.call"]
    assert f"{call.context.trace_id:032x}" == TRACE_ID
    assert call.parent is not None and f"{call.parent.span_id:016x}" == PARENT_ID
    assert call.attributes is not None
    assert call.attributes["user.hash"] == UserHasher(SECRET)(USER)
    assert call.attributes["persona_mw.surface"] == "server"
    assert call.attributes["persona_mw.outcome"] == "ok"

    model = named["chat fake"]
    assert model.kind == trace.SpanKind.CLIENT
    assert model.parent is not None and model.parent.span_id == call.context.span_id
    attrs = model.attributes or {}
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.request.model"] == "fake"
    assert attrs["gen_ai.request.temperature"] == 0.2
    assert int(attrs["gen_ai.usage.input_tokens"]) > 0  # type: ignore[call-overload]
    assert int(attrs["gen_ai.usage.output_tokens"]) > 0  # type: ignore[call-overload]
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)  # type: ignore[arg-type]
    assert ("persona_mw.time_to_first_token_ms" in attrs) is stream

    stages = {s.name.removeprefix("persona_mw.stage ") for s in finished if "stage" in s.name}
    assert {"profile", "bounds", "dependence", "personalise", "output"} <= stages
    assert {"usage", "signals_metrics", "metrics"} <= stages
    for span in finished:
        assert span.context.trace_id == call.context.trace_id
        assert span.start_time is not None and span.end_time is not None
        assert span.end_time >= span.start_time
        if span is not call:
            assert span.parent is not None and span.parent.span_id == call.context.span_id
            assert call.start_time <= span.start_time  # type: ignore[operator]
    model_start = model.start_time or 0
    output = named["persona_mw.stage output"]
    # a stream is filtered while it arrives; a whole reply after it came
    assert (output.start_time == model_start) is stream
    _no_text_or_ids(finished)


async def test_a_library_call_nests_under_the_applications_span(
    spans: InMemorySpanExporter,
) -> None:
    mw = build_middleware(load_config(settings={"hash_secret": SECRET}))
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    with provider.get_tracer("app").start_as_current_span("app.handle") as outer:
        await mw.acompletion(
            user=USER,
            model="openai/gpt-4o-mini",
            messages=[{"role": "user", "content": TEXT}],
            mock_response="Here is a summary.",
        )
    await mw.aclose()
    named = _by_name(spans.get_finished_spans())
    call = named["persona_mw.call"]
    assert call.parent is not None and call.parent.span_id == outer.get_span_context().span_id
    model = named["chat openai/gpt-4o-mini"]
    assert (model.attributes or {})["gen_ai.provider.name"] == "openai"
    _no_text_or_ids(spans.get_finished_spans())


async def test_off_after_uninstrument(spans: InMemorySpanExporter) -> None:
    tracing.uninstrument()
    mw = build_middleware()
    await mw.acompletion(
        user=USER,
        model="openai/x",
        messages=[{"role": "user", "content": TEXT}],
        mock_response="hi",
    )
    await mw.aclose()
    assert spans.get_finished_spans() == ()


def test_instrument_without_the_extra_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from persona_mw.errors import ConfigError

    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    with pytest.raises(ConfigError, match=r"pip install 'persona-mw\[otel\]'"):
        tracing.instrument()
    assert not tracing.enabled()
