"""The server's config file: persona_mw's sections plus `server`, and a LiteLLM proxy config
reused as it is."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from click.testing import CliRunner
from persona_mw_server import create_app, hash_key, load_server_config
from persona_mw_server.cli import serve
from persona_mw_server.testing import ServerThread

from persona_mw import ConfigError
from persona_mw.testing import FakeOpenAIServer

LITELLM_STYLE = """\
model_list:
  - model_name: gpt-4o-mini
    litellm_params:
      model: openai/fake
      api_base: {base}
      api_key: os.environ/PMW_TEST_UPSTREAM_KEY
litellm_settings:
  drop_params: true
  success_callback: ["langfuse"]
router_settings:
  num_retries: 0
general_settings:
  master_key: os.environ/PMW_TEST_MASTER_KEY
environment_variables:
  PMW_TEST_UPSTREAM_KEY: upstream-secret
"""


def test_a_litellm_proxy_config_is_accepted(
    tmp_path: Path, upstream: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """model_list + litellm_settings/router_settings/general_settings/environment_variables, with
    LiteLLM's os.environ/ references; the master key becomes an admin key."""
    monkeypatch.setenv("PMW_TEST_MASTER_KEY", "sk-master-1234")
    path = tmp_path / "litellm.yaml"
    path.write_text(LITELLM_STYLE.format(base=upstream.base_url))
    config = load_server_config(path)
    assert config.persona.model_list[0]["litellm_params"]["api_key"] == "upstream-secret"
    assert [k.role for k in config.api_keys] == ["admin"] and config.auth_enabled
    assert "sk-master-1234" not in config.model_dump_json(), "only the key's hash may be kept"
    with ServerThread(create_app(config)) as server:
        api = openai.OpenAI(
            base_url=server.base_url + "/v1", api_key="sk-master-1234", max_retries=0
        )
        assert [m.id for m in api.models.list()] == ["gpt-4o-mini"]
        reply = api.chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], user="u"
        )
        # no bounds section: the baseline tier-1 policy, so the first reply carries the
        # AI disclosure before the model's answer
        notice, answer = reply.choices[0].message.content.split("\n\n")
        assert answer == "echo: hi" and "you are talking to an AI" in notice
        assert (
            httpx.get(
                server.base_url + "/v1/models", headers={"Authorization": "Bearer wrong"}
            ).status_code
            == 401
        )


