"""The Grafana dashboard in examples/ matches what the server exports: every metric a panel
queries exists on ``/metrics`` of a running server, and every metric in docs/metrics.md has a
panel."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import openai
from persona_mw_server.testing import ServerThread
from prometheus_client.parser import text_string_to_metric_families
from server_helpers import KEYS

ROOT = Path(__file__).parents[3]
DASHBOARD = ROOT / "examples/grafana/persona_mw.json"
METRIC = re.compile(r"\bpersona_mw_[a-z_]+")
SUFFIXES = ("_bucket", "_sum", "_count", "_total")


def family(name: str) -> str:
    """A sample or query name as its family's (the parser drops ``_total`` from counters)."""
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def queried() -> dict[str, set[str]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    found: dict[str, set[str]] = {}
    for panel in panels:
        for target in panel.get("targets", ()):
            for name in METRIC.findall(target["expr"]):
                found.setdefault(family(name), set()).add(panel["title"])
    return found


def test_every_panel_queries_a_metric_the_server_exports(server: ServerThread) -> None:
    openai.OpenAI(
        base_url=server.base_url + "/v1", api_key=KEYS.app, max_retries=0
    ).chat.completions.create(model="fake", messages=[{"role": "user", "content": "hi"}], user="g")
    scraped = httpx.get(server.base_url + "/metrics").text
    exported = {f.name for f in text_string_to_metric_families(scraped)}
    missing = {name: titles for name, titles in queried().items() if name not in exported}
    assert not missing, f"panels query metrics the server does not export: {missing}"
    samples = {
        s.name for f in text_string_to_metric_families(scraped) for s in f.samples if s.value
    }
    assert "persona_mw_calls_total" in samples and "persona_mw_server_requests_total" in samples


def test_every_documented_metric_has_a_panel() -> None:
    documented = {
        family(name)
        for name in re.findall(
            r"^\| `(persona_mw_[a-z_]+)`", (ROOT / "docs/metrics.md").read_text(), re.M
        )
    }
    assert documented and documented <= set(queried()), documented - set(queried())


def test_every_panel_has_a_datasource_variable_and_a_place() -> None:
    data = json.loads(DASHBOARD.read_text())
    assert [v["name"] for v in data["templating"]["list"]] == ["datasource"]
    places = [(p["gridPos"]["x"], p["gridPos"]["y"]) for p in data["panels"] if p["type"] != "row"]
    assert len(places) == len(set(places)), "two panels in one place"
