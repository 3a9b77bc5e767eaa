"""The deployment config: every section typed and validated at load, one file reader and one
environment-variable rule for the library, the server and the LiteLLM plugin, and one error
form that names the file, the field and the fix."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from persona_mw_server import load_server_config

from persona_mw import (
    BoundsConfig,
    ConfigError,
    PersonaliseConfig,
    PolicyError,
    SignalsConfig,
    load_config,
)
from persona_mw.config import expand_env


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "persona.yaml"
    path.write_text(text)
    return path


def test_sections_are_typed_at_load(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "bounds: {hold_back_margin: 3}\n"
        "personalise: {budget_tokens: 120}\n"
        "signals: {history_days: 30}\n",
    )
    config = load_config(path)
    assert isinstance(config.bounds, BoundsConfig) and config.bounds.hold_back_margin == 3
    assert isinstance(config.personalise, PersonaliseConfig)
    assert config.personalise.budget_tokens == 120
    assert isinstance(config.signals, SignalsConfig) and config.signals.history_days == 30


@pytest.mark.parametrize(
    ("text", "field", "says"),
    [
        # an unknown field lists the fields that exist where it was written
        ("signals: {history_dayz: 3}\n", "signals.history_dayz", "history_days"),
        ("personalise: {budget: 3}\n", "personalise.budget", "budget_tokens"),
        ("bounds: {polices: [a.yaml]}\n", "bounds.polices", "policies"),
        ("settings: {on_store_eror: x}\n", "settings.on_store_eror", "on_store_error"),
        ("store: {uri: x}\n", "store.uri", "fields here: prefix, url"),
        ("sigals: {}\n", "sigals", "fields here: bounds, "),
        # a bad value says what is allowed and what was given
        ("personalise: {budget_tokens: -1}\n", "personalise.budget_tokens", "(got -1)"),
        ("settings: {on_store_error: maybe}\n", "settings.on_store_error", "'fail_closed'"),
        ("bounds: {jurisdictions: [xx]}\n", "bounds.jurisdictions", "use codes from"),
        (
            "signals: {late_night_start_hour: 5, late_night_end_hour: 1}\n",
            "signals",
            "late_night_end_hour must be after late_night_start_hour",
        ),
        # several problems: the first is named, the rest counted
        (
            "personalise: {budget_tokens: -1, strong_preference: 2}\n",
            "personalise.budget_tokens",
            "(and 1 more problems)",
        ),
    ],
)
def test_a_bad_section_names_file_field_and_fix(
    tmp_path: Path, text: str, field: str, says: str
) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    assert caught.value.field == field
    assert says in str(caught.value)
    assert str(caught.value).startswith(f"{path}: {field}: ")


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("settings: [1, 2\n", "not valid YAML"),
        ("- a\n- b\n", "the top level must be a mapping of sections"),
    ],
)
def test_an_unreadable_file_names_the_file(tmp_path: Path, text: str, says: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=says) as caught:
        load_config(path)
    assert caught.value.source == str(path)
    with pytest.raises(ConfigError, match=says):
        load_server_config(path)


def test_a_missing_file_names_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the config file") as caught:
        load_config(tmp_path / "nope.yaml")
    assert caught.value.source == str(tmp_path / "nope.yaml")


def test_a_bad_policy_file_named_by_the_config_fails_at_load_with_the_rule(
    tmp_path: Path,
) -> None:
    """Policies are read when the middleware is built; their errors use the same form."""
    from persona_mw import build_middleware

    (tmp_path / "p.yaml").write_text(
        "rules:\n  - {id: r1, tier: 2, detector: {kind: phrases, phrases: [x]}, mesage: no}\n"
    )
    config = load_config(_write(tmp_path, "bounds: {policies: [p.yaml]}\n"))
    with pytest.raises(PolicyError) as caught:
        build_middleware(config)
    assert caught.value.rule_id == "r1" and caught.value.field == "rules.0.mesage"
    assert "unknown field" in str(caught.value) and "docs/policies.md" in str(caught.value)


# -- the one environment-variable rule ----------------------------------------------------------


def test_both_documented_forms_expand_everywhere(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``${VAR}`` inside a string and ``os.environ/VAR`` as a whole value, for the library and
    the server alike (the LiteLLM plugin reads its file with ``load_config``)."""
    monkeypatch.setenv("PMW_TEST_SECRET", "s3cret")
    monkeypatch.setenv("PMW_TEST_HOST", "db.internal")
    path = _write(
        tmp_path,
        "settings: {hash_secret: os.environ/PMW_TEST_SECRET}\n"
        'store: {url: "redis://${PMW_TEST_HOST}:6379/0"}\n'
        "model_list:\n"
        "  - model_name: m\n"
        "    litellm_params: {model: openai/m, api_key: os.environ/PMW_TEST_SECRET}\n",
    )
    for config in (load_config(path), load_server_config(path).persona):
        assert config.settings.hash_secret is not None
        assert config.settings.hash_secret.get_secret_value() == "s3cret"
        assert config.store.url == "redis://db.internal:6379/0"
        assert config.model_list[0]["litellm_params"]["api_key"] == "s3cret"


def test_the_files_own_environment_variables_count_as_set(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "environment_variables: {PMW_FROM_FILE: xyz}\n"
        "settings: {hash_secret: '${PMW_FROM_FILE}'}\n",
    )
    for config in (load_config(path), load_server_config(path).persona):
        assert config.settings.hash_secret is not None
        assert config.settings.hash_secret.get_secret_value() == "xyz"


@pytest.mark.parametrize(
    "value", ["os.environ/PMW_SURELY_UNSET", "'${PMW_SURELY_UNSET}'", "'a-${PMW_SURELY_UNSET}-b'"]
)
def test_an_unset_variable_names_file_field_and_variable(tmp_path: Path, value: str) -> None:
    path = _write(tmp_path, f"store: {{url: {value}}}\n")
    for load in (load_config, load_server_config):
        with pytest.raises(ConfigError) as caught:
            load(path)
        assert caught.value.source == str(path) and caught.value.field == "store.url"
        assert "PMW_SURELY_UNSET is not set; export it" in str(caught.value)


def test_the_bare_dollar_form_still_expands_with_a_deprecation_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PMW_TEST_PREFIX", "tenant")
    path = _write(tmp_path, "store: {prefix: '$PMW_TEST_PREFIX:'}\n")
    with pytest.warns(FutureWarning, match=r"store.prefix: \$PMW_TEST_PREFIX .*write \$\{PMW_"):
        config = load_config(path)
    assert config.store.prefix == "tenant:"


def test_a_dollar_word_that_names_no_variable_stays_as_written() -> None:
    """A password such as ``pa$word`` is not a reference (as before): no error, no warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = expand_env({"settings": {"hash_secret": "pa$word"}}, source="x", env={})
    assert data == {"settings": {"hash_secret": "pa$word"}}
