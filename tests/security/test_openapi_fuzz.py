"""Schemathesis against the server's own OpenAPI spec, over real HTTP on loopback: generated
requests (valid and invalid) to every operation, with an admin key (everything allowed) and with
a user key (mostly refused): never a 5xx, never a crash, errors always in OpenAI's format.

Bounded: a few dozen examples per operation, so it runs in CI in well under two minutes.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from persona_mw_server import create_app, load_server_config
from persona_mw_server.testing import ServerThread
from schemathesis.checks import not_a_server_error, status_code_conformance
from sec_helpers import KEYS, bearer, write_server_config

from persona_mw.testing import FakeOpenAIServer


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerThread]:
    with FakeOpenAIServer() as upstream:
        path = write_server_config(
            tmp_path_factory.mktemp("fuzz") / "persona.yaml",
            upstream.base_url,
            bounds={
                "policies": [
                    str(Path(__file__).parents[2] / "examples/policies/customer-support.yaml")
                ]
            },
        )
        with ServerThread(create_app(load_server_config(path))) as server:
            yield server


def _check_error_format(response: schemathesis.Response) -> None:
    if response.status_code >= 400 and response.headers.get("content-type", [""])[0].startswith(
        "application/json"
    ):
        body = response.json()
        assert isinstance(body, dict) and set(body.get("error", {})) == {
            "message",
            "type",
            "param",
            "code",
        }, body


def _fuzz(base_url: str, key: str, examples: int) -> Counter[str]:
    """Every operation of the spec, ``examples`` generated cases each (positive and negative
    data). Driven directly (schemathesis's pytest plugin does not load under pytest 9)."""
    api = schemathesis.openapi.from_url(base_url + "/openapi.json")
    seen: Counter[str] = Counter()
    for result in api.get_all_operations():
        operation = result.ok()

        @settings(
            max_examples=examples,
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        @given(case=operation.as_strategy())
        def run(case: schemathesis.Case) -> None:
            response = case.call(headers=bearer(key), timeout=10)
            case.validate_response(response, checks=[not_a_server_error, status_code_conformance])
            assert response.status_code < 500, (case.method, case.path, response.text[:300])
            _check_error_format(response)
            seen[f"{case.operation.label} {response.status_code}"] += 1

        run()
    return seen


@pytest.mark.parametrize(
    ("key", "examples"),
    [(KEYS.admin, 60), (KEYS.ada, 15), (KEYS.app, 15)],
    ids=["admin", "user", "app"],
)
def test_no_5xx_and_openai_errors(live_server: ServerThread, key: str, examples: int) -> None:
    seen = _fuzz(live_server.base_url, key, examples)
    statuses = Counter(label.rsplit(" ", 1)[1] for label in seen.elements())
    print(f"\nschemathesis: {sum(seen.values())} requests, statuses {dict(statuses)}")
    assert sum(seen.values()) >= 10 * examples // 2
