"""The LiteLLM plugin lives in the proxy's process: it renders persona_mw's own events and never
reconfigures the host's logging (issue 18: it used to call ``structlog.configure``)."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from persona_mw import Middleware
from persona_mw.observability import get_logger, route_library_logs


@pytest.fixture
def host_logging() -> Iterator[io.StringIO]:
    """The host's own structlog set-up: key=value lines into its own stream."""
    saved = structlog.get_config()
    out = io.StringIO()
    structlog.configure(
        processors=[structlog.processors.KeyValueRenderer(key_order=["event"])],
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    try:
        yield out
    finally:
        route_library_logs(json=None)
        structlog.configure(**saved)


@pytest.mark.parametrize("persona_log", ["json", "console", "none"])
def test_the_plugin_leaves_the_hosts_logging_as_it_was(
    host_logging: io.StringIO, persona_log: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    from persona_mw_litellm import PersonaGuardrail

    before = structlog.get_config()
    PersonaGuardrail(persona_log=persona_log, middleware=Middleware())
    after = structlog.get_config()
    assert after["processors"] == before["processors"]
    assert after["logger_factory"] is before["logger_factory"]
    assert after["wrapper_class"] is before["wrapper_class"]

    structlog.get_logger("host").info("host.event", n=1)
    get_logger("persona_mw.test").info("library.event", n=2)
    host_lines = host_logging.getvalue().splitlines()
    stderr = capsys.readouterr().err
    assert "event='host.event' n=1" in host_lines  # the host's events, as the host set them up
    if persona_log == "none":  # the library's events follow the host's set-up too
        assert "event='library.event' n=2" in host_lines
        assert "library.event" not in stderr
    else:  # the library's own events on stderr, in the form asked for; none in the host's
        assert not any("library.event" in line for line in host_lines)
        assert "library.event" in stderr and "host.event" not in stderr
        if persona_log == "json":
            event = json.loads(next(ln for ln in stderr.splitlines() if "library.event" in ln))
            assert event["event"] == "library.event" and event["n"] == 2
