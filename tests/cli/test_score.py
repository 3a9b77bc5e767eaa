"""``persona-mw score relationship``: JSON lines in, scores out in order, errors name the line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from persona_mw.bounds.relationship import relationship_score
from persona_mw.cli import cli

BIN = Path(sys.executable).parent / "persona-mw"

TEXTS = [
    "I missed you so much, sweetie! How was your day?",
    "The capital of Australia is Canberra.",
    "",
    "Ünïcödé ✓ — I\u2019m always here for you 💛",
    "Here are the steps:\n1. Open the lid.\n2. Pour.",
]


def _run(stdin: str | bytes, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(cli, ["score", "relationship", *args], input=stdin)
    return result.exit_code, result.stdout, result.stderr


def test_scores_come_back_in_input_order() -> None:
    stdin = "".join(json.dumps({"text": t}) + "\n" for t in TEXTS)
    code, out, err = _run(stdin)
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    assert rows == [{"score": relationship_score(t)} for t in TEXTS]
    assert rows[0]["score"] > 0.5 > rows[1]["score"]


def test_blank_lines_are_skipped_and_extra_fields_ignored() -> None:
    stdin = '\n{"text": "hello", "id": 7}\n   \n{"text": "I missed you!"}'  # no final newline
    code, out, _ = _run(stdin)
    assert code == 0
    assert [json.loads(line) for line in out.splitlines()] == [
        {"score": relationship_score("hello")},
        {"score": relationship_score("I missed you!")},
    ]


def test_empty_input_writes_nothing() -> None:
    assert _run("") == (0, "", "")


def test_explain_adds_the_cues_that_fired() -> None:
    code, out, _ = _run('{"text": "I missed you, darling"}\n', "--explain")
    assert code == 0
    row = json.loads(out)
    assert row["score"] == relationship_score("I missed you, darling")
    assert {(c["family"], c["text"]) for c in row["cues"]} == {
        ("longing_missing", "I missed you"),
        ("pet_names", "darling"),
    }


@pytest.mark.parametrize(
    ("stdin", "line", "reason", "written"),
    [
        ('{"text": "a"}\n{"text": \n{"text": "c"}\n', 2, "invalid JSON", 1),
        ('{"text": "a"}\n\n{"txt": "b"}\n', 3, 'missing the "text" field', 1),
        ('{"text": 5}\n', 1, '"text" must be a string, got int', 0),
        ('["text"]\n', 1, "got a JSON list, not an object", 0),
        ('{"text": "a"}\n"just a string"\n', 2, "got a JSON str, not an object", 1),
        (b'{"text": "a"}\n{"text": "\xff"}\n', 2, "not valid UTF-8", 1),
    ],
)
def test_a_bad_line_stops_with_an_error_naming_it(
    stdin: str | bytes, line: int, reason: str, written: int
) -> None:
    """Exit 1 at the first bad line; the scores of the lines before it are already out."""
    code, out, err = _run(stdin)
    assert code == 1
    assert f"line {line}: " in err and reason in err
    assert '{"text": "..."}' in err, "the error shows the expected shape"
    assert len(out.splitlines()) == written


def test_a_byte_order_mark_on_the_first_line_is_accepted() -> None:
    code, out, _ = _run('\ufeff{"text": "hi"}\n'.encode())
    assert code == 0
    assert json.loads(out) == {"score": relationship_score("hi")}


def test_installed_command_scores_without_importing_litellm() -> None:
    """The operator tool must stay light: the CLI path never imports litellm."""
    code = (
        "import sys\n"
        "from persona_mw.cli import main\n"
        "try:\n    main(['score', 'relationship'])\nexcept SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        "assert 'litellm' not in sys.modules, 'litellm imported by score relationship'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        input='{"text": "I missed you!"}\n',
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {"score": relationship_score("I missed you!")}


def test_console_script_round_trip() -> None:
    result = subprocess.run(
        [str(BIN), "score", "relationship"],
        input="".join(json.dumps({"text": t}) + "\n" for t in TEXTS),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["score"] for line in result.stdout.splitlines()] == [
        relationship_score(t) for t in TEXTS
    ]
