"""`persona-mw check` and `persona-mw policy explain`: through click's CliRunner, and once through
the installed entry point in a subprocess."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_mw.cli.bounds import check, policy

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples" / "policies"
SUPPORT = str(EXAMPLES / "customer-support.yaml")
TUTORING = str(EXAMPLES / "childrens-tutoring.yaml")


def run_check(*args: str, stdin: str) -> dict:  # type: ignore[type-arg]
    result = CliRunner().invoke(check, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)  # type: ignore[no-any-return]  # logs go to stderr


@pytest.mark.parametrize("chunk", [None, "1", "3", "64"])
def test_check_output_same_for_any_chunk_size(chunk: str | None) -> None:
    args = ["--policy", SUPPORT, "--stage", "output"] + (
        ["--stream-chunk-size", chunk] if chunk else []
    )
    out = run_check(*args, stdin="Mail help@shop.example or call (555) 123-4567. Damn.")
    assert out["text"] == "Mail [email removed] or call [phone removed]. ****."
    assert out["action"] == "redact" and out["stopped"] is False
    assert out["policy_version"] == "support-2026-01"
    pii = next(d for d in out["decisions"] if d["rule_id"] == "pii")
    assert pii["tier"] == 2 and pii["detector"] == "pii" and pii["action"] == "redact"
    assert [(s["label"], s["text"]) for s in pii["spans"]] == [
        ("email", "help@shop.example"),
        ("phone", "(555) 123-4567"),
    ]
    assert out["hold_back"] > 0


def test_check_output_block() -> None:
    out = run_check("--policy", SUPPORT, stdin="Good news: we guarantee a full refund.")
    assert out["action"] == "block" and out["stopped"] is True
    assert out["text"].startswith("Refunds are decided")
    assert [d["rule_id"] for d in out["decisions"]] == ["support.refund-promises"]


def test_check_input_with_profile(tmp_path: Path) -> None:
    profile = tmp_path / "kid.json"
    profile.write_text(json.dumps({"age_band": "13_15"}))
    out = run_check(
        "--policy", TUTORING, "--profile", str(profile), "--stage", "input", stdin="send nudes"
    )
    assert out["action"] == "block"
    assert out["decisions"][0]["rule_id"] == "minor-safety.sexual"
    assert out["decisions"][0]["spans"][0]["text"] == "nudes"
    crisis = run_check("--policy", TUTORING, "--stage", "input", stdin="i want to die")
    assert crisis["action"] == "append"
    assert crisis["notices"][0]["source"] == "crisis.ideation"
    assert "crisis.ideation" in [i["source"] for i in crisis["instructions"]]


def test_check_reports_skipped_judge_rules(tmp_path: Path) -> None:
    path = tmp_path / "judge.yaml"
    path.write_text(
        "rules:\n  - id: j\n    tier: 2\n    stage: input\n    action: log\n"
        "    detector: {kind: judge, categories: ['S1: x']}\n"
    )
    out = run_check("--policy", str(path), "--stage", "input", stdin="hello")
    assert out["skipped_judge_rules"] == ["j"]


def test_check_with_judge_asks_the_deployments_classifiers(tmp_path: Path) -> None:
    """``--judge`` runs the model-backed rules with the config's classifier settings (here a
    fake moderation endpoint over HTTP)."""
    import yaml

    from persona_mw.testing import FakeOpenAIServer

    policy_file = tmp_path / "mod.yaml"
    policy_file.write_text(
        "rules:\n  - id: m\n    tier: 2\n    stage: input\n    message: withheld\n"
        "    detector: {kind: moderation, categories: [violence]}\n"
    )
    with FakeOpenAIServer(moderate=lambda t: {"violence": 0.9} if "hurt" in t else {}) as fake:
        config = tmp_path / "persona.yaml"
        config.write_text(
            yaml.safe_dump(
                {"bounds": {"classifier_kwargs": {"api_base": fake.base_url, "api_key": "t"}}}
            )
        )
        base = ["--config", str(config), "--policy", str(policy_file), "--stage", "input"]
        result = CliRunner().invoke(check, [*base, "--judge"], input="I will hurt them")
        assert result.exit_code == 0, result.output
        out = json.loads(result.stdout)  # the classifier's log line went to stderr
        assert [(d["rule_id"], d["action"]) for d in out["decisions"]] == [("m", "block")]
        assert out["text"] == "withheld"
        assert [r["input"] for r in fake.moderation_requests] == ["I will hurt them"]


def test_bad_policy_is_a_clean_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("packs: [crisis]\noverrides:\n  - {id: crisis.ideation, action: log}\n")
    result = CliRunner().invoke(check, ["--policy", str(path)], input="x")
    assert result.exit_code == 1
    assert "bad.yaml: rule 'crisis.ideation': tier-1 rules are immutable" in result.output


def test_policy_explain(tmp_path: Path) -> None:
    profile = tmp_path / "adult.json"
    profile.write_text(
        json.dumps({"user_id": "ada", "age_band": "18_plus", "adjustable": {"profanity": "off"}})
    )
    creative = str(EXAMPLES / "adult-creative-writing.yaml")
    result = CliRunner().invoke(
        policy, ["explain", "--policy", creative, "--profile", str(profile)]
    )
    assert result.exit_code == 0, result.output
    explained = json.loads(result.output)
    assert explained["sources"] == [creative]
    assert {
        "id": "profanity",
        "reason": "user opted out (profanity=off); allowed for adults",
    } in explained["not_in_force"]
    assert explained["ai_disclosure"]["interval_hours"] == 3


def test_policy_explain_says_what_a_stream_waits_for(tmp_path: Path) -> None:
    """A sentence-scored rule holds the sentence being written, and explain says so (and when
    a rule holds it only after its trigger fired on input)."""
    profile = tmp_path / "child.json"
    profile.write_text(json.dumps({"user_id": "kid", "age_band": "13_15"}))
    result = CliRunner().invoke(policy, ["explain", "--policy", SUPPORT, "--profile", str(profile)])
    assert result.exit_code == 0, result.output
    holds = {r["id"]: r.get("stream_hold") for r in json.loads(result.output)["rules"]}
    sentence_rules = [i for i, h in holds.items() if h and h.startswith("the sentence")]
    assert sorted(sentence_rules) == [
        "crisis.methods-model",
        "minor-safety.relationship",
        "minor-safety.sexual-output-model",
    ]
    assert holds["crisis.methods-model"].endswith(
        "(only in calls where crisis.ideation or crisis.ideation-model fired on input)"
    )
    assert holds["pii"] == (
        "only text that could still become a match (the word or candidate being written)"
    )
    assert holds["crisis.ideation"] is None  # an input rule: nothing to hold


def test_cli_does_not_import_litellm() -> None:
    code = (
        "import sys\nfrom click.testing import CliRunner\nfrom persona_mw.cli.bounds import check\n"
        f"r = CliRunner().invoke(check, ['--policy', {SUPPORT!r}], input='hi')\n"
        "assert r.exit_code == 0, r.output\nprint('litellm' in sys.modules)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.stdout.strip() == "False", result.stderr


def test_installed_entry_point() -> None:
    """The `persona-mw` script of the installed package, as an operator runs it."""
    exe = shutil.which("persona-mw", path=str(Path(sys.executable).parent)) or shutil.which(
        "persona-mw"
    )
    assert exe is not None, "persona-mw is not installed in this environment (pip install -e .)"
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    result = subprocess.run(
        [exe, "check", "--policy", SUPPORT, "--stream-chunk-size", "2"],
        input="card 4111 1111 1111 1111",
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert (out["action"], out["decisions"][0]["rule_id"]) == ("block", "support.cards")
    explain = subprocess.run(
        [exe, "policy", "explain", "--policy", SUPPORT],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert explain.returncode == 0, explain.stderr
    assert json.loads(explain.stdout)["policy_version"] == "support-2026-01"
