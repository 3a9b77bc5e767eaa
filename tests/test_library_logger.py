"""The library's logger keeps the logger it assembled until structlog's configuration changes
(so a log call, and above all one the level filters out, costs little), and still follows every
configuration an application makes, and a swapped stderr while structlog is unconfigured.
conftest restores structlog's configuration after each test."""

from __future__ import annotations

import io
import logging
import sys
from collections.abc import MutableMapping
from typing import Any

import pytest
import structlog

from persona_mw.observability import get_logger


def _capture(into: list[MutableMapping[str, Any]]) -> Any:
    def processor(_: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        into.append({**event, "level": method})
        raise structlog.DropEvent

    return processor


def test_the_logger_follows_each_configuration_and_its_level() -> None:
    log = get_logger("persona_mw.test")
    events: list[MutableMapping[str, Any]] = []
    structlog.configure(
        processors=[_capture(events)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    )
    assert not log.is_enabled_for(logging.INFO) and log.is_enabled_for(logging.WARNING)
    log.info("quiet.event")
    log.warning("loud.event", n=1)
    assert [(e["event"], e["level"]) for e in events] == [("loud.event", "warning")]

    later: list[MutableMapping[str, Any]] = []
    structlog.configure(
        processors=[_capture(later)],
        wrapper_class=structlog.make_filtering_bound_logger(logging.DEBUG),
    )
    assert log.is_enabled_for(logging.DEBUG)
    log.debug("now.seen", n=2)
    assert [(e["event"], e["n"]) for e in later] == [("now.seen", 2)]
    assert len(events) == 1, "the first configuration's processors are no longer used"
    assert structlog.get_context(log.bind(extra="x")) == {"extra": "x"}


def test_unconfigured_it_prints_to_the_current_stderr(monkeypatch: pytest.MonkeyPatch) -> None:
    structlog.reset_defaults()
    log = get_logger("persona_mw.test")
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr(sys, "stderr", first)
    log.warning("to.first")
    monkeypatch.setattr(sys, "stderr", second)
    log.warning("to.second")
    assert "to.first" in first.getvalue() and "to.second" not in first.getvalue()
    assert "to.second" in second.getvalue()


def test_unconfigured_it_prints_info_and_above_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """structlog unconfigured filters nothing; the library's default is info: a debug event
    (one ``usage.recorded`` per message) is neither printed nor built."""
    structlog.reset_defaults()
    log = get_logger("persona_mw.test")
    err = io.StringIO()
    monkeypatch.setattr(sys, "stderr", err)
    assert not log.is_enabled_for(logging.DEBUG) and log.is_enabled_for(logging.INFO)
    log.debug("not.printed")
    log.info("printed")
    assert "printed" in err.getvalue() and "not.printed" not in err.getvalue()
