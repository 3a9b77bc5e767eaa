"""``persona-mw score relationship``: score texts offline, JSON lines in, JSON lines out.

An operator's tool for trying the relationship-seeking detector on their own transcripts (and
for picking a rule threshold) without a model, a policy or a store: it never imports litellm.
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any, BinaryIO

import click

from ..bounds.relationship import RelationshipScorer

__all__ = ["score"]

_SHAPE = 'expected one JSON object per line, e.g. {"text": "..."}'


def _text_of(line: str, lineno: int) -> str:
    try:
        record: Any = json.loads(line)
    except json.JSONDecodeError as exc:
        raise click.ClickException(f"line {lineno}: invalid JSON ({exc.msg}); {_SHAPE}") from None
    if not isinstance(record, dict):
        raise click.ClickException(
            f"line {lineno}: got a JSON {type(record).__name__}, not an object; {_SHAPE}"
        )
    if "text" not in record:
        raise click.ClickException(f'line {lineno}: missing the "text" field; {_SHAPE}')
    text = record["text"]
    if not isinstance(text, str):
        raise click.ClickException(
            f'line {lineno}: "text" must be a string, got {type(text).__name__}; {_SHAPE}'
        )
    return text


def _score_lines(source: BinaryIO, sink: IO[str], *, explain: bool) -> None:
    scorer = RelationshipScorer()
    for lineno, raw in enumerate(source, start=1):
        try:
            line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")  # a BOM is not an error
        except UnicodeDecodeError as exc:
            raise click.ClickException(
                f"line {lineno}: not valid UTF-8 (byte {exc.start}); {_SHAPE}"
            ) from None
        if not line.strip():
            continue
        text = _text_of(line, lineno)
        out: dict[str, Any]
        if explain:
            why = scorer.explain(text)
            out = {
                "score": why.score,
                "cues": [
                    {"family": c.label, "text": text[c.start : c.end], "start": c.start}
                    for c in why.cues
                ],
            }
        else:
            out = {"score": scorer.score(text)}
        sink.write(json.dumps(out, ensure_ascii=False) + "\n")


@click.group()
def score() -> None:
    """Score texts offline (JSON lines on stdin, JSON lines on stdout)."""


@score.command("relationship")
@click.option(
    "--explain",
    is_flag=True,
    help='Add "cues": which cue families fired, on which words.',
)
def relationship(explain: bool) -> None:
    """Relationship-seeking / anthropomorphism score of assistant texts.

    Reads one JSON object per line on stdin, {"text": "..."}, and writes one line per input,
    {"score": S}, in the same order; S is in [0, 1] and above 0.5 reads as relationship-seeking
    (calibrated to an LLM judge's "6 or more out of 10"). Blank lines are skipped. The first bad
    line stops the run with exit status 1 and an error naming its line number; the scores of
    the lines before it have been written.

    \b
    Example:
      echo '{"text": "I missed you! Tell me about your day?"}' | persona-mw score relationship
    """
    _score_lines(sys.stdin.buffer, sys.stdout, explain=explain)