@pytest.mark.parametrize(
    ("text", "field", "fragment"),
    [
        ("modle_list: []\n", "modle_list", "unknown section"),
        ("model_list:\n  - model_name: x\n", "model_list.0", "litellm_params.model"),
        ("server:\n  max_body_bytes: 10\n", "server.max_body_bytes", "greater than or equal"),
        (
            "server:\n  api_keys:\n    - {name: a, role: user, key_hash: 'sha256:"
            + "0" * 64
            + "'}\n",
            "server.api_keys.0",
            "needs `user:`",
        ),
        (
            "server:\n  api_keys:\n    - {name: a, role: app, key_hash: plaintext}\n",
            "server.api_keys.0.key_hash",
            "pattern",
        ),
        ("settings:\n  on_store_error: maybe\n", "settings.on_store_error", "fallback"),
        (
            "model_list:\n  - model_name: x\n"
            "    litellm_params: {model: openai/x, api_key: os.environ/PMW_SURELY_UNSET}\n",
            "model_list.0.litellm_params.api_key",
            "PMW_SURELY_UNSET",
        ),
    ],
)
def test_bad_config_names_file_and_field(
    tmp_path: Path, text: str, field: str, fragment: str
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_server_config(path)
    assert caught.value.field == field and caught.value.source == str(path)
    assert fragment in str(caught.value)


def test_cli_key_helpers_and_refusals(tmp_path: Path) -> None:
    runner = CliRunner()
    made = runner.invoke(serve, ["--new-key"])
    key, key_hash = (line.split()[-1] for line in made.stdout.splitlines()[:2])
    assert key.startswith("pmw-") and key_hash == hash_key(key)
    assert runner.invoke(serve, ["--hash-key"], input=key + "\n").stdout.strip() == key_hash
    refused = runner.invoke(serve, ["--host", "0.0.0.0"])
    assert refused.exit_code == 1 and "without API keys" in refused.output
    no_redis = runner.invoke(serve, ["--workers", "2"])
    assert no_redis.exit_code == 1 and "redis" in no_redis.output
    path = tmp_path / "ok.yaml"
    path.write_text(f"server:\n  api_keys:\n    - {{name: a, role: app, key_hash: '{key_hash}'}}\n")
    checked = runner.invoke(serve, ["--config", str(path), "--host", "0.0.0.0", "--check-config"])
    assert checked.exit_code == 0 and "api_keys=1" in checked.output


EXAMPLE = Path(__file__).parents[3] / "examples/litellm_proxy/config.yaml"


def test_the_example_litellm_proxy_config_is_served_with_one_warning_per_unused_section(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The LiteLLM proxy example, as it is: `guardrails` and `general_settings.database_url`
    are not errors; each unused part gets one warning naming it; the models are listed once."""
    monkeypatch.setenv("LITELLM_MASTER_KEY", "sk-master-1234")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-x")
    monkeypatch.setenv("OPENAI_API_BASE", "http://127.0.0.1:9/v1")
    text = EXAMPLE.read_text() + "  database_url: postgresql://u:p@db/litellm\n"
    target = tmp_path / "config.yaml"
    target.write_text(text)
    config = load_server_config(target)
    assert [line.split(":")[0] for line in config.ignored] == [
        "guardrails",
        "general_settings.database_url",
    ]
    assert "`store` section" in config.ignored[1]
    checked = CliRunner().invoke(serve, ["--config", str(target), "--check-config"])
    assert checked.exit_code == 0, checked.output
    assert "models=['gpt-4o-mini']" in checked.output
    assert checked.output.count("warning: guardrails: ignored") == 1
    assert checked.output.count("warning: general_settings.database_url: ignored") == 1


def test_check_config_pings_the_store(tmp_path: Path, redis_url: str) -> None:
    """--check-config says whether the configured Redis answers, and fails naming it if not."""
    good = tmp_path / "good.yaml"
    good.write_text(f"store: {{url: '{redis_url}'}}\n")
    ok = CliRunner().invoke(serve, ["--config", str(good), "--check-config"])
    assert ok.exit_code == 0 and "store=redis (answers)" in ok.output, ok.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("store: {url: 'redis://:secret@127.0.0.1:9/0'}\n")
    down = CliRunner().invoke(serve, ["--config", str(bad), "--check-config"])
    assert down.exit_code != 0 and "does not answer" in down.output, down.output
    assert "secret" not in down.output


@pytest.mark.parametrize(
    ("variable", "deprecated"), [("PERSONA_MW_CONFIG", False), ("PERSONA_MW_SERVER_CONFIG", True)]
)
def test_serve_finds_its_config_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, variable: str, deprecated: bool
) -> None:
    """The one variable every entry point reads; the server's older one still works, warned."""
    monkeypatch.delenv("PERSONA_MW_CONFIG", raising=False)
    monkeypatch.delenv("PERSONA_MW_SERVER_CONFIG", raising=False)
    path = tmp_path / "persona.yaml"
    path.write_text("model_list:\n  - {model_name: mine, litellm_params: {model: openai/x}}\n")
    monkeypatch.setenv(variable, str(path))
    checked = CliRunner().invoke(serve, ["--check-config"])
    assert checked.exit_code == 0 and "models=['mine']" in checked.output, checked.output
    assert ("PERSONA_MW_SERVER_CONFIG is deprecated" in checked.output) == deprecated
